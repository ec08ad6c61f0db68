"""Where a resource's segments live, and how they are created, reserved, grown and mapped.

A resource is a handful of named segments: the control block ``c``, one journal per writer
slot ``j<slot>_<gen>``, the data of each generation ``d<gen>``, and one semaphore per waiter
slot ``w<slot>``. A *namespace* maps those short names to real objects:

* ``ShmNamespace``: POSIX shared memory, ``/dev/shm/shmstore_<hash>_<suffix>``, semaphores
  ``/dev/shm/sem.shmstore_<hash>_w<slot>``. Every name fits 30 characters (macOS and the BSDs
  cap names at 31 with the slash); the hash is of the resource's name, which the control
  block stores in full.
* ``DirNamespace``: the ``mmap`` backend. The data file is the user's path and holds exactly
  the resource's bytes; the control block and journals live in a sidecar directory
  ``<path>.shmstore/`` so a partly written file can be resumed after every process exited.
* ``MemNamespace``: the ``mem`` backend, anonymous ``memfd`` segments private to the process.

No SIGBUS: every byte a process may touch is reserved with ``posix_fallocate`` before it is
published, after checking the free space with ``statvfs`` (on tmpfs a reservation between
the free and the total size would fill RAM page by page before failing). Segments only grow;
a mapping another process may touch is never shrunk below what it may read.

None of this registers with ``multiprocessing``'s resource tracker (CPython gh-82300): the
tracker would unlink a segment when any attaching process exits.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import stat
import threading
from collections.abc import Iterator
from typing import Protocol

import posix_ipc

from ..errors import (
    CorruptResource,
    InvalidName,
    ResourceExists,
    ResourceNotFound,
    StorageError,
    StorageFull,
)
from .semaphores import NamedWaker, ThreadWaker, Waker

__all__ = [
    "DirNamespace",
    "MemNamespace",
    "Namespace",
    "ShmNamespace",
    "map_segment",
    "prefault",
    "reserve",
    "shm_base",
]

PREFIX = "shmstore_"
SHM_DIR = "/dev/shm"
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def check_name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidName(name, "a resource name is a str")
    if not name:
        raise InvalidName(name, "empty")
    if "\x00" in name:
        raise InvalidName(name, "contains NUL")
    if len(name.encode()) > 255:
        raise InvalidName(name, "longer than 255 UTF-8 bytes")
    return name


def shm_base(key: str) -> str:
    """``shmstore_`` + 10 hex digits of BLAKE2b(key): 19 characters, room for suffixes."""
    return PREFIX + hashlib.blake2b(key.encode(), digest_size=5).hexdigest()


def _map_oserror(exc: OSError, what: str) -> StorageError:
    if exc.errno == errno.ENOSPC:
        return StorageFull(f"{what}: no space left ({exc})")
    if exc.errno == errno.ENOENT:
        return ResourceNotFound(f"{what}: does not exist")
    if exc.errno == errno.EEXIST:
        return ResourceExists(f"{what}: already exists")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StorageError(f"{what}: permission denied ({exc})")
    if exc.errno == errno.ELOOP:
        return StorageError(f"{what}: refusing to follow a symbolic link")
    return StorageError(f"{what}: {exc}")


def reserve(fd: int, size: int, what: str) -> None:
    """Make ``[0, size)`` of the segment real memory or disk blocks, or raise ``StorageFull``.

    Checks the file system's free space first, then ``posix_fallocate`` s the missing tail.
    """
    st = os.fstat(fd)
    if st.st_size >= size:
        return
    need = size - st.st_size
    vfs = os.fstatvfs(fd)
    free = vfs.f_bavail * vfs.f_frsize
    if vfs.f_blocks and need > free:  # f_blocks == 0: a size-less mount (memfd's)
        raise StorageFull(
            f"{what}: need {need} more bytes, {free} free on its file system"
            " (a bigger /dev/shm, or backend='mmap' on disk)"
        )
    try:
        os.posix_fallocate(fd, st.st_size, need)
    except OSError as exc:
        raise _map_oserror(exc, what) from exc


def prefault(fd: int, start: int, end: int) -> None:
    """Zero-fill and map the pages of ``[start, end)`` of a tmpfs segment now (Linux 5.14+
    ``MADV_POPULATE_WRITE``; skipped where unsupported). ``posix_fallocate`` reserves tmpfs
    pages but leaves them to be cleared on first touch, which would otherwise fall on the
    writer's first pass over fresh memory."""
    if end <= start:
        return
    try:
        m = mmap.mmap(fd, end, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    except (OSError, ValueError):
        return
    try:
        lo = start // mmap.PAGESIZE * mmap.PAGESIZE
        m.madvise(_MADV_POPULATE_WRITE, lo, end - lo)
    except (OSError, ValueError):
        pass
    finally:
        m.close()


_MADV_POPULATE_WRITE = 23


def map_segment(fd: int, size: int, *, writable: bool) -> mmap.mmap:
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    try:
        return mmap.mmap(fd, size, mmap.MAP_SHARED, prot)
    except (OSError, ValueError) as exc:
        raise StorageError(f"mapping {size} bytes failed: {exc}") from exc


def segment_size(fd: int) -> int:
    return os.fstat(fd).st_size


class Namespace(Protocol):
    kind: str  # "shm", "mmap" or "mem"
    label: str  # what error messages call the resource

    def open(self, suffix: str, *, create: bool, exclusive: bool = False,
             truncate: bool = False) -> int: ...
    def exists(self, suffix: str) -> bool: ...
    def unlink(self, suffix: str) -> None: ...
    def waker(self, slot: int, *, create: bool) -> Waker: ...
    def unlink_contents(self) -> None: ...
    def unlink_control(self) -> None: ...
    def tidy(self) -> None: ...
    def unlink_all(self) -> None: ...
    def data_suffix(self, gen: int, *, staged: bool) -> str: ...
    def publish_data(self, gen: int) -> int: ...


class _Names:
    """What every namespace derives: removing everything is the contents, then the control
    block (see ``ShmNamespace.unlink_contents`` for why in that order)."""

    def unlink_contents(self) -> None:
        raise NotImplementedError

    def unlink_control(self) -> None:
        raise NotImplementedError

    def unlink_all(self) -> None:
        self.unlink_contents()
        self.unlink_control()


class ShmNamespace(_Names):
    kind = "shm"

    def __init__(self, name: str, mode: int = 0o600) -> None:
        self.name = check_name(name)
        self.label = name
        self.base = shm_base(name)
        self.mode = mode

    def _posix(self, suffix: str) -> str:
        return f"/{self.base}_{suffix}"

    def open(self, suffix: str, *, create: bool, exclusive: bool = False,
             truncate: bool = False) -> int:
        flags = 0
        if create:
            flags = posix_ipc.O_CREX if exclusive else posix_ipc.O_CREAT
            if truncate:
                flags |= posix_ipc.O_TRUNC
        what = f"shared memory {self._posix(suffix)} of {self.label!r}"
        try:
            seg = posix_ipc.SharedMemory(self._posix(suffix), flags, self.mode, 0)
        except posix_ipc.ExistentialError as exc:
            if create:
                raise ResourceExists(f"resource {self.label!r} already exists") from exc
            raise ResourceNotFound(f"no resource {self.label!r}") from exc
        except posix_ipc.PermissionsError as exc:
            raise StorageError(f"{what}: permission denied") from exc
        except OSError as exc:
            raise _map_oserror(exc, what) from exc
        fd = os.dup(seg.fd)  # our own descriptor, closed by us; posix_ipc's is closed now
        seg.close_fd()
        return fd

    def exists(self, suffix: str) -> bool:
        return os.path.exists(os.path.join(SHM_DIR, f"{self.base}_{suffix}"))

    def unlink(self, suffix: str) -> None:
        try:
            posix_ipc.unlink_shared_memory(self._posix(suffix))
        except posix_ipc.ExistentialError:
            pass

    def waker(self, slot: int, *, create: bool) -> Waker:
        return NamedWaker(f"/{self.base}_w{slot:02d}", create=create, mode=self.mode)

    def data_suffix(self, gen: int, *, staged: bool) -> str:
        return f"d{gen & 0xFFFF:04x}"

    def publish_data(self, gen: int) -> int:
        return 0

    def unlink_contents(self) -> None:
        """Remove every segment and semaphore of this name but the control block. While the
        control block is there no resource of the same name can be created (it is created
        exclusively, first), so nothing removed here is a newer resource's."""
        for entry in _listdir(SHM_DIR):
            if entry.startswith(self.base + "_") and entry != self.base + "_c":
                self.unlink(entry[len(self.base) + 1 :])
            elif entry.startswith("sem." + self.base + "_"):
                NamedWaker.unlink("/" + entry[4:])

    def unlink_control(self) -> None:
        """Remove the control block: from now on the name may be created again."""
        self.unlink("c")

    def tidy(self) -> None:
        pass



class DirNamespace(_Names):
    """The mmap backend: data at ``path``, everything else in ``<path>.shmstore/``."""

    kind = "mmap"

    def __init__(self, path: str | os.PathLike[str], mode: int = 0o600) -> None:
        p = os.fspath(path)
        if not p:
            raise InvalidName(p, "empty path")
        self.path = os.path.abspath(p)
        self.sidecar = self.path + ".shmstore"
        self.label = self.path
        self.mode = mode
        # Semaphores are named by the data file's real path.
        self.base = shm_base("mmap:" + os.path.realpath(self.path))

    def _file(self, suffix: str) -> str:
        return os.path.join(self.sidecar, suffix)

    def ensure_sidecar(self) -> None:
        try:
            os.mkdir(self.sidecar, 0o700)
        except FileExistsError:
            st = os.lstat(self.sidecar)
            if not stat.S_ISDIR(st.st_mode):
                raise CorruptResource(f"{self.sidecar} exists and is not a directory") from None

    def open(self, suffix: str, *, create: bool, exclusive: bool = False,
             truncate: bool = False) -> int:
        path = self.path if suffix == "data" else self._file(suffix)
        flags = os.O_RDWR | _O_CLOEXEC | os.O_NOFOLLOW
        if create:
            flags |= os.O_CREAT | (os.O_EXCL if exclusive else 0) | (os.O_TRUNC if truncate else 0)
        try:
            return os.open(path, flags, self.mode)
        except FileNotFoundError as exc:
            raise ResourceNotFound(f"no resource at {self.path}") from exc
        except FileExistsError as exc:
            raise ResourceExists(f"{path} already exists") from exc
        except OSError as exc:
            raise _map_oserror(exc, path) from exc

    def exists(self, suffix: str) -> bool:
        return os.path.lexists(self._file(suffix))

    def unlink(self, suffix: str) -> None:
        try:
            os.unlink(self._file(suffix))
        except FileNotFoundError:
            pass

    def waker(self, slot: int, *, create: bool) -> Waker:
        return NamedWaker(f"/{self.base}_w{slot:02d}", create=create, mode=self.mode)

    def data_suffix(self, gen: int, *, staged: bool) -> str:
        return f"d{gen & 0xFFFF:04x}" if staged else "data"

    def publish_data(self, gen: int) -> int:
        """Rename the staged data of ``gen`` over the data path; returns its inode."""
        staged = self._file(self.data_suffix(gen, staged=True))
        try:
            ino = os.lstat(staged).st_ino
            os.replace(staged, self.path)
            _fsync_dir(os.path.dirname(self.path))
        except OSError as exc:
            raise _map_oserror(exc, self.path) from exc
        return ino

    def unlink_contents(self) -> None:
        """Remove the data file, the semaphores and the sidecar's files but the control
        block (see ``ShmNamespace.unlink_contents``)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        for entry in _listdir(self.sidecar):
            if entry != "c":
                self.unlink(entry)
        for entry in _listdir(SHM_DIR):
            if entry.startswith("sem." + self.base + "_"):
                NamedWaker.unlink("/" + entry[4:])

    def unlink_control(self) -> None:
        """Remove the control block, then the sidecar if it is empty. It may not be: once
        the control block is gone a new resource may be created under the path, and
        what it put there is its own."""
        self.unlink("c")
        self.tidy()

    def tidy(self) -> None:
        """Remove the sidecar if it is empty (an unlink killed before its last step)."""
        try:
            os.rmdir(self.sidecar)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY:
                raise _map_oserror(exc, self.sidecar) from exc



class MemNamespace(_Names):
    """Anonymous memfd segments; every handle of a ``mem`` resource shares one namespace."""

    kind = "mem"
    label = "<mem>"

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}
        self._wakers: dict[int, ThreadWaker] = {}
        self._lock = threading.Lock()

    def open(self, suffix: str, *, create: bool, exclusive: bool = False,
             truncate: bool = False) -> int:
        with self._lock:
            fd = self._fds.get(suffix)
            if fd is None:
                if not create:
                    raise ResourceNotFound(f"mem segment {suffix} does not exist")
                fd = os.memfd_create(f"shmstore-{suffix}", os.MFD_CLOEXEC)
                self._fds[suffix] = fd
            elif create and exclusive:
                raise ResourceExists(f"mem segment {suffix} exists")
            elif truncate:
                os.ftruncate(fd, 0)
            # A fresh open file description, so byte-range locks of handles conflict.
            return os.open(f"/proc/self/fd/{fd}", os.O_RDWR | _O_CLOEXEC)

    def exists(self, suffix: str) -> bool:
        return suffix in self._fds

    def unlink(self, suffix: str) -> None:
        with self._lock:
            fd = self._fds.pop(suffix, None)
        if fd is not None:
            os.close(fd)

    def waker(self, slot: int, *, create: bool) -> Waker:
        with self._lock:
            w = self._wakers.get(slot)
            if w is None:
                if not create:
                    raise FileNotFoundError(slot)
                w = self._wakers[slot] = ThreadWaker()
            return w

    def data_suffix(self, gen: int, *, staged: bool) -> str:
        return f"d{gen & 0xFFFF:04x}"

    def publish_data(self, gen: int) -> int:
        return 0

    def unlink_contents(self) -> None:
        for suffix in list(self._fds):
            if suffix != "c":
                self.unlink(suffix)

    def unlink_control(self) -> None:
        self.unlink("c")

    def tidy(self) -> None:
        pass


    def __del__(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass


def _listdir(path: str) -> Iterator[str]:
    try:
        yield from os.listdir(path)
    except FileNotFoundError:
        return


def _fsync_dir(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
