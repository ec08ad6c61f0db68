"""Handles crossing processes: fork (inherited descriptors and locks) and pickling under
fork, spawn and forkserver."""

from __future__ import annotations

import pytest

import shmstore
from shmstore import WaitOutcome

from . import _workers as W
from .conftest import Harness

METHODS = ["fork", "spawn", "forkserver"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["shm", "mmap"])
def test_forked_idle_child_does_not_keep_a_killed_writer_alive(H: Harness, kind: str) -> None:
    """A writer process forks a child that never touches the inherited handle (it shares the
    open file description that holds the writer lock). SIGKILL the writer: waiters must get
    WriterDied at once, not wait for the child to exit."""
    spec = H.spec(kind)
    H.create(spec).close()
    parent_end, child_end = H.ctx().Pipe()
    holder = H.start("holder", W.fork_holder, spec, child_end, "idle",
                     daemon=False)
    assert parent_end.poll(30)
    H.pids.append(parent_end.recv())
    H.kill(holder)
    r = H.open(spec)
    assert not r.writers_alive()
    with pytest.raises(shmstore.WriterDied):
        r.wait_range(10, 20, timeout=10)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["shm", "mmap"])
def test_forked_reading_child_does_not_become_a_writer(H: Harness, kind: str) -> None:
    """The same, but the forked child reads through the inherited writer handle. Re-attaching
    claims a writer slot (``_reattach`` -> ``_attach`` with ``writable``), so a consumer that
    never writes keeps "a writer" alive: after the real writer dies every waiter blocks until
    the child exits, instead of getting WriterDied."""
    spec = H.spec(kind)
    H.create(spec).close()
    parent_end, child_end = H.ctx().Pipe()
    holder = H.start("holder", W.fork_holder, spec, child_end, "read",
                     daemon=False)
    assert parent_end.poll(30)
    H.pids.append(parent_end.recv())
    H.kill(holder)
    r = H.open(spec)
    assert r.writers_alive() is False, "a forked consumer holds a writer slot"
    with pytest.raises(shmstore.WriterDied):
        r.wait_range(10, 20, timeout=5)


@pytest.mark.timeout(60)
def test_forked_consumer_waiting_through_a_writer_handle_sees_writer_death(H: Harness) -> None:
    """The test process creates the writer and forks a consumer that reads and waits through
    the inherited handle. When the parent closes its writer without committing, the child's
    wait on bytes never written must raise WriterDied (it hangs: the child counts itself as
    a live writer)."""
    spec = H.spec("shm")
    w = H.create(spec)
    w.write_at(0, W.pattern(0, 10))
    ctx = H.ctx()
    ready, go, out = ctx.Event(), ctx.Event(), ctx.Queue()
    p = ctx.Process(target=W.fork_reader_child, args=(w, ready, go, out), daemon=True)
    H.procs.append(p)
    p.start()
    try:
        assert ready.wait(30)
        w.close()
        go.set()
        res = out.get(timeout=30)
    finally:
        out.close()
        out.join_thread()
    assert res == "WriterDied", res


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["shm", "mmap"])
def test_pickled_handles_work_under_every_start_method(H: Harness, method: str,
                                                       kind: str) -> None:
    """A read-only handle and a writer handle go to children as Process arguments (pickled
    by name under spawn/forkserver, inherited under fork). The writer child writes the second
    half, the parent the first; the reader child waits (no safety net) for all of it."""
    total = 50_000
    spec = H.spec(kind)
    w = H.create(spec)
    r = H.open(spec)
    H.start("reader", W.pickled_reader, r, total, method=method)
    H.start("writer", W.pickled_writer, W.open_spec(spec, "r+"), total // 2, total - total // 2,
            method=method)
    w.write_at(0, W.pattern(0, total // 2))
    H.results(["reader", "writer"], method=method)
    w.commit()
    assert w.status == shmstore.ResourceStatus.Committed(None, total)
    assert r.wait_range(0, total) is WaitOutcome.READY
    assert W.bad_bytes(r.read(0, total), 0) is None
