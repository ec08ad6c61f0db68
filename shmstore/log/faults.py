"""Fault injection under a log's real files, for tests: ``FaultIO``, a ``FileIO`` that does
every operation on the real files and keeps beside them a model of what a disk would have
kept, so a test can pull the plug (``crash()``) and reopen what a machine would find.

Theory of operation
===================

What is durable is tracked per file (per inode, so a rename moves a file's history with it;
a file created gets a new identity even if the file system reuses an inode number) and per
directory:

* a file's **durable shadow**: its bytes as of its last successful ``fsync``, or as first
  seen (a file this layer meets already existing is taken as durable: what a disk held
  before the test is on the disk); a file created through this layer starts empty;
* its **pending** operations: every ``pwrite`` (offset, bytes) and ``truncate`` (size)
  since then, in issue order; ``fsync`` makes the file's real bytes its new shadow;
* a directory's **durable names** (name -> inode, as first seen or as of its last
  ``fsync_dir``) and its pending name operations: create (``open(create=True)``),
  ``rename``, ``unlink``.

The real files always hold everything (all operations applied), so a process that does not
crash sees exactly what the OS would show it.

Faults (``FaultConfig``; every probability is per operation, drawn from one
``random.Random(seed)``, so a seed replays a trial exactly when the caller is deterministic):

``torn_write``
    the ``pwrite`` writes a random prefix of its bytes (possibly none), then the layer raises
    ``SimulatedCrash``: the machine died during the write.
``power_cut``
    ``SimulatedCrash`` before a mutating operation (open, pwrite, truncate, fsync,
    fsync_dir, rename, unlink) runs: the machine died between two operations.
``fsync_fail`` / ``fsync_dir_fail``
    ``fsync`` raises ``StorageError`` (what ``FileIO`` maps an ``EIO`` to) and the file's
    unsynced writes are dropped, as Linux does (the "fsyncgate" behaviour: the pages are
    marked clean, a retry succeeds and lies): a random subset of the pending operations made
    it to the disk before the error, the rest is lost, and the real file is rewritten to
    that. A failed ``fsync_dir`` leaves the directory's operations pending.
``bit_flip``
    ``map()`` returns a private copy of the bytes with one random bit flipped (a read error;
    the stored bytes stay intact, a later map may read them right); ``flip_from`` and
    ``flip_to`` narrow where.
``delay``
    a random sleep of up to ``max_delay_us`` microseconds before a ``pwrite`` or ``fsync``.

``crash()`` is the power cut itself (call it after ``SimulatedCrash``, after a failed
fsync broke the writer, or at any moment; close the log handles first): every tracked file
is rewritten to its durable shadow plus a random subset of its pending operations (each
survives with probability ``survive``), applied in a random order when ``reorder`` (the
disk's elevator), each surviving write cut to a random prefix with probability
``tear_at_crash``. Directories model a journaling file system: a random *prefix* of each
directory's pending name operations survives (so a rename not followed by an ``fsync_dir``
may be undone, a created file may vanish, an unlinked one come back). Files come back as
new inodes. After ``crash()`` (or a ``SimulatedCrash``) every operation but ``close``
raises ``SimulatedCrash``: the machine is down; reopen with a plain ``FileIO``.

A power cut also empties ``/dev/shm``: ``drop_live_objects(path)`` removes a log's live
indexes (not ``Log.remove``, which deletes the log).

Not modelled: what the log does without ``FileIO`` (its directory's ``mkdir`` and the
rename that publishes a new log, the ``LOG`` file's lock and reads, cursor reads); sector
granularity (a tear cuts at any byte, which is harsher); writes that reach the disk out of
order *within* one ``pwrite`` other than as a prefix; metadata ordering across directories
(each directory's journal is its own); a failing ``pread`` or ``open``; bit flips in
``pread`` (only ``map``); the page cache of other processes (the layer is one process's).
A failed fsync rewrites the file in place, possibly shorter: a handle of this process
mapping it past the new end would fault (SIGBUS), so give a ``FaultIO`` with fsync faults
to a writer only (readers: a plain ``FileIO``, or a ``FaultIO`` for bit flips).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import stat
import threading
import time
from dataclasses import dataclass, field

from ..errors import StorageError
from . import format as F
from .fileio import FileIO

__all__ = ["FaultConfig", "FaultIO", "SimulatedCrash", "drop_live_objects"]


class SimulatedCrash(BaseException):
    """The simulated machine died. A ``BaseException``, so no ``except Exception`` in the
    code under test can swallow it; the test catches it and calls ``FaultIO.crash()``."""


@dataclass(frozen=True)
class FaultConfig:
    """Per-operation fault probabilities, and what a crash keeps (see the module doc)."""

    torn_write: float = 0.0
    power_cut: float = 0.0
    fsync_fail: float = 0.0
    fsync_dir_fail: float = 0.0
    bit_flip: float = 0.0
    flip_from: int = 0  # a flipped bit lies in bytes [flip_from, flip_to) of the map
    flip_to: int | None = None  # (None: its end)
    delay: float = 0.0
    max_delay_us: int = 200
    survive: float = 0.5  # a pending write or truncate reaches the disk at a crash
    reorder: bool = True  # surviving pending operations land in a random order
    tear_at_crash: float = 0.25  # a surviving pending write is cut to a random prefix
    real_fsync: bool = False  # also fsync the real files (slow; the model does not need it)


Key = tuple[int, int]  # (st_dev, st_ino)
FileId = int  # a file this layer knows; a new one per created file (inode numbers get reused)


@dataclass
class _File:
    durable: bytes
    pending: list[tuple[str, int, bytes]] = field(default_factory=list)  # ("w"|"t", off, data)


@dataclass
class _Dir:
    fd: int  # the directory itself, whatever it is called by the time of the crash
    durable: dict[str, FileId]
    pending: list[tuple[str, str, str | FileId]] = field(default_factory=list)
    names: set[str] = field(default_factory=set)  # every name this layer has known here


def _key(st: os.stat_result) -> Key:
    return (st.st_dev, st.st_ino)


def _apply(buf: bytearray, op: tuple[str, int, bytes]) -> None:
    kind, off, data = op
    if kind == "t":
        if off < len(buf):
            del buf[off:]
        else:
            buf.extend(bytes(off - len(buf)))
        return
    if off > len(buf):
        buf.extend(bytes(off - len(buf)))
    buf[off:off + len(data)] = data


class FaultIO(FileIO):
    """A ``FileIO`` that injects the faults of ``config`` (none while ``armed`` is False)
    and can simulate a power cut (``crash()``). One per simulated machine session; give it
    to ``Log.create(..., _io=)`` / ``Log.open(..., _io=)``."""

    def __init__(self, seed: int | str = 0, config: FaultConfig | None = None, *,
                 armed: bool = True) -> None:
        super().__init__(durable=True)
        self.seed = seed
        self.config = config or FaultConfig()
        self.armed = armed
        self.rng = random.Random(seed)
        self.down: str | None = None  # why the machine is down (then every op crashes)
        self.ops = 0  # mutating operations seen
        self.events: list[str] = []  # what fired, for a failing test's message
        self.flips: list[tuple[FileId, int]] = []  # (file, bit) of every flipped bit
        self._ids: dict[Key, FileId] = {}  # what each inode is now
        self._keys: dict[FileId, Key] = {}
        self._files: dict[FileId, _File] = {}  # the files whose bytes are tracked
        self._dirs: dict[Key, _Dir] = {}
        self._lock = threading.RLock()
        self._crashed = False

    # ------------------------------------------------------------------ bookkeeping
    def _note(self, what: str) -> None:
        self.events.append(what)
        del self.events[:-200]

    def _chance(self, p: float) -> bool:
        return self.armed and p > 0 and self.rng.random() < p

    def _die(self, why: str) -> SimulatedCrash:
        self.down = why
        self._note(f"crash: {why}")
        return SimulatedCrash(why)

    def _alive(self) -> None:
        if self.down is not None:
            raise SimulatedCrash(f"the machine is down ({self.down})")

    def _op(self, what: str) -> None:
        """A mutating operation is about to run: the power may go first."""
        self._alive()
        self.ops += 1
        if self._chance(self.config.power_cut):
            raise self._die(f"power cut before op {self.ops} ({what})")

    def _delay(self) -> None:
        if self._chance(self.config.delay):
            time.sleep(self.rng.randrange(self.config.max_delay_us + 1) / 1e6)

    def _dir(self, path: str) -> _Dir:
        """The directory a file ``path`` is in."""
        return self._dir_itself(os.path.dirname(os.path.abspath(path)) or "/")

    def _dir_itself(self, path: str) -> _Dir:
        k = _key(os.stat(path))
        d = self._dirs.get(k)
        if d is None:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            d = _Dir(fd, self._listing(fd))
            d.names.update(d.durable)
            self._dirs[k] = d
        return d

    def _id(self, k: Key, *, new: bool = False) -> FileId:
        i = self._ids.get(k)
        if i is None or new:
            i = self._ids[k] = len(self._keys)
            self._keys[i] = k
        return i

    @staticmethod
    def _keys_in(dfd: int) -> dict[str, Key]:
        out = {}
        for n in os.listdir(dfd):
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(n, dir_fd=dfd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    out[n] = _key(st)
        return out

    def _listing(self, dfd: int) -> dict[str, FileId]:
        return {n: self._id(k) for n, k in self._keys_in(dfd).items()}

    def _file_fd(self, fd: int) -> tuple[FileId, _File]:
        i = self._id(_key(os.fstat(fd)))
        f = self._files.get(i)
        if f is None:  # first seen: what it holds now is on the disk
            f = self._files[i] = _File(os.pread(fd, os.fstat(fd).st_size, 0))
        return i, f

    def _file_path(self, path: str) -> FileId:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            return self._file_fd(fd)[0]
        finally:
            os.close(fd)

    def _survivors(self, f: _File, survive: float) -> bytearray:
        """The durable shadow with what of the pending operations reached the disk."""
        cfg, rng = self.config, self.rng
        buf = bytearray(f.durable)
        ops = [op for op in f.pending if rng.random() < survive]
        if cfg.reorder:
            rng.shuffle(ops)
        for kind, off, data in ops:
            if kind == "w" and data and rng.random() < cfg.tear_at_crash:
                data = data[:rng.randrange(len(data))]
            _apply(buf, (kind, off, data))
        return buf

    # ------------------------------------------------------------------ FileIO
    def open(self, path: str, *, create: bool = False, writable: bool = False,
             mode: int = 0o600) -> int:
        with self._lock:
            self._op(f"{'create' if create else 'open'} {os.path.basename(path)}")
            d = self._dir(path)
            fd = super().open(path, create=create, writable=writable, mode=mode)
            try:
                if create:
                    k = self._id(_key(os.fstat(fd)), new=True)
                    self._files[k] = _File(b"")
                    name = os.path.basename(path)
                    d.pending.append(("link", name, k))
                    d.names.add(name)
                else:
                    self._file_fd(fd)
            except BaseException:
                os.close(fd)
                raise
            return fd

    def close(self, fd: int) -> None:
        super().close(fd)  # passes even when the machine is down: the process is ending

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
        with self._lock:
            self._op("pwrite")
            self._delay()
            _k, f = self._file_fd(fd)
            raw = bytes(data)
            if self._chance(self.config.torn_write):
                cut = self.rng.randrange(len(raw)) if raw else 0
                super().pwrite(fd, raw[:cut], offset)
                f.pending.append(("w", offset, raw[:cut]))
                raise self._die(f"torn write: {cut} of {len(raw)} bytes at {offset}")
            super().pwrite(fd, raw, offset)
            f.pending.append(("w", offset, raw))

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        self._alive()
        return super().pread(fd, size, offset)

    def size(self, fd: int) -> int:
        self._alive()
        return super().size(fd)

    def truncate(self, fd: int, size: int) -> None:
        with self._lock:
            self._op("truncate")
            _k, f = self._file_fd(fd)
            super().truncate(fd, size)
            f.pending.append(("t", size, b""))

    def fsync(self, fd: int) -> None:
        with self._lock:
            self._op("fsync")
            self._delay()
            _k, f = self._file_fd(fd)
            if self._chance(self.config.fsync_fail):
                # fsyncgate: some pages reached the disk before the error, the rest is gone
                # (clean in the page cache, so the file reads as the disk has it here)
                kept = bytes(self._survivors(f, self.config.survive))
                os.pwrite(fd, kept, 0)
                os.ftruncate(fd, len(kept))
                f.durable, f.pending = kept, []
                self._note(f"fsync failed, {len(kept)} bytes kept")
                raise StorageError("fsync: [Errno 5] Input/output error (simulated)")
            if self.config.real_fsync:
                super().fsync(fd)
            f.durable, f.pending = os.pread(fd, os.fstat(fd).st_size, 0), []

    def fsync_dir(self, path: str) -> None:
        with self._lock:
            self._op(f"fsync_dir {os.path.basename(path)}")
            d = self._dir_itself(path)
            if self._chance(self.config.fsync_dir_fail):
                self._note(f"fsync_dir {path} failed")
                raise StorageError(f"fsync {path}: [Errno 5] Input/output error (simulated)")
            if self.config.real_fsync:
                super().fsync_dir(path)
            d.durable = self._replay(d.durable, d.pending)
            d.pending = []

    def rename(self, src: str, dst: str) -> None:
        with self._lock:
            self._op(f"rename {os.path.basename(src)}")
            ds, dd = self._dir(src), self._dir(dst)
            k = self._file_path(src)
            with contextlib.suppress(FileNotFoundError):
                self._file_path(dst)  # the bytes it replaces, should the rename be undone
            super().rename(src, dst)
            sn, dn = os.path.basename(src), os.path.basename(dst)
            if ds is dd:
                ds.pending.append(("rename", sn, dn))
            else:  # not atomic across directories in this model
                ds.pending.append(("unlink", sn, ""))
                dd.pending.append(("link", dn, k))
            ds.names.add(sn)
            dd.names.add(dn)

    def unlink(self, path: str) -> None:
        with self._lock:
            self._op(f"unlink {os.path.basename(path)}")
            d = self._dir(path)
            try:
                self._file_path(path)  # its bytes, should the unlink be undone
            except FileNotFoundError:
                return
            super().unlink(path)
            d.pending.append(("unlink", os.path.basename(path), ""))
            d.names.add(os.path.basename(path))

    def map(self, fd: int, length: int) -> memoryview:
        self._alive()
        view = super().map(fd, length)
        if length and self._chance(self.config.bit_flip):
            buf = bytearray(view)
            view.release()
            lo = min(self.config.flip_from, length - 1)
            hi = length if self.config.flip_to is None else min(self.config.flip_to, length)
            bit = self.rng.randrange(8 * lo, 8 * max(hi, lo + 1))
            buf[bit >> 3] ^= 1 << (bit & 7)
            self.flips.append((self._id(_key(os.fstat(fd))), bit))
            self._note(f"bit {bit} flipped in a map of {length} bytes")
            return memoryview(bytes(buf))
        return view

    # ------------------------------------------------------------------ the power cut
    @staticmethod
    def _replay(names: dict[str, FileId], ops: list[tuple[str, str, str | FileId]]
                ) -> dict[str, FileId]:
        out = dict(names)
        for kind, a, b in ops:
            if kind == "link":
                assert isinstance(b, int)
                out[a] = b
            elif kind == "unlink":
                out.pop(a, None)
            elif a in out:  # rename
                assert isinstance(b, str)
                out[b] = out.pop(a)
        return out

    def crash(self) -> dict[str, int]:
        """The power cut: rewrite every tracked directory to what its disk would hold (see
        the module doc). Close the log's handles first. Returns what survived, counted."""
        with self._lock:
            if self._crashed:
                raise RuntimeError("crash() twice")
            self._crashed = True
            if self.down is None:
                self.down = "crash()"
            rng = self.rng
            stats = {"files": 0, "dir_ops_kept": 0, "dir_ops_lost": 0}
            contents: dict[FileId, bytes] = {}
            plans = []
            # first decide and read everything, then change the files
            for d in self._dirs.values():
                keep = rng.randint(0, len(d.pending))
                stats["dir_ops_kept"] += keep
                stats["dir_ops_lost"] += len(d.pending) - keep
                target = self._replay(d.durable, d.pending[:keep])
                current = self._keys_in(d.fd)
                writes: dict[str, FileId] = {}
                for name, k in sorted(target.items()):
                    if k in self._files:
                        if k not in contents:
                            contents[k] = bytes(self._survivors(self._files[k],
                                                                self.config.survive))
                        writes[name] = k
                    elif current.get(name) != self._keys[k]:  # untouched, another name now
                        src = next(n for n, c in current.items() if c == self._keys[k])
                        fd = os.open(src, os.O_RDONLY, dir_fd=d.fd)
                        try:
                            contents[k] = os.pread(fd, os.fstat(fd).st_size, 0)
                        finally:
                            os.close(fd)
                        writes[name] = k
                gone = [n for n in current if n in d.names and n not in target]
                plans.append((d, writes, gone))
            for d, writes, gone in plans:
                for n in gone:
                    os.unlink(n, dir_fd=d.fd)
                for i, (name, k) in enumerate(writes.items()):
                    tmp = f".faultio-{os.getpid()}-{i}"
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                                 0o600, dir_fd=d.fd)
                    try:
                        data = contents[k]
                        done = 0
                        while done < len(data):
                            done += os.pwrite(fd, data[done:], done)
                    finally:
                        os.close(fd)
                    os.replace(tmp, name, src_dir_fd=d.fd, dst_dir_fd=d.fd)
                    stats["files"] += 1
            self.release()
            self._note(f"crash(): {stats}")
            return stats

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()

    def release(self) -> None:
        """Close the directories this layer holds open (``crash()`` does it)."""
        with self._lock:
            for d in self._dirs.values():
                with contextlib.suppress(OSError):
                    os.close(d.fd)
            self._dirs.clear()


_SEGFILE = re.compile(r"^(\d{10})\.(?:seg|idx)")


def drop_live_objects(path: str | os.PathLike[str]) -> None:
    """What a power cut does to a log's live indexes in ``/dev/shm``: removes them (the
    files stay). Every segment number found in the directory, temp names included, and the
    next one (a rotation whose new segment the crash undid may have made its live index)."""
    from .log import _unlink_live  # the log's own removal of one live index

    directory = os.fspath(path)
    with open(os.path.join(directory, "LOG"), "rb") as fh:
        settings = F.unpack_settings(fh.read(F.SETTINGS.size + 1))
    nums = [int(m.group(1)) for n in os.listdir(directory) if (m := _SEGFILE.match(n))]
    for k in range(max(nums, default=0) + 2):
        _unlink_live(settings.instance, k)
