"""Crash-safe writers for files: ``Atomic`` (whole file) and ``AtomicChunked`` (streamed).

Theory of operation
===================

The contract both give: an observer of the canonical path sees either no file (or the
previous version) or the complete committed bytes, never a partial file. Both get it the same
way: the bytes go to a temp file in the canonical's directory, and ``os.replace`` (rename(2),
atomic within one file system) publishes them in one step. The durable variants ``fsync`` the
data before the rename and the directory after it, so the rename survives a power cut too.

``Atomic`` (small files rewritten whole: indexes, manifests)::

    temp = <dir>/.<name>.<random>.atomic    O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC, mode 0o600
    flock(temp, LOCK_EX|LOCK_NB)            the writer's liveness, for remove_stale_temps()
    write; fsync (durable); os.replace(temp, canonical); fsync(dir) (durable); close

Any failure before the rename removes the temp. A writer killed (SIGKILL) before the rename
leaves an orphan temp and the old canonical untouched; ``remove_stale_temps`` deletes the
orphans whose writer is gone (their lock is free) and spares a live writer's temp.

``AtomicChunked`` (a file written at any offsets, then committed)::

    claim  <canonical>.tmp: open O_RDWR|O_CREAT|O_NOFOLLOW|O_CLOEXEC, flock LOCK_EX|LOCK_NB
           (EWOULDBLOCK: a live writer has it -> TmpClaimed), then fstat(fd) == lstat(tmp)
           or close and retry; then ftruncate(0), always
    write  pwrite; coverage in a RangeSet (reads stop at the first byte never written)
    commit ftruncate(final_len or the written extent); fsync (inline barrier);
           os.replace(tmp, canonical); fsync(dir) (inline); reopen read-only; unlock last
    fail / close / drop of an uncommitted writer: unlink tmp, then unlock

The **lock, not the file, is the claim**: the kernel drops a ``flock`` when its holder dies,
so a tmp whose lock is free belongs to nobody. Two hazards of kithara-storage, which this
design follows, are fixed here:

* *A stale tmp is served.* kithara reopens a dead writer's non-empty tmp as if its bytes were
  committed. Here the winner of a claim truncates the tmp before anything else, so the dead
  writer's bytes are never readable, covered, or committed.
* *The flock-vs-unlink race.* A holder unlinks (``fail``) or renames (``commit``) the tmp and
  only then unlocks. A claimant that opened the old inode before that, and locks it after,
  holds a lock on a file that is no longer ``<canonical>.tmp``: after a rename it is the
  *committed canonical file*, which a truncate would destroy. So after locking, the claimant
  compares the inode of its descriptor with the inode at the path and retries on a mismatch.
  Every step that changes the tmp path (create, unlink, rename) is taken by the holder of the
  lock on the inode at the path, or on an empty path; so while a claim is held the path keeps
  naming the claimed inode, and the holder's unlink and rename act on its own file.

Barriers (as in kithara): ``inline`` fsyncs the data before the rename and the directory
after it, so the canonical file is durable when ``commit`` returns. ``deferred`` skips both:
live observers still see all-or-nothing (the page cache is coherent), but after a power cut
the canonical file may exist over unwritten blocks until ``sync()`` has run; a manifest
written after ``sync()`` is then the authority on which files are whole.

Not protected: a file system without working ``flock`` (NFS), and other actors that ignore
the protocol (a user's ``rm`` of a live tmp is detected at commit and fails the writer).
A handle inherited through ``fork`` is closed in the child (the claim stays with the parent);
``O_CLOEXEC`` keeps the descriptors out of exec'd programs.
"""

from __future__ import annotations

import fcntl
import hashlib
import operator
import os
import secrets
import stat
import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Literal

from .core.lifecycle import ResourceStatus, State
from .core.ranges import RangeSet
from .errors import (
    InvalidRange,
    ReadOnlyError,
    ResourceClosed,
    ResourceFailed,
    StorageError,
    TmpClaimed,
)
from .ipc.segments import _fsync_dir, _map_oserror, reserve

__all__ = ["Atomic", "AtomicChunked", "Barrier"]

Barrier = Literal["inline", "deferred"]

_MAX = 1 << 63
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# A claim retries while the tmp keeps changing under it (each retry means another writer
# committed or failed in between); past this many it reports the path as claimed.
_CLAIM_ATTEMPTS = 100
_ATOMIC_SUFFIX = ".atomic"

# Test hook: called with the name of the step about to run ("commit:replace", ...), so crash
# tests can kill or pause a writer at an exact point. None in production: one global load.
_test_hook: Callable[[str], None] | None = None


def _step(point: str) -> None:
    hook = _test_hook
    if hook is not None:
        hook(point)


# --------------------------------------------------------------------------- helpers


def _byte_view(data: bytes | bytearray | memoryview) -> memoryview:
    mv = memoryview(data)
    if not mv.c_contiguous:
        mv = memoryview(mv.tobytes())
    return mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv


def _check_range(start: int, end: int) -> None:
    if start < 0 or end < start or end > _MAX:
        raise InvalidRange(start, end)


def _same_file(fd: int, path: str) -> bool:
    """True when ``path`` (not following a symlink) names the inode open at ``fd``."""
    try:
        at_path = os.lstat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (at_path.st_dev, at_path.st_ino) == (mine.st_dev, mine.st_ino)


def _try_lock(fd: int) -> bool:
    """``flock(LOCK_EX|LOCK_NB)``: False when another open file description holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlink_if_mine(fd: int, path: str) -> None:
    """Remove ``path`` if it still names the file open at ``fd`` (never someone else's)."""
    if _same_file(fd, path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _write_fully(fd: int, mv: memoryview, offset: int | None) -> None:
    done, n = 0, len(mv)
    while done < n:
        if offset is None:
            k = os.write(fd, mv[done:])
        else:
            k = os.pwrite(fd, mv[done:], offset + done)
        if k <= 0:
            raise StorageError(f"write made no progress at byte {done} of {n}")
        done += k


# --------------------------------------------------------------------------- Atomic


class Atomic:
    """A file rewritten whole and atomically: readers of ``path`` see the old file or the new
    one, complete, never a mix or a prefix.

    ``Atomic(path)`` touches nothing; each ``write_all`` is independent, and concurrent
    writers of one path each publish a complete file (the last rename wins). The published
    file gets the temp's mode (``mode``, 0o600 by default, less the umask), not the old
    file's.
    """

    __slots__ = ("_dir", "_mode", "_path")

    def __init__(self, path: str | os.PathLike[str], *, mode: int = 0o600) -> None:
        p = os.path.abspath(os.fspath(path))
        if not os.path.basename(p):
            raise StorageError(f"{p!r} has no file name")
        self._path = p
        self._dir = os.path.dirname(p)
        self._mode = mode

    @property
    def path(self) -> str:
        """The canonical path (absolute)."""
        return self._path

    def __repr__(self) -> str:
        return f"Atomic({self._path!r})"

    def _temp_prefix(self) -> str:
        name = os.path.basename(self._path)
        if len(os.fsencode(name)) > 200:  # keep the temp's name under NAME_MAX (255)
            name = hashlib.blake2b(os.fsencode(name), digest_size=8).hexdigest()
        return f".{name}."

    def write_all(self, data: bytes | bytearray | memoryview, *, durable: bool = True) -> None:
        """Replace the file's content with ``data``. Blocks for the write and, when
        ``durable``, two fsyncs (the data, then the directory): on return the new file
        survives a power cut. ``durable=False`` skips both (still all-or-nothing for live
        readers; after a power cut the file may be the old one, or hold unwritten blocks).

        Raises:
            ResourceNotFound: the directory does not exist.
            StorageFull: no space left; the old file is untouched and the temp is removed.
            StorageError: any other OS error, mapped; the temp is removed.
        """
        mv = _byte_view(data)
        fd, temp = self._create_temp()
        try:
            _step("atomic:write")
            _write_fully(fd, mv, None)
            if durable:
                _step("atomic:fsync")
                os.fsync(fd)
            _step("atomic:replace")
            os.replace(temp, self._path)
        except BaseException as exc:
            try:
                _unlink_if_mine(fd, temp)
            finally:
                os.close(fd)
            if isinstance(exc, OSError):
                raise _map_oserror(exc, self._path) from exc
            raise
        try:
            if durable:
                _step("atomic:fsync-dir")
                _fsync_dir(self._dir)
        except OSError as exc:
            raise StorageError(
                f"{self._path}: replaced, but the directory fsync failed"
                f" (the rename may not survive a power cut): {exc}") from exc
        finally:
            os.close(fd)  # releases the liveness lock

    def _create_temp(self) -> tuple[int, str]:
        prefix = os.path.join(self._dir, self._temp_prefix())
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
        for _ in range(_CLAIM_ATTEMPTS):
            temp = f"{prefix}{secrets.token_hex(6)}{_ATOMIC_SUFFIX}"
            try:
                fd = os.open(temp, flags, self._mode)
            except FileExistsError:
                continue
            except OSError as exc:
                raise _map_oserror(exc, f"temp file for {self._path}") from exc
            try:
                # A sweeper may have locked the fresh file before us (it cannot tell "just
                # created" from "orphaned"); it unlinks it, so take another name.
                if _try_lock(fd) and _same_file(fd, temp):
                    return fd, temp
            except OSError as exc:
                os.close(fd)
                raise _map_oserror(exc, temp) from exc
            os.close(fd)
        raise StorageError(f"could not create a temp file for {self._path}")

    def read(self) -> bytes:
        """The canonical file's bytes (one complete version). Blocks for the read.

        Raises:
            ResourceNotFound: there is no file at ``path``.
        """
        try:
            fd = os.open(self._path, os.O_RDONLY | _O_CLOEXEC)
        except OSError as exc:
            raise _map_oserror(exc, self._path) from exc
        try:
            chunks: list[bytes] = []
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        except OSError as exc:
            raise _map_oserror(exc, self._path) from exc
        finally:
            os.close(fd)

    def remove_stale_temps(self) -> int:
        """Delete the temps of this path whose writer is gone (killed before its rename);
        a live writer's temp is locked and is left alone. Returns how many were removed.
        Cost: one directory listing plus an open and a lock probe per temp found."""
        prefix = self._temp_prefix()
        removed = 0
        try:
            names = os.listdir(self._dir)
        except OSError as exc:
            raise _map_oserror(exc, self._dir) from exc
        for name in names:
            if not (name.startswith(prefix) and name.endswith(_ATOMIC_SUFFIX)):
                continue
            temp = os.path.join(self._dir, name)
            try:
                fd = os.open(temp, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
            except OSError:
                continue  # gone meanwhile, or not a file we would follow
            try:
                if _try_lock(fd) and _same_file(fd, temp):
                    os.unlink(temp)
                    removed += 1
            except OSError:
                pass
            finally:
                os.close(fd)
        return removed


# --------------------------------------------------------------------------- AtomicChunked


def _claim(tmp: str, mode: int) -> int:
    """Open and lock ``tmp``; returns the descriptor of the claimed inode (not yet truncated).

    Raises TmpClaimed while a live writer holds it, StorageError for a symlink or a file that
    is not a plain regular file with one link.
    """
    flags = os.O_RDWR | os.O_CREAT | _O_NOFOLLOW | _O_CLOEXEC
    for _ in range(_CLAIM_ATTEMPTS):
        try:
            fd = os.open(tmp, flags, mode)
        except OSError as exc:
            raise _map_oserror(exc, f"temp file {tmp}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise StorageError(f"{tmp} is not a regular file; refusing to claim it")
            _step("claim:lock")
            if not _try_lock(fd):
                if _same_file(fd, tmp):
                    raise TmpClaimed(tmp)
                continue  # its holder renamed or unlinked it meanwhile: look again
            if not _same_file(fd, tmp):
                continue  # we locked an inode that is no longer the tmp: look again
            if os.fstat(fd).st_nlink != 1:
                raise StorageError(
                    f"{tmp} has other hard links; refusing to truncate a file shared"
                    " with another path")
            claimed, fd = fd, -1
            return claimed
        except OSError as exc:
            raise _map_oserror(exc, tmp) from exc
        finally:
            if fd >= 0:
                os.close(fd)  # also drops a lock taken on a stale inode
    raise TmpClaimed(tmp)


_LIVE: weakref.WeakSet[AtomicChunked] = weakref.WeakSet()


class AtomicChunked:
    """A file written at any offsets into ``<canonical>.tmp`` under an exclusive claim, and
    published whole at ``canonical`` by ``commit``. Create with ``AtomicChunked.open``.

    While active, reads see this handle's own written bytes (they stop at the first byte not
    written). After ``commit`` the handle reads the committed file and refuses writes
    (``ReadOnlyError``). ``fail``, ``close``, leaving a ``with`` block or dropping an
    uncommitted handle removes the tmp (deliberately unlike the shared-resource handles, whose
    ``__del__`` unlinks nothing: the tmp is this writer's private scratch, and a tmp left
    behind would only cost the next writer a reclaim). A closed handle raises
    ``ResourceClosed``; a failed one ``ResourceFailed``.

    Methods are thread-safe (one lock per handle; writes through one handle serialise).
    """

    __slots__ = (
        "__weakref__", "_barrier", "_canonical", "_closed", "_coverage", "_dir", "_fd",
        "_final_given", "_ino", "_length", "_lock", "_pid", "_reason", "_ro_fd", "_state",
        "_synced", "_tmp", "_why_closed",
    )

    def __init__(self, canonical: str, fd: int, barrier: Barrier) -> None:
        """Internal: wraps a claimed, truncated tmp. Use :meth:`AtomicChunked.open`."""
        st = os.fstat(fd)
        self._canonical = canonical
        self._tmp = canonical + ".tmp"
        self._dir = os.path.dirname(canonical)
        self._fd = fd  # the claimed tmp (read-write, locked) while active, else -1
        self._ro_fd = -1  # the committed file, read-only, after commit
        self._ino = (st.st_dev, st.st_ino)
        self._barrier: Barrier = barrier
        self._state = State.ACTIVE
        self._reason = ""
        self._closed = False
        self._why_closed = "the handle was closed"
        self._coverage = RangeSet()
        self._length = 0  # the committed length
        self._final_given = False
        self._synced = False
        self._pid = os.getpid()
        self._lock = threading.Lock()
        _LIVE.add(self)

    # ------------------------------------------------------------------ claim

    @classmethod
    def open(cls, canonical: str | os.PathLike[str], *, barrier: Barrier = "inline",
             capacity_hint: int = 0, mode: int = 0o600) -> AtomicChunked:
        """Claim ``<canonical>.tmp`` and start a fresh (empty) write. Never blocks on another
        writer: a live one makes it raise ``TmpClaimed`` (poll and retry, or read the
        canonical file once it is committed). A tmp left by a dead writer is reclaimed and
        truncated. ``capacity_hint`` reserves that many bytes on disk up front
        (``posix_fallocate``), so the writes cannot run out of space; ``commit`` trims the
        rest. The directory must exist.

        Raises:
            TmpClaimed: a live writer (in any process, or this one) holds the claim.
            StorageError: ``<canonical>.tmp`` is a symlink (not followed), not a regular
                file, or hard-linked elsewhere; or another OS error, mapped.
            ResourceNotFound: the directory does not exist.
            StorageFull: the capacity hint does not fit on the file system.
        """
        if barrier not in ("inline", "deferred"):
            raise ValueError(f"barrier must be 'inline' or 'deferred', not {barrier!r}")
        capacity_hint = operator.index(capacity_hint)
        if not 0 <= capacity_hint <= _MAX:
            raise InvalidRange(0, capacity_hint, "invalid capacity hint")
        path = os.path.abspath(os.fspath(canonical))
        if not os.path.basename(path):
            raise StorageError(f"{path!r} has no file name")
        tmp = path + ".tmp"
        fd = _claim(tmp, mode)
        try:
            # Always: a reclaimed tmp holds a dead writer's bytes, which must never be served.
            os.ftruncate(fd, 0)
            if capacity_hint:
                reserve(fd, capacity_hint, tmp)
        except BaseException as exc:
            try:
                _unlink_if_mine(fd, tmp)
            finally:
                os.close(fd)
            if isinstance(exc, OSError):
                raise _map_oserror(exc, tmp) from exc
            raise
        return cls(path, fd, barrier)

    # ------------------------------------------------------------------ properties

    @property
    def canonical_path(self) -> str:
        """Where the file lands on a successful commit."""
        return self._canonical

    @property
    def tmp_path(self) -> str:
        """``<canonical>.tmp``, the claimed temp file."""
        return self._tmp

    @property
    def path(self) -> str:
        """The path that currently names the bytes: the tmp until commit, then canonical."""
        return self._canonical if self._state is State.COMMITTED else self._tmp

    @property
    def barrier(self) -> Barrier:
        return self._barrier

    @property
    def status(self) -> ResourceStatus:
        """``Active()``, ``Committed(final_len, length)`` or ``Failed(reason)``; an uncommitted
        handle that was closed reports ``Failed("closed without commit")``. Never raises."""
        if self._state is State.COMMITTED:
            return ResourceStatus.Committed(
                self._length if self._final_given else None, self._length)
        if self._state is State.FAILED:
            return ResourceStatus.Failed(self._reason)
        return ResourceStatus.Active()

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else self._state.name.lower()
        return f"AtomicChunked({self._canonical!r}, {state}, barrier={self._barrier!r})"

    def _usable(self) -> None:
        if self._closed:
            raise ResourceClosed(f"{self._canonical}: {self._why_closed}")
        if self._state is State.FAILED:
            raise ResourceFailed(self._reason, self._canonical)

    # ------------------------------------------------------------------ write and read

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``offset`` of the tmp (``pwrite``; blocks for the write, no
        fsync). Cost: one system call per call, plus an O(log n) coverage update.

        Raises:
            ReadOnlyError: after commit.
            InvalidRange: a negative offset or an end past 2**63.
            StorageFull: no space left on the file system.
        """
        offset = operator.index(offset)
        mv = _byte_view(data)
        end = offset + len(mv)
        _check_range(offset, end)
        with self._lock:
            self._usable()
            if self._state is State.COMMITTED:
                raise ReadOnlyError(f"{self._canonical} is committed; writes are refused")
            try:
                _write_fully(self._fd, mv, offset)
            except OSError as exc:
                raise _map_oserror(exc, self._tmp) from exc
            self._coverage.add(offset, end)

    def _readable_end(self, offset: int) -> int:
        if self._state is State.COMMITTED:
            return self._length
        return self._coverage.covered_prefix(offset)

    def read_at(self, offset: int, buf: bytearray | memoryview) -> int:
        """Read into ``buf`` from ``offset``; returns the number of bytes read. While active
        the read is short at the first byte this writer has not written (0 when ``offset``
        itself is not written); after commit, short at the committed length. Never blocks on
        other processes.

        Raises:
            InvalidRange: a negative offset or an end past 2**63.
        """
        offset = operator.index(offset)
        mv = memoryview(buf).cast("B")
        if mv.readonly:
            raise TypeError("read_at needs a writable buffer")
        _check_range(offset, offset + len(mv))
        with self._lock:
            self._usable()
            n = max(0, min(len(mv), self._readable_end(offset) - offset))
            fd = self._ro_fd if self._state is State.COMMITTED else self._fd
            got = 0
            try:
                while got < n:
                    k = os.preadv(fd, [mv[got:n]], offset + got)
                    if k <= 0:
                        break  # the file was shortened behind our back
                    got += k
            except OSError as exc:
                raise _map_oserror(exc, self.path) from exc
            return got

    def read(self, offset: int, n: int) -> bytes:
        """``n`` bytes from ``offset`` as ``bytes``, or fewer (see ``read_at``)."""
        n = operator.index(n)
        if n < 0:
            raise InvalidRange(offset, offset + n)
        buf = bytearray(n)
        got = self.read_at(offset, buf)
        return bytes(buf[:got])

    def contains_range(self, start: int, end: int) -> bool:
        """True when every byte of ``[start, end)`` is readable (written by this handle while
        active; inside the committed length after commit). An empty range: always True.

        Raises:
            InvalidRange: a reversed or negative range.
        """
        _check_range(start, end)
        with self._lock:
            self._usable()
            if self._state is State.COMMITTED:
                return end <= self._length or start >= end
            return self._coverage.covers(start, end)

    @property
    def extent(self) -> int:
        """The end of the highest written byte (the committed length after commit)."""
        if self._state is State.COMMITTED:
            return self._length
        return self._coverage.extent()

    # ------------------------------------------------------------------ lifecycle

    def commit(self, final_len: int | None = None) -> None:
        """Publish the bytes at ``canonical_path``. Trims (or zero-extends) the file to
        ``final_len``, or to the written extent when it is None; with the inline barrier,
        fsyncs the data before the rename and the directory after it; then reopens the
        committed file read-only and releases the claim. A second commit with the same (or
        no) length is a no-op.

        Blocks for the trim, the rename and (inline) two fsyncs. An error before the rename
        fails the writer (the tmp is removed, the canonical path untouched); an error of the
        directory fsync after it is raised with the file already committed.

        Raises:
            ReadOnlyError: a second commit with a different length.
            ResourceFailed: the writer failed.
            InvalidRange: a negative ``final_len``.
        """
        if final_len is not None:
            final_len = operator.index(final_len)
            _check_range(0, final_len)
        with self._lock:
            self._usable()
            if self._state is State.COMMITTED:
                if final_len is None or final_len == self._length:
                    return
                raise ReadOnlyError(
                    f"{self._canonical} is already committed with {self._length} bytes")
            length = self._coverage.extent() if final_len is None else final_len
            fd = self._fd
            inline = self._barrier == "inline"
            try:
                # No user-space buffer to flush: every write_at went straight to the file.
                _step("commit:trim")
                os.ftruncate(fd, length)
                if inline:
                    _step("commit:fsync")
                    os.fsync(fd)
                if not _same_file(fd, self._tmp):
                    raise StorageError(
                        f"{self._tmp} was removed or replaced behind the claim;"
                        " refusing to publish it")
                _step("commit:replace")
                os.replace(self._tmp, self._canonical)
            except BaseException as exc:
                why = f"commit failed: {exc}"
                self._abandon_locked(why)
                if isinstance(exc, OSError):
                    raise _map_oserror(exc, self._canonical) from exc
                raise
            self._state = State.COMMITTED
            self._length = length
            self._final_given = final_len is not None
            self._coverage = RangeSet([(0, length)])
            error: tuple[str, OSError] | None = None
            if inline:
                _step("commit:fsync-dir")
                try:
                    _fsync_dir(self._dir)
                    self._synced = True
                except OSError as exc:
                    error = ("the directory fsync failed (the rename may not survive a"
                             " power cut)", exc)
            _step("commit:reopen")
            self._fd = -1
            try:
                self._ro_fd = self._reopen_committed(fd)
            except OSError as exc:  # out of descriptors: committed, but unreadable here
                self._closed = True
                self._why_closed = "the committed file could not be reopened"
                error = (self._why_closed, exc)
            finally:
                _step("commit:unlock")
                try:
                    fcntl.flock(fd, fcntl.LOCK_UN)  # explicit: a dup'ed _ro_fd shares it
                finally:
                    os.close(fd)
            if error is not None:
                what, cause = error
                raise StorageError(f"{self._canonical}: committed, but {what}: {cause}") from cause

    def _reopen_committed(self, fd: int) -> int:
        """A read-only descriptor of the committed inode: the canonical path, if it still
        names our file (another program may have replaced it since the rename), else a
        duplicate of our own descriptor."""
        try:
            ro = os.open(self._canonical, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
        except OSError:
            return os.dup(fd)
        st = os.fstat(ro)
        if (st.st_dev, st.st_ino) != self._ino:
            os.close(ro)
            return os.dup(fd)
        return ro

    def _abandon_locked(self, reason: str) -> OSError | None:
        """Unlink the tmp, then unlock and close; the handle becomes FAILED. Returns the
        error of the unlink, if any (the tmp is then at least emptied)."""
        fd, self._fd = self._fd, -1
        self._state = State.FAILED
        self._reason = reason
        self._coverage = RangeSet()
        error: OSError | None = None
        try:
            _unlink_if_mine(fd, self._tmp)
        except OSError as exc:
            error = exc
            try:
                os.ftruncate(fd, 0)  # never leave bytes that could pass for a valid tmp
            except OSError:
                pass
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            pass
        os.close(fd)
        return error

    def fail(self, reason: str) -> None:
        """Give up the write: remove the tmp, release the claim. Later calls raise
        ``ResourceFailed(reason)``; a second ``fail`` is a no-op (the first reason stays).

        Raises:
            ReadOnlyError: the file was committed already.
            ResourceClosed: the handle was closed.
            StorageError: the tmp could not be removed (it was emptied instead).
        """
        with self._lock:
            if self._closed:
                raise ResourceClosed(f"{self._canonical}: {self._why_closed}")
            if self._state is State.FAILED:
                return
            if self._state is State.COMMITTED:
                raise ReadOnlyError(f"{self._canonical} is committed; it cannot fail")
            error = self._abandon_locked(str(reason))
        if error is not None:
            raise _map_oserror(error, self._tmp) from error

    def sync(self) -> None:
        """The deferred barrier: after commit, fsync the committed file and its directory
        (once; later calls, and calls after an inline commit, return at once). Before
        commit, fsync the tmp's data. Blocks for the fsyncs.

        Raises:
            ResourceFailed, ResourceClosed: the handle failed or was closed.
        """
        with self._lock:
            self._usable()
            try:
                if self._state is State.ACTIVE:
                    os.fsync(self._fd)
                elif not self._synced:
                    _step("sync:fsync")
                    os.fsync(self._ro_fd)
                    _step("sync:fsync-dir")
                    _fsync_dir(self._dir)
                    self._synced = True
            except OSError as exc:
                raise _map_oserror(exc, self.path) from exc

    def close(self) -> None:
        """Close the handle; idempotent. An uncommitted writer's tmp is removed first, then
        the claim released (status ``Failed("closed without commit")``).

        Raises:
            StorageError: the tmp could not be removed (it was emptied instead); the handle
                is closed all the same.
        """
        with self._lock:
            if self._closed:
                return
            error = None
            if self._state is State.ACTIVE:
                error = self._abandon_locked("closed without commit")
            if self._ro_fd >= 0:
                ro, self._ro_fd = self._ro_fd, -1
                os.close(ro)
            self._closed = True
        if error is not None:
            raise _map_oserror(error, self._tmp) from error

    def __enter__(self) -> AtomicChunked:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc is not None and self._state is State.ACTIVE and not self._closed:
                self.fail(f"{exc_type.__name__ if exc_type else 'error'}: {exc}")
        finally:
            self.close()

    def __del__(self) -> None:
        try:
            if self._pid == os.getpid():
                self.close()
        except Exception:
            pass

    def _forget_after_fork(self) -> None:
        """In a forked child: drop the inherited descriptors without touching the tmp or the
        lock (closing a copy of the descriptor leaves the parent's flock in place)."""
        self._lock = threading.Lock()
        for fd in (self._fd, self._ro_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._fd = self._ro_fd = -1
        self._closed = True
        self._why_closed = "the handle was inherited through fork; the claim stays with the parent"

    # ------------------------------------------------------------------ invariants

    def _check(self) -> None:
        """Invariant checker, for tests: the coverage is well formed; an active handle holds
        the lock on the inode still named by the tmp path and covers nothing past the file;
        a committed one reads exactly ``length`` bytes of its own inode."""
        self._coverage._check()
        if self._closed or self._state is State.FAILED:
            assert self._fd == -1, "a closed or failed handle keeps its tmp descriptor"
            if self._closed:
                assert self._ro_fd == -1, "a closed handle keeps its read descriptor"
            return
        if self._state is State.ACTIVE:
            assert self._fd >= 0 and self._ro_fd == -1
            assert _same_file(self._fd, self._tmp), "the tmp path names another file"
            st = os.fstat(self._fd)
            assert (st.st_dev, st.st_ino) == self._ino
            assert self._coverage.extent() <= st.st_size, "coverage past the end of the file"
            probe = os.open(self._tmp, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
            try:
                assert not _try_lock(probe), "the claim's lock is not held"
            finally:
                os.close(probe)
            return
        assert self._fd == -1 and self._ro_fd >= 0
        st = os.fstat(self._ro_fd)
        assert (st.st_dev, st.st_ino) == self._ino, "the read descriptor is another file"
        assert st.st_size == self._length, f"committed {self._length}, file has {st.st_size}"
        assert self._coverage.covers(0, self._length) and len(self._coverage) <= 1


def _after_fork_in_child() -> None:
    try:
        handles = list(_LIVE)
    except RuntimeError:  # the set changed under a thread the fork did not copy
        return
    for handle in handles:
        handle._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
