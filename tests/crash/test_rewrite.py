"""Rewrites (commit -> reactivate -> rewrite every byte -> commit, many generations) under
reader processes: no torn reads, no generation going back, and a committed resource stays
whole for every reader while the next rewrite starts."""

from __future__ import annotations

import pytest

from shmstore import ResourceStatus, WaitOutcome

from . import _workers as W
from .conftest import Harness

KINDS = ["shm", "mmap"]
LENGTH = 64 << 10


def _committed_resource(H: Harness, kind: str) -> W.Spec:
    spec = H.spec(kind)
    w = H.create(spec, capacity=LENGTH)
    w.write_at(0, bytes([W.gen_byte(1)]) * LENGTH)
    w.commit(LENGTH)
    w.close()
    return spec


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_rewrites_never_tear_a_read(H: Harness, kind: str) -> None:
    """A writer process runs 150 generations (commit with a given length), each rewriting
    every byte in 4 writes; two reader processes read, view and wait all along. Any buffer
    mixing two generations, a generation going back, or an error fails."""
    spec = _committed_resource(H, kind)
    done = H.ctx().Event()
    H.start("r0", W.rewrite_reader, spec, done, LENGTH, False)
    H.start("r1", W.rewrite_reader, spec, done, LENGTH, False)
    H.start("writer", W.rewrite_writer, spec, 150, LENGTH, 4, True, done)
    got = H.results(["writer", "r0", "r1"], deadline=45)
    assert got["writer"] == 150
    assert got["r0"]["reads"] > 0 and got["r1"]["reads"] > 0
    r = H.open(spec)
    assert r.read(0, LENGTH) == bytes([W.gen_byte(151)]) * LENGTH


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_committed_none_stays_covered_while_the_next_rewrite_starts(
        H: Harness, kind: str) -> None:
    """Same loop with commit(None): readers that see Committed must find [0, length) covered
    (contains_range True, wait_range READY). reactivate() moves the writer's slot to the new
    generation (S_CGEN, new journal) before it publishes the lifecycle change, so a reader
    that first looks at the committed generation in that window finds no coverage: EOF."""
    spec = _committed_resource(H, kind)
    done = H.ctx().Event()
    H.start("r0", W.rewrite_reader, spec, done, LENGTH, True)
    H.start("r1", W.rewrite_reader, spec, done, LENGTH, True)
    H.start("writer", W.rewrite_writer, spec, 150, LENGTH, 4, False, done)
    got = H.results(["writer", "r0", "r1"], deadline=45)
    assert got["r0"]["committed_checks"] + got["r1"]["committed_checks"] > 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_reactivate_keeps_committed_none_coverage_deterministic(H: Harness, kind: str) -> None:
    """The window of the previous test, forced: the writer is paused inside reactivate()
    right after its slot was started over for the new generation. A reader of the still
    committed (final_len=None) resource must find every committed byte available."""
    spec = H.spec(kind)
    w = H.create(spec, capacity=4096)
    w.write_at(0, W.pattern(0, 1000))
    w.commit()
    r = H.open(spec)  # attached (and drained) while generation 0 is the committed one
    w.reactivate()
    w.write_at(0, W.pattern(0, 1000))
    w.commit()  # generation 1, committed with final_len=None; r has not looked at it yet
    w.close()
    ctx = H.ctx()
    ready, go = ctx.Event(), ctx.Event()
    H.start("writer", W.reset_pause_writer, spec, ready, go, 1000)
    assert ready.wait(30)
    try:
        st = r.status
        cov = r.contains_range(0, 1000)
        out = r.wait_range(0, 1000, timeout=5)
    finally:
        go.set()
    H.results(["writer"])
    # The lifecycle change (the rewrite begins: Active) is published before the slot moves
    # to the new generation; either way the committed bytes stay available.
    assert st in (ResourceStatus.Committed(None, 1000), ResourceStatus.Active())
    assert (cov, out) == (True, WaitOutcome.READY), (
        f"committed [0, 1000) but contains_range={cov}, wait_range={out}")


@pytest.mark.timeout(60)
def test_reader_remapping_while_a_commit_unlinks_the_old_generation(H: Harness) -> None:
    """shm: commit of a rewrite unlinks the previous generation's data segment. A reader that
    saw generation g committed and is about to map it when g+1 is committed (g unlinked)
    must read a whole generation, not raise ResourceNotFound."""
    spec = H.spec("shm")
    w = H.create(spec, capacity=LENGTH)
    w.write_at(0, bytes([W.gen_byte(1)]) * LENGTH)
    w.commit(LENGTH)
    ctx = H.ctx()
    attached, go1, paused, go2 = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
    H.start("reader", W.remap_pause_reader, spec, attached, go1, paused, go2, LENGTH)
    assert attached.wait(30)
    for g in (2,):
        w.reactivate()
        w.write_at(0, bytes([W.gen_byte(g)]) * LENGTH)
        w.commit(LENGTH)
    go1.set()
    assert paused.wait(30)  # the reader saw generation 2 and is about to map it
    w.reactivate()
    w.write_at(0, bytes([W.gen_byte(3)]) * LENGTH)
    w.commit(LENGTH)  # generation 3 committed: generation 2's segment is unlinked
    go2.set()
    got = H.results(["reader"])
    assert got["reader"] in (f"read generation byte {W.gen_byte(2)}",
                             f"read generation byte {W.gen_byte(3)}")
