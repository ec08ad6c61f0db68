"""What is on this machine, and what is garbage: ``shmstore ls`` and ``shmstore gc``.

Theory of operation
===================

Every shm resource is a group of ``/dev/shm`` names sharing the prefix
``shmstore_<10 hex>_`` (segments) and ``sem.shmstore_<10 hex>_`` (waiter semaphores); an mmap
resource is a data file plus a ``<path>.shmstore/`` sidecar. Liveness is read from the
kernel's byte-range locks on the control block, never from PIDs (they are reused):

* a live **writer** holds its slot's byte (``LOCK_WRITER_BASE + s``);
* every open **handle** holds one byte of ``LOCK_HANDLE_BASE .. + N_HANDLES``;
* a parked **waiter** holds its waiter slot's byte;
* a **creator** holds the meta lock until the magic word is written.

The probes use ``F_OFD_GETLK`` from a descriptor of our own, which takes no lock, so listing
changes nothing.

What ``collect`` (``gc``) removes, and nothing else:

1. names of a prefix whose control block is missing (debris of a crash during ``unlink``);
2. a resource whose control block never got its magic word and whose creator is gone (no
   lock held on it: a creator killed during ``create``);
3. inside a valid resource, objects of generations that can never be used again: journals
   older than their slot's published one, data and base segments of generations below the
   readable one;
4. with ``abandoned=True`` only: an *active* resource with no live writer and no open handle
   (a download nobody will resume). Committed, failed and cancelled resources are data and
   stay until someone unlinks them;
5. with ``corrupt=True`` only: a control block that is not a valid one of this version
   (damaged, or left by another format version) that no process holds a lock on.

An mmap sidecar is only found when its directory is given (``dirs``); there the same rules
apply, plus stale ``AtomicChunked`` temps (``*.tmp`` whose claim lock is free) and stale
``Atomic`` temps.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from .core import layout as L
from .core.lifecycle import State
from .core.ranges import RangeSet
from .errors import CorruptResource, StorageError
from .ipc import locks
from .ipc.segments import SHM_DIR, map_segment, segment_size
from .ipc.semaphores import NamedWaker

__all__ = ["ResourceInfo", "collect", "list_resources"]

_SHM_NAME = re.compile(r"^(?:sem\.)?(shmstore_[0-9a-f]{10})_(.+)$")


@dataclass(frozen=True)
class ResourceInfo:
    """One resource as ``shmstore ls`` shows it."""

    name: str  # the resource's name (shm) or its data file (mmap)
    backend: str
    status: str  # active, committed, failed, cancelled, rewriting, unlinked, incomplete, corrupt
    length: int  # the committed length, or while active the end of the covered bytes
    capacity: int
    covered: int  # covered bytes (committed(final_len): the length)
    ranges: int
    writers: int
    handles: int
    waiters: int
    objects: tuple[str, ...] = field(default=())
    problem: str = ""

    @property
    def coverage(self) -> float | None:
        """Covered fraction of ``length`` (None when the length is 0)."""
        return self.covered / self.length if self.length else None


# ------------------------------------------------------------------------------ probing
def _held(fd: int, offset: int, length: int = 1) -> bool:
    return locks.probe(fd, offset, length)


def _anyone_holds(fd: int) -> bool:
    """Does any process hold the meta lock, a handle byte or a writer byte?"""
    return (_held(fd, L.LOCK_META) or _held(fd, L.LOCK_HANDLE_BASE, L.N_HANDLES)
            or _held(fd, L.LOCK_WRITER_BASE, L.N_WRITERS))


def _count_held(fd: int, base: int, n: int) -> int:
    if not _held(fd, base, n):
        return 0
    return sum(1 for k in range(n) if _held(fd, base + k))


def _slot_ranges(open_segment: _Opener, words: memoryview, life: L.Life) -> RangeSet:
    cov = RangeSet()
    gen = life.data_gen
    if gen:
        cov.add_many(_read_journal(open_segment, f"b{gen & 0xFFFF:04x}", cap_to_head=None))
    for slot in range(L.N_WRITERS):
        if not (life.used_mask >> slot) & 1 or words[L.slot_word(slot, L.S_CGEN)] != gen:
            continue
        jgen = words[L.slot_word(slot, L.S_JGEN)]
        head = words[L.slot_word(slot, L.S_HEAD)]
        if jgen:
            cov.add_many(_read_journal(open_segment, f"j{slot:x}_{jgen & 0xFFFF:04x}",
                                       cap_to_head=head))
    return cov


class _Opener:
    """Opens a resource's objects by suffix (``/dev/shm`` names, or sidecar files)."""

    def __init__(self, directory: str, prefix: str) -> None:
        self.directory = directory
        self.prefix = prefix

    def path(self, suffix: str) -> str:
        return os.path.join(self.directory, self.prefix + suffix)

    def open(self, suffix: str) -> int:
        return os.open(self.path(suffix), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)


def _read_journal(opener: _Opener, suffix: str, cap_to_head: int | None
                  ) -> list[tuple[int, int]]:
    try:
        fd = opener.open(suffix)
    except OSError:
        return []
    try:
        size = segment_size(fd)
        if size < L.JOURNAL_HEADER or size % 8:
            raise CorruptResource(f"{suffix} is {size} bytes")
        m = map_segment(fd, size, writable=False)
    finally:
        os.close(fd)
    try:
        with memoryview(m) as raw, raw.cast("Q") as words:
            _slot, _gen, cc, base, _cap = L.unpack_journal_header(raw)
            n = cc if cap_to_head is None else cc + cap_to_head + 1 - base
            n = max(0, min(n, (size - L.JOURNAL_HEADER) // L.JOURNAL_ENTRY))
            flat = words[L.JOURNAL_HEADER // 8 : L.JOURNAL_HEADER // 8 + 2 * n].tolist()
    finally:
        m.close()
    return list(zip(flat[0::2], flat[1::2], strict=True))


def _inspect(opener: _Opener, backend: str, objects: tuple[str, ...]) -> ResourceInfo:
    """Read one resource's control block without taking any lock."""
    label = opener.prefix.rstrip("_")
    try:
        fd = opener.open("c")
    except OSError as exc:
        return ResourceInfo(label, backend, "corrupt", 0, 0, 0, 0, 0, 0, 0, objects,
                            f"no control block ({exc.strerror})")
    try:
        size = segment_size(fd)
        writers = _count_held(fd, L.LOCK_WRITER_BASE, L.N_WRITERS)
        handles = _count_held(fd, L.LOCK_HANDLE_BASE, L.N_HANDLES)
        waiters = _count_held(fd, L.LOCK_WAITER_BASE, L.N_WAITERS)
        if size < L.CTRL_SIZE:
            return ResourceInfo(label, backend, "incomplete", 0, 0, 0, 0, writers, handles,
                                waiters, objects, f"control block is {size} bytes")
        m = map_segment(fd, L.CTRL_SIZE, writable=False)
    finally:
        os.close(fd)
    try:
        with memoryview(m) as raw, raw.cast("Q") as w:
            if w[L.W_MAGIC] == 0:
                return ResourceInfo(label, backend, "incomplete", 0, 0, 0, 0, writers,
                                    handles, waiters, objects, "creation never finished")
            try:
                L.validate_block(w, size)
                name = L.read_text(w, L.NAME_OFF, L.W_NAME_LEN, L.NAME_MAX) or label
                life = L.read_life(w)[1]
                cov = _slot_ranges(opener, w, life)
            except CorruptResource as exc:
                return ResourceInfo(label, backend, "corrupt", 0, 0, 0, 0, writers, handles,
                                    waiters, objects, str(exc))
    finally:
        m.close()
    state = State(life.status)
    if life.unlinked:
        status = "unlinked"
    elif state is State.ACTIVE and life.write_gen != life.data_gen:
        status = "rewriting"
    else:
        status = state.name.lower()
    if state is State.COMMITTED:
        length = life.final_len
        covered = length if life.final_given else sum(
            min(e, length) - s for s, e in cov if s < length)
    else:
        length = cov.extent()
        covered = cov.total()
    return ResourceInfo(name, backend, status, length, life.capacity, covered, len(cov),
                        writers, handles, waiters, objects, life.reason)


# ------------------------------------------------------------------------------ listing
def _shm_groups() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return groups
    for entry in entries:
        m = _SHM_NAME.match(entry)
        if m:
            groups.setdefault(m.group(1), []).append(entry)
    return groups


def _sidecars(dirs: Iterable[str | os.PathLike[str]]) -> list[tuple[str, str]]:
    """(data path, sidecar directory) of every mmap resource directly inside ``dirs``."""
    out = []
    for d in dirs:
        d = os.fspath(d)
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            continue
        for n in names:
            side = os.path.join(d, n)
            if n.endswith(".shmstore") and os.path.isdir(side) and not os.path.islink(side):
                out.append((side[: -len(".shmstore")], side))
    return out


def list_resources(dirs: Iterable[str | os.PathLike[str]] = ()) -> list[ResourceInfo]:
    """Every shm resource on this machine, and the mmap resources in ``dirs``."""
    out = []
    for prefix, entries in sorted(_shm_groups().items()):
        out.append(_inspect(_Opener(SHM_DIR, prefix + "_"), "shm", tuple(sorted(entries))))
    for data, side in _sidecars(dirs):
        info = _inspect(_Opener(side, ""), "mmap", tuple(sorted(os.listdir(side))))
        out.append(info if info.status in ("corrupt", "incomplete") else
                   replace(info, name=data))
    return out


# ------------------------------------------------------------------------------ collecting
def _older(gen: int, than: int) -> bool:
    """Is the 16-bit name generation ``gen`` older than generation ``than``?"""
    return 0 < ((than - gen) & 0xFFFF) < 0x8000


def _stale_objects(opener: _Opener) -> list[str] | None:
    """Suffixes of objects of a valid, live resource that can never be used again; None if
    the resource is to be removed whole, [] if nothing is stale. Reads with no lock."""
    fd = opener.open("c")
    try:
        size = segment_size(fd)
        anyone = _anyone_holds(fd)
        if size < L.CTRL_SIZE:
            return None if _dead_creation(fd, size, anyone) else []
        m = map_segment(fd, L.CTRL_SIZE, writable=False)
    finally:
        os.close(fd)
    try:
        with memoryview(m) as raw, raw.cast("Q") as w:
            if w[L.W_MAGIC] == 0:
                return None if _dead_creation(-1, size, anyone) else []
            try:
                L.validate_block(w, size)
            except CorruptResource:
                return []  # judged by the caller (collect(corrupt=True))
            life = L.read_life(w)[1]
            jgens = {s: w[L.slot_word(s, L.S_JGEN)] & 0xFFFF for s in range(L.N_WRITERS)}
    finally:
        m.close()
    if life.unlinked and not anyone:
        return None
    stale = []
    for name in os.listdir(opener.directory):
        if not name.startswith(opener.prefix):
            continue
        suffix = name[len(opener.prefix) :]
        kind, rest = suffix[:1], suffix[1:]
        try:
            if kind == "j":
                slot_s, gen_s = rest.split("_")
                if _older(int(gen_s, 16), jgens[int(slot_s, 16)]):
                    stale.append(suffix)
            elif kind in ("d", "b") and _older(int(rest, 16), life.data_gen & 0xFFFF):
                stale.append(suffix)
        except (ValueError, KeyError):
            continue
    return stale


CREATE_GRACE = 2.0  # seconds a control block may stay empty before its creation counts as dead


def _dead_creation(fd: int, size: int, anyone: bool) -> bool:
    """Did the creator of a control block without magic die? A creator takes the meta lock
    right after creating the block, reserves it whole, and holds the lock until the magic
    word is written: a whole block with no lock held lost its creator. An empty one may be a
    creator between its ``shm_open`` and its lock: only one older than ``CREATE_GRACE``
    counts. A block of any other size is not one a creator makes: never ours to remove."""
    if anyone:
        return False
    if size == L.CTRL_SIZE:
        return True
    return size == 0 and fd >= 0 and time.time() - os.fstat(fd).st_ctime > CREATE_GRACE


def reclaim_dead_creation(directory: str, prefix: str) -> bool:
    """Remove a resource whose creator died during ``create`` (``create`` calls this when
    the name is taken); True if it did."""
    opener = _Opener(directory, prefix)
    try:
        fd = opener.open("c")
    except OSError:
        return False
    try:
        size = segment_size(fd)
        anyone = _anyone_holds(fd)
        if size >= L.CTRL_SIZE:
            m = map_segment(fd, L.CTRL_SIZE, writable=False)
            try:
                with memoryview(m) as raw, raw.cast("Q") as w:
                    if w[L.W_MAGIC] != 0:
                        return False
            finally:
                m.close()
        if not _dead_creation(fd, size, anyone):
            return False
    finally:
        os.close(fd)
    for name in os.listdir(directory):
        if name.startswith(prefix) or name.startswith("sem." + prefix):
            path = os.path.join(directory, name)
            if name.startswith("sem."):
                NamedWaker.unlink("/" + name[4:])
            else:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
    return True


def _corrupt(opener: _Opener) -> bool:
    """Not a valid control block of this version, and nobody holds a lock on it."""
    info = _inspect(opener, "", ())
    return info.status == "corrupt" and not (info.writers or info.handles or info.waiters)


def _abandoned(opener: _Opener) -> bool:
    """Active, no live writer, no open handle: nobody will ever finish it."""
    info = _inspect(opener, "", ())
    return info.status in ("active", "rewriting") and not info.writers and not info.handles


def _remove(path: str, removed: list[str], dry_run: bool) -> None:
    if dry_run:
        removed.append(path)
        return
    try:
        os.unlink(path)
        removed.append(path)
    except FileNotFoundError:
        pass


def collect(*, dry_run: bool = False, abandoned: bool = False, corrupt: bool = False,
            dirs: Iterable[str | os.PathLike[str]] = ()) -> list[str]:
    """Remove what nobody can use any more (see the module doc); returns the paths removed
    (or that would be, with ``dry_run``). Never touches a resource a process holds."""
    removed: list[str] = []
    for prefix, entries in sorted(_shm_groups().items()):
        opener = _Opener(SHM_DIR, prefix + "_")
        if f"{prefix}_c" not in entries:
            # debris of a crashed unlink; a creator whose other objects exist made its
            # control block first, so it cannot be in the middle of creating these
            whole: list[str] | None = None
        else:
            try:
                whole = _stale_objects(opener)
                if whole is not None and ((abandoned and _abandoned(opener))
                                          or (corrupt and _corrupt(opener))):
                    whole = None
            except OSError:
                continue
        if whole is None:
            # the control block last: while it exists nobody can create the name again
            for e in sorted(entries, key=lambda e: e == f"{prefix}_c"):
                if e.startswith("sem."):
                    if dry_run:
                        removed.append(os.path.join(SHM_DIR, e))
                    else:
                        NamedWaker.unlink("/" + e[4:])
                        removed.append(os.path.join(SHM_DIR, e))
                else:
                    _remove(os.path.join(SHM_DIR, e), removed, dry_run)
        else:
            for suffix in whole:
                _remove(opener.path(suffix), removed, dry_run)
    dirs = list(dirs)
    for _data, side in _sidecars(dirs):
        opener = _Opener(side, "")
        try:
            stale = _stale_objects(opener) if os.path.exists(opener.path("c")) else None
            if stale is not None and ((abandoned and _abandoned(opener))
                                      or (corrupt and _corrupt(opener))):
                stale = None
        except OSError:
            continue
        if stale is None:
            for e in sorted(os.listdir(side), key=lambda e: e == "c"):  # see above
                _remove(os.path.join(side, e), removed, dry_run)
            if not dry_run:
                try:
                    os.rmdir(side)
                except OSError:
                    pass
        else:
            for suffix in stale:
                _remove(opener.path(suffix), removed, dry_run)
    for d in dirs:
        removed.extend(_stale_temps(os.fspath(d), dry_run))
    return removed


def _stale_temps(directory: str, dry_run: bool) -> list[str]:
    """``AtomicChunked`` temps (``*.tmp``) and ``Atomic`` temps (``.<name>.<x>.atomic``)
    whose writer's ``flock`` is free."""
    out: list[str] = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return out
    for n in names:
        if not (n.endswith(".tmp") or (n.startswith(".") and n.endswith(".atomic"))):
            continue
        path = os.path.join(directory, n)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue  # a live writer holds it
                raise StorageError(f"probing {path}: {exc}") from exc
            if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
                _remove(path, out, dry_run)
        finally:
            os.close(fd)
    return out
