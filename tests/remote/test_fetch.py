"""``shmstore.fetch``: one download per machine, many readers, resume, reader-driven order.

Every test uses real processes, the real HTTP server of ``server.py`` (its byte counters prove
what was downloaded), and real shared memory or files."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import signal
import traceback
from pathlib import Path
from typing import Any

import pytest

import shmstore
from shmstore import WaitOutcome

from .conftest import BUCKET, payload
from .helpers import covered_once, unlink
from .server import Server

MiB = 1 << 20


def _requested(http: Server, tag: str) -> int:
    """Bytes asked for by the ranged GETs tagged ``tag`` (not the probes). (A request of a
    killed fetcher may reach the server after it died: tags tell whose a request is.)"""
    total = 0
    for (m, _p, rng), t in zip(http.state.requests, http.state.tags, strict=True):
        if t == tag and m == "GET" and rng and rng != "bytes=0-0":
            a, b = rng.split("=")[1].split("-")
            total += int(b) - int(a) + 1
    return total


@pytest.mark.timeout(60)
def test_fetch_fills_commits_and_serves_every_byte_once(http: Server, name: str) -> None:
    data = payload(5 * MiB + 123, 1)
    http.state.put("/obj", data)
    try:
        r = shmstore.fetch(http.base + "/obj", name=name, chunk=MiB, workers=3)
        assert r.status == shmstore.ResourceStatus.Committed(len(data), len(data))
        assert r.read(0, len(data)) == data
        again = shmstore.fetch(http.base + "/obj", name=name)  # committed: nothing fetched
        assert again.read(0, 10) == data[:10]
        again.close()
        r.close()
        covered_once(http, "/obj", len(data))
    finally:
        unlink(name)


def _reader(url: str, name: str, q: Any) -> None:
    try:
        _read_all(url, name, q)
    except BaseException:
        q.put((os.getpid(), -1, traceback.format_exc()))


def _read_all(url: str, name: str, q: Any) -> None:
    r = shmstore.fetch(url, name=name, wait=False, chunk=4 * MiB, workers=4)
    h = hashlib.sha256()
    pos = 0
    size = 0
    while True:
        st = r.status
        if isinstance(st, shmstore.ResourceStatus.Committed):
            size = st.length
        end = pos + 8 * MiB
        outcome = r.wait_range(pos, end, timeout=60)
        if outcome is WaitOutcome.EOF:
            break
        v = r.view(pos, 8 * MiB)
        h.update(v)
        pos += len(v)
        v.release()
        if size and pos >= size:
            break
    r.close()
    q.put((os.getpid(), pos, h.hexdigest()))


@pytest.mark.timeout(300)
def test_eight_reader_processes_one_download(http: Server, name: str) -> None:
    data = payload(256 * MiB, 2)
    digest = hashlib.sha256(data).hexdigest()
    http.state.put("/big", data)
    url = http.base + "/big"
    procs, queues = [], []
    try:
        for k in range(8):
            ctx = mp.get_context(("fork", "spawn", "forkserver")[k % 3])
            q = ctx.Queue()
            p = ctx.Process(target=_reader, args=(url, name, q))
            p.start()
            procs.append(p)
            queues.append(q)
        results = [q.get(timeout=240) for q in queues]
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        assert all(pos == len(data) and h == digest for _pid, pos, h in results), results
        covered_once(http, "/big", len(data))
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        unlink(name)


def _fetcher(url: str, where: dict[str, Any], started: Any) -> None:
    def progress(done: int, size: int) -> None:
        if done:
            started.set()

    shmstore.fetch(url, chunk=256 << 10, workers=2, progress=progress, **where)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["shm", "mmap"])
def test_a_killed_fetch_is_resumed_by_the_next_one(http: Server, name: str, tmp_path: Path,
                                                   backend: str) -> None:
    data = payload(4 * MiB, 3)
    http.state.put("/obj", data)
    http.state.faults.trickle = 0.01  # slow enough to be killed midway
    where: dict[str, Any] = ({"name": name} if backend == "shm"
                             else {"path": str(tmp_path / "obj.bin")})
    ctx = mp.get_context("fork")
    started = ctx.Event()
    p = ctx.Process(target=_fetcher, args=(http.base + "/obj", where, started))
    p.start()
    try:
        assert started.wait(60)
        r = (shmstore.open(name) if backend == "shm"
             else shmstore.open(path=where["path"], backend="mmap"))
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
        with pytest.raises(shmstore.WriterDied):
            r.wait_range(len(data) - 10, len(data), timeout=30)
        had = sum(e - s for s, e in r.ranges())
        assert 0 < had < len(data)
        r.close()
        http.state.faults.trickle = 0
        # (mmap: no process holds anything of the resource now; the file is all there is)
        done = shmstore.fetch(http.base + "/obj", chunk=256 << 10, workers=2,
                              headers={"X-Test": "resume"}, **where)
        assert done.read(0, len(data)) == data
        done.close()
        # the resume asked for exactly what was missing (pieces land whole, in one write)
        assert _requested(http, "resume") == len(data) - had
    finally:
        if p.is_alive():
            p.kill()
        unlink(**where)


@pytest.mark.timeout(120)
def test_readers_drive_the_order(http: Server, name: str) -> None:
    chunk = 128 << 10
    data = payload(40 * chunk, 4)
    http.state.put("/obj", data)
    http.state.faults.trickle = 0.02  # every piece takes a while
    r = shmstore.fetch(http.base + "/obj", name=name, chunk=chunk, workers=1, wait=False)
    try:
        want = 30
        assert r.wait_range(want * chunk, (want + 1) * chunk, timeout=60) is WaitOutcome.READY
        assert r.read(want * chunk, chunk) == data[want * chunk : (want + 1) * chunk]
        gets = [rng for m, p, rng in http.state.requests if m == "GET" and p == "/obj"
                and rng != "bytes=0-0"]
        order = [int(g.split("=")[1].split("-")[0]) // chunk for g in gets]
        # the piece waited for came next (after at most the one in flight), then read-ahead
        assert want in order[:3], order
        i = order.index(want)
        assert r.wait_range(0, len(data), timeout=60) is WaitOutcome.READY
        gets = [rng for m, p, rng in http.state.requests if m == "GET" and p == "/obj"
                and rng != "bytes=0-0"]
        order = [int(g.split("=")[1].split("-")[0]) // chunk for g in gets]
        assert order[i + 1] == want + 1, order
        assert sorted(order) == list(range(40))
    finally:
        r.close()
        unlink(name)


@pytest.mark.timeout(60)
def test_a_changing_source_fails_the_resource_with_the_reason(http: Server, name: str) -> None:
    data = payload(2 * MiB, 5)
    http.state.put("/obj", data)
    url = http.base + "/obj"
    http.state.faults.change_after = 4  # a few pieces, then the object changes
    with pytest.raises(shmstore.SourceChanged):
        shmstore.fetch(url, name=name, chunk=256 << 10, workers=1, retries=0)
    reader = shmstore.open(name)
    try:
        with pytest.raises(shmstore.ResourceFailed, match="changed"):
            reader.wait_range(0, len(data), timeout=10)
    finally:
        reader.close()
        unlink(name)
    # the new version is another object: fetched whole, under another name
    new = shmstore.fetch(url, chunk=256 << 10)
    try:
        assert new.name != name and new.read(0, 4096) != data[:4096]
    finally:
        new.unlink()
        new.close()


@pytest.mark.timeout(60)
def test_an_outage_fails_the_fetch_and_the_next_fetch_resumes(http: Server, name: str) -> None:
    data = payload(2 * MiB, 6)
    piece = 256 << 10
    http.state.put("/obj", data)
    url = http.base + "/obj"
    http.state.faults.outage_after = 4  # the range probe and 3 pieces, then 503s
    http.state.faults.outage = 100
    with pytest.raises(shmstore.SourceError, match="503"):
        shmstore.fetch(url, name=name, chunk=piece, workers=1, retries=1)
    try:
        reader = shmstore.open(name)
        with pytest.raises(shmstore.ResourceFailed, match="503"):
            reader.wait_range(0, len(data), timeout=10)
        reader.close()
        assert http.state.served["/obj"] == 3 * piece + 1  # the probe and 3 pieces
        http.state.faults.outage = 0
        done = shmstore.fetch(url, name=name, chunk=piece, workers=1,
                              headers={"X-Test": "resume"})
        assert done.read(0, len(data)) == data
        done.close()
        assert _requested(http, "resume") == len(data) - 3 * piece
    finally:
        unlink(name)


@pytest.mark.timeout(60)
def test_fetch_refuses_a_path_holding_something_else(tmp_path: Path, http: Server) -> None:
    http.state.put("/obj", payload(1000, 7))
    p = tmp_path / "taken.bin"
    p.write_bytes(b"somebody else's file")
    with pytest.raises(shmstore.SourceChanged, match="not made by fetch"):
        shmstore.fetch(http.base + "/obj", path=p)
    assert p.read_bytes() == b"somebody else's file"


@pytest.mark.timeout(120)
def test_fetch_from_s3_file_and_fsspec(s3: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Path, name: str) -> None:
    for k, v in s3["creds"].items():
        monkeypatch.setenv(k, v)
    try:
        r = shmstore.fetch(f"s3://{BUCKET}/obj", name=name, chunk=64 << 10,
                           endpoint_url=s3["endpoint"])
        assert r.read(0, len(s3["data"])) == s3["data"]
        r.close()
    finally:
        unlink(name)
    f = tmp_path / "local.bin"
    f.write_bytes(payload(300_000, 8))
    r = shmstore.fetch(str(f), chunk=64 << 10)
    try:
        assert r.read(0, 300_000) == f.read_bytes()
    finally:
        r.unlink()
        r.close()
