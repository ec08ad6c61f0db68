"""Races between processes: lost wake-ups, lapped rings and journal compaction, a pool of
writers, waiter-slot reclaim, interrupt and cancel across processes.

Waiters that must be woken by a post run with the safety net set to hours
(``_workers.HUGE_NET``): a lost wake-up then hangs instead of hiding behind the 0.2 s nap,
and the harness reports it as a hang."""

from __future__ import annotations

import random

import pytest

import shmstore
from shmstore.core import layout as L
from shmstore.core.ranges import merge_ranges

from . import _workers as W
from .conftest import Harness

KINDS = ["shm", "mmap"]


# ----------------------------------------------------------------------- 1. lost wake-ups
LOST_WAKEUP_CASES = [
    # kind, start method, writer processes, iterations, pre-park spin
    ("shm", "fork", 1, 1500, True),
    ("shm", "fork", 1, 1500, False),
    ("mmap", "fork", 1, 800, False),
    ("shm", "fork", 2, 1500, False),
    ("shm", "fork", 2, 1000, True),
    ("shm", "spawn", 1, 150, False),
    ("shm", "forkserver", 2, 150, False),
    pytest.param("shm", "fork", 1, 30_000, False, marks=pytest.mark.slow),
    pytest.param("shm", "fork", 2, 30_000, False, marks=pytest.mark.slow),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("kind", "method", "writers", "n_iter", "spin"), LOST_WAKEUP_CASES)
def test_no_lost_wakeup_when_waiters_register_as_the_writer_publishes(
        H: Harness, kind: str, method: str, writers: int, n_iter: int, spin: bool) -> None:
    """Every iteration the waiters and the writer(s) leave a barrier together: the waiters
    register exactly while the chunk is published in two partial writes (by one writer, or
    one half each by two writer processes). Ranges need both writes, the second, or straddle
    them. A missed post hangs a waiter (no safety net)."""
    chunk = 512
    spec = H.spec(kind)
    owner = H.create(spec, capacity=4096)  # small: the writers grow it while waiters race
    n_wait = 3
    ctx = H.ctx(method)
    barrier = ctx.Barrier(writers + n_wait)
    progress = ctx.Array("i", n_wait)
    tags = []
    parts = ["both"] if writers == 1 else ["first", "second"]
    for j, part in enumerate(parts):
        H.start(f"writer{j}", W.lw_writer, spec, barrier, n_iter, chunk, 1000 + j, part,
                method=method)
        tags.append(f"writer{j}")
    for j in range(n_wait):
        H.start(f"waiter{j}", W.lw_waiter, spec, barrier, n_iter, chunk, j, progress, j,
                spin, method=method)
        tags.append(f"waiter{j}")

    def hint() -> str:
        return f"- lost wake-up? waiter progress {list(progress)} of {n_iter}"

    got = H.results(tags, deadline=45, method=method, hang_hint=hint)
    parks = [got[f"waiter{j}"] for j in range(n_wait)]
    print(f"(parked, semaphore sleeps) per waiter: {parks} of {n_iter} waits each")
    assert sum(p for p, _ in parks) > n_iter // 4, "waiters rarely parked: race not exercised"
    if not spin:
        assert sum(s for _, s in parks) > n_iter // 10, "waiters rarely slept on a semaphore"
    r = H.open(spec)
    assert r.ranges() == [(0, n_iter * chunk)]
    owner.commit()
    assert r.status == shmstore.ResourceStatus.Committed(None, n_iter * chunk)


# ------------------------------------------------------------------- 2. lapped readers
N_WRITES = 10_000
CHECKPOINTS = [1, 127, 128, 129, 300, 2047, 2048, 2049, 2050, 4000, 8191, 8192, 8193, 8194,
               N_WRITES]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_stalled_reader_rebuilds_exact_coverage_across_laps_and_compactions(
        H: Harness, kind: str) -> None:
    """10,000 fragmented, non-adjacent writes (plus merging ones) from a writer process:
    the ring laps every 128 and the journal compacts at 2048 and 8192 entries. A reader that
    stalls, one that drains at every checkpoint, and a late joiner must each see exactly the
    oracle's coverage at every checkpoint; a hammering reader process races all of it."""
    seed = 7
    spec = H.spec(kind)
    owner = H.create(spec, capacity=4096)
    writes = W.fragmented_writes(seed, N_WRITES)
    stalled = H.open(spec)
    stalled.ranges()
    eager = H.open(spec)
    ctx = H.ctx()
    stop = ctx.Event()
    H.start("hammer", W.hammer_reader, spec, stop, seed, N_WRITES)
    parent_end, child_end = ctx.Pipe()
    H.start("writer", W.lap_writer, spec, child_end, seed, N_WRITES, CHECKPOINTS)
    stall_checks = set(CHECKPOINTS[::3]) | {N_WRITES}
    for k in CHECKPOINTS:
        assert parent_end.poll(30), f"writer never reached checkpoint {k}"
        assert parent_end.recv() == k
        want = merge_ranges((o, o + n) for o, n in writes[:k])
        assert eager.ranges() == want, f"eager reader at {k}"
        if k in stall_checks:
            assert stalled.ranges() == want, f"stalled reader at {k}"
        late = W.open_spec(spec)
        try:
            assert late.ranges() == want, f"late joiner at {k}"
        finally:
            late.close()
        parent_end.send("go")
    H.results(["writer"])
    stop.set()
    rounds = H.results(["hammer"])["hammer"]
    assert rounds > 0
    words = owner._words
    jgens = [words[L.slot_word(s, L.S_JGEN)] for s in range(L.N_WRITERS)]
    assert max(jgens) >= 3, f"the writer's journal never compacted twice: {jgens}"
    for off, n in random.Random(1).sample(writes, 200):
        assert stalled.read(off, n) == W.pattern(off, n)
    owner.close()


@pytest.mark.timeout(60)
def test_journal_resync_racing_a_compaction(H: Harness) -> None:
    """A reader resyncing from a writer slot's journal loads the journal generation, maps it,
    then loads head. If the writer compacts into a new journal and publishes more entries in
    between (a real window: the reader is preempted, or the map is slow), head is past the
    old journal's capacity. The reader must retry with the new generation, not report the
    resource corrupt. The pause is injected in the reader at that exact point."""
    spec = H.spec("shm")
    w = H.create(spec, capacity=1 << 16)
    for i in range(10):
        w.write_at(2 * i, b"x")
    ctx = H.ctx()
    ready, go = ctx.Event(), ctx.Event()
    p = H.start("reader", W.journal_race_reader, spec, ready, go)
    H.await_event(ready, p, "reader paused in its journal resync")
    for i in range(10, 2100):  # fills the journal (2048 entries): a compaction, then more
        w.write_at(2 * i, b"x")
    go.set()
    got = H.results(["reader"])
    assert got["reader"] == 2100


# ------------------------------------------------------------------------------ 5. a pool
@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_writer_pool_fills_disjoint_parts_while_readers_wait_for_random_ranges(
        H: Harness, kind: str) -> None:
    """Three writer processes fill interleaved disjoint chunks (random order, random
    sub-writes, growing the resource from 4 KiB); three reader processes wait (no safety net)
    for random ranges that usually span several writers' chunks and verify every byte right
    after READY. Then commit(None) must publish the whole extent."""
    total = 600_000
    rng = random.Random(42)
    chunks, pos = [], 0
    while pos < total:
        n = min(total - pos, rng.randint(1, 9000))
        chunks.append((pos, n))
        pos += n
    spec = H.spec(kind)
    owner = H.create(spec, capacity=4096)
    tags = []
    for j in range(3):
        H.start(f"r{j}", W.pool_reader, spec, total, 100 + j, 60)
        tags.append(f"r{j}")
    for j in range(3):
        H.start(f"w{j}", W.pool_writer, spec, chunks[j::3], 200 + j)
        tags.append(f"w{j}")
    H.results(tags, deadline=45)
    owner.commit()
    r = H.open(spec)
    assert r.status == shmstore.ResourceStatus.Committed(None, total)
    assert W.bad_bytes(r.read(0, total + 10), 0) is None


# --------------------------------------------------------- 6. waiter slots, interrupt, cancel
@pytest.mark.timeout(60)
def test_waiter_slots_of_a_sigkilled_process_are_reclaimed(H: Harness) -> None:
    """A process parks 64 waiters (every slot). A 65th waiter elsewhere finds the table full
    and polls. After the process is SIGKILLed, its slots (locks dropped by the kernel; mask
    bits, ranges and semaphore posts left behind) are reclaimed: new waiters in other
    processes park in them and are woken by a post, not by the safety net."""
    spec = H.spec("shm")
    w = H.create(spec)
    words = w._words
    hog = H.start("hog", W.many_waiters, spec, L.N_WAITERS, 0, 10)
    H.wait_until(lambda: list(W.waiter_pids(words).values()).count(hog.pid) == L.N_WAITERS,
                 "64 parked waiters")
    extra = H.start("extra", W.verify_waiter, spec, 20, 30)  # no slot: it polls
    H.kill(hog)
    assert hog.exitcode == -9
    w.write_at(0, W.pattern(0, 1))  # posts every dead slot: stale posts left on their sems
    new = [H.start(f"v{j}", W.verify_waiter, spec, 5 * j, 5 * j + 5) for j in range(3)]
    H.wait_until(lambda: {p.pid for p in new} <= set(W.waiter_pids(words).values()),
                 "new waiters parked in reclaimed slots")
    w.write_at(0, W.pattern(0, 30))
    got = H.results(["extra"] + [f"v{j}" for j in range(3)])
    assert set(got.values()) == {"READY"}
    assert extra.pid not in W.waiter_pids(words).values()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_interrupt_from_another_process_reaches_every_parked_waiter(
        H: Harness, kind: str) -> None:
    """Waiters parked in three processes (no safety net) are interrupted by a fourth process
    holding a read-only handle; the waits they start afterwards are unaffected and end READY
    when the bytes land."""
    spec = H.spec(kind)
    w = H.create(spec)
    words = w._words
    phase = H.ctx().Array("i", 3)
    ws = [H.start(f"w{j}", W.interrupted_waiter, spec, 0, 100, phase, j) for j in range(3)]
    H.wait_until(lambda: {p.pid for p in ws} <= set(W.waiter_pids(words).values()),
                 "three parked waiters")
    H.start("intr", W.interrupter, spec)
    H.results(["intr"])
    H.wait_until(lambda: list(phase) == [2, 2, 2], "every waiter interrupted")
    w.write_at(0, W.pattern(0, 100))
    got = H.results([f"w{j}" for j in range(3)])
    assert all(v == ["INTERRUPTED", "READY"] for v in got.values()), got


@pytest.mark.timeout(60)
def test_cancel_token_ends_only_its_own_wait(H: Harness) -> None:
    """Two threads of one process wait on one handle with their own tokens, a third waiter
    is in another process: cancelling the first token ends only that wait."""
    spec = H.spec("shm")
    w = H.create(spec)
    words = w._words
    ctx = H.ctx()
    parked, go = ctx.Event(), ctx.Event()
    tw = H.start("tokens", W.token_waiters, spec, 0, 50, parked, go)
    other = H.start("other", W.verify_waiter, spec, 0, 50)
    H.wait_until(lambda: list(W.waiter_pids(words).values()).count(tw.pid) == 2
                 and other.pid in W.waiter_pids(words).values(), "three parked waiters")
    go.set()
    assert parked.wait(30)
    assert list(W.waiter_pids(words).values()).count(tw.pid) == 1  # only "b" still waits
    w.write_at(0, W.pattern(0, 50))
    got = H.results(["tokens", "other"])
    assert got["tokens"] == ["Cancelled", "READY"]
    assert got["other"] == "READY"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_resource_cancel_reaches_waiters_in_every_process(H: Harness, kind: str) -> None:
    spec = H.spec(kind)
    w = H.create(spec)
    words = w._words
    ws = [H.start(f"c{j}", W.cancel_waiter, spec, 0, 10) for j in range(3)]
    H.wait_until(lambda: {p.pid for p in ws} <= set(W.waiter_pids(words).values()),
                 "three parked waiters")
    w.cancel()
    got = H.results([f"c{j}" for j in range(3)])
    assert set(got.values()) == {"Cancelled"}
