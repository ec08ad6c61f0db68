"""Adversarial tests of ``shmstore.fetch``: simultaneous fetches, crash points of the fetcher,
readers parked while the download fails or steers, and HTTP edge cases.

Real processes (fork), the real HTTP server of ``server.py`` (its counters prove what was
downloaded) and real shared memory or files. Polling loops below wait for a condition another
process makes true (a waiter parked, a byte served); they never sleep to order events."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import shmstore
from shmstore import WaitOutcome
from shmstore.core import layout as L
from shmstore.resource import Resource
from shmstore.sources import HttpSource

from .conftest import payload
from .helpers import covered_once, unlink, until
from .server import Obj, Server

F = sys.modules["shmstore.fetch"]  # the module (``shmstore.fetch`` is the function)
KiB, MiB = 1 << 10, 1 << 20
CTX = mp.get_context("fork")


# ----------------------------------------------------------------------------- helpers
def _where(backend: str, name: str, tmp_path: Path) -> dict[str, Any]:
    return {"name": name} if backend == "shm" else {"path": str(tmp_path / "obj.bin")}


def _open(where: dict[str, Any]) -> Resource:
    if "name" in where:
        return shmstore.open(where["name"])
    return shmstore.open(path=where["path"], backend="mmap")


def _piece_gets(http: Server, path: str) -> list[str]:
    return [rng for m, p, rng, in http.state.requests
            if m == "GET" and p == path and rng and rng != "bytes=0-0"]


def _order(http: Server, path: str, chunk: int) -> list[int]:
    return [int(g.split("=")[1].split("-")[0]) // chunk for g in _piece_gets(http, path)]


def _run(q: Any, fn: Callable[..., Any], *args: Any) -> None:
    """Child body: report ("ok", result) or ("err", type name, traceback)."""
    try:
        q.put(("ok", fn(*args)))
    except BaseException as exc:
        q.put(("err", type(exc).__name__, traceback.format_exc()))


def _spawn(fn: Callable[..., Any], *args: Any) -> tuple[Any, Any]:
    q = CTX.Queue()
    p = CTX.Process(target=_run, args=(q, fn, *args))
    p.start()
    return p, q


def _reap(procs: list[Any]) -> None:
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join(10)


# ------------------------------------------------------------ simultaneous fetches
def _racer(url: str, where: dict[str, Any], barrier: Any) -> str:
    barrier.wait(30)
    r = shmstore.fetch(url, chunk=256 * KiB, workers=2, timeout=60, **where)
    try:
        st = r.status
        assert isinstance(st, shmstore.ResourceStatus.Committed), st
        return hashlib.sha256(r.read(0, st.length)).hexdigest()
    finally:
        r.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["shm", "mmap"])
def test_simultaneous_fetches_make_exactly_one_download(http: Server, name: str,
                                                        tmp_path: Path, backend: str) -> None:
    data = payload(3 * MiB + 17, 11)
    http.state.put("/obj", data)
    where = _where(backend, name, tmp_path)
    n = 6
    barrier = CTX.Barrier(n)
    procs, queues = [], []
    try:
        for _ in range(n):
            p, q = _spawn(_racer, http.base + "/obj", where, barrier)
            procs.append(p)
            queues.append(q)
        results = [q.get(timeout=90) for q in queues]
        for p in procs:
            p.join(30)
        assert all(r[0] == "ok" for r in results), results
        assert {r[1] for r in results} == {hashlib.sha256(data).hexdigest()}
        covered_once(http, "/obj", len(data))
        heads = [1 for m, p, _r in http.state.requests if m == "HEAD" and p == "/obj"]
        assert len(heads) == n  # each process opened the source once, nothing more
    finally:
        _reap(procs)
        unlink(**where)


@pytest.mark.timeout(120)
def test_simultaneous_fetches_of_an_empty_object(http: Server, name: str) -> None:
    http.state.put("/empty", b"")
    n = 4
    barrier = CTX.Barrier(n)
    procs, queues = [], []
    try:
        for _ in range(n):
            p, q = _spawn(_racer, http.base + "/empty", {"name": name}, barrier)
            procs.append(p)
            queues.append(q)
        results = [q.get(timeout=90) for q in queues]
        assert all(r[0] == "ok" for r in results), results
        assert {r[1] for r in results} == {hashlib.sha256(b"").hexdigest()}
        assert http.state.served.get("/empty", 0) == 0
    finally:
        _reap(procs)
        unlink(name)


# ------------------------------------------------------------ crash points of the fetcher
def _die_at(point: str, url: str, where: dict[str, Any]) -> None:
    """Fetch, SIGKILLing this process at ``point``."""
    me = os.getpid()

    def die(*_a: Any, **_k: Any) -> None:
        os.kill(me, signal.SIGKILL)

    if point == "before-identity":
        F._record_identity = die
    elif point == "before-role":
        real = Resource._try_role

        def try_role(self: Resource, byte: int) -> bool:
            if byte == L.LOCK_FETCHER and self.writable:
                die()
            return real(self, byte)

        Resource._try_role = try_role  # type: ignore[method-assign]
    elif point == "before-commit":
        real_commit = Resource.commit

        def commit(self: Resource, final_len: int | None = None) -> None:
            die()
            real_commit(self, final_len)

        Resource.commit = commit  # type: ignore[method-assign]
    shmstore.fetch(url, chunk=256 * KiB, workers=2, **where)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["shm", "mmap"])
@pytest.mark.parametrize("point", [
    "before-identity",
    "before-role",
    "before-commit",
])
def test_the_next_fetch_takes_over_from_a_fetcher_killed_at(
        http: Server, name: str, tmp_path: Path, backend: str, point: str) -> None:
    data = payload(MiB + 5, 12)
    http.state.put("/obj", data)
    where = _where(backend, name, tmp_path)
    if point == "before-identity" and backend == "shm":
        # Killed before recording the identity: under the derived fetch-<hash> name (which
        # encodes it) the next fetch adopts the resource; a name or path the caller chose
        # may hold anything, and stays refused (the mmap case below).
        where = {}
    p = CTX.Process(target=_die_at, args=(point, http.base + "/obj", where))
    p.start()
    derived = None
    try:
        p.join(30)
        assert p.exitcode == -signal.SIGKILL
        if point == "before-identity" and backend == "mmap":
            with pytest.raises(shmstore.SourceChanged, match="not made by fetch"):
                shmstore.fetch(http.base + "/obj", chunk=256 * KiB, timeout=30, **where)
            return
        r = shmstore.fetch(http.base + "/obj", chunk=256 * KiB, timeout=30, **where)
        derived = r.name if not where else None
        try:
            assert r.read(0, len(data)) == data
        finally:
            r.close()
    finally:
        _reap([p])
        if derived is not None:
            unlink(derived)
        elif where:
            unlink(**where)


def _fetch_then_exit(url: str, where: dict[str, Any], started: Any) -> None:
    def progress(done: int, size: int) -> None:
        if done:
            started.set()

    r = shmstore.fetch(url, chunk=128 * KiB, workers=1, wait=False, progress=progress,
                       **where)
    assert started.wait(30)
    r.close()
    # return: the process exits normally, its download thread midway


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["shm", "mmap"])
def test_a_wait_false_fetcher_that_exits_normally_is_resumed(http: Server, name: str,
                                                             tmp_path: Path,
                                                             backend: str) -> None:
    data = payload(2 * MiB, 13)
    http.state.put("/obj", data)
    http.state.faults.trickle = 0.01
    where = _where(backend, name, tmp_path)
    started = CTX.Event()
    p = CTX.Process(target=_fetch_then_exit, args=(http.base + "/obj", where, started))
    p.start()
    try:
        p.join(30)
        assert p.exitcode == 0  # and it did not hang on its download thread
        r = _open(where)
        try:
            assert r.status == shmstore.ResourceStatus.Active()
            with pytest.raises(shmstore.WriterDied):
                r.wait_range(len(data) - 1, len(data), timeout=10)
            http.state.faults.trickle = 0
            done = shmstore.fetch(http.base + "/obj", chunk=128 * KiB, timeout=30, **where)
            assert done.read(0, len(data)) == data
            done.close()
            # the reader parked before sees the resumed download's bytes
            assert r.wait_range(0, len(data), timeout=10) is WaitOutcome.READY
            assert r.read(0, len(data)) == data
        finally:
            r.close()
    finally:
        _reap([p])
        unlink(**where)


def _exit_when_complete(url: str, where: dict[str, Any]) -> None:
    """A sequential (Range-less) fetch killed after its last byte landed, before commit."""
    me = os.getpid()

    def progress(done: int, size: int) -> None:
        if done == size:
            os.kill(me, signal.SIGKILL)

    shmstore.fetch(url, chunk=256 * KiB, progress=progress, **where)


@pytest.mark.timeout(60)
def test_range_less_resume_of_a_fully_covered_resource(http: Server, name: str) -> None:
    """Every byte is there but no commit: the next fetch must just commit. (It streamed from
    ``n * chunk``, past the end when the size is no multiple of the chunk, and failed the
    resource with 'stream ended at ...'.)"""
    data = payload(MiB + 1000, 14)  # not a multiple of the chunk
    http.state.put("/obj", data)
    http.state.faults.ignore_range = True
    where = {"name": name}
    p = CTX.Process(target=_exit_when_complete, args=(http.base + "/obj", where))
    p.start()
    try:
        p.join(30)
        assert p.exitcode == -signal.SIGKILL
        nreq = len(http.state.requests)
        r = shmstore.fetch(http.base + "/obj", chunk=256 * KiB, timeout=30, **where)
        try:
            assert r.read(0, len(data)) == data
            assert isinstance(r.status, shmstore.ResourceStatus.Committed)
        finally:
            r.close()
        # no GET but the source's range probe (whose body is dropped unread)
        assert [rq for rq in http.state.requests[nreq:] if rq[0] == "GET"] == [
            ("GET", "/obj", "bytes=0-0")]
    finally:
        _reap([p])
        unlink(name)


@pytest.mark.timeout(60)
def test_a_late_range_less_fetcher_never_fails_a_committed_resource(http: Server,
                                                                    name: str) -> None:
    """A process that wins the fetcher role just after the download committed (it saw the
    resource active) runs a download with nothing to do: it must not fail the resource."""
    data = payload(MiB + 1000, 15)
    http.state.put("/obj", data)
    http.state.faults.ignore_range = True
    done = shmstore.fetch(http.base + "/obj", name=name, chunk=256 * KiB)
    try:
        src = shmstore.sources.open_source(http.base + "/obj")
        w = shmstore.open(name, mode="r+")
        assert w._try_role(L.LOCK_FETCHER)
        job = F._Download(w, src, 256 * KiB, 4, None, True)
        job.run()  # the race's loser, deterministically
        assert isinstance(done.status, shmstore.ResourceStatus.Committed), done.status
        assert done.read(0, len(data)) == data
    finally:
        done.close()
        unlink(name)


# ------------------------------------------------------------ readers and the order
def _park_on(name: str, start: int, end: int) -> tuple[str, bool]:
    h = shmstore.open(name)
    try:
        out = h.wait_range(start, end, timeout=60)
        return (out.name, True)
    finally:
        h.close()


def _join_and_wait(url: str, name: str) -> str:
    r = shmstore.fetch(url, name=name, timeout=60)  # joins: parked on the whole object
    try:
        return type(r.status).__name__
    finally:
        r.close()


@pytest.mark.timeout(120)
def test_a_joined_fetch_does_not_disable_reader_first_order(http: Server, name: str) -> None:
    """A second ``fetch(wait=True)`` parks on the whole object [0, size); the download
    orders by the parked ranges sorted by start, so that range always wins and a reader that
    seeks waits for the whole sequential pass instead of one round trip."""
    chunk = 128 * KiB
    npieces = 40
    data = payload(npieces * chunk, 16)
    http.state.put("/obj", data)
    http.state.faults.trickle = 0.02
    url = http.base + "/obj"
    r = shmstore.fetch(url, name=name, chunk=chunk, workers=1, wait=False)
    procs = []
    try:
        p, q = _spawn(_join_and_wait, url, name)
        procs.append(p)
        until(lambda: (0, len(data)) in r._waiting_ranges(), what="the joiner to park")
        want = npieces - 3
        before = len(_piece_gets(http, "/obj"))
        assert r.wait_range(want * chunk, (want + 1) * chunk, timeout=60) is WaitOutcome.READY
        order = _order(http, "/obj", chunk)
        assert want in order[: before + 2], (before, order)
        assert q.get(timeout=60) == ("ok", "Committed")
        assert r.read(0, len(data)) == data
        covered_once(http, "/obj", len(data))
    finally:
        r.close()
        _reap(procs)
        unlink(name)


class _GatedSource(HttpSource):
    """Its reads wait for ``gate``: the download stalls on its first piece until then."""

    gate: threading.Event

    def read_exact(self, offset: int, size: int) -> bytes | bytearray:
        assert self.gate.wait(60)
        return super().read_exact(offset, size)


@pytest.mark.timeout(120)
def test_several_parked_readers_are_each_served_first(http: Server, name: str) -> None:
    chunk = 128 * KiB
    npieces = 48
    data = payload(npieces * chunk, 17)
    http.state.put("/obj", data)
    src = _GatedSource(http.base + "/obj")
    src.gate = threading.Event()
    r = shmstore.fetch(src, name=name, chunk=chunk, workers=1, wait=False)
    procs, queues = [], []
    wants = [40, 25, 33]
    try:
        for k in wants:
            p, q = _spawn(_park_on, name, k * chunk, (k + 1) * chunk)
            procs.append(p)
            queues.append(q)
        until(lambda: len(r._waiting_ranges()) == len(wants), what="the readers to park")
        src.gate.set()  # (the piece taken before the last of them parked: one)
        results = [q.get(timeout=60) for q in queues]
        assert all(res == ("ok", ("READY", True)) for res in results), results
        assert r.wait_range(0, len(data), timeout=60) is WaitOutcome.READY
        order = _order(http, "/obj", chunk)
        # after the piece taken before they all parked, each waited-for piece, by offset
        first = order[0]
        expected = [first, *sorted(set(wants) - {first})]
        assert order[: len(expected)] == expected, order
        assert sorted(order) == list(range(npieces))
        assert r.read(0, len(data)) == data
        covered_once(http, "/obj", len(data))
    finally:
        src.gate.set()
        r.close()
        src.close()
        _reap(procs)
        unlink(name)


def _parked_through_failure(name: str, size: int, failed: Any, refetched: Any) -> str:
    h = shmstore.open(name)
    try:
        try:
            h.wait_range(size - 1, size, timeout=60)
            return "not failed"
        except shmstore.ResourceFailed as exc:
            failed.set()
            reason = str(exc)
        if "503" not in reason:
            return f"failed for another reason: {reason}"
        assert refetched.wait(60)
        assert h.wait_range(0, size, timeout=30) is WaitOutcome.READY
        return hashlib.sha256(h.read(0, size)).hexdigest()
    finally:
        h.close()


@pytest.mark.timeout(120)
def test_a_source_error_reaches_parked_readers_and_the_next_fetch_revives_them(
        http: Server, name: str) -> None:
    chunk = 128 * KiB
    data = payload(16 * chunk, 18)
    http.state.put("/obj", data)
    http.state.faults.trickle = 0.02
    url = http.base + "/obj"
    r = shmstore.fetch(url, name=name, chunk=chunk, workers=1, wait=False, retries=0)
    failed, refetched = CTX.Event(), CTX.Event()
    p, q = _spawn(_parked_through_failure, name, len(data), failed, refetched)
    try:
        until(lambda: (len(data) - 1, len(data)) in r._waiting_ranges(), what="the reader")
        with http.state.lock:
            http.state.faults.outage_after, http.state.faults.outage = 0, 1000
        assert failed.wait(60)
        assert isinstance(r.status, shmstore.ResourceStatus.Failed)
        with http.state.lock:
            http.state.faults.outage = 0
        http.state.faults.trickle = 0
        again = shmstore.fetch(url, name=name, chunk=chunk, timeout=30)
        refetched.set()
        assert again.read(0, len(data)) == data
        again.close()
        assert q.get(timeout=60) == ("ok", hashlib.sha256(data).hexdigest())
        assert r.read(0, len(data)) == data  # the wait=False handle sees the new commit too
        covered_once(http, "/obj", len(data))
    finally:
        r.close()
        _reap([p])
        unlink(name)


# ------------------------------------------------------------ timeouts
@pytest.mark.timeout(60)
def test_timeout_bounds_the_downloading_fetch_too(http: Server, name: str) -> None:
    data = payload(MiB, 19)
    http.state.put("/obj", data)
    http.state.faults.trickle = 0.05  # 16 bodies of 64 KiB: ~0.8 s a worker
    t0 = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            shmstore.fetch(http.base + "/obj", name=name, chunk=64 * KiB, workers=1,
                           timeout=0.2)
        assert time.monotonic() - t0 < 0.6
    finally:
        unlink(name)


# ------------------------------------------------------------ HTTP edge cases
@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", ["", "no_head", "ignore_range"])
def test_fetch_of_an_empty_object(http: Server, name: str, fault: str) -> None:
    http.state.put("/empty", b"")
    if fault:
        setattr(http.state.faults, fault, True)
    r = shmstore.fetch(http.base + "/empty", name=name, timeout=10)
    try:
        assert r.status == shmstore.ResourceStatus.Committed(0, 0)
        assert r.read(0, 0) == b""
        assert r.wait_range(0, 1, timeout=5) is WaitOutcome.EOF
        again = shmstore.fetch(http.base + "/empty", name=name, timeout=10)
        assert again.status == shmstore.ResourceStatus.Committed(0, 0)
        again.close()
    finally:
        r.close()
        unlink(name)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("size", [256 * KiB, 256 * KiB - 1, 256 * KiB + 1, 1])
def test_fetch_of_an_object_at_the_piece_boundaries(http: Server, name: str, size: int) -> None:
    data = payload(size, 20)
    http.state.put("/obj", data)
    r = shmstore.fetch(http.base + "/obj", name=name, chunk=256 * KiB, workers=4)
    try:
        assert r.status == shmstore.ResourceStatus.Committed(size, size)
        assert r.read(0, size) == data
        assert r.wait_range(size, size + 1, timeout=5) is WaitOutcome.EOF
        if size > 1:  # (a 1-byte object's only piece looks like the range probe)
            assert len(_piece_gets(http, "/obj")) == (size + 256 * KiB - 1) // (256 * KiB)
            covered_once(http, "/obj", size)
    finally:
        r.close()
        unlink(name)


@pytest.mark.timeout(60)
def test_fetch_through_a_redirect_to_another_path(http: Server, name: str) -> None:
    data = payload(MiB + 3, 21)
    http.state.put("/obj", data)
    r = shmstore.fetch(http.base + "/redirect/obj", name=name, chunk=256 * KiB)
    try:
        assert r.read(0, len(data)) == data
        covered_once(http, "/obj", len(data))
    finally:
        r.close()
        unlink(name)


@pytest.mark.timeout(60)
def test_fetch_from_a_server_ignoring_range_downloads_once(http: Server, name: str) -> None:
    """The server says Accept-Ranges but answers every GET 200 with the whole body."""
    data = payload(2 * MiB + 7, 22)
    http.state.put("/obj", data)
    http.state.faults.ignore_range = True
    r = shmstore.fetch(http.base + "/obj", name=name, chunk=256 * KiB, workers=4)
    try:
        assert r.read(0, len(data)) == data
        # the range probe (its body dropped unread) and one streamed GET, not one per piece
        gets = [rng for m, p, rng in http.state.requests if m == "GET" and p == "/obj"]
        assert gets == ["bytes=0-0", ""], gets
    finally:
        r.close()
        unlink(name)


@pytest.mark.timeout(60)
def test_an_object_shrinking_under_the_same_etag_fails_the_resource(http: Server,
                                                                  name: str) -> None:
    data = payload(MiB, 23)
    http.state.put("/obj", data)
    url = http.base + "/obj"
    src = shmstore.sources.open_source(url, retries=0)
    old = http.state.objects["/obj"]
    http.state.objects["/obj"] = Obj(data[: MiB // 2], old.etag, old.mtime)
    try:
        with pytest.raises(shmstore.SourceChanged, match="length 1048576 -> 524288"):
            shmstore.fetch(src, name=name, chunk=256 * KiB, workers=1)
        src.close()
        reader = shmstore.open(name)
        with pytest.raises(shmstore.ResourceFailed, match="length"):
            reader.wait_range(0, MiB, timeout=5)
        reader.close()
    finally:
        unlink(name)
