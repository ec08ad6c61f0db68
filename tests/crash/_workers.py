"""Child-process bodies and helpers for the crash and race tests.

Everything a child runs is a module-level function, so the spawn and forkserver start methods
can import it. A child reports through ``entry``: it puts ``(tag, "ok", value)`` or
``(tag, "err", traceback)`` on a queue the parent collects (see ``conftest.Harness``).

Every written byte carries a pattern derived from its absolute offset (``pattern``), never
zero, so a reader can verify any covered byte: an unwritten (zero) byte, a byte of another
offset or of another generation never passes.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import threading
import traceback
from collections.abc import Callable
from typing import Any

import shmstore
from shmstore import resource as R
from shmstore.core import layout as L
from shmstore.core.ranges import RangeSet, merge_ranges

HUGE_NET = 10_000.0  # a parked waiter relying on the safety net would hang: a lost wake-up

# ------------------------------------------------------------------------------- patterns
_M = 65521  # prime period: two offsets share a byte pattern only 64 KiB apart
_P = bytes(random.Random(0xC0FFEE).randrange(1, 256) for _ in range(_M))


def pattern(off: int, n: int) -> bytes:
    """The bytes every test writes at ``[off, off + n)``: never zero, offset-dependent."""
    out = bytearray()
    pos = off % _M
    while n > 0:
        k = min(n, _M - pos)
        out += _P[pos : pos + k]
        n -= k
        pos = 0
    return bytes(out)


def bad_bytes(buf: bytes, off: int) -> str | None:
    """None when ``buf`` is exactly the pattern at ``off``; else where it first differs."""
    want = pattern(off, len(buf))
    if buf == want:
        return None
    i = next(i for i in range(len(buf)) if buf[i] != want[i])
    return f"byte {off + i}: got {buf[i]}, want {want[i]} (buffer [{off}, {off + len(buf)}))"


def gen_byte(g: int) -> int:
    return g % 250 + 1


# ------------------------------------------------------------------------------ resources
Spec = tuple[str, str]  # ("shm", name) or ("mmap", path)


def open_spec(spec: Spec, mode: str = "r") -> shmstore.Resource:
    kind, key = spec
    if kind == "mmap":
        return shmstore.open(path=key, backend="mmap", mode=mode)
    return shmstore.open(key, mode=mode)


def create_spec(spec: Spec, capacity: int) -> shmstore.Resource:
    kind, key = spec
    if kind == "mmap":
        return shmstore.create(path=key, backend="mmap", capacity=capacity)
    return shmstore.create(key, capacity=capacity)


def unlink_spec(spec: Spec) -> None:
    kind, key = spec
    ns = R._namespace(kind, key if kind == "shm" else None, key if kind == "mmap" else None, 0o600)
    ns.unlink_all()


def shm_base(spec: Spec) -> str:
    """The /dev/shm prefix of a resource's segments and semaphores."""
    kind, key = spec
    ns = R._namespace(kind, key if kind == "shm" else None, key if kind == "mmap" else None, 0o600)
    return str(ns.base)


def set_safety_net(seconds: float) -> None:
    R.SAFETY_NET = seconds


def spin(n: int) -> None:
    """Busy jitter (no sleep): shifts interleavings without standing in for any sync."""
    x = 0
    for i in range(n):
        x += i


def waiter_pids(words: Any) -> dict[int, int]:
    """slot -> pid of every waiter slot in use with a non-empty range (a wait in progress;
    a handle's idle "sticky" slot has the empty range (0, 0))."""
    mask = words[L.W_WAITERS_MASK]
    out = {}
    for i in range(L.N_WAITERS):
        base = L.waiter_word(i, 0)
        if (mask >> i) & 1 and words[base + L.T_START] < words[base + L.T_END]:
            out[i] = words[base + L.T_PID]
    return out


# --------------------------------------------------------------------------------- entry
def entry(q: Any, tag: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        res = fn(*args)
    except BaseException:
        q.put((tag, "err", traceback.format_exc()))
    else:
        q.put((tag, "ok", res))
    q.close()
    q.join_thread()


# ------------------------------------------------------------------------ 1. lost wake-ups
def chunk_ranges(i: int, chunk: int) -> tuple[int, int, int]:
    """Chunk ``i`` is ``[a, c)``, written as ``[a, b)`` and ``[b, c)``."""
    a = i * chunk
    return a, a + chunk // 2 + (i % 7), a + chunk


def lw_writer(spec: Spec, barrier: Any, n_iter: int, chunk: int, seed: int, part: str) -> int:
    """Per iteration: meet the waiters at the barrier, then publish the chunk in two partial
    writes (random order, random busy jitter) - racing the waiters' registration."""
    w = open_spec(spec, "r+")
    rng = random.Random(seed)
    for i in range(n_iter):
        a, b, c = chunk_ranges(i, chunk)
        pieces = [(a, b), (b, c)]
        if part == "first":
            pieces = [(a, b)]
        elif part == "second":
            pieces = [(b, c)]
        elif rng.random() < 0.5:
            pieces.reverse()
        barrier.wait(20)
        for s, e in pieces:
            spin(rng.randrange(0, 3000))
            w.write_at(s, pattern(s, e - s))
    barrier.wait(20)
    w.close()
    return n_iter


def lw_waiter(spec: Spec, barrier: Any, n_iter: int, chunk: int, which: int,
              progress: Any, idx: int, spin_first: bool) -> tuple[int, int]:
    """Per iteration: wait (no safety net) for a range that needs the writes of this
    iteration, then verify its bytes. Returns (waits that parked, semaphore sleeps).
    ``spin_first=False`` turns off the library's bounded pre-park spin (if it has one), so
    every park goes through the token/barrier/semaphore handshake."""
    set_safety_net(HUGE_NET)
    if not spin_first and hasattr(R, "SPIN_YIELDS"):
        R.SPIN_YIELDS = 0
    parks = count_parks()
    sleeps = count_sleeps()
    r = open_spec(spec)
    for i in range(n_iter):
        a, b, c = chunk_ranges(i, chunk)
        s, e = [(a, c), (b - 1, b + 1), (a, b), (b, c)][(which + i) % 4]
        barrier.wait(20)
        out = r.wait_range(s, e)
        assert out is shmstore.WaitOutcome.READY, (i, out)
        bad = bad_bytes(r.read(s, e - s), s)
        assert bad is None, f"iteration {i}: READY before the bytes: {bad}"
        progress[idx] = i + 1
    barrier.wait(20)
    r.close()
    return parks[0], sleeps[0]


def count_sleeps() -> list[int]:
    """Count the semaphore sleeps of this process's waiters."""
    from shmstore.ipc import semaphores

    orig = semaphores.NamedWaker.wait
    n = [0]

    def counted(self: Any, timeout: float) -> bool:
        n[0] += 1
        return orig(self, timeout)

    semaphores.NamedWaker.wait = counted  # type: ignore[method-assign]
    return n


def count_parks() -> list[int]:
    """Count the waits that really park (claim a waiter slot) in this process."""
    orig = R.Resource._park
    n = [0]

    def counted(self: R.Resource, *a: Any, **kw: Any) -> Any:
        n[0] += 1
        return orig(self, *a, **kw)

    R.Resource._park = counted  # type: ignore[method-assign]
    return n


# ---------------------------------------------------------------------- 2. lapped readers
def fragmented_writes(seed: int, n: int) -> list[tuple[int, int]]:
    """``n`` writes: mostly non-adjacent fragments in random order (so coverage stays
    fragmented and compaction cannot shrink it), plus some bridging writes that merge."""
    rng = random.Random(seed)
    n_frag = n * 4 // 5
    slots = list(range(n_frag))
    rng.shuffle(slots)
    out = [(16 * s, 1 + rng.randrange(8)) for s in slots]
    for _ in range(n - n_frag):
        k = rng.randrange(n_frag)
        pos = rng.randrange(len(out) + 1)
        out.insert(pos, (16 * k, 16))  # fills the gap to the next fragment: a merge
    return out


def oracle(writes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return merge_ranges((o, o + n) for o, n in writes)


def lap_writer(spec: Spec, conn: Any, seed: int, n: int, checkpoints: list[int]) -> int:
    """Publish the writes; at each checkpoint report and wait for the parent's go-ahead."""
    w = open_spec(spec, "r+")
    marks = set(checkpoints)
    for k, (off, ln) in enumerate(fragmented_writes(seed, n), start=1):
        w.write_at(off, pattern(off, ln))
        if k in marks:
            conn.send(k)
            conn.recv()
    w.close()
    return n


def hammer_reader(spec: Spec, stop: Any, seed: int, n: int) -> int:
    """Drain coverage as fast as possible while the writer publishes (ring laps, journal
    resyncs and compactions race this): coverage only grows, every newly covered byte is
    verified, and the final view is exactly the oracle."""
    r = open_spec(spec)
    seen = RangeSet()
    rounds = 0
    while True:
        final = stop.is_set()
        cov = r.ranges()
        now = RangeSet(cov)
        for s, e in seen:
            assert now.covers(s, e), f"coverage shrank: [{s}, {e}) vanished"
        for s, e in cov:
            pos = s
            while pos < e:
                gap = seen.first_gap(pos, e)
                if gap is None:
                    break
                bad = bad_bytes(r.read(gap[0], gap[1] - gap[0]), gap[0])
                assert bad is None, f"covered before its bytes: {bad}"
                pos = gap[1]
        seen = now
        rounds += 1
        if final:
            break
    want = oracle(fragmented_writes(seed, n))
    assert list(seen) == want, "final coverage differs from the oracle"
    r.close()
    return rounds


def journal_race_reader(spec: Spec, ready: Any, go: Any) -> int:
    """Resync from the journal (as a late joiner or a reader that fell more than a ring
    behind does), pausing right after mapping the journal generation it loaded, until the
    parent says the writer has compacted and published more."""
    r = open_spec(spec)
    r.ranges()
    orig = R.Resource._open_journal
    armed = [True]

    def paused(res: R.Resource, slot: int, gen: int) -> Any:
        view = orig(res, slot, gen)
        if armed[0]:
            armed[0] = False
            ready.set()
            assert go.wait(30)
        return view

    R.Resource._open_journal = paused  # type: ignore[method-assign]
    r._cursors.clear()  # this handle now resyncs from the journal
    n = len(r.ranges())
    r.close()
    return n


# ----------------------------------------------------------------------- 3. writer death
def death_writer(spec: Spec, conn: Any, threshold: int, chunks: list[tuple[int, int]],
                 seed: int) -> None:
    """Write the chunks; after ``threshold`` writes tell the parent (which kills us at once,
    wherever we are) and keep writing: the rest of the chunks, then random rewrites."""
    w = open_spec(spec, "r+")
    rng = random.Random(seed)
    k = 0
    while True:
        if k < len(chunks):
            off, n = chunks[k]
        else:
            off, n = chunks[rng.randrange(len(chunks))]
        w.write_at(off, pattern(off, n))
        k += 1
        if k == threshold:
            conn.send(k)


def parked_waiter(spec: Spec, start: int, end: int, ready: Any) -> str:
    """Wait for bytes nobody will write (default safety net): must end in WriterDied."""
    r = open_spec(spec)
    ready.set()
    try:
        out = r.wait_range(start, end)
    except shmstore.WriterDied:
        return "WriterDied"
    finally:
        r.close()
    return f"returned {out}"


class Bomb:
    """A stand-in for a u64 view that SIGKILLs its process just before store ``kill_at``
    (counting from 0 after arming): a crash at an exact instruction of the protocol."""

    def __init__(self, words: Any, kill_at: int | None) -> None:
        self._words = words
        self.kill_at = kill_at
        self.stores = 0

    def __getitem__(self, i: Any) -> Any:
        return self._words[i]

    def __setitem__(self, i: Any, v: Any) -> None:
        if self.kill_at is not None and self.stores == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        self.stores += 1
        self._words[i] = v

    def __getattr__(self, name: str) -> Any:
        return getattr(self._words, name)


PUBLISH_POINTS = ["before_ring_start", "before_ring_end", "before_ring_check",
                  "before_ring_seq", "before_head", "before_extent"]
COMPACT_POINTS = ["compact_created", "compact_published"]


def crashpoint_writer(spec: Spec, point: str, base: list[tuple[int, int]],
                      last: tuple[int, int]) -> str:
    """Publish ``base``, then die at ``point`` while publishing ``last``."""
    w = open_spec(spec, "r+")
    for off, n in base:
        w.write_at(off, pattern(off, n))
    pub = w._pub
    assert pub is not None
    if point in PUBLISH_POINTS:
        pub.words = Bomb(pub.words, PUBLISH_POINTS.index(point))  # type: ignore[assignment]
    elif point == "compact_created":
        create = pub._create

        def create_then_die(slot: int, gen: int, cap: int) -> Any:
            create(slot, gen, cap)
            os.kill(os.getpid(), signal.SIGKILL)

        pub._create = create_then_die  # type: ignore[assignment]
    elif point == "compact_published":

        def die(slot: int, gen: int) -> None:
            os.kill(os.getpid(), signal.SIGKILL)

        pub._drop = die  # type: ignore[assignment]
    off, n = last
    w.write_at(off, pattern(off, n))
    return "survived"


def lifecycle_crash_writer(spec: Spec, op: str, kill_at: int | None, length: int) -> int:
    """Perform ``op`` with the control-block view replaced by a Bomb: dies before store
    ``kill_at``; with ``kill_at=None`` returns how many stores ``op`` makes."""
    w = open_spec(spec, "r+")
    if op == "rewrite_commit":
        w.reactivate()
        w.write_at(0, bytes([gen_byte(2)]) * length)
    raw = w._w
    bomb = Bomb(raw, kill_at)
    w._w = bomb  # type: ignore[assignment]
    if op in ("commit", "rewrite_commit"):
        w.commit()
    elif op == "reactivate":
        w.reactivate()
    elif op == "grow":
        off = w.capacity
        w.write_at(off, pattern(off, 100))
    else:
        raise ValueError(op)
    n = bomb.stores
    w._w = raw  # type: ignore[assignment]
    w.close()
    return n


def mmap_rename_crash_writer(spec: Spec, length: int) -> str:
    """A rewrite of an mmap resource whose writer dies during the commit, after the staged
    file was renamed over the data path (while the directory is being fsynced)."""
    from shmstore.ipc import segments

    w = open_spec(spec, "r+")
    w.reactivate()
    w.write_at(0, bytes([gen_byte(2)]) * length)

    def die(path: str) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    segments._fsync_dir = die  # type: ignore[assignment]
    w.commit(length)
    return "survived"


def covered_then_close_writer(spec: Spec, go: Any, done: Any, n: int) -> str:
    w = open_spec(spec, "r+")
    assert go.wait(30)
    w.write_at(0, pattern(0, n))
    w.close()
    done.set()
    return "closed"


def probe_pause_waiter(spec: Spec, ready: Any, go: Any, n: int) -> str:
    """Pause between the waiter's coverage check and its liveness probe (the interleaving
    where the last writer publishes the bytes and closes in between)."""
    orig = R.Resource._writer_alive
    armed = [True]

    def paused(res: R.Resource) -> bool:
        if armed[0]:
            armed[0] = False
            ready.set()
            assert go.wait(30)
        return orig(res)

    R.Resource._writer_alive = paused  # type: ignore[method-assign]
    r = open_spec(spec)
    try:
        out = r.wait_range(0, n)
    except shmstore.WriterDied as exc:
        return f"WriterDied though covered={r.contains_range(0, n)}: {exc}"
    bad = bad_bytes(r.read(0, n), 0)
    r.close()
    return f"{out.name} bad={bad}"


# ------------------------------------------------------------------- 4. rewrites, tearing
def rewrite_writer(spec: Spec, gens: int, length: int, parts: int, given: bool,
                   done: Any) -> int:
    """Generation g rewrites every byte with gen_byte(g), in ``parts`` writes, then commits."""
    w = open_spec(spec, "r+")
    try:
        step = -(-length // parts)
        for g in range(2, gens + 2):
            w.reactivate()
            v = bytes([gen_byte(g)])
            for off in range(0, length, step):
                n = min(step, length - off)
                w.write_at(off, v * n)
            w.commit(length if given else None)
    finally:
        done.set()
        w.close()
    return gens


def rewrite_reader(spec: Spec, done: Any, length: int, check_cov: bool) -> dict[str, int]:
    """Hammer a resource being rewritten: every read must be one generation, generations
    never go back, a committed resource covers [0, length), and waits are READY."""
    r = open_spec(spec)
    last = 0
    stats = {"reads": 0, "gens_seen": 0, "committed_checks": 0}
    buf = bytearray(length)
    while True:
        final = done.is_set()
        st = r.status
        if check_cov and isinstance(st, shmstore.ResourceStatus.Committed):
            stats["committed_checks"] += 1
            cov = r.contains_range(0, length)
            out = r.wait_range(0, length, timeout=10)
            assert cov, f"committed ({st}) but contains_range(0, {length}) is False"
            assert out is shmstore.WaitOutcome.READY, f"committed ({st}) but wait -> {out}"
        n = r.read_at(0, buf)
        assert n == length, f"short read {n}"
        v = buf[0]
        assert buf.count(v) == length, (
            f"torn read: generations {sorted(set(buf))} in one buffer")
        view = r.view(0, length)
        vv = view[0]
        assert bytes(view).count(vv) == length, "torn view"
        del view
        g = (v - 1) % 250
        assert g >= last or last - g > 125, f"generation went back from {last} to {g}"
        if g != last:
            stats["gens_seen"] += 1
            last = g
        stats["reads"] += 1
        if final:
            break
    r.close()
    return stats


def reset_pause_writer(spec: Spec, ready: Any, go: Any, length: int) -> str:
    """reactivate() of a resource committed with final_len=None, paused right after the
    writer's slot was started over for the new generation (before the lifecycle update)."""
    from shmstore.core import ring

    orig = ring.SlotPublisher.reset

    def paused(self: Any, merged: Any) -> None:
        orig(self, merged)
        ready.set()
        assert go.wait(30)

    ring.SlotPublisher.reset = paused  # type: ignore[method-assign]
    w = open_spec(spec, "r+")
    w.reactivate()
    w.close()
    return "reactivated"


def remap_pause_reader(spec: Spec, attached: Any, go1: Any, paused_evt: Any, go2: Any,
                       length: int) -> str:
    """A reader that notices a new committed generation and is paused just before it opens
    that generation's data segment (the rest of the read is the library's own)."""
    r = open_spec(spec)
    assert len(r.read(0, length)) == length  # maps the current generation
    attached.set()
    assert go1.wait(30)  # meanwhile the writer committed the next generation
    orig = R.Resource._data_fd

    def paused(res: R.Resource, gen: int, **kw: Any) -> int:
        paused_evt.set()
        assert go2.wait(30)
        R.Resource._data_fd = orig  # type: ignore[method-assign]
        return orig(res, gen, **kw)

    R.Resource._data_fd = paused  # type: ignore[method-assign]
    b = r.read(0, length)
    r.close()
    assert len(b) == length and b.count(b[:1]) == length, "torn"
    return f"read generation byte {b[0]}"


# --------------------------------------------------------------------------- 5. a pool
def pool_writer(spec: Spec, chunks: list[tuple[int, int]], seed: int) -> int:
    w = open_spec(spec, "r+")
    rng = random.Random(seed)
    pieces: list[tuple[int, int]] = []
    for off, n in chunks:
        cut = sorted(rng.sample(range(1, n), min(n - 1, rng.randrange(3)))) if n > 1 else []
        edges = [0, *cut, n]
        pieces += [(off + x, y - x) for x, y in itertools.pairwise(edges)]
    rng.shuffle(pieces)
    for off, n in pieces:
        w.write_at(off, pattern(off, n))
    w.close()
    return len(pieces)


def pool_reader(spec: Spec, total: int, seed: int, waits: int) -> int:
    set_safety_net(HUGE_NET)
    r = open_spec(spec)
    rng = random.Random(seed)
    for _ in range(waits):
        a = rng.randrange(total)
        b = min(total, a + rng.randint(1, 20_000))
        out = r.wait_range(a, b)
        assert out is shmstore.WaitOutcome.READY, out
        assert r.contains_range(a, b)
        bad = bad_bytes(r.read(a, b - a), a)
        assert bad is None, f"READY before the bytes: {bad}"
    assert r.wait_range(0, total) is shmstore.WaitOutcome.READY
    bad = bad_bytes(r.read(0, total), 0)
    assert bad is None, bad
    assert r.next_gap(0, total) is None
    r.close()
    return waits


# -------------------------------------------------------- 6. slots, interrupt, cancel, fork
def many_waiters(spec: Spec, n: int, start: int, end: int) -> str:
    """Park ``n`` threads (one handle) on a range nobody writes; never returns normally."""
    set_safety_net(HUGE_NET)
    r = open_spec(spec)
    threads = [threading.Thread(target=r.wait_range, args=(start, end), daemon=True)
               for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return "woke"




def verify_waiter(spec: Spec, start: int, end: int) -> str:
    """Wait without the safety net, then verify the bytes."""
    set_safety_net(HUGE_NET)
    r = open_spec(spec)
    out = r.wait_range(start, end)
    if out is shmstore.WaitOutcome.READY:
        bad = bad_bytes(r.read(start, end - start), start)
        assert bad is None, bad
    r.close()
    return out.name


def interrupted_waiter(spec: Spec, start: int, end: int, phase: Any, idx: int) -> list[str]:
    """First wait must be INTERRUPTED (interrupt from another process, no safety net); the
    second, started after the interrupt, must be unaffected and end READY."""
    set_safety_net(HUGE_NET)
    r = open_spec(spec)
    outs = [r.wait_range(start, end).name]
    phase[idx] = 2
    outs.append(r.wait_range(start, end).name)
    r.close()
    return outs


def interrupter(spec: Spec) -> str:
    r = open_spec(spec)
    r.interrupt()
    r.close()
    return "interrupted"


def cancel_waiter(spec: Spec, start: int, end: int) -> str:
    """Wait without the safety net; report how the wait ended (resource-wide cancel)."""
    set_safety_net(HUGE_NET)
    r = open_spec(spec)
    try:
        return r.wait_range(start, end).name
    except shmstore.Cancelled:
        return "Cancelled"
    finally:
        r.close()


def token_waiters(spec: Spec, start: int, end: int, parked: Any, go: Any) -> list[str]:
    """Two threads wait on one handle with their own CancelTokens; cancelling the first must
    end only that wait. The second ends READY once the parent writes."""
    set_safety_net(HUGE_NET)
    r = open_spec(spec)
    t1, t2 = shmstore.CancelToken(), shmstore.CancelToken()
    res: dict[str, str] = {}

    def run(key: str, tok: shmstore.CancelToken) -> None:
        try:
            res[key] = r.wait_range(start, end, cancel=tok).name
        except shmstore.Cancelled:
            res[key] = "Cancelled"

    a = threading.Thread(target=run, args=("a", t1))
    b = threading.Thread(target=run, args=("b", t2))
    a.start()
    b.start()
    assert go.wait(30)  # the parent saw both threads parked
    t1.cancel()
    a.join(30)
    first = res.get("a", "still waiting")
    parked.set()  # tell the parent: "a" is done, "b" should still be waiting
    b.join(30)
    r.close()
    return [first, res.get("b", "still waiting")]


def fork_holder(spec: Spec, conn: Any, use: str) -> str:
    """A writer process that forks a child holding the inherited writer handle. ``use``:
    "idle" (the child never touches it) or "read" (the child only reads and waits through
    it). Sends the grandchild's pid, then blocks until killed."""
    import multiprocessing as mp

    w = open_spec(spec, "r+")
    w.write_at(0, pattern(0, 10))
    ctx = mp.get_context("fork")
    gconn, child_end = ctx.Pipe()
    g = ctx.Process(target=_fork_grandchild, args=(w, child_end, use))
    g.start()
    assert gconn.recv() == "ready"
    conn.send(g.pid)
    conn.recv()  # the parent kills us while we wait here
    return "not killed"


def _fork_grandchild(w: shmstore.Resource, conn: Any, use: str) -> None:
    if use == "read":
        assert w.read(0, 10) == pattern(0, 10)
        assert w.contains_range(0, 10)
    conn.send("ready")
    conn.recv()  # blocks until the parent kills us


def fork_reader_child(w: shmstore.Resource, ready: Any, go: Any, out: Any) -> None:
    """A forked consumer that reads through its parent's writer handle, then waits for bytes
    the parent never writes after the parent closed its writer."""
    try:
        assert w.read(0, 10) == pattern(0, 10)
        ready.set()
        assert go.wait(30)
        try:
            res = w.wait_range(10, 20, timeout=5).name
        except shmstore.WriterDied:
            res = "WriterDied"
        except TimeoutError:
            res = "TimeoutError (hang: the forked reader keeps itself alive as a writer)"
        out.put(res)
    except BaseException:
        out.put(traceback.format_exc())
    out.close()
    out.join_thread()


def pickled_reader(handle: shmstore.Resource, total: int) -> str:
    set_safety_net(HUGE_NET)
    assert not handle.writable
    assert handle.wait_range(0, total) is shmstore.WaitOutcome.READY
    bad = bad_bytes(handle.read(0, total), 0)
    assert bad is None, bad
    handle.close()
    return "ok"


def pickled_writer(handle: shmstore.Resource, off: int, n: int) -> str:
    assert handle.writable
    handle.write_at(off, pattern(off, n))
    handle.close()
    return "ok"
