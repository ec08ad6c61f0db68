"""Wake-ups: named POSIX semaphores across processes, thread semaphores within one, and the
full memory barrier the wait protocol needs.

Waiters create their semaphore (``O_CREAT``); writers open it without ``O_CREAT``, so a post
that races an ``unlink`` can never resurrect a name. Semaphores are never unlinked while the
resource exists (only ``Resource.unlink`` removes them), so a writer's cached handle always
refers to the semaphore the waiter sleeps on.

On macOS ``sem_timedwait`` does not exist and posix_ipc silently waits forever; shmstore
targets Linux and refuses to import where timeouts are not supported.
"""

from __future__ import annotations

import os
import threading
from typing import Protocol

import posix_ipc

from ..errors import StorageError

__all__ = ["NamedWaker", "ThreadWaker", "Waker", "full_barrier"]

if not posix_ipc.SEMAPHORE_TIMEOUT_SUPPORTED:  # pragma: no cover - macOS
    raise ImportError("shmstore needs sem_timedwait (Linux); this platform has none")

# A full memory barrier. CPython's Lock is a POSIX semaphore on Linux: acquire and release are
# locked read-modify-write instructions (sem_wait's cmpxchg, sem_post's xadd), each a full
# fence on x86-64 - the "semaphore operation is a full barrier" the Dekker handshake between
# a publishing writer and a registering waiter relies on (see shmstore.resource). ~50 ns.
_FENCE = threading.Lock()  # also used inline by the write path


# A fork while another thread holds the fence would leave the child's copy held forever.
os.register_at_fork(after_in_child=_FENCE._at_fork_reinit)  # type: ignore[attr-defined]


def full_barrier() -> None:
    _FENCE.acquire()
    _FENCE.release()


class Waker(Protocol):
    def post(self) -> None: ...
    def wait(self, timeout: float) -> bool: ...
    def drain(self) -> None: ...
    def close(self) -> None: ...


class NamedWaker:
    """A named POSIX semaphore (value starts at 0)."""

    __slots__ = ("_sem",)

    def __init__(self, name: str, *, create: bool, mode: int = 0o600) -> None:
        flags = posix_ipc.O_CREAT if create else 0
        try:
            self._sem = posix_ipc.Semaphore(name, flags, mode, 0)
        except posix_ipc.ExistentialError as exc:
            raise FileNotFoundError(name) from exc
        except posix_ipc.PermissionsError as exc:
            raise PermissionError(f"semaphore {name}: {exc}") from exc
        except OSError as exc:
            raise StorageError(f"semaphore {name}: {exc}") from exc

    def post(self) -> None:
        try:
            self._sem.release()
        except posix_ipc.Error as exc:  # pragma: no cover - EOVERFLOW after 2**31 posts
            raise StorageError(f"semaphore post failed: {exc}") from exc

    def wait(self, timeout: float) -> bool:
        """Sleep until posted or ``timeout`` seconds pass; True if a post was consumed."""
        try:
            self._sem.acquire(max(timeout, 0.0))
        except posix_ipc.BusyError:
            return False
        except posix_ipc.SignalError:
            return False  # a signal: the caller re-checks, as after any wake-up
        return True

    def drain(self) -> None:
        """Consume stale posts left from an earlier waiter of the same slot."""
        while True:
            try:
                self._sem.acquire(0)
            except posix_ipc.BusyError:
                return

    def close(self) -> None:
        try:
            self._sem.close()
        except posix_ipc.Error:
            pass

    @staticmethod
    def unlink(name: str) -> None:
        try:
            posix_ipc.unlink_semaphore(name)
        except posix_ipc.ExistentialError:
            pass


class ThreadWaker:
    """The in-process waker of the ``mem`` backend."""

    __slots__ = ("_sem",)

    def __init__(self) -> None:
        self._sem = threading.Semaphore(0)

    def post(self) -> None:
        self._sem.release()

    def wait(self, timeout: float) -> bool:
        return self._sem.acquire(timeout=max(timeout, 0.0))

    def drain(self) -> None:
        while self._sem.acquire(blocking=False):
            pass

    def close(self) -> None:
        pass
