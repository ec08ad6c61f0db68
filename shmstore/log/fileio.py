"""The file operations a log makes, in one place, so a fault-injection layer
(``shmstore.log.faults``) can stand under the real format and the real files.

Every method maps ``OSError`` to a shmstore error (``StorageFull`` for ENOSPC,
``StorageError`` otherwise), ``from`` the original.
"""

from __future__ import annotations

import errno
import mmap
import os

from ..errors import ResourceNotFound, StorageError, StorageFull

__all__ = ["FileIO"]

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _err(exc: OSError, what: str) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"{what}: no space left ({exc})")
    return StorageError(f"{what}: {exc}")


class FileIO:
    """Plain OS calls. ``durable=False`` (a log in shared memory) skips every fsync: tmpfs
    has nothing to flush."""

    def __init__(self, *, durable: bool = True) -> None:
        self.durable = durable

    def open(self, path: str, *, create: bool = False, writable: bool = False,
             mode: int = 0o600) -> int:
        flags = (os.O_RDWR if writable or create else os.O_RDONLY) | _O_CLOEXEC | _O_NOFOLLOW
        if create:
            flags |= os.O_CREAT | os.O_EXCL
        try:
            return os.open(path, flags, mode)
        except FileNotFoundError as exc:
            raise ResourceNotFound(f"{path}: no such file (was the log removed?)") from exc
        except OSError as exc:
            raise _err(exc, f"open {path}") from exc

    def close(self, fd: int) -> None:
        os.close(fd)

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
        view = memoryview(data)
        try:
            while view:
                n = os.pwrite(fd, view, offset)
                view, offset = view[n:], offset + n
        except OSError as exc:
            raise _err(exc, "write") from exc

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        try:
            return os.pread(fd, size, offset)
        except OSError as exc:
            raise _err(exc, "read") from exc

    def size(self, fd: int) -> int:
        return os.fstat(fd).st_size

    def truncate(self, fd: int, size: int) -> None:
        try:
            os.ftruncate(fd, size)
        except OSError as exc:
            raise _err(exc, "truncate") from exc

    def fsync(self, fd: int) -> None:
        if not self.durable:
            return
        try:
            os.fdatasync(fd)
        except OSError as exc:
            raise _err(exc, "fsync") from exc

    def fsync_dir(self, path: str) -> None:
        if not self.durable:
            return
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _O_CLOEXEC)
        try:
            os.fsync(fd)
        except OSError as exc:
            raise _err(exc, f"fsync {path}") from exc
        finally:
            os.close(fd)

    def rename(self, src: str, dst: str) -> None:
        try:
            os.replace(src, dst)
        except OSError as exc:
            raise _err(exc, f"rename {src}") from exc

    def unlink(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _err(exc, f"unlink {path}") from exc

    def map(self, fd: int, length: int) -> memoryview:
        """A read-only view of the file's first ``length`` bytes (``length`` must not pass
        its end). Empty for ``length`` 0."""
        if length == 0:
            return memoryview(b"")
        try:
            return memoryview(mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ))
        except (OSError, ValueError) as exc:
            raise StorageError(f"mapping {length} bytes failed: {exc}") from exc
