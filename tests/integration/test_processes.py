"""Cross-process behaviour with real processes under fork, spawn and forkserver."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

import shmstore

from . import _workers as wk

METHODS = ["fork", "spawn", "forkserver"]


def _reap(procs: list[mp.process.BaseProcess]) -> None:
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join(10)


def _key(b: object, w: shmstore.Resource) -> str:
    return str(w.path) if w.backend == "mmap" else str(w.name)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", METHODS)
def test_stress_writers_and_readers_verify_every_byte(method: str, xbackend: object) -> None:
    """Two writer processes fill a resource in random order and sizes while three readers
    wait for random ranges; no reader ever sees READY before its bytes are written."""
    ctx = mp.get_context(method)
    w = xbackend.create(capacity=64 << 10)  # type: ignore[attr-defined]
    key = _key(xbackend, w)
    size = wk.SIZE
    procs = [ctx.Process(target=wk.random_reader, args=(xbackend.kind, key, s, size, 40))  # type: ignore[attr-defined]
             for s in range(3)]
    procs += [ctx.Process(target=wk.random_writer, args=(xbackend.kind, key, 7 + k, size, 2, k))  # type: ignore[attr-defined]
              for k in range(2)]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(100)
        assert [p.exitcode for p in procs] == [0] * len(procs)
        assert w.ranges() == [(0, size)]
        assert w.read(0, size) == wk.pattern(size)
    finally:
        _reap(procs)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", METHODS)
def test_pickled_writer_handle_reattaches_in_child(method: str, name: str) -> None:
    ctx = mp.get_context(method)
    w = shmstore.create(name)
    try:
        p = ctx.Process(target=wk.pickled_writer_child, args=(w, 100, b"from the child"))
        p.start()
        p.join(30)
        assert p.exitcode == 0
        assert w.wait_range(100, 114, timeout=5) is shmstore.WaitOutcome.READY
        assert w.read(100, 14) == b"from the child"
    finally:
        w.unlink()
        w.close()


@pytest.mark.timeout(60)
def test_process_pool_writers_and_readers(name: str) -> None:
    """A worker pool fills one resource through pickled writer handles; other tasks read it
    through pickled reader handles."""
    w = shmstore.create(name, capacity=4096)
    r = shmstore.open(name)
    part = 64 << 10
    try:
        # Three workers: the two reads park in two of them while the third does the writes.
        with ProcessPoolExecutor(3, mp_context=mp.get_context("spawn")) as pool:
            reads = [pool.submit(wk.read_part, r, i * part, part) for i in (0, 3)]
            writes = [pool.submit(wk.write_part, w, i * part, part) for i in range(4)]
            assert [f.result(60) for f in writes] == [part] * 4
            pat = wk.pattern(4 * part)
            assert reads[0].result(60) == pat[:part]
            assert reads[1].result(60) == pat[3 * part :]
        assert w.ranges() == [(0, 4 * part)]
        w.commit()
        assert r.status == shmstore.ResourceStatus.Committed(None, 4 * part)
    finally:
        w.unlink()
        w.close()
        r.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", METHODS)
def test_consumer_exit_never_destroys_the_resource(method: str, name: str) -> None:
    ctx = mp.get_context(method)
    w = shmstore.create(name)
    w.write_at(0, b"x")
    try:
        for target in (wk.attach_and_exit, wk.attach_shared_memory_style):
            p = ctx.Process(target=target, args=(name,))
            p.start()
            p.join(30)
            assert p.exitcode == 0
            again = shmstore.open(name)
            assert again.read(0, 1) == b"x"
            again.close()
    finally:
        w.unlink()
        w.close()
    with pytest.raises(shmstore.ResourceNotFound):
        shmstore.open(name)


@pytest.mark.timeout(60)
def test_pickle_round_trip_by_name(name: str) -> None:
    w = shmstore.create(name)
    try:
        w.write_at(0, b"abc")
        r = pickle.loads(pickle.dumps(shmstore.open(name)))
        assert not r.writable and r.read(0, 3) == b"abc"
        w2 = pickle.loads(pickle.dumps(w))
        assert w2.writable
        w2.write_at(3, b"d")
        assert r.wait_range(0, 4, timeout=5) is shmstore.WaitOutcome.READY
        r.close()
        w2.close()
    finally:
        w.unlink()
        w.close()


@pytest.mark.timeout(60)
def test_growth_under_a_reader_process(name: str) -> None:
    """The writer grows the resource eight times while a reader process waits for ranges
    far past the initial capacity; the reader remaps and verifies."""
    ctx = mp.get_context("forkserver")
    w = shmstore.create(name, capacity=4096)
    size = 1 << 20
    r = ctx.Process(target=wk.random_reader, args=("shm", name, 3, size, 30))
    try:
        r.start()
        pat = wk.pattern(size)
        for off in range(0, size, 8192):
            w.write_at(off, pat[off : off + 8192])
        r.join(50)
        assert r.exitcode == 0
        assert w.capacity >= size
    finally:
        _reap([r])
        w.unlink()
        w.close()


@pytest.mark.timeout(120)
def test_late_joiner_rebuilds_100k_fragments(name: str) -> None:
    """10**5 disjoint ranges (far more than a ring, several journal compactions): a process
    that attaches afterwards sees exactly the same coverage."""
    w = shmstore.create(name, capacity=1 << 20)
    n = 100_000
    try:
        for i in range(n):
            w.write_at(2 * i, b"\x01")
        ctx = mp.get_context("spawn")
        q = ctx.SimpleQueue()
        p = ctx.Process(target=wk.late_joiner, args=(name, q))
        p.start()
        count, head, tail, status = q.get()
        p.join(30)
        assert count == n
        assert head == [(0, 1), (2, 3), (4, 5)]
        assert tail == [(2 * n - 6, 2 * n - 5), (2 * n - 4, 2 * n - 3), (2 * n - 2, 2 * n - 1)]
        assert status == shmstore.ResourceStatus.Active()
        w._check()  # ring against journal after dozens of compactions
    finally:
        w.unlink()
        w.close()


@pytest.mark.timeout(60)
def test_iter_ranges_in_another_process_sees_each_write(xbackend: object) -> None:
    ctx = mp.get_context("forkserver")
    w = xbackend.create()  # type: ignore[attr-defined]
    q = ctx.SimpleQueue()
    p = ctx.Process(target=wk.collect_ranges, args=(xbackend.kind, _key(xbackend, w), q))  # type: ignore[attr-defined]
    try:
        w.write_at(0, b"a" * 10)
        p.start()
        w.write_at(20, b"b" * 10)
        w.write_at(10, b"c" * 10)
        w.commit()
        got = q.get()
        p.join(30)
        assert p.exitcode == 0
        covered = shmstore.core.ranges.RangeSet(got)  # type: ignore[attr-defined]
        assert list(covered) == [(0, 30)]
        assert sum(e - s for s, e in got) == 30  # each byte reported once
    finally:
        _reap([p])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["close", "kill"])
def test_mmap_resumes_after_every_process_exited(tmp_path: Path, how: str) -> None:
    """A child creates nothing but writes half and exits (cleanly or by SIGKILL); after every
    handle is gone the file is reopened r+ and resumes with the coverage it had."""
    path = tmp_path / "data.bin"
    w = shmstore.create(backend="mmap", path=path, capacity=8192)
    w.close()  # nobody holds the resource now
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=wk.write_then_die, args=("mmap", str(path), 8000, how))
    p.start()
    p.join(30)
    assert p.exitcode == (-9 if how == "kill" else 0)
    r = shmstore.open(path=path, backend="mmap")
    try:
        with pytest.raises(shmstore.WriterDied):
            r.wait_range(0, 8000, timeout=5)
        assert r.ranges() == [(0, 4000)]
        w2 = shmstore.open(path=path, backend="mmap", mode="r+")
        pat = wk.pattern(8000)
        w2.write_at(4000, pat[4000:])
        w2.commit()
        assert r.wait_range(0, 8000, timeout=5) is shmstore.WaitOutcome.READY
        assert r.read(0, 8000) == pat
        assert os.path.getsize(path) == 8000
        w2.unlink()
        w2.close()
    finally:
        r.close()


@pytest.mark.timeout(60)
def test_forked_child_does_not_keep_a_closed_writer_alive(name: str) -> None:
    """fork shares open file descriptions, and with them the writer lock; the fork hook drops
    the child's copies, so the parent's close is seen as the last writer leaving."""
    ctx = mp.get_context("fork")
    w = shmstore.create(name)
    r = shmstore.open(name)
    ev = ctx.Event()
    p = ctx.Process(target=wk.hold_until, args=(ev,))
    try:
        p.start()
        w.close()
        with pytest.raises(shmstore.WriterDied):
            r.wait_range(0, 1, timeout=10)
    finally:
        ev.set()
        _reap([p])
        r.unlink()
        r.close()


@pytest.mark.timeout(60)
def test_invariants_hold_after_a_stressed_pool(name: str) -> None:
    """_check() on what two writer processes left: the control block at rest, each slot's
    ring against its journal (with compactions), and the view equal to the slots' union."""
    ctx = mp.get_context("forkserver")
    w = shmstore.create(name, capacity=4096)
    procs = [ctx.Process(target=wk.random_writer, args=("shm", name, k, wk.SIZE, 2, k))
             for k in range(2)]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(50)
        assert [p.exitcode for p in procs] == [0, 0]
        r = shmstore.open(name)
        r._check()
        w._check()
        assert r.ranges() == [(0, wk.SIZE)]
        r.close()
    finally:
        _reap(procs)
        w.unlink()
        w.close()
