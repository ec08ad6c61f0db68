"""Open-file-description byte-range locks (Linux ``F_OFD_SETLK``): writer liveness and the
control block's meta lock.

Why these locks: the kernel drops them when the last descriptor of the open file description
closes, which includes the death of the process by any signal, so "is a writer alive?" is
answered by the kernel, never by a PID (PIDs are reused) or by a file's existence. Unlike
classic POSIX ``fcntl`` locks they belong to the open file description, not the process, so
two handles in one process conflict with each other as two processes would, and closing an
unrelated descriptor of the same file does not drop them. ``fork`` shares the open file
description with the child; ``shmstore.resource`` closes inherited descriptors in the child
so a forked child never keeps a dead parent's writer lock alive.

A lock may lie beyond the end of the file, so lock offsets need no backing bytes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from ..errors import StorageError

__all__ = ["lock", "probe", "try_lock", "unlock"]

# struct flock on Linux (x86-64 and aarch64): short l_type, short l_whence, off_t l_start,
# off_t l_len, pid_t l_pid (must be 0 for OFD locks), native alignment and padding.
_FLOCK = struct.Struct("@hhqqi4x")
_SETLK = fcntl.F_OFD_SETLK
_SETLKW = fcntl.F_OFD_SETLKW
_GETLK = fcntl.F_OFD_GETLK


def _req(kind: int, offset: int, length: int) -> bytes:
    return _FLOCK.pack(kind, os.SEEK_SET, offset, length, 0)


def try_lock(fd: int, offset: int, length: int = 1, *, exclusive: bool = True) -> bool:
    """Take the lock without blocking; False if another open file description holds it."""
    kind = fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK
    try:
        fcntl.fcntl(fd, _SETLK, _req(kind, offset, length))
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise StorageError(f"byte-range lock failed: {exc}") from exc
    return True


def lock(fd: int, offset: int, length: int = 1, *, exclusive: bool = True) -> None:
    """Take the lock, blocking until it is free (holders keep it for microseconds)."""
    kind = fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK
    while True:
        try:
            fcntl.fcntl(fd, _SETLKW, _req(kind, offset, length))
            return
        except InterruptedError:
            continue
        except OSError as exc:
            raise StorageError(f"byte-range lock failed: {exc}") from exc


def unlock(fd: int, offset: int, length: int = 1) -> None:
    try:
        fcntl.fcntl(fd, _SETLK, _req(fcntl.F_UNLCK, offset, length))
    except OSError as exc:
        raise StorageError(f"byte-range unlock failed: {exc}") from exc


def probe(fd: int, offset: int, length: int = 1, *, exclusive: bool = True) -> bool:
    """True when another open file description holds a lock that conflicts with taking
    ``[offset, offset+length)`` (exclusively, by default). Our own locks never conflict."""
    kind = fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK
    try:
        out = fcntl.fcntl(fd, _GETLK, _req(kind, offset, length))
    except OSError as exc:
        raise StorageError(f"byte-range lock probe failed: {exc}") from exc
    return bool(_FLOCK.unpack(out)[0] != fcntl.F_UNLCK)
