"""Second adversarial pass on the redesigned protocol: double-buffered lifecycle records,
per-generation base coverage segments, flip-then-rename mmap commits, lazy writer slots in
forked children, the control block mapped through its own descriptor.

Interleavings are forced, never slept into: a process is stopped at an exact point of the
library's code (a patched method that waits on an Event, a trace function stopping a thread
on one line, a store counter that SIGKILLs its process) while another one acts.
"""

from __future__ import annotations

import os
import random
import threading
from typing import Any

import pytest

import shmstore
from shmstore import ResourceStatus, WaitOutcome
from shmstore.core import layout as L

from . import _workers as W
from .conftest import Harness

KINDS = ["shm", "mmap"]
N = 10_000


def _committed(H: Harness, kind: str, gens: int, given: bool = True,
               capacity: int = 4096) -> tuple[W.Spec, shmstore.Resource]:
    """A resource committed ``gens`` times (generation g holds gen_byte(g + 1) everywhere);
    returns the spec and the still open writer."""
    spec = H.spec(kind)
    w = H.create(spec, capacity=capacity)
    for g in range(gens):
        if g:
            w.reactivate()
        w.write_at(0, bytes([W.gen_byte(g + 1)]) * N)
        w.commit(N if given else None)
    return spec, w


def _names(spec: W.Spec) -> list[str]:
    """Every name the resource still has: /dev/shm entries, and the data file and sidecar."""
    base = W.shm_base(spec)
    out = sorted(e for e in os.listdir("/dev/shm")
                 if e.startswith(base + "_") or e.startswith("sem." + base + "_"))
    if spec[0] == "mmap":
        path = spec[1]
        if os.path.lexists(path):
            out.append(os.path.basename(path))
        side = path + ".shmstore"
        if os.path.lexists(side):
            out += [f"sidecar/{e}" for e in sorted(os.listdir(side))] or ["sidecar/"]
    return out


def _short(names: list[str], spec: W.Spec) -> list[str]:
    base = W.shm_base(spec)
    return [n.replace("sem." + base + "_", "sem:").replace(base + "_", "") for n in names]


# ============================================================ 1. the lifecycle record
@pytest.mark.timeout(60)
def test_read_life_returns_a_whole_record_under_any_interleaving() -> None:
    """Deterministic: ``read_life`` is stopped after each of its loads while 1, 2 or 3
    lifecycle changes happen (the last one possibly half-written: the inactive record filled,
    LIFE_SEQ not flipped, as a writer killed there leaves it). Every record it returns must
    be one that was published, whole."""
    import mmap

    m = mmap.mmap(-1, L.CTRL_SIZE)
    raw = memoryview(m).cast("Q")
    L.init_block(raw, "shm", "t", 0, W.life_of(0))
    published = {0}
    n = [0]

    def change(complete: bool) -> None:
        n[0] += 1
        if complete:
            L.publish_life(raw, W.life_of(n[0]))
            published.add(n[0])
        else:  # the inactive record, garbage, no flip
            nxt = (raw[L.W_LIFE_SEQ] + 1) & 1
            base = L.record_word(nxt, 0)
            raw[base : base + L.R_FIELDS] = memoryview(
                __import__("array").array("Q", [99] * L.R_FIELDS))

    class Stop:
        def __init__(self, at: int, plan: list[bool]) -> None:
            self.at, self.plan, self.loads = at, plan, 0

        def _hit(self) -> None:
            if self.loads == self.at:
                for complete in self.plan:
                    change(complete)
            self.loads += 1

        def __getitem__(self, i: Any) -> Any:
            v = raw[i]
            self._hit()
            return v

        def cast(self, fmt: str) -> Any:
            self._hit()
            return raw.cast(fmt)

    plans = [[True], [True, True], [True, True, True], [False], [True, False],
             [True, True, False]]
    for plan in plans:
        for at in range(6):
            stop = Stop(at, plan)
            seq, life = L.read_life(stop)  # type: ignore[arg-type]
            k = W.life_n(life)
            assert k in published, (plan, at, life)
            assert seq <= raw[L.W_LIFE_SEQ], (plan, at)
    raw.release()
    m.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_read_life_never_torn_by_a_flipping_process(H: Harness, kind: str) -> None:
    """A process flips the lifecycle as fast as it can (each record derived from one
    counter); two reader processes read it, one of them yielding the CPU before every load so
    that several flips land inside one read. No torn record, no going back, and the slow
    reader really had to retry."""
    spec = H.spec(kind)
    H.create(spec).close()
    ctx = H.ctx()
    stop, started = ctx.Event(), ctx.Event()
    H.start("flipper", W.life_flipper, spec, stop, started)
    assert started.wait(30)
    H.start("fast", W.life_reader, spec, stop, False)
    H.start("slow", W.life_reader, spec, stop, True)
    # Let them race for a while: the flip count is the clock, not a sleep.
    m, words = W.map_ctrl_raw(spec)
    try:
        H.wait_until(lambda: words[L.W_LIFE_SEQ] > 100_000, "100,000 lifecycle flips",
                     deadline=30)
    finally:
        stop.set()
        words.release()
        m.close()
    got = H.results(["flipper", "fast", "slow"])
    assert got["flipper"] > 100_000
    assert got["fast"][0] > 0 and got["slow"][0] > 0
    assert got["slow"][1] > 0, f"the slow reader never retried: {got['slow']}"


# ============================================================ 2. _refresh and the lifecycle
@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("query", ["wait", "contains"])
def test_refresh_revalidates_the_lifecycle_it_read(H: Harness, kind: str, query: str) -> None:
    """A reader's ``_refresh`` reads the lifecycle (committed with final_len=None, generation
    0), and is then preempted; meanwhile the writer reactivates (its slot moves to generation
    1). The reader then loads LIFE_SEQ afresh - the value *after* the reactivate - drains
    nothing (the slot belongs to another generation now), finds LIFE_SEQ unchanged since that
    second load and returns: its view is 'committed, nothing covered'. A wait on committed
    bytes must be READY (contains_range True), not EOF."""
    spec = H.spec(kind)
    w = H.create(spec)
    ctx = H.ctx()
    ready, go0, paused, go = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
    p = H.start("reader", W.paused_query_reader, spec, ready, go0, paused, go, query, 0, 1000)
    H.await_event(ready, p, "reader attached")
    w.write_at(0, W.pattern(0, 1000))
    w.commit()  # final_len=None: the committed bytes are exactly the covered ones
    go0.set()
    H.await_event(paused, p, "reader inside _refresh")
    w.reactivate()
    go.set()
    got = H.results(["reader"])["reader"]
    assert got == {"wait": "READY", "contains": "True"}[query], (
        f"committed [0, 1000) but the reader answered {got}")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("phase", ["committed", "rewrite"])
def test_reader_survives_its_base_segment_being_retired(H: Harness, kind: str,
                                                        phase: str) -> None:
    """A reader synced the lifecycle (generation g committed, or a rewrite whose frozen view
    is base segment b<g+1>) and is preempted before it reads that base segment; meanwhile
    the writer commits further generations and retires the segment (unlink). The reader must
    retry with the current generation, not raise ResourceNotFound from a wait."""
    spec, w = _committed(H, kind, 1)  # generation 0
    ctx = H.ctx()
    ready, go0, paused, go = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
    p = H.start("reader", W.paused_query_reader, spec, ready, go0, paused, go, "wait", 0, N)
    H.await_event(ready, p, "reader attached")
    w.reactivate()  # rewrite of generation 1: base b0001
    if phase == "committed":
        w.write_at(0, bytes([W.gen_byte(2)]) * N)
        w.commit(N)  # generation 1 committed; the reader has not read b0001 yet
    go0.set()
    H.await_event(paused, p, "reader inside _refresh")
    # Two more commits: b0001 is unlinked by the commit of generation 2.
    if phase == "rewrite":
        w.write_at(0, bytes([W.gen_byte(2)]) * N)
        w.commit(N)
    w.reactivate()
    w.write_at(0, bytes([W.gen_byte(3)]) * N)
    w.commit(N)
    go.set()
    got = H.results(["reader"])["reader"]
    assert got == "READY", f"a wait on committed bytes ended in {got}"


# ============================================================ 3. reads across generations
@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_read_never_mixes_two_generations_of_different_lengths(H: Harness, kind: str) -> None:
    """A reader computes the readable length from generation 1 (N bytes) and is preempted
    before it maps generation 1's data; meanwhile generation 2 is committed with N/4 bytes.
    ``_ensure_rmap`` syncs the lifecycle again and maps generation 2, and the copy takes N
    bytes from it: the first N/4 from generation 2, the rest is generation 1's bytes that the
    rewrite's staged copy carried. The read must be one whole generation: N bytes of
    generation 1 or N/4 bytes of generation 2 (shm returns a mix; mmap raises
    CorruptResource)."""
    spec, w = _committed(H, kind, 1)  # generation 0, gen_byte(1)
    ctx = H.ctx()
    ready, go1, paused, go2 = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
    p = H.start("reader", W.gen_switch_reader, spec, ready, go1, paused, go2, N)
    H.await_event(ready, p, "reader mapped generation 0")
    w.reactivate()
    w.write_at(0, bytes([W.gen_byte(2)]) * N)
    w.commit(N)  # generation 1
    go1.set()
    H.await_event(paused, p, "reader about to map generation 1")
    w.reactivate()
    w.write_at(0, bytes([W.gen_byte(3)]) * (N // 4))
    w.commit(N // 4)  # generation 2: shorter
    go2.set()
    got = H.results(["reader"])["reader"]
    assert got in (f"{N} bytes of generation bytes {[W.gen_byte(2)]}",
                   f"{N // 4} bytes of generation bytes {[W.gen_byte(3)]}"), got


# ============================================================ 4. fork and the full barrier
@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["parked", "writing"])
def test_fork_while_another_thread_is_inside_the_barrier(H: Harness, where: str) -> None:
    """The full barrier is a module-level ``threading.Lock`` acquired and released around
    every publish and every park. A thread can be preempted between the two (the interpreter
    switches threads between bytecodes); if another thread forks then, the child inherits the
    lock held by a thread that does not exist there, and its first write (or park) blocks
    forever. Forced: the parked waiter thread (or a writing thread) is stopped on the release
    line while the main thread forks a child that writes through the inherited handle."""
    spec = H.spec("shm")
    H.create(spec).close()
    H.start("parent", W.fence_fork_parent, spec, where, daemon=False)
    got = H.results(["parent"], deadline=45)["parent"]
    assert got == "child wrote", got


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_fork_while_a_thread_holds_the_meta_lock(H: Harness, kind: str) -> None:
    """One thread of a writer process is stopped inside reactivate() (meta lock held, after
    the staged copy and the base segment); the main thread forks a child that writes through
    the inherited writer handle, and then writes itself. The child's lazy slot claim waits for
    the lock, then joins the new generation; commit(None) covers both processes' writes."""
    spec, w = _committed(H, kind, 1)
    w.close()
    rounds = 20
    H.start("parent", W.meta_fork_parent, spec, rounds, daemon=False)
    got = H.results(["parent"])["parent"]
    assert got == repr(ResourceStatus.Committed(None, N)), got
    r = H.open(spec)
    want = bytearray(bytes([W.gen_byte(1)]) * N)
    want[: 2 * rounds * 100] = bytes([W.gen_byte(2)]) * (2 * rounds * 100)
    assert r.read(0, N) == bytes(want)
    r._check()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_forked_child_and_parent_write_one_resource(H: Harness, kind: str) -> None:
    """A forked child writes the odd chunks through the inherited writer handle (claiming
    its own slot lazily) while the parent writes the even ones; waiters in a third process
    (no safety net) see every byte, and commit(None) publishes the whole extent."""
    total, chunk = 400_000, 3000
    spec = H.spec(kind)
    owner = H.create(spec, capacity=4096)
    H.start("reader", W.pool_reader, spec, total, 5, 40)
    H.start("pool", W.lazy_fork_pool, spec, total, chunk, daemon=False)
    got = H.results(["pool", "reader"])
    assert got["pool"].startswith("child slot ") and got["pool"] != "child slot None"
    owner.commit()
    assert owner.status == ResourceStatus.Committed(None, total)
    r = H.open(spec)
    assert W.bad_bytes(r.read(0, total), 0) is None
    r._check()


# ============================================================ 5. unlink races
@pytest.mark.timeout(60)
def test_mmap_unlink_racing_a_journal_compaction(H: Harness) -> None:
    """A writer compacts its journal while another process unlinks the mmap resource. (This
    test first found unlink() failing with ENOTEMPTY when the journal appeared between its
    listing and its rmdir.) A compaction now creates its journal under the meta lock, which
    unlink() holds while it flags the resource and removes its names: the writer, paused
    inside the journal's creation, holds the unlink off until it is done, and the unlink
    then removes everything - the new journal, the sidecar and the semaphores."""
    spec = H.spec("mmap")
    w = H.create(spec)
    r = H.open(spec)
    with pytest.raises(TimeoutError):  # a park: the waiter slot's semaphore now exists
        r.wait_range(10**6, 10**6 + 1, timeout=0.001)
    assert any(n.startswith("sem.") for n in _names(spec))
    ctx = H.ctx()
    at_create, listed, created, go2 = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
    p = H.start("writer", W.compaction_pause_writer, spec, at_create, listed, created, go2)
    H.await_event(at_create, p, "compaction about to create its journal")
    listed.set()
    H.await_event(created, p, "journal created under the meta lock")
    errors: list[BaseException] = []

    def unlink() -> None:
        try:
            w.unlink()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=unlink)
    t.start()  # blocks on the meta lock the paused compaction holds
    go2.set()
    t.join(30)
    assert not t.is_alive()
    out = H.results(["writer"])["writer"]
    left = _short(_names(spec), spec)
    assert not errors and not left, (
        f"unlink raised {errors!r}; left behind: {left}; the writer's write: {out}")


# ============================================================ 6. writes racing a commit
@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("phase", ["first", "rewrite"])
def test_growth_racing_a_commit_leaves_the_committed_generation_alone(
        H: Harness, kind: str, phase: str) -> None:
    """A pool writer's write needs growth; it checked that the resource is active and is
    about to take the meta lock in ``_grow`` when another writer commits (final_len=4000).
    ``_grow`` never re-checks the status: it grows the committed generation (capacity, and
    for mmap the data file, which must hold exactly the committed bytes) and the write then
    lands in the committed data. The write must be refused; the committed bytes and the
    data file must not change after the commit."""
    spec = H.spec(kind)
    w = H.create(spec, capacity=4096)
    if phase == "rewrite":
        w.write_at(0, bytes([W.gen_byte(1)]) * 4000)
        w.commit(4000)
        w.reactivate()
    w.write_at(0, W.pattern(0, 4000))
    ctx = H.ctx()
    at_grow, go = ctx.Event(), ctx.Event()
    p = H.start("pool", W.grow_pause_writer, spec, at_grow, go, 3000, 2000, 0xEE)
    H.await_event(at_grow, p, "pool writer about to grow")
    w.commit(4000)
    r = H.open(spec)
    before = r.read(0, 4000)
    assert before == W.pattern(0, 4000)
    go.set()
    out = H.results(["pool"])["pool"]
    after = r.read(0, 4000)
    # A commit made while another writer is attached leaves the file at its reservation
    # (shrinking it could SIGBUS that writer); the last writer to close trims it.
    w.close()
    size = os.path.getsize(spec[1]) if kind == "mmap" else None
    problems = []
    if out != "ReadOnlyError":
        problems.append(f"the racing write {out!r} after the commit")
    if after != before:
        problems.append(f"committed bytes changed: {W.bad_bytes(after, 0)}")
    if size is not None and size != 4000:
        problems.append(f"the committed data file is {size} bytes, not 4000")
    st = r.status
    if st != ResourceStatus.Committed(4000, 4000):
        problems.append(f"status {st}")
    assert not problems, "; ".join(problems)


@pytest.mark.timeout(60)
def test_mmap_commit_does_not_truncate_under_a_pool_writer(H: Harness) -> None:
    """mmap: commit(final_len) of a file reserved larger truncates the data file in place.
    A pool writer that checked the lifecycle and mapped the file before the commit copies its
    bytes after it, into pages past the new end of file: SIGBUS kills it. A write racing a
    commit may be refused (the docs), never crash its process."""
    spec = H.spec("mmap")
    w = H.create(spec, capacity=8 << 20)
    w.write_at(0, W.pattern(0, 100))
    ctx = H.ctx()
    paused, go = ctx.Event(), ctx.Event()
    off = 6 << 20
    p = H.start("pool", W.populate_pause_writer, spec, paused, go, off, 100)
    H.await_event(paused, p, "pool writer about to copy its bytes")
    w.commit(100)
    go.set()
    p.join(30)
    assert p.exitcode == 0, f"the pool writer died with exit code {p.exitcode} (-7: SIGBUS)"
    H.results(["pool"])
    w.close()  # the last writer to leave trims the file to the committed length
    assert os.path.getsize(spec[1]) == 100


@pytest.mark.timeout(60)
@pytest.mark.parametrize("short", [True, False])
def test_mmap_short_commit_keeps_reader_views_valid(H: Harness, short: bool) -> None:
    """mmap commit(final_len) below the written extent goes through a staged copy (a new
    generation renamed over the path), so readers in other processes that hold views of the
    old bytes keep valid memory with the old contents; new reads stop at the new length and
    the data file holds exactly final_len bytes."""
    spec = H.spec("mmap")
    w = H.create(spec, capacity=1 << 16)
    w.write_at(0, W.pattern(0, N))
    r = H.open(spec)
    v = r.view(0, N)  # a view of [0, N) of the current data file
    assert bytes(v) == W.pattern(0, N)
    ctx = H.ctx()
    ready, go, done = ctx.Event(), ctx.Event(), ctx.Event()
    H.start("viewer", W.view_holder, spec, N, ready, go, done)
    assert ready.wait(30)
    w.commit(N // 3 if short else N)  # short=False: the extent, truncated in place
    go.set()
    got = H.results(["viewer"])["viewer"]
    assert got == "views intact", got
    assert bytes(v) == W.pattern(0, N)
    n = N // 3 if short else N
    assert r.read(0, N) == W.pattern(0, n)
    assert os.path.getsize(spec[1]) == n
    del v


# ============================================================ 7. mmap roll-forward
@pytest.mark.timeout(60)
@pytest.mark.parametrize("committer", ["slow", "dead"])
def test_mmap_rename_roll_forward_by_readers(H: Harness, committer: str) -> None:
    """A rewrite commit publishes the new generation, then renames the staged file over the
    path. The committer is stopped right before the rename (slow: it resumes later; dead: it
    is SIGKILLed there). Two reader processes that attach meanwhile find the wrong inode and
    must roll the rename forward exactly once (under the meta lock), never rename a stale
    file over newer data; all read the new generation; no staged file is left."""
    spec, w = _committed(H, "mmap", 1)
    w.close()
    ctx = H.ctx()
    paused, go, read = ctx.Event(), ctx.Event(), ctx.Event()
    attached = [ctx.Event() for _ in range(2)]
    entered = [ctx.Event() for _ in range(2)]
    readers = [H.start(f"r{j}", W.repair_reader, spec, N, attached[j], read, entered[j])
               for j in range(2)]
    for j, e in enumerate(attached):
        H.await_event(e, readers[j], f"reader {j} attached")
    c = H.start("committer", W.rename_pause_committer, spec, paused, go, committer == "dead")
    H.await_event(paused, c, "committer before its rename")
    if committer == "dead":
        H.kill(c)
    read.set()  # the readers see the new generation, whose inode the path does not have yet
    if committer == "slow":
        for j, e in enumerate(entered):  # both wait for the meta lock the committer holds
            H.await_event(e, readers[j], f"reader {j} in the roll-forward")
        go.set()
    tags = [f"r{j}" for j in range(2)] + (["committer"] if committer == "slow" else [])
    got = H.results(tags)
    want = f"{N} bytes of generation bytes {[W.gen_byte(2)]}"
    assert got["r0"][0] == got["r1"][0] == want, got
    renames = got["r0"][1] + got["r1"][1]
    if committer == "slow":
        assert got["committer"] == "committed", got
        assert renames == 0, f"readers renamed {renames} times under a live committer"
    else:
        assert renames == 1, f"the rename was rolled forward {renames} times"
    left = _short(_names(spec), spec)
    assert not [n for n in left if n.startswith("sidecar/d")], left
    r = H.open(spec)
    assert r.read(0, N) == bytes([W.gen_byte(2)]) * N


@pytest.mark.timeout(60)
def test_unlink_racing_a_roll_forward(H: Harness) -> None:
    """A rewrite's committer dies between its lifecycle flip and the rename; a reader finds
    the wrong inode and enters the roll-forward; before it takes the meta lock another
    handle unlinks the resource. The reader's read must end in ResourceNotFound (the
    resource is gone), not CorruptResource."""
    spec, w = _committed(H, "mmap", 1)
    w.close()
    keep = H.open(spec)  # attached before: its unlink() needs no roll-forward
    ctx = H.ctx()
    attached, go, entered, cont = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
    rd = H.start("reader", W.repair_pause_reader, spec, attached, go, entered, cont)
    H.await_event(attached, rd, "reader attached")
    paused, never = ctx.Event(), ctx.Event()
    c = H.start("committer", W.rename_pause_committer, spec, paused, never, True)
    H.await_event(paused, c, "committer before its rename")
    H.kill(c)
    go.set()
    H.await_event(entered, rd, "reader in the roll-forward")
    keep.unlink()
    cont.set()
    got = H.results(["reader"])["reader"]
    assert got.startswith("ResourceNotFound"), got


@pytest.mark.timeout(60)
def test_dead_committers_staged_file_is_not_orphaned(H: Harness) -> None:
    """mmap rewrite committed by a writer that dies between the flip and the rename; before
    any process rolls the rename forward, a pool writer of that rewrite (which reads through
    its own mapping of the staged file, so it never needs the roll-forward) starts and
    commits the next rewrite. Its rename replaces the path, and the dead committer's staged
    file - a whole generation of data - stays in the sidecar for the resource's life."""
    spec, w = _committed(H, "mmap", 1)
    w.reactivate()  # generation 1 is being written into sidecar/d0001
    w.close()
    ctx = H.ctx()
    wrote, go = ctx.Event(), ctx.Event()
    b = H.start("pool", W.pool_rewriter, spec, wrote, go)
    H.await_event(wrote, b, "pool writer wrote generation 1")
    paused, never = ctx.Event(), ctx.Event()
    c = H.start("committer", W.rename_pause_committer, spec, paused, never, True)
    H.await_event(paused, c, "committer before its rename")
    H.kill(c)
    go.set()
    assert H.results(["pool"])["pool"] == "ok"
    r = H.open(spec)
    assert r.read(0, N + 1) == bytes([W.gen_byte(3)]) * N
    left = [n for n in _short(_names(spec), spec) if n.startswith("sidecar/d")]
    assert not left, f"staged data left in the sidecar: {left} (the data file is {N} bytes)"


# ============================================================ 8. generations retired
@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_names_after_many_rewrites_and_late_joiners(H: Harness, kind: str) -> None:
    """Twelve rewrites (commit given or None, a second writer process joining some of them,
    a shorter commit now and then - for mmap the staged-copy path); late joiners in other
    processes attach during each rewrite (they must read the previous generation) and after
    each commit (the new one). At the end the resource holds exactly the names its current
    generation needs: control block, data, its base segment, the journals of the writer slots
    it uses, waiter semaphores - every older data generation, base segment and the journal
    of a slot no generation uses any more is gone - and unlink leaves nothing."""
    rng = random.Random(5)
    spec = H.spec(kind)
    w = H.create(spec, capacity=4096)
    length, byte = N, W.gen_byte(1)
    w.write_at(0, bytes([byte]) * length)
    w.commit()
    for g in range(2, 14):
        w.reactivate()
        H.start(f"during{g}a", W.late_reader, spec, length, byte, False)
        prev = (length, byte)
        byte = W.gen_byte(g)
        tags = [f"during{g}a"]
        if rng.random() < 0.5:
            w.write_at(0, bytes([byte]) * length)
        else:  # a second writer process rewrites the second half
            w.write_at(0, bytes([byte]) * (length // 2))
            H.start(f"half{g}", W.rewrite_half, spec, length, byte)
            tags.append(f"half{g}")
        got = H.results(tags)  # (one call: results() drops the tags it was not asked for)
        H.start(f"during{g}b", W.late_reader, spec, *prev, False)
        got.update(H.results([f"during{g}b"]))
        assert set(got.values()) == {"ok"}, got
        if rng.random() < 0.3:
            length = length - rng.randrange(1, 500)
            w.commit(length)
        else:
            w.commit(None if rng.random() < 0.5 else length)
        H.start(f"late{g}", W.late_reader, spec, length, byte, True)
        assert H.results([f"late{g}"])[f"late{g}"] == "ok"
    life = L.current_life(w._words)
    g = life.data_gen
    used = [s for s in range(L.N_WRITERS) if (life.used_mask >> s) & 1]
    names = set(_short(_names(spec), spec))
    pre = "sidecar/" if kind == "mmap" else ""
    want = {pre + "c", pre + f"b{g:04x}",
            f"d{g:04x}" if kind == "shm" else os.path.basename(spec[1])}
    want |= {pre + f"j{s:x}_{w._words[L.slot_word(s, L.S_JGEN)]:04x}" for s in used}
    journals = [n.split("/")[-1] for n in names if n.split("/")[-1].startswith("j")]
    slots = [n.split("_")[0] for n in journals]
    assert len(slots) == len(set(slots)), f"two journals of one slot: {sorted(journals)}"
    # (journals of slots the current generation does not use: see the next test)
    extra = sorted(n for n in names - want
                   if not n.startswith("sem:") and not n.split("/")[-1].startswith("j"))
    assert not extra and want <= names, (
        f"generation {g}, slots in use {used}: unexpected {extra}; missing {want - names}")
    w.unlink()
    assert _names(spec) == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_journal_of_a_departed_writer_is_retired_with_its_generation(H: Harness,
                                                                     kind: str) -> None:
    """A pool writer process writes fragmented coverage (its journal compacts to a big
    segment) and closes; the resource is committed, then rewritten and committed by the
    remaining writer. The departed writer's slot belongs to no generation any more (not in
    the used mask, no live writer), yet its journal segment stays in /dev/shm (or the
    sidecar) until unlink - one per slot, sized by that writer's fragmentation."""
    spec = H.spec(kind)
    w = H.create(spec, capacity=1 << 16)
    H.start("pool", W.pool_writer, spec, [(16 * i, 8) for i in range(3000)], 1)
    H.results(["pool"])
    w.commit()
    w.reactivate()
    w.write_at(0, bytes([W.gen_byte(2)]) * 100)
    w.commit()
    life = L.current_life(w._words)
    used = [s for s in range(L.N_WRITERS) if (life.used_mask >> s) & 1]
    journals = sorted(n for n in _short(_names(spec), spec) if n.split("/")[-1].startswith("j"))
    stale = [n for n in journals if int(n.split("/")[-1][1:].split("_")[0], 16) not in used]
    sizes = {}
    if kind == "shm":
        base = W.shm_base(spec)
        sizes = {n: os.path.getsize(f"/dev/shm/{base}_{n}") for n in stale}
    assert not stale, f"slots in use {used}; journals of other slots kept: {stale} {sizes}"


# ============================================================ 9. kills at every step
SWEEP_OPS = ["reactivate_none", "reactivate_given", "rewrite_commit", "short_commit", "grow",
             "register", "unlink"]


def _sweep_prepare(H: Harness, kind: str, op: str) -> tuple[W.Spec, shmstore.Resource | None,
                                                            shmstore.Resource]:
    """The resource ``op`` starts from; returns (spec, a writer the parent keeps open or
    None, a reader attached before the operation)."""
    spec = H.spec(kind)
    w = W.create_spec(spec, 4096)
    keep = None
    if op == "grow":
        w.write_at(0, W.pattern(0, 100))
    elif op in ("short_commit", "register", "unlink"):
        w.write_at(0, W.pattern(0, N))
        if op == "unlink":
            r0 = W.open_spec(spec)
            with pytest.raises(TimeoutError):  # a park: a semaphore to remove
                r0.wait_range(10**6, 10**6 + 1, timeout=0.001)
            r0.close()
        if op in ("register", "unlink"):
            keep = w
    else:
        w.write_at(0, W.pattern(0, N))
        w.commit(N if op == "reactivate_given" else None)
        if op != "reactivate_none":  # from generation 1: a base segment to carry or retire
            w.reactivate()
            w.write_at(0, W.pattern(0, N))
            w.commit(N if op == "reactivate_given" else None)
    if keep is None:
        w.close()
    old = W.open_spec(spec)
    old.ranges()
    return spec, keep, old


def _sweep_check(spec: W.Spec, op: str, keep: shmstore.Resource | None,
                 old: shmstore.Resource) -> str | None:
    """None when the state after the kill is the state before or after ``op``, every reader
    (attached before, and a late joiner) sees it whole, and a new writer finishes the job."""
    d_old = W.pattern(0, N)
    d_new = bytes([W.gen_byte(3)]) * N
    if op == "unlink":
        try:
            r = W.open_spec(spec)
        except shmstore.ResourceNotFound:
            r = None
        if r is not None:
            try:
                if r._unlinked:
                    return "open() attached to a resource whose unlink was published"
                if r.read(0, N) != d_old:
                    return "a survivor reads other bytes"
            finally:
                r.close()
        assert keep is not None
        keep.unlink()  # a survivor finishes the unlink (idempotent)
        left = _names(spec)
        return f"after a second unlink: {left}" if left else None
    readers = [("old reader", old)]
    late = W.open_spec(spec)
    readers.append(("late joiner", late))
    try:
        for who, r in readers:
            st = r.status
            if op.startswith("reactivate") or op == "rewrite_commit":
                allowed = [d_old, d_new] if op == "rewrite_commit" else [d_old]
                if r.read(0, N) not in allowed:
                    return f"{who}: {st}, read(0, {N}) is neither generation"
                if not (r.contains_range(0, N)
                        and r.wait_range(0, N, timeout=5) is WaitOutcome.READY):
                    return f"{who}: {st} but [0, {N}) is not available"
            elif op == "short_commit":
                got = r.read(0, N)
                if isinstance(st, ResourceStatus.Committed):
                    if st.length != N // 2 or got != d_old[: N // 2]:
                        return f"{who}: {st}, read {len(got)} bytes"
                elif got != d_old:
                    return f"{who}: {st}, read {len(got)} bytes"
            elif op in ("grow", "register"):
                if not isinstance(st, ResourceStatus.Active):
                    return f"{who}: {st}"
                cov = r.ranges()
                base = (0, 100) if op == "grow" else (0, N)
                if not any(s <= base[0] and base[1] <= e for s, e in cov):
                    return f"{who}: lost coverage {base}: {cov}"
                for s, e in cov:
                    if W.bad_bytes(r.read(s, e - s), s) is not None:
                        return f"{who}: covered [{s}, {e}) holds bytes never written"
            r._check()
    finally:
        late.close()
    # a new writer (or the one kept open) finishes the job
    w = keep if keep is not None else W.open_spec(spec, "r+")
    try:
        st = w.status
        if op.startswith("reactivate"):
            if isinstance(st, ResourceStatus.Committed):
                w.reactivate()
            w.write_at(0, d_new)
            w.commit(N)
            want = d_new
        elif op == "rewrite_commit":
            w.commit()
            want = d_new
        elif op == "short_commit":
            w.commit(N // 2)
            want = d_old[: N // 2]
        elif op == "grow":
            w.write_at(100, W.pattern(100, 4096))
            w.commit()
            want = W.pattern(0, 4196)
        else:  # register
            w.write_at(N, W.pattern(N, 100))
            w.commit()
            want = W.pattern(0, N + 100)
        for who, r in [("writer", w), ("old reader", old)]:
            got = r.read(0, N + 200)
            if got != want:
                return f"after resume + commit, the {who} reads {len(got)} bytes, not the data"
        if spec[0] == "mmap" and os.path.getsize(spec[1]) != len(want):
            return f"data file is {os.path.getsize(spec[1])} bytes, committed {len(want)}"
    finally:
        w.close()
    return None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("op", SWEEP_OPS)
def test_killed_at_every_step_including_file_operations(H: Harness, kind: str, op: str) -> None:
    """The writer (or unlinker) is SIGKILLed just before each step of ``op``: every store
    into the control block (the slot's journal and ring words included) and every file
    operation (create, reserve, map, ftruncate, fsync, rename, directory fsync, unlink,
    rmdir, semaphore unlink). After each kill: readers attached before and a late joiner see
    the state before or after ``op``, whole; a new writer finishes the job; and after unlink
    nothing of the resource is left (/dev/shm, data file, sidecar)."""
    spec, keep, old = _sweep_prepare(H, kind, op)
    try:
        H.start("dry", W.stepkill_writer, spec, op, None)
        steps = H.results(["dry"])["dry"]
    finally:
        old.close()
        if keep is not None:
            keep.close()
    assert len(steps) >= 2, steps
    failures: list[str] = []
    for k in range(len(steps)):
        spec, keep, old = _sweep_prepare(H, kind, op)
        try:
            p = H.start(f"k{k}", W.stepkill_writer, spec, op, k)
            p.join(30)
            assert p.exitcode == -9, f"step {k}: exit code {p.exitcode}"
            try:
                why = _sweep_check(spec, op, keep, old)
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"
        finally:
            old.close()
            if keep is not None:
                keep.close()
        W.unlink_spec(spec)
        left = _names(spec)
        if left:
            why = (why or "") + f" | left after unlink: {_short(left, spec)}"
        if why:
            failures.append(f"killed before step {k} ({steps[k]}): {why}")
    assert not failures, f"{len(steps)} steps:\n" + "\n".join(failures)
