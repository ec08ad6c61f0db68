"""One download, many readers: ``fetch`` fills a resource from a source, once per machine.

Theory of operation
===================

The resource is keyed on the source's ``identity`` (the URL and the version pinned at open:
ETag, Last-Modified, length), so two versions of an object never share one. Its name is
``fetch-<hash of the identity>`` unless the caller names it (``name=`` or, file-backed,
``path=``); the identity is then recorded beside the resource (segment ``x``) and checked by
every later fetch.

Who downloads: the process holding the control file's **fetcher lock** (byte 8, an OFD lock,
released by the kernel when the process dies). ``fetch`` creates the resource or opens it and
tries the lock: the winner downloads, everybody else reads. A fetcher that dies leaves an
active resource with no writer: readers get ``WriterDied`` for bytes still missing, and the
next ``fetch`` takes the lock and resumes from the coverage already there (file-backed
resources even after a reboot). A source that fails after its retries fails the resource with
the reason (every reader sees ``ResourceFailed``); the next fetch reactivates it and resumes.

Order: the object is cut into ``chunk``-sized pieces. Before each piece a worker looks at the
ranges that readers of every process are parked on (the control block's waiter slots): a
piece a reader waits for goes first, and the sequential pass continues right after it (the
read-ahead), so a reader that seeks into a half-fetched object waits one round trip, not for
the rest of the file. Without waiting readers the pass is sequential. ``workers`` pieces are
in flight at once; a piece is written with one ``write_at``, so readers see it whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

from .core import layout as L
from .core.lifecycle import ResourceStatus
from .errors import (
    ResourceExists,
    ResourceFailed,
    ResourceNotFound,
    SourceChanged,
    SourceError,
    StorageError,
    StorageFull,
)
from .ipc.segments import SHM_DIR
from .resource import Resource, create
from .resource import open as open_resource
from .sources import Source, open_source

__all__ = ["fetch"]

CHUNK = 4 << 20
WORKERS = 4
_HUGE = 1 << 62  # waits up to here are "anything new" (iter_ranges), not a demand
FIRST_RESERVE = 64 << 20  # bytes reserved at create; the rest as pieces land
IDENTITY_GRACE = 5.0  # seconds a new resource's creator has to record the identity


def fetch(src: str | os.PathLike[str] | Source, *, name: str | None = None,
          path: str | os.PathLike[str] | None = None, chunk: int = CHUNK,
          workers: int = WORKERS, wait: bool = True, timeout: float | None = None,
          progress: Callable[[int, int], None] | None = None, prefault: bool = False,
          **source_options: Any) -> Resource:
    """Fill a shared resource with the bytes of ``src`` (a URL, a path or a ``Source``) and
    return a read-only handle on it.

    The first process to ask downloads (parallel ranged reads, the ranges readers wait for
    first); others asking for the same object join the resource being filled. ``wait=True``
    returns once the resource is committed with the object's exact length, and raises the
    source's error (after failing the resource with it) if the download fails; with
    ``wait=False`` it returns at once, the download goes on in threads of this process, and
    the handle's waits deliver each range as it lands. ``path=`` makes the resource
    file-backed (mmap) at that path: a download killed midway resumes from what the file
    holds. ``progress(covered_bytes, size)`` is called by the downloading process.
    ``prefault=True`` (shm): build the whole resource's pages when it is created, before the
    first piece: on the development VM the whole download took 0.6x the time and the first
    MiB came 2-12x later (the pages of the whole object are touched first; see
    docs/performance.md). The default favours the first byte.

    Raises:
        SourceError: the source failed; its kinds say how: ``SourceNotFound``,
            ``SourceDenied``, ``ShortRead``, ``SourceChanged`` (also when the resource at
            ``name``/``path`` holds another version of the object).
        ResourceFailed: with ``wait=True``, the downloading process (another one) failed,
            or died (``WriterDied``) and no other took over in time; call ``fetch`` again.
        TimeoutError: ``timeout`` seconds passed (in the downloading process the download
            then stops after its current pieces and fails the resource with that reason;
            the next fetch resumes it).
    """
    if chunk <= 0 or workers <= 0:
        raise ValueError("chunk and workers must be positive")
    source = src if isinstance(src, Source) else open_source(src, **source_options)
    owned = source is not src
    try:
        return _fetch(source, name, path, chunk, workers, wait, timeout, progress, owned,
                      prefault)
    except BaseException:
        if owned:
            source.close()
        raise


def _target(source: Source, name: str | None, path: str | os.PathLike[str] | None
            ) -> dict[str, Any]:
    if path is not None:
        return {"path": os.fspath(path), "backend": "mmap"}
    if name is None:
        name = "fetch-" + hashlib.sha256(source.identity.encode()).hexdigest()[:40]
    return {"name": name}


def _fetch(source: Source, name: str | None, path: str | os.PathLike[str] | None, chunk: int,
           workers: int, wait: bool, timeout: float | None,
           progress: Callable[[int, int], None] | None, owned: bool,
           prefault: bool) -> Resource:
    where = _target(source, name, path)
    for _attempt in range(50):
        writer: Resource | None = None
        recorded = True
        try:
            _check_room(where, source)
            # Reserve a first part only (the resource grows as pieces land): reserving the
            # whole object up front would hold back the first piece.
            writer = create(**where, capacity=max(min(source.size, FIRST_RESERVE), 1),
                            prefault=prefault)
            _record_identity(writer, source)
        except ResourceExists:
            writer = None
        if writer is None:
            try:
                reader = open_resource(**where)
            except ResourceNotFound:
                continue  # unlinked meanwhile: create it
            try:
                recorded = _check_identity(reader, source, derived=name is None and path is None)
                st = reader.status
                if isinstance(st, ResourceStatus.Committed):
                    if owned:
                        source.close()
                    return reader
                if not reader._try_role(L.LOCK_FETCHER):
                    # another process is downloading: read what it delivers
                    if owned:
                        source.close()
                    if wait:
                        _wait_committed(reader, source.size, timeout)
                    return reader
                reader._drop_role(L.LOCK_FETCHER)
                writer = open_resource(**where, mode="r+")
            except BaseException:
                reader.close()
                raise
            reader.close()
        if not writer._try_role(L.LOCK_FETCHER):
            writer.close()  # lost the race for the role: join as a reader next time round
            continue
        if not recorded:
            # its creator died before recording the identity, which the derived name
            # encodes anyway: record it now (exclusively: a racing fetcher may be first)
            try:
                _record_identity(writer, source)
            except ResourceExists:
                pass
        job = _Download(writer, source, chunk, workers, progress, owned)
        handle = open_resource(**where)
        if not wait:
            threading.Thread(target=job.run_quietly, name="shmstore-fetch",
                             daemon=True).start()
            return handle
        runner = threading.Thread(target=job.run_quietly, name="shmstore-fetch", daemon=True)
        runner.start()
        runner.join(timeout)
        if runner.is_alive():  # out of time: the workers stop after their current piece
            job.stop(TimeoutError(f"fetch of {source.url}: {timeout} s passed"))
            runner.join()
        if job.outcome is not None:
            handle.close()
            raise job.outcome
        return handle
    raise StorageError(f"fetch of {source.url}: the resource keeps being unlinked")


def _check_room(where: dict[str, Any], source: Source) -> None:
    """Fail now, not half-way, when the object cannot fit where it is going."""
    place = os.path.dirname(os.path.abspath(where["path"])) if "path" in where else SHM_DIR
    try:
        free = shutil.disk_usage(place).free
    except OSError:
        return  # let create() report the place itself
    if source.size > free:
        raise StorageFull(f"fetch of {source.url}: {source.size} bytes, {free} free in {place}")


def _wait_committed(r: Resource, size: int, timeout: float | None) -> None:
    r.wait_range(0, size, timeout=timeout) if size else r.wait_range(0, 1, timeout=timeout)
    r.wait_range(size, size + 1, timeout=timeout)  # EOF once committed


# ------------------------------------------------------------------------- identity
def _record_identity(r: Resource, source: Source) -> None:
    blob = json.dumps({"url": source.url, "identity": source.identity,
                       "size": source.size}).encode()
    fd = r._ns.open("x", create=True, exclusive=True)
    try:
        os.write(fd, blob)
    finally:
        os.close(fd)


def _check_identity(r: Resource, source: Source, *, derived: bool) -> bool:
    """Is ``r`` this version of the object? True when its identity is recorded and matches;
    False when it is unrecorded but may be taken (``derived``: the name is the hash of the
    identity, and its creator died before recording it); raises ``SourceChanged`` when it
    holds something else."""
    deadline = time.monotonic() + IDENTITY_GRACE
    while True:
        try:
            fd = r._ns.open("x", create=False)
            break
        except ResourceNotFound:
            # Its creator records the identity right after create: give a live one time.
            if not r._static and r.writers_alive() and time.monotonic() < deadline:
                time.sleep(0.001)
                continue
            if derived and not r._static:
                return False
            raise SourceChanged(source.url, f"{r!r} was not made by fetch; unlink it to"
                                            " fetch into it") from None
    try:
        raw = os.pread(fd, 1 << 16, 0)
    finally:
        os.close(fd)
    try:
        info = json.loads(raw or b"{}")
    except ValueError:
        info = {}
    if not info:
        return True  # its creator is writing it now (an exclusive create, then one write)
    if info.get("identity") != source.identity:
        raise SourceChanged(source.url, f"{r!r} holds another version ({info.get('identity')});"
                                        " unlink it to fetch this one")
    return True


# ------------------------------------------------------------------------- the download
class _Download:
    def __init__(self, w: Resource, source: Source, chunk: int, workers: int,
                 progress: Callable[[int, int], None] | None, owned: bool) -> None:
        self.w, self.source, self.chunk = w, source, chunk
        self.size = source.size
        self.n = (self.size + chunk - 1) // chunk
        self.workers = max(1, min(workers, self.n or 1))
        self.progress = progress
        self.owned = owned
        self.lock = threading.Lock()
        self.todo = set(range(self.n))
        self.inflight: set[int] = set()
        self.cursor = 0
        self.error: BaseException | None = None
        self.done_bytes = 0
        self.first_done = threading.Event()  # the first piece landed (or nothing will)
        self.outcome: BaseException | None = None  # how run_quietly's run ended, if it raised

    def run_quietly(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # reported through `outcome` (to fetch's caller)
            self.outcome = exc

    def stop(self, why: BaseException) -> None:
        """Make the workers stop after their current piece; the download ends with ``why``."""
        with self.lock:
            if self.error is None:
                self.error = why

    def run(self) -> None:
        w = self.w
        try:
            st = w.status
            if isinstance(st, ResourceStatus.Committed):
                return  # another fetcher finished between our status check and our role
            if isinstance(st, ResourceStatus.Failed):
                w.reactivate()  # a failed download: resume it with what it had
            for i in range(self.n):  # resume: pieces already there
                a, b = i * self.chunk, min((i + 1) * self.chunk, self.size)
                if w.contains_range(a, b):
                    self.todo.discard(i)
                    self.done_bytes += b - a
            if self.progress:
                self.progress(self.done_bytes, self.size)
            if getattr(self.source, "ranges", True) is False:
                self._sequential()
            else:
                threads = [threading.Thread(target=self._worker, name=f"shmstore-fetch-{k}",
                                            daemon=True) for k in range(self.workers)]
                # The first piece alone: readers get their first bytes one round trip after
                # the start, not after `workers` pieces shared the connection's bandwidth.
                threads[0].start()
                self.first_done.wait()
                for t in threads[1:]:
                    t.start()
                for t in threads:
                    t.join()
            if self.error is not None:
                raise self.error
            w.commit(self.size)
        except BaseException as exc:
            if not isinstance(exc, ResourceFailed):
                with contextlib.suppress(StorageError):
                    w.fail(f"fetch of {self.source.url} failed: {exc}")
            raise
        finally:
            with contextlib.suppress(StorageError):
                w._drop_role(L.LOCK_FETCHER)
            w.close()
            if self.owned:
                self.source.close()

    def _next(self) -> int | None:
        """The next piece: one a reader waits for (then read ahead after it), else the next
        in order from the cursor."""
        with self.lock:
            if self.error is not None or not self.todo:
                return None
            # Narrowest demand first: a reader that seeks waits for one piece, while a
            # joined fetch(wait=True) parks on the whole object [0, size) (sorted by start,
            # that range would always win and keep the pass sequential).
            for start, end in sorted(self.w._waiting_ranges(), key=lambda r: (r[1] - r[0], r)):
                if end >= _HUGE:
                    continue
                for i in range(start // self.chunk, min(self.n, (end - 1) // self.chunk + 1)):
                    if i in self.todo:
                        self.todo.discard(i)
                        self.inflight.add(i)
                        self.cursor = i + 1
                        return i
            order = sorted(self.todo)
            i = next((k for k in order if k >= self.cursor), order[0])
            self.todo.discard(i)
            self.inflight.add(i)
            self.cursor = i + 1
            return i

    def _worker(self) -> None:
        try:
            self._work()
        finally:
            self.first_done.set()

    def _work(self) -> None:
        while (i := self._next()) is not None:
            a, b = i * self.chunk, min((i + 1) * self.chunk, self.size)
            try:
                data = self.source.read_exact(a, b - a)
                self.w.write_at(a, data)
            except BaseException as exc:
                with self.lock:
                    if self.error is None:
                        self.error = exc
                return
            with self.lock:
                self.inflight.discard(i)
                self.done_bytes += b - a
                done = self.done_bytes
            self.first_done.set()
            if self.progress:
                self.progress(done, self.size)

    def _sequential(self) -> None:
        """A server that ignores Range: one streamed download, from the first missing byte
        (readers cannot reorder it)."""
        if not self.todo:
            return  # every piece is there already (a fetcher died before its commit)
        stream: Callable[..., Any] | None = getattr(self.source, "stream", None)
        start = min(self.todo) * self.chunk
        if stream is None:
            self._worker()
            return
        pos = start
        for data in stream(start, self.chunk):
            if self.error is not None:
                raise self.error  # stop() was called
            self.w.write_at(pos, data)
            pos += len(data)
            if self.progress:
                self.progress(pos, self.size)
        if pos != self.size:
            raise SourceError(self.source.url, f"stream ended at {pos} of {self.size}")

