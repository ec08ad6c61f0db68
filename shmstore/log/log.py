"""Log: an append-only, hash-chained record stream that one process appends and any number
of processes read and follow.

Theory of operation
===================

Files (one directory per log; on disk for ``backend="mmap"``, under ``/dev/shm`` for
``backend="shm"``; byte maps in ``format`` and ``docs/format.md``)::

    LOG                  settings, written once (temp, fsync, rename, fsync dir)
    0000000000.seg       segment data: checkpoint and record frames back to back
    0000000000.idx       segment index: a header, then one u64 position per record;
                         sealed with a trailer (count, chain head, CRC) when completed
    cursors/<name>       a consumer cursor (temp, fsync, rename, fsync dir)

The last segment is the active one; every other one is completed and immutable. A segment
is created whole (its first checkpoint written and synced under a temp name, then renamed),
so a listing of ``*.seg`` is the list of segments, and nothing else (no manifest that could
tear or lag) says which segments exist.

One writer: the writer holds an open-file-description lock on byte 0 of ``LOG``. The kernel
drops it when the writer closes or dies, so the next ``open(mode="a")`` takes the log over,
and a second live writer gets ``WriterActive``.

Appending (writer)::

    frames = [checkpoint if local % checkpoint_every == 0] + record, for each payload
    pwrite(segment, frames at pos)          one write per batch
    pwrite(index, positions)                 one write per batch
    fsync segment, fsync index               if fsync=True (disk)
    live.write_at(8 * local, positions)      publish: wakes readers parked on these records
    rotate if pos >= segment_size            seal, then create the next segment

Readers and waits (``wait_for``, ``follow``) go through a shmstore ``Resource`` in shared
memory, the segment's *live index*: the same u64 positions at ``8 * local``, written after
the bytes they point to. Coverage of ``[8l, 8l+8)`` means "record l of this segment is
complete"; ``wait_for`` is a ``wait_range`` on it, so cross-process waits, wake-ups and
writer-death detection are the core's (no polling). Rotation commits the live index at its
final length: readers parked past it see EOF and move to the next segment, whose live index
exists before that commit. Each writer session creates a fresh live index (recovery may have
cut records an old one still covers); a reader whose wait ends in ``WriterDied`` re-opens it
and keeps waiting if a new writer is there. A reader that finds no live index, or one whose
writer is gone (it may have died before filling it), counts the active segment's records
from its index file instead, each entry served only if it leads to a valid record of the
right offset, and re-lists the segments (a writer may have come, rotated and gone).

Recovery, on every writer open: scan the active segment from its first checkpoint, checking
each frame's CRC, offset, chain link and checkpoint placement; cut at the first frame that
fails (a torn write, garbage, a dangling checkpoint), after reading the segment a second
time, afresh, to agree (a transient read error must not cost durable records); zero what
follows; rewrite the index
entries past the first one that disagrees with the scan; restore the chain head from the
last good record (or the segment's first checkpoint, which carries the previous segment's
head, checked against its sealed index). Nothing after a cut is ever served.

Verified reads start at the nearest checkpoint at or before the offset (a trusted anchor:
its chain hash), or at the point where this handle's previous verified read ended, and check
every record's CRC, offset and chain link on the way (``RecordCorrupt``, ``RecordMissing``,
``RecordOutOfOrder``, ``ChainBroken``). ``verify()`` walks from genesis.

Durability: ``append(fsync=True)`` returns after the segment and index data are on disk;
segment creation and sealing fsync the files and the directory. ``fsync=False`` appends
survive the death of processes (they are in the page cache) but not of the machine. A failed
write or fsync breaks the writer handle (an fsync error may have dropped the unsynced pages:
retrying it would lie); reopening the log recovers it.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import struct
import threading
import time
import uuid
import weakref
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from .. import resource as _res
from ..core.lifecycle import State, WaitOutcome
from ..errors import (
    ChainBroken,
    InvalidName,
    InvalidRange,
    LogCorrupt,
    ReadOnlyError,
    RecordCorrupt,
    RecordMissing,
    RecordOutOfOrder,
    ResourceClosed,
    ResourceExists,
    ResourceNotFound,
    StorageError,
    TornRecord,
    WriterActive,
    WriterDied,
)
from ..ipc import locks
from ..ipc.segments import SHM_DIR, shm_base
from . import format as F
from .fileio import FileIO

__all__ = ["Cursor", "Log", "Record"]

Backend = Literal["shm", "mmap"]

DEFAULT_SEGMENT_SIZE = 64 << 20
DEFAULT_CHECKPOINT_EVERY = 1024
DEFAULT_MAX_RECORD = 64 << 20
_SEG_RE = re.compile(r"^(\d{10})\.seg$")
_CURSOR_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_CURSOR = struct.Struct("<4s4xQI4x")
_WRITER_BYTE = 0
_LIVE_CAPACITY = 1 << 16
_ENTRY = struct.Struct("<Q")
_CREATING = ".creating-"  # suffix of a log being created, before its rename into place
_OPEN_SEALED = 16  # sealed segments a handle keeps open and mapped (least recently used go)


class Record(NamedTuple):
    """A record read from a log: its offset and its payload (a zero-copy view of the
    segment for uncompressed records, valid while the payload is referenced)."""

    offset: int
    payload: bytes | memoryview


def _seg_name(k: int) -> str:
    return f"{k:010d}"


def _shm_dir(name: str) -> str:
    if not isinstance(name, str) or not name or "\x00" in name or len(name.encode()) > 255:
        raise InvalidName(name, "a log name is a non-empty str of at most 255 bytes, no NUL")
    return os.path.join(SHM_DIR, "shmstore-log." + hashlib.blake2b(
        name.encode(), digest_size=8).hexdigest())


def _live_name(instance: bytes, seg: int) -> str:
    return f"shmstore-log:{instance.hex()}:{seg}"


def _live_control(instance: bytes, seg: int) -> str:
    return os.path.join(SHM_DIR, shm_base(_live_name(instance, seg)) + "_c")


_live_handles: weakref.WeakSet[Log] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A forked child shares the writer's open file description of LOG, and with it the
    # writer lock: close it in the child, so only the parent holds the claim.
    for log in list(_live_handles):
        log._drop_inherited()


os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclass
class _Scan:
    """Where a recovery scan stands: after the last good record (``cut``), the next
    offset, the chain head, and whether a checkpoint for the next record was seen (the
    checkpoint of a segment's first record is its first frame)."""

    cut: int
    nxt: int
    head: bytes
    anchored: bool = True


@dataclass
class _Segment:
    """A reader's (or the writer's) view of one segment."""

    num: int
    first: int
    sealed: bool = False
    count: int = 0  # records known to be complete (sealed: all of them)
    head: bytes | None = None  # sealed: chain hash after its last record
    entries: Any = None  # sealed: memoryview cast "Q"; active: filled from the live index
    data_fd: int = -1
    view: memoryview = field(default_factory=lambda: memoryview(b""))
    live: _res.Resource | None = None
    live_ino: int = 0  # the inode of the live index's control block, to notice a new one


class Log:
    """A handle on an append-only log. Make one with ``Log.create`` or ``Log.open``; it is a
    context manager, and ``close()`` is idempotent. Readers are cheap and many; one writer at
    a time (``mode="a"``). Handles are not for sharing between threads without a lock of
    your own, except that ``wait_for`` may block in one thread while others read."""

    # ---------------------------------------------------------------- construction
    @classmethod
    def create(cls, name: str | None = None, *, path: str | os.PathLike[str] | None = None,
               backend: Backend | None = None, segment_size: int = DEFAULT_SEGMENT_SIZE,
               checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
               max_record: int = DEFAULT_MAX_RECORD, compress: bool = False,
               _io: FileIO | None = None) -> Log:
        """Create a log and return its writer handle.

        ``name`` makes it in shared memory (``backend="shm"``, the default); ``path`` makes
        it in that directory on disk (``backend="mmap"``), which must not exist. Segments
        rotate once they hold ``segment_size`` bytes; a checkpoint anchors every
        ``checkpoint_every``-th record; a record's payload may be up to ``max_record``
        bytes; ``compress`` stores a payload zlib-compressed when that makes it smaller.

        Raises:
            ResourceExists: a log (or anything) is already there.
            InvalidName / InvalidRange: unusable name or settings.
        """
        kind, directory, io = _where(name, path, backend, _io)
        for what, v, lo in (("segment_size", segment_size, 4096),
                            ("checkpoint_every", checkpoint_every, 1),
                            ("max_record", max_record, 1)):
            if not isinstance(v, int) or v < lo or (v >= 1 << 32 and what != "segment_size"):
                raise InvalidRange(0, v if isinstance(v, int) else 0, f"{what} out of range")
        if max_record > 1 << 30:
            raise InvalidRange(0, max_record, "max_record above 1 GiB")
        settings = F.Settings(uuid.uuid4().bytes, segment_size, checkpoint_every,
                              max_record, bool(compress))
        if os.path.lexists(directory):
            raise ResourceExists(f"{directory} already exists")
        parent = os.path.dirname(os.path.abspath(directory)) or "."
        _reap_dead_creations(directory)
        tmp = f"{directory}{_CREATING}{uuid.uuid4().hex[:8]}"
        os.mkdir(tmp, 0o700)
        # the claim on the half-made log: held until it is renamed into place, released
        # by the kernel if this process dies first (then the next create removes it)
        claim = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(claim, fcntl.LOCK_EX)
        try:
            _write_whole(io, os.path.join(tmp, "LOG"), F.pack_settings(settings))
            os.mkdir(os.path.join(tmp, "cursors"), 0o700)
            _make_segment(io, tmp, settings, 0, 0, F.ZERO_HASH)
            io.fsync_dir(tmp)
            try:
                os.rename(tmp, directory)  # fails if a directory appeared meanwhile
            except OSError as exc:
                raise ResourceExists(f"{directory} already exists") from exc
            io.fsync_dir(parent)
        except BaseException:
            _rmtree(tmp)
            raise
        finally:
            os.close(claim)
        return cls(kind, directory, name, writer=True, io=io)

    @classmethod
    def open(cls, name: str | None = None, *, path: str | os.PathLike[str] | None = None,
             backend: Backend | None = None, mode: str = "r",
             _io: FileIO | None = None) -> Log:
        """Open an existing log: ``mode="r"`` (default) reads, ``mode="a"`` appends (this
        takes the writer claim and recovers the log first).

        Raises:
            ResourceNotFound: no log there.
            WriterActive: ``mode="a"`` while another live process is the writer.
            LogCorrupt: the settings file, or the active segment's start, is damaged.
        """
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', not {mode!r}")
        kind, directory, io = _where(name, path, backend, _io)
        if not os.path.isfile(os.path.join(directory, "LOG")):
            raise ResourceNotFound(f"no log at {directory}")
        return cls(kind, directory, name, writer=(mode == "a"), io=io)

    @staticmethod
    def remove(name: str | None = None, *, path: str | os.PathLike[str] | None = None,
               backend: Backend | None = None) -> None:
        """Delete a log: its files and its live objects in shared memory. Handles still open
        keep what they mapped. Raises ``WriterActive`` while a live writer holds it."""
        _kind, directory, _io = _where(name, path, backend, None)
        try:
            fd = os.open(os.path.join(directory, "LOG"), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            if os.path.isdir(directory):
                _rmtree(directory)
                return
            raise ResourceNotFound(f"no log at {directory}") from None
        try:
            if not locks.try_lock(fd, _WRITER_BYTE):
                raise WriterActive(f"{directory}: a live writer holds the log")
            try:
                settings = F.unpack_settings(os.pread(fd, F.SETTINGS.size, 0))
            except LogCorrupt:
                settings = None
            if settings is not None:
                nums = _list_segments(directory)
                # and the next one's: a rotation makes it before the segment's files
                for k in [*nums, (nums[-1] + 1) if nums else 0]:
                    _unlink_live(settings.instance, k)
            _rmtree(directory)
        finally:
            os.close(fd)

    def __init__(self, kind: str, directory: str, name: str | None, *, writer: bool,
                 io: FileIO) -> None:
        self._kind = kind
        self._dir = directory
        self._name = name
        self._io = io
        self._writer = writer
        self._closed = False
        self._broken: str | None = None
        self._pid = os.getpid()
        self._tlock = threading.RLock()
        self._segs: dict[int, _Segment] = {}
        self._nums: list[int] = []
        self._firsts: list[int] = []
        self._vcache: tuple[int, bytes] | None = None  # (offset, chain hash before it)
        # the writer's state: where the next frame goes, the next offset, the chain head
        self._pos = 0
        self._next = 0
        self._head = F.ZERO_HASH
        self._prealloc = 0
        self._idx_fd = -1
        self.recovered: dict[str, int] = {}
        log_path = os.path.join(directory, "LOG")
        try:
            self._log_fd = os.open(log_path, (os.O_RDWR if writer else os.O_RDONLY)
                                   | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ResourceNotFound(f"no log at {directory}") from None
        try:
            self._settings = F.unpack_settings(os.pread(self._log_fd, F.SETTINGS.size + 1, 0))
            self._inst = self._settings.instance
            self._max = self._settings.max_record
            self._every = self._settings.checkpoint_every
            if writer:
                if not locks.try_lock(self._log_fd, _WRITER_BYTE):
                    raise WriterActive(f"{directory}: another live process is its writer")
                self._open_writer()
        except BaseException:
            self._release()
            raise
        _live_handles.add(self)

    # ---------------------------------------------------------------- properties
    @property
    def path(self) -> str:
        """The log's directory."""
        return self._dir

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def backend(self) -> str:
        return self._kind

    @property
    def settings(self) -> F.Settings:
        """What the log was created with (fixed for its life): ``segment_size``,
        ``checkpoint_every``, ``max_record``, ``compress``."""
        return self._settings

    @property
    def writable(self) -> bool:
        return self._writer

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def next_offset(self) -> int:
        """The offset the next appended record will get (as far as this handle knows: for a
        reader, the records published when it looks)."""
        with self._tlock:
            self._usable()
            return self._tail()

    @property
    def latest_chain_hash(self) -> bytes | None:
        """The chain hash after the last record, or None for an empty log. A reader
        computes it from the last published record (its CRC-checked link and payload)."""
        with self._tlock:
            self._usable()
            if self._writer:
                return self._head if self._next else None
            end = self._tail()
            if end == 0:
                return None
            seg, local = self._locate(end - 1)
            f = self._frame(seg, local)
            return F.chain(f.prev, F.KIND_DATA, F.decode_payload(f))

    @property
    def segment_count(self) -> int:
        with self._tlock:
            self._usable()
            return len(self._refresh_segments())

    # ---------------------------------------------------------------- writer
    def append(self, records: Iterable[bytes | bytearray | memoryview] | bytes | bytearray
               | memoryview, *, fsync: bool = True) -> tuple[int, bytes]:
        """Append records (a batch, or one bytes-like object) and return ``(next offset,
        chain hash after the last one)``. With ``fsync`` (the default) the records are on
        disk when it returns; without, they survive process deaths but not machine crashes.
        Readers see them once it returns (never before they are complete).

        Raises:
            ReadOnlyError: a read-only handle.
            ValueError: an empty batch; InvalidRange: a record over ``max_record`` bytes.
            StorageFull / StorageError: the write or fsync failed; the handle is then
                broken (reopen the log: recovery keeps exactly the complete records).
        """
        if isinstance(records, (bytes, bytearray, memoryview)):
            batch: list[Any] = [records]
        else:
            batch = list(records)
        if not batch:
            raise ValueError("append of an empty batch")
        with self._tlock:
            self._require_writer()
            seg = self._active
            every, pos, nxt, head = self._every, self._pos, self._next, self._head
            first, segnum = seg.first, seg.num
            parts: list[bytes | bytearray] = []
            positions = bytearray(8 * len(batch))
            compress = self._settings.compress
            for i, payload in enumerate(batch):
                if not isinstance(payload, (bytes, bytearray, memoryview)):
                    payload = memoryview(payload)
                n = payload.nbytes if isinstance(payload, memoryview) else len(payload)
                if n > self._max:
                    raise InvalidRange(0, n, f"record {i} over the log's max_record "
                                       f"{self._max}")
                local = nxt - first
                if local % every == 0 and local:
                    ck = F.encode_checkpoint(nxt, head, segnum)
                    parts.append(ck)
                    pos += len(ck)
                frame, head = F.encode_record(nxt, head, payload, compress=compress)
                _ENTRY.pack_into(positions, 8 * i, pos)
                parts.append(frame)
                pos += len(frame)
                nxt += 1
            local0 = self._next - first
            try:
                if pos > self._prealloc:
                    self._prealloc = max(pos, 2 * self._prealloc)
                    self._io.truncate(seg.data_fd, self._prealloc)
                self._io.pwrite(seg.data_fd, b"".join(parts), self._pos)
                self._io.pwrite(self._idx_fd, positions, F.IDX_HEADER.size + 8 * local0)
                if fsync:
                    self._io.fsync(seg.data_fd)
                    self._io.fsync(self._idx_fd)
            except BaseException as exc:
                self._broken = f"an append failed ({exc}); reopen the log to recover it"
                raise
            self._pos, self._next, self._head = pos, nxt, head
            seg.count = nxt - first
            assert seg.live is not None
            seg.live.write_at(8 * local0, positions)
            if pos >= self._settings.segment_size:
                # the batch is written and published: a failed rotation must not make the
                # caller retry it (duplicates); it breaks the handle for the next call
                with contextlib.suppress(StorageError):
                    self._rotate()
            return nxt, head

    def flush(self) -> None:
        """fsync what earlier ``append(fsync=False)`` calls wrote."""
        with self._tlock:
            self._require_writer()
            try:
                self._io.fsync(self._active.data_fd)
                self._io.fsync(self._idx_fd)
            except BaseException as exc:
                self._broken = f"a flush failed ({exc}); reopen the log to recover it"
                raise

    def _require_writer(self) -> None:
        self._usable()
        if not self._writer:
            raise ReadOnlyError("append through a read-only log handle (open with mode='a')")
        if self._broken:
            raise StorageError(self._broken)

    def _open_writer(self) -> None:
        nums = self._refresh_segments()
        k = nums[-1]
        path = self._seg_path(k)
        data_fd = self._io.open(path + ".seg", writable=True)
        seg = _Segment(k, 0, data_fd=data_fd)
        self._segs[k] = seg
        self._active = seg
        try:
            self._idx_fd = self._io.open(path + ".idx", writable=True)
        except FileNotFoundError:
            self._idx_fd = self._io.open(path + ".idx", create=True)
        self._recover(seg)
        if self._pos >= self._settings.segment_size:
            self._rotate()

    def _recover(self, seg: _Segment) -> None:
        io = self._io
        size = io.size(seg.data_fd)
        view = io.map(seg.data_fd, size)
        try:
            f0 = F.parse_frame(view, 0, size, self._max)
        except LogCorrupt as exc:
            raise LogCorrupt(f"{self._dir}: segment {seg.num} lost its first checkpoint "
                             f"({exc})") from exc
        if f0.kind != F.KIND_CHECKPOINT:
            raise LogCorrupt(f"{self._dir}: segment {seg.num} does not start with a checkpoint")
        seg.first, head = f0.offset, f0.prev
        if seg.num > 0:
            prev = self._sealed(seg.num - 1)
            if prev.head != head or prev.first + prev.count != seg.first:
                raise ChainBroken(seg.first, f"segment {seg.num} does not continue segment "
                                  f"{seg.num - 1}")
        entries: list[int] = []
        state = _Scan(f0.end, seg.first, head)
        self._scan_active(view, size, seg.first, state, entries)
        if _nonzero_extent(view, state.cut):
            # Something follows the last good record: a torn tail, or a damaged record, or a
            # read that went wrong. Read the rest again, afresh, before cutting anything: a
            # transient read error must never cost durable records.
            view = memoryview(io.pread(seg.data_fd, size, 0))
            self._scan_active(view, size, seg.first, state, entries)
        cut, nxt, head = state.cut, state.nxt, state.head
        garbage = _nonzero_extent(view, cut)
        del view
        # cut: after the last good record (a checkpoint left without its record goes too)
        self._prealloc = max(self._settings.segment_size + F.CHECKPOINT_FRAME, size)
        if garbage:
            io.truncate(seg.data_fd, cut)
            io.truncate(seg.data_fd, self._prealloc)
            io.fsync(seg.data_fd)
        elif size < self._prealloc:
            io.truncate(seg.data_fd, self._prealloc)
        # the index: keep the prefix that agrees with the scan, rewrite the rest
        idx_size = io.size(self._idx_fd)
        raw = io.pread(self._idx_fd, idx_size, 0)
        keep = 0
        try:
            hseg, hfirst = F.unpack_idx_header(raw)
            ok_header = hseg == seg.num and hfirst == seg.first
        except LogCorrupt:
            ok_header = False
        if ok_header:
            old = F.idx_entries(raw)
            have = len(old)
            while keep < min(have, len(entries)) and old[keep] == entries[keep]:
                keep += 1
            dropped = have - keep
        else:
            io.pwrite(self._idx_fd, F.pack_idx_header(seg.num, seg.first), 0)
            dropped = max(0, (idx_size - F.IDX_HEADER.size) // 8)
        tail = struct.pack(f"<{len(entries) - keep}Q", *entries[keep:])
        io.pwrite(self._idx_fd, tail, F.IDX_HEADER.size + 8 * keep)
        io.truncate(self._idx_fd, F.IDX_HEADER.size + 8 * len(entries))
        io.fsync(self._idx_fd)
        self.recovered = {"cut_bytes": garbage,
                          "index_entries_dropped": max(0, dropped - (len(entries) - keep)),
                          "index_entries_rewritten": len(entries) - keep,
                          "records": nxt - seg.first}
        self._pos, self._next, self._head = cut, nxt, head
        seg.count = len(entries)
        seg.live = self._fresh_live(seg.num, struct.pack(f"<{len(entries)}Q", *entries))

    def _scan_active(self, view: memoryview, size: int, first: int, st: _Scan,
                     entries: list[int]) -> None:
        """Extend ``st`` and ``entries`` over the good frames of ``view`` from ``st.cut``:
        each must parse, carry the next offset, link to the chain and decode, and a
        checkpoint must stand exactly before the records that need one."""
        every = self._every
        pos, anchored = st.cut, st.anchored
        while True:
            try:
                f = F.parse_frame(view, pos, size, self._max)
            except LogCorrupt:
                return
            local = st.nxt - first
            if f.kind == F.KIND_CHECKPOINT:
                if anchored or local % every or f.offset != st.nxt or f.prev != st.head:
                    return
                anchored, pos = True, f.end
                continue
            if f.offset != st.nxt or f.prev != st.head or (local % every == 0) != anchored:
                return
            try:
                payload = F.decode_payload(f)
            except LogCorrupt:
                return
            st.head = F.chain(st.head, F.KIND_DATA, payload)
            entries.append(pos)
            st.nxt += 1
            pos = st.cut = f.end
            anchored = st.anchored = False

    def _fresh_live(self, num: int, entries: bytes) -> _res.Resource:
        name = _live_name(self._inst, num)
        _unlink_live(self._inst, num)
        try:
            live = _res.create(name, capacity=max(_LIVE_CAPACITY, 2 * len(entries)),
                               prefault=False)
        except ResourceExists:
            _unlink_live(self._inst, num)
            live = _res.create(name, capacity=max(_LIVE_CAPACITY, 2 * len(entries)),
                               prefault=False)
        if entries:
            live.write_at(0, entries)
        return live

    def _rotate(self) -> None:
        try:
            self._seal_and_start_next()
        except BaseException as exc:
            self._broken = f"a rotation failed ({exc}); reopen the log to recover it"
            raise

    def _seal_and_start_next(self) -> None:
        io, seg = self._io, self._active
        count = self._next - seg.first
        # seal: the data cut to its exact end, the index given its trailer, both synced
        io.truncate(seg.data_fd, self._pos)
        io.fsync(seg.data_fd)
        entries = io.pread(self._idx_fd, F.IDX_HEADER.size + 8 * count, 0)
        io.pwrite(self._idx_fd, F.pack_idx_trailer(entries, count, self._head), len(entries))
        io.fsync(self._idx_fd)
        k = seg.num + 1
        # the next live index first: a reader that lists the new segment finds it there
        live = self._fresh_live(k, b"")
        try:
            data_fd, idx_fd = _make_segment(io, self._dir, self._settings, k, self._next,
                                            self._head, keep_open=True)
            io.fsync_dir(self._dir)
        except BaseException:
            with contextlib.suppress(StorageError):
                live.unlink()
            live.close()
            raise
        old_live, old_idx = seg.live, self._idx_fd
        new = _Segment(k, self._next, data_fd=data_fd)
        new.live = live
        self._segs[k] = new
        self._active, self._idx_fd = new, idx_fd
        self._pos = F.CHECKPOINT_FRAME
        self._prealloc = self._settings.segment_size + F.CHECKPOINT_FRAME
        # the old segment is complete: readers parked past its end see EOF and move on
        seg.sealed, seg.count, seg.head = True, count, self._head
        seg.live = None
        io.close(old_idx)
        if old_live is not None:
            old_live.commit(8 * count)
            old_live.unlink()
            old_live.close()
        io.close(seg.data_fd)
        del self._segs[seg.num]
        self._nums.append(k)
        self._firsts.append(new.first)

    # ---------------------------------------------------------------- readers
    def read_from(self, offset: int, max_bytes: int = 1 << 20, *,
                  verify: bool = True) -> list[Record]:
        """Records from ``offset`` on, as many as fit ``max_bytes`` of payload, and always at
        least one if the record at ``offset`` exists (so the last may overshoot). Empty when
        ``offset`` is at or past the end. Never blocks.

        With ``verify`` (the default) every record's chain link is checked from a trusted
        anchor (the nearest checkpoint, or where this handle's last verified read ended);
        every read checks CRCs and offsets.

        Raises:
            RecordCorrupt: a record fails its CRC (a flipped bit).
            RecordMissing / RecordOutOfOrder: the offsets do not run on.
            ChainBroken: a record does not link to the ones before it.
        """
        if offset < 0:
            raise InvalidRange(offset, offset, "negative log offset")
        out: list[Record] = []
        with self._tlock:
            self._usable()
            end = self._tail()
            if offset >= end:
                return out
            total = 0
            off = offset
            expected: bytes | None = None
            if verify:
                expected = self._anchor(off)
            while off < end and (total < max_bytes or not out):
                seg, local = self._locate(off)
                limit = min(end, seg.first + seg.count)
                while off < limit and (total < max_bytes or not out):
                    f = self._frame(seg, local)
                    payload = F.decode_payload(f)
                    if expected is not None:
                        if f.prev != expected:
                            raise ChainBroken(off, "record does not link to the chain before it")
                        expected = F.chain(expected, F.KIND_DATA, payload)
                    out.append(Record(off, payload))
                    total += len(payload)
                    off += 1
                    local += 1
                if verify and off < end and off == seg.first + seg.count:
                    nseg, _ = self._locate(off)
                    ck = self._checkpoint(nseg, 0)
                    if ck.prev != expected:
                        raise ChainBroken(off, f"segment {nseg.num} does not continue the "
                                          "chain of the one before it")
            if expected is not None:
                self._vcache = (off, expected)
            return out

    def wait_for(self, offset: int, timeout: float | None = None) -> int:
        """Block until the record at ``offset`` has been appended (in any process) and
        return the end of the log as then known (greater than ``offset``). Waits park on the
        segment's live index, a shmstore resource: no polling, no CPU while parked.

        Raises:
            TimeoutError: ``timeout`` seconds passed.
            WriterDied: no writer is appending and the record is not there (a writer that
                opens the log later takes it over; wait again then).
        """
        if offset < 0:
            raise InvalidRange(offset, offset, "negative log offset")
        deadline = None if timeout is None else time.monotonic() + timeout
        retried_live = False
        while True:
            with self._tlock:
                self._usable()
                end = self._tail()
                if offset < end:
                    return end
                nums = self._nums
                seg = self._segment(nums[-1])
                live = seg.live
            if live is None:
                if self._writer_alive():
                    # a new writer between removing its predecessor's live index and
                    # creating its own: a short window, re-checked each millisecond
                    if deadline is not None and time.monotonic() >= deadline:
                        raise TimeoutError(f"record {offset} of {self._dir} did not arrive")
                    time.sleep(0.001)
                    with self._tlock:
                        self._drop_live(seg)
                    continue
                raise WriterDied("no writer is appending to this log", self._dir)
            local = offset - seg.first
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                got = live.wait_range(8 * local, 8 * local + 8, timeout=remaining)
            except WriterDied:
                with self._tlock:
                    self._drop_live(seg)
                if not self._writer_alive():
                    if retried_live:
                        raise
                    retried_live = True  # a writer may have replaced it: look once more
                else:
                    time.sleep(0.001)  # a new writer still recovering, before its live index
                continue
            except (ResourceNotFound, ResourceClosed):
                with self._tlock:
                    self._drop_live(seg)
                continue
            if got is WaitOutcome.EOF:
                with self._tlock:  # rotated: the next segment exists already
                    self._refresh_segments(force=True)
            retried_live = False

    def follow(self, offset: int = 0, *, timeout: float | None = None,
               verify: bool = True, max_bytes: int = 1 << 20) -> Iterator[Record]:
        """Yield records from ``offset`` on, forever, waiting for each as it is appended
        (``timeout`` bounds each wait: ``TimeoutError``). Ends with ``WriterDied`` when no
        writer is left and the log is read to its end."""
        while True:
            recs = self.read_from(offset, max_bytes, verify=verify)
            if not recs:
                self.wait_for(offset, timeout)
                continue
            yield from recs
            offset = recs[-1].offset + 1

    def verify(self) -> tuple[int, bytes | None]:
        """Check the whole log from genesis: every segment's index against its data, every
        record's CRC, offset and chain link, every checkpoint. Returns ``(record count,
        chain head)``; raises the specific ``LogCorrupt`` error of the first problem."""
        with self._tlock:
            self._usable()
            end = self._tail()
            expected = F.ZERO_HASH
            off = 0
            for num in list(self._nums):
                seg = self._segment(num)
                if seg.first != off:
                    raise RecordMissing(off, f"segment {num} starts at {seg.first}")
                ck0 = F.parse_frame(self._view(seg, F.CHECKPOINT_FRAME), 0, F.CHECKPOINT_FRAME,
                                    self._max)
                if ck0.kind != F.KIND_CHECKPOINT or ck0.prev != expected:
                    raise ChainBroken(off, f"segment {num} does not continue the chain")
                limit = min(end, seg.first + seg.count)
                frames = self._scan(seg, limit - seg.first)
                for i, f in enumerate(frames):
                    if f.kind == F.KIND_CHECKPOINT:
                        if f.prev != expected:
                            raise ChainBroken(f.offset, "a checkpoint disagrees with the chain")
                        continue
                    if f.offset != off:
                        self._misplaced(off, frames[i:])
                    if f.prev != expected:
                        raise ChainBroken(off, "record does not link to the chain before it")
                    expected = F.chain(expected, F.KIND_DATA, F.decode_payload(f))
                    off += 1
                if off != limit:
                    raise RecordMissing(off, f"segment {num} ends early")
            return off, (expected if off else None)

    def _check(self) -> None:
        """The invariants (tests call it after mutations; crash tests on what survived):
        ``verify()`` holds; and for a writer, its next offset and chain head are the
        log's, the active segment's index file, live index and frames agree entry for
        entry, and nothing but zeros follows its last frame."""
        count, head = self.verify()
        if not self._writer:
            return
        assert (count, head) == (self._next, self._head if self._next else None), (
            count, head, self._next)
        seg = self._active
        n = self._next - seg.first
        idx = self._io.pread(self._idx_fd, self._io.size(self._idx_fd), 0)
        assert len(idx) == F.IDX_HEADER.size + 8 * n, (len(idx), n)
        assert F.unpack_idx_header(idx) == (seg.num, seg.first)
        assert seg.live is not None
        assert seg.live.ranges() == ([(0, 8 * n)] if n else []), seg.live.ranges()
        assert bytes(seg.live.view(0, 8 * n)) == idx[F.IDX_HEADER.size:]
        frames = self._scan(seg, n)
        end = frames[-1].end if frames else F.CHECKPOINT_FRAME
        assert end == self._pos, (end, self._pos)
        size = self._io.size(seg.data_fd)
        assert _nonzero_extent(self._io.map(seg.data_fd, size), self._pos) == 0

    def _scan(self, seg: _Segment, count: int) -> list[F.Frame]:
        """Every frame of the segment's first ``count`` records, in file order, each
        checked against the index."""
        frames: list[F.Frame] = []
        pos, n = 0, 0
        view = self._view(seg, self._record_end(seg, count - 1) if count else F.CHECKPOINT_FRAME)
        limit = len(view)
        while n < count:
            f = _parse_stored(view, pos, self._max, limit)
            frames.append(f)
            if f.kind == F.KIND_DATA:
                at = self._position(seg, n)
                if at != pos:
                    raise LogCorrupt(f"segment {seg.num}: index entry {n} is {at}, "
                                     f"the record is at {pos}")
                n += 1
            pos = f.end
        return frames

    def _misplaced(self, off: int, rest: list[F.Frame]) -> None:
        if any(f.offset == off and f.kind == F.KIND_DATA for f in rest):
            raise RecordOutOfOrder(off, "another record stands in its place")
        raise RecordMissing(off, "not where it must be")

    # ---------------------------------------------------------------- cursors
    def cursor(self, name: str) -> Cursor:
        """The named consumer cursor (created at offset 0 on first use). It is a file of the
        log's, so it survives the consumer's restarts."""
        if not isinstance(name, str) or not _CURSOR_RE.match(name):
            raise InvalidName(name, "a cursor name is 1-128 of [A-Za-z0-9._-]")
        self._usable()
        return Cursor(self, name)

    def cursors(self) -> dict[str, int]:
        """Every named cursor and its offset."""
        self._usable()
        d = os.path.join(self._dir, "cursors")
        out = {}
        for n in sorted(os.listdir(d)):
            if _CURSOR_RE.match(n):
                out[n] = Cursor(self, n).offset
        return out

    # ---------------------------------------------------------------- introspection
    def inspect(self) -> dict[str, Any]:
        """What ``shmstore log inspect`` shows: settings, segments, records, writer, cursors."""
        with self._tlock:
            self._usable()
            end = self._tail()
            segs = []
            for num in self._nums:
                seg = self._segment(num)
                size = os.stat(self._seg_path(num) + ".seg").st_size
                segs.append({"segment": num, "first": seg.first, "records": seg.count,
                             "sealed": seg.sealed, "bytes": size if seg.sealed else
                             (self._record_end(seg, seg.count - 1) if seg.count else
                              F.CHECKPOINT_FRAME)})
            s = self._settings
            head = self.latest_chain_hash
            return {"path": self._dir, "backend": self._kind, "records": end,
                    "chain_head": head.hex() if head else None,
                    "writer_alive": self._writer_alive(), "segments": segs,
                    "segment_size": s.segment_size, "checkpoint_every": s.checkpoint_every,
                    "max_record": s.max_record, "compress": s.compress,
                    "cursors": self.cursors()}

    # ---------------------------------------------------------------- internals
    def _usable(self) -> None:
        if self._closed:
            raise ResourceClosed(f"log {self._dir} is closed")
        if self._pid != os.getpid():
            self._drop_inherited()

    def _writer_alive(self) -> bool:
        if self._writer and not self._closed:
            return True
        return locks.probe(self._log_fd, _WRITER_BYTE)

    def _seg_path(self, k: int) -> str:
        return os.path.join(self._dir, _seg_name(k))

    def _refresh_segments(self, force: bool = False) -> list[int]:
        if self._nums and not force:
            return self._nums
        nums = _list_segments(self._dir)
        if not nums:
            raise LogCorrupt(f"{self._dir}: a log without segments")
        if nums != list(range(nums[0], nums[0] + len(nums))) or nums[0] != 0:
            raise LogCorrupt(f"{self._dir}: segments {nums[:3]}... are not numbered 0, 1, ...")
        firsts = self._firsts[:len(self._nums)] if nums[:len(self._nums)] == self._nums else []
        for k in nums[len(firsts):]:
            firsts.append(self._first_of(k))
        # a segment that is no longer the last one is sealed now
        for k, seg in list(self._segs.items()):
            if not seg.sealed and k != nums[-1] and not (self._writer and seg is self._active):
                self._close_segment(seg)
                del self._segs[k]
        self._nums, self._firsts = nums, firsts
        return nums

    def _first_of(self, k: int) -> int:
        if k in self._segs:
            return self._segs[k].first
        raw = self._read(self._seg_path(k) + ".seg", F.CHECKPOINT_FRAME)
        f = F.parse_frame(memoryview(raw), 0, len(raw), self._max)
        if f.kind != F.KIND_CHECKPOINT:
            raise LogCorrupt(f"{self._dir}: segment {k} does not start with a checkpoint")
        return f.offset

    def _segment(self, k: int) -> _Segment:
        seg = self._segs.get(k)
        if seg is not None:
            if seg.sealed:
                self._segs[k] = self._segs.pop(k)  # most recently used last
            elif seg.live is None and not self._writer:
                self._attach_active(seg)
            return seg
        if k != self._nums[-1]:
            seg = self._sealed(k)
        else:
            seg = _Segment(k, self._firsts[self._nums.index(k)])
            self._segs[k] = seg
            self._attach_active(seg)
        return seg

    def _sealed(self, k: int) -> _Segment:
        cached = self._segs.get(k)
        if cached is not None and cached.sealed:
            self._segs[k] = self._segs.pop(k)  # most recently used last
            return cached
        sealed = [n for n, x in self._segs.items() if x.sealed]
        for n in sealed[:max(0, len(sealed) - _OPEN_SEALED + 1)]:
            # a bounded number stay mapped; views already handed out keep theirs alive
            self._close_segment(self._segs.pop(n))
        path = self._seg_path(k)
        raw = self._read(path + ".idx")
        data_fd = self._io.open(path + ".seg")
        try:
            seg = _Segment(k, 0, sealed=True, data_fd=data_fd)
            num, seg.first = F.unpack_idx_header(raw)
            seg.count, seg.head = F.unpack_idx_trailer(raw)
            if num != k:
                raise LogCorrupt(f"{path}.idx: index of segment {num}")
            seg.entries = F.idx_entries(raw, seg.count)
            # validated against the file: positions rise, the first and last records are
            # where the index says, and the last one ends where the file does
            size = self._io.size(data_fd)
            seg.view = self._io.map(data_fd, size)
            e = seg.entries
            if any(e[i] >= e[i + 1] for i in range(len(e) - 1)):
                raise LogCorrupt(f"{path}.idx: positions do not rise")
            if seg.count:
                fl = self._frame(seg, seg.count - 1)
                ff = self._frame(seg, 0)
                if fl.end != size or ff.offset != seg.first:
                    raise LogCorrupt(f"{path}.idx disagrees with {path}.seg")
        finally:
            os.close(data_fd)  # immutable and mapped whole: the mapping is all we need
            seg.data_fd = -1
        self._segs[k] = seg
        return seg

    def _attach_active(self, seg: _Segment) -> None:
        try:
            seg.live = _res.open(_live_name(self._inst, seg.num))
            seg.live_ino = os.fstat(seg.live._ctrl_fd).st_ino
        except ResourceNotFound:
            seg.live = None
        if seg.data_fd < 0:
            seg.data_fd = self._io.open(self._seg_path(seg.num) + ".seg")

    def _live_replaced(self, seg: _Segment) -> bool:
        """True when the segment's live index name now leads to another object, or to
        none (one ``stat``)."""
        try:
            now = os.stat(_live_control(self._inst, seg.num)).st_ino
        except FileNotFoundError:
            return True
        return now != seg.live_ino

    def _drop_live(self, seg: _Segment) -> None:
        if seg.live is not None and not self._writer:
            seg.live.close()
            seg.live = None
        self._refresh_segments(force=True)

    def _close_segment(self, seg: _Segment) -> None:
        if seg.live is not None:
            seg.live.close()
            seg.live = None
        if seg.data_fd >= 0:
            os.close(seg.data_fd)
            seg.data_fd = -1
        seg.view = memoryview(b"")

    def _tail(self) -> int:
        """The end of the log: the offset after the last complete record published."""
        if self._writer:
            return self._next
        nums = self._refresh_segments()
        while True:
            seg = self._segment(nums[-1])
            if seg.live is not None:
                r = seg.live.ranges()
                n = r[0][1] // 8 if r and r[0][0] == 0 else 0
                if n > seg.count:
                    seg.entries = seg.live.view(0, 8 * n).cast("Q")
                    seg.count = n
                elif not self._writer and not seg.live.writers_alive():
                    if self._live_replaced(seg):
                        # a new writer made its own live index: use that
                        self._drop_live(seg)
                        nums = self._nums
                        continue
                    # its writer died, perhaps before filling it: the index file, checked
                    self._count_from_index(seg)
                if seg.live.status.state is State.COMMITTED:
                    # rotated since we looked: the next segment exists
                    nums2 = self._refresh_segments(force=True)
                    if nums2[-1] != nums[-1]:
                        nums = nums2
                        continue
            else:
                # no writer: one may have come, rotated and gone since we listed
                nums2 = self._refresh_segments(force=True)
                if nums2[-1] != nums[-1]:
                    nums = nums2
                    continue
                self._count_from_index(seg)
            return seg.first + seg.count

    def _read(self, path: str, size: int = -1) -> bytes:
        """The first ``size`` bytes of a file of the log (all of it by default)."""
        fd = self._io.open(path)
        try:
            return self._io.pread(fd, self._io.size(fd) if size < 0 else size, 0)
        finally:
            self._io.close(fd)

    def _count_from_index(self, seg: _Segment) -> None:
        """No live index (no writer since the machine started, or it closed): the index
        file's entries, served only as far as each one leads to the record it should."""
        seg.entries = F.idx_entries(self._read(self._seg_path(seg.num) + ".idx"))
        for n in range(seg.count, len(seg.entries)):
            try:
                self._frame(seg, n)
            except LogCorrupt:
                return
            seg.count = n + 1

    def _locate(self, offset: int) -> tuple[_Segment, int]:
        i = bisect.bisect_right(self._firsts, offset) - 1
        seg = self._segment(self._nums[i])
        return seg, offset - seg.first

    def _view(self, seg: _Segment, need: int) -> memoryview:
        if len(seg.view) < need:
            if seg.sealed:
                raise RecordCorrupt(need, f"segment {seg.num} is shorter than its index says")
            while True:
                size = self._io.size(seg.data_fd)
                if size < need:
                    raise RecordCorrupt(need, f"segment {seg.num} is shorter than its index "
                                        "says")
                try:
                    seg.view = self._io.map(seg.data_fd, size)
                    break
                except StorageError:
                    if self._io.size(seg.data_fd) >= size:
                        raise
                    # a rotation cut the file to its last record meanwhile: measure again
        return seg.view

    def _position(self, seg: _Segment, local: int) -> int:
        """Where record ``local`` of the segment starts (from the sealed index, or the live
        index as far as it is published)."""
        if seg.entries is None or local >= len(seg.entries):
            if seg.live is None or local < 0:
                raise RecordMissing(seg.first + local, "beyond the segment's index")
            seg.entries = seg.live.view(0, 8 * (local + 1)).cast("Q")
        return int(seg.entries[local])

    def _record_end(self, seg: _Segment, local: int) -> int:
        pos = self._position(seg, local)
        view = self._view(seg, pos + F.HEADER.size)
        n: int = struct.unpack_from("<I", view, pos + 8)[0]
        return pos + F.FRAME_OVERHEAD + n

    def _frame(self, seg: _Segment, local: int) -> F.Frame:
        """The data frame of record ``local`` of the segment, CRC-checked, its offset too."""
        pos = self._position(seg, local)
        view = self._view(seg, pos + F.FRAME_OVERHEAD)
        (n,) = struct.unpack_from("<I", view, pos + 8)
        if n <= self._max + (self._max >> 3) + 64:
            view = self._view(seg, pos + F.FRAME_OVERHEAD + n)
        f = _parse_stored(view, pos, self._max)
        want = seg.first + local
        if f.kind != F.KIND_DATA:
            raise RecordCorrupt(pos, "the index leads to a checkpoint, not a record")
        if f.offset != want:
            rest: list[F.Frame] = []
            p = pos
            with contextlib.suppress(LogCorrupt):
                while True:
                    g = F.parse_frame(view, p, len(view), self._max)
                    rest.append(g)
                    p = g.end
            self._misplaced(want, rest)
        return f

    def _checkpoint(self, seg: _Segment, local: int) -> F.Frame:
        pos = self._position(seg, local) - F.CHECKPOINT_FRAME
        view = self._view(seg, pos + F.CHECKPOINT_FRAME)
        try:
            f = F.parse_frame(view, pos, pos + F.CHECKPOINT_FRAME, self._max)
        except TornRecord as exc:
            raise RecordCorrupt(pos, f"no checkpoint before record {seg.first + local}"
                                ) from exc
        if f.kind != F.KIND_CHECKPOINT or f.offset != seg.first + local:
            raise RecordCorrupt(pos, f"no checkpoint before record {seg.first + local}")
        return f

    def _anchor(self, offset: int) -> bytes:
        """The chain hash before ``offset``, from a trusted anchor, checking the records in
        between."""
        if self._vcache is not None and self._vcache[0] == offset:
            return self._vcache[1]
        seg, local = self._locate(offset)
        a = local - local % self._every
        expected = self._checkpoint(seg, a).prev
        for i in range(a, local):
            f = self._frame(seg, i)
            if f.prev != expected:
                raise ChainBroken(seg.first + i, "record does not link to its checkpoint")
            expected = F.chain(expected, F.KIND_DATA, F.decode_payload(f))
        return expected

    def _drop_inherited(self) -> None:
        """In a forked child: a writer handle is the parent's (its claim is closed here);
        a reader re-opens what it needs on its next use."""
        # another thread of the parent may have held the lock at the fork: it never will
        # release it here
        self._tlock = threading.RLock()
        for seg in self._segs.values():
            if seg.data_fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(seg.data_fd)
                seg.data_fd = -1
            seg.view = memoryview(b"")
            seg.live = None
        self._segs.clear()
        self._nums, self._firsts = [], []
        if self._writer:
            with contextlib.suppress(OSError):
                os.close(self._idx_fd)
            with contextlib.suppress(OSError):
                os.close(self._log_fd)
            self._log_fd = -1
            self._closed = True
        self._pid = os.getpid()

    # ---------------------------------------------------------------- closing
    def close(self) -> None:
        """Close the handle (idempotent). A writer's close removes its live index from
        shared memory (readers parked on it see ``WriterDied``; the files keep every
        record) and frees the writer claim."""
        with self._tlock:
            if self._closed:
                return
            self._closed = True
            self._release()

    def _release(self) -> None:
        if self._writer and self._pid == os.getpid():
            active = getattr(self, "_active", None)
            if active is not None and active.live is not None:
                with contextlib.suppress(StorageError):
                    active.live.unlink()
            idx = getattr(self, "_idx_fd", -1)
            if idx >= 0:
                with contextlib.suppress(OSError):
                    os.close(idx)
                self._idx_fd = -1
        for seg in list(self._segs.values()):
            self._close_segment(seg)
        self._segs.clear()
        if getattr(self, "_log_fd", -1) >= 0:
            with contextlib.suppress(OSError):
                os.close(self._log_fd)
            self._log_fd = -1
        self._closed = True

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if not self._closed and self._pid == os.getpid():
                self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("writer" if self._writer else "reader")
        return f"<shmstore.Log {self._dir!r} {self._kind} {state}>"

    def __reduce__(self) -> tuple[Any, ...]:
        if self._writer:
            raise TypeError("a log's writer handle cannot be pickled; pickle a reader")
        return (_reopen, (self._kind, self._name, self._dir))


def _reopen(kind: str, name: str | None, directory: str) -> Log:
    if kind == "shm" and name is not None:
        return Log.open(name)
    return Log.open(path=directory)


class Cursor:
    """A named consumer position in a log, kept in a file of the log (written to a temp
    file, synced and renamed: a crash leaves the old or the new value, never a torn one)."""

    def __init__(self, log: Log, name: str) -> None:
        self._log = log
        self.name = name
        self._path = os.path.join(log.path, "cursors", name)

    @property
    def offset(self) -> int:
        """The committed offset (0 if never committed)."""
        try:
            with open(self._path, "rb") as f:
                raw = f.read(_CURSOR.size + 1)
        except FileNotFoundError:
            return 0
        if len(raw) != _CURSOR.size:
            raise LogCorrupt(f"cursor {self.name!r}: {len(raw)} bytes")
        magic, off, crc = _CURSOR.unpack(raw)
        if magic != b"SLCU" or zlib.crc32(raw[:16]) != crc:
            raise LogCorrupt(f"cursor {self.name!r} fails its check")
        return int(off)

    def commit(self, offset: int) -> None:
        """Record ``offset`` (the next record this consumer wants) durably."""
        if not isinstance(offset, int) or offset < 0:
            raise InvalidRange(0, offset if isinstance(offset, int) else 0,
                               "a cursor offset is a non-negative int")
        raw = _CURSOR.pack(b"SLCU", offset, 0)
        raw = _CURSOR.pack(b"SLCU", offset, zlib.crc32(raw[:16]))
        io = self._log._io
        _write_whole(io, self._path, raw)
        io.fsync_dir(os.path.dirname(self._path))

    def __repr__(self) -> str:
        return f"<Cursor {self.name!r} of {self._log.path!r}>"


# -------------------------------------------------------------------- helpers
def _where(name: str | None, path: str | os.PathLike[str] | None, backend: str | None,
           io: FileIO | None) -> tuple[str, str, FileIO]:
    if backend is None:
        backend = "mmap" if path is not None else "shm"
    if backend == "shm":
        if name is None or path is not None:
            raise ValueError("a shared-memory log takes a name (and no path)")
        return "shm", _shm_dir(name), io or FileIO(durable=False)
    if backend == "mmap":
        if path is None or name is not None:
            raise ValueError("a log on disk takes a path (and no name)")
        return "mmap", os.path.abspath(os.fspath(path)), io or FileIO(durable=True)
    raise ValueError(f"backend must be 'shm' or 'mmap', not {backend!r}")


def _list_segments(directory: str) -> list[int]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        raise ResourceNotFound(f"no log at {directory}") from None
    return sorted(int(m.group(1)) for n in names if (m := _SEG_RE.match(n)))


def _write_whole(io: FileIO, path: str, data: bytes) -> None:
    # "~" is in no cursor name, so a temp file is never listed as a cursor
    tmp = os.path.join(os.path.dirname(path), f".~{os.path.basename(path)}.{uuid.uuid4().hex[:8]}")
    fd = io.open(tmp, create=True)
    try:
        io.pwrite(fd, data, 0)
        io.fsync(fd)
    finally:
        io.close(fd)
    try:
        io.rename(tmp, path)
    except BaseException:
        io.unlink(tmp)
        raise


def _make_segment(io: FileIO, directory: str, settings: F.Settings, k: int, first: int,
                  head: bytes, *, keep_open: bool = False) -> tuple[int, int]:
    """Create segment ``k`` whole: its index header and first checkpoint, synced under temp
    names and renamed (the index first: a segment never lacks its index)."""
    path = os.path.join(directory, _seg_name(k))
    suffix = f".tmp-{uuid.uuid4().hex[:8]}"
    idx = io.open(path + ".idx" + suffix, create=True)
    data = -1
    try:
        io.pwrite(idx, F.pack_idx_header(k, first), 0)
        io.fsync(idx)
        data = io.open(path + ".seg" + suffix, create=True)
        io.pwrite(data, F.encode_checkpoint(first, head, k), 0)
        io.truncate(data, settings.segment_size + F.CHECKPOINT_FRAME)
        io.fsync(data)
        io.rename(path + ".idx" + suffix, path + ".idx")
        io.rename(path + ".seg" + suffix, path + ".seg")
    except BaseException:
        io.close(idx)
        if data >= 0:
            io.close(data)
        io.unlink(path + ".idx" + suffix)
        io.unlink(path + ".seg" + suffix)
        raise
    if keep_open:
        return data, idx
    io.close(idx)
    io.close(data)
    return -1, -1


def _parse_stored(view: memoryview, pos: int, max_record: int, limit: int = -1) -> F.Frame:
    """A frame the index says is complete: one that runs past the bytes is damaged
    (a flipped length, say), not torn."""
    try:
        return F.parse_frame(view, pos, len(view) if limit < 0 else limit, max_record)
    except TornRecord as exc:
        raise RecordCorrupt(pos, f"a stored record that {exc.why}") from exc


def _nonzero_extent(view: memoryview, start: int) -> int:
    """How far past ``start`` the last non-zero byte of ``view`` lies (0: all zeros)."""
    chunk, last = 1 << 20, 0
    zeros = bytes(chunk)
    for lo in range(start, len(view), chunk):
        part = view[lo:lo + chunk]
        if part != zeros[:len(part)]:
            last = lo + len(bytes(part).rstrip(b"\0")) - start
    return last


def _unlink_live(instance: bytes, k: int) -> None:
    try:
        r = _res.open(_live_name(instance, k))
    except (ResourceNotFound, LogCorrupt, StorageError):
        return
    try:
        r.unlink()
    finally:
        r.close()


def _reap_dead_creations(directory: str) -> None:
    """Remove the half-made logs of creators of ``directory`` that died (their claim, a
    ``flock`` on the temp directory, is free), and only those."""
    parent = os.path.dirname(os.path.abspath(directory)) or "."
    prefix = os.path.basename(directory) + _CREATING
    try:
        names = [n for n in os.listdir(parent) if n.startswith(prefix)]
    except OSError:
        return
    for n in names:
        path = os.path.join(parent, n)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(path).st_ino == os.fstat(fd).st_ino:  # not renamed meanwhile
                _rmtree(path)
        except OSError:
            pass  # a live creator holds it, or it went away
        finally:
            os.close(fd)


def _rmtree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
