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


# =============================================================================================
# Second adversarial pass (tests/crash/test_adversarial2.py)
# =============================================================================================
def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def pause_in_refresh(paused: Any, go: Any) -> None:
    """Pause the next ``Resource._sync_life`` that ``_refresh`` makes, right after it returns:
    between reading the lifecycle and everything ``_refresh`` does with it."""
    import sys

    orig = R.Resource._sync_life
    armed = [True]

    def patched(res: R.Resource) -> None:
        orig(res)
        if armed[0] and sys._getframe(1).f_code.co_name == "_refresh":
            armed[0] = False
            R.Resource._sync_life = orig  # type: ignore[method-assign]
            paused.set()
            assert go.wait(30)

    R.Resource._sync_life = patched  # type: ignore[method-assign]


def paused_query_reader(spec: Spec, ready: Any, go0: Any, paused: Any, go: Any, query: str,
                        start: int, end: int) -> str:
    """Attach (and drain) now; after ``go0`` run ``query`` on [start, end) with a pause right
    after ``_refresh`` read the lifecycle (the parent changes the lifecycle meanwhile).
    Returns the query's answer, or the exception it raised."""
    r = open_spec(spec)
    r.ranges()
    ready.set()
    assert go0.wait(30)
    pause_in_refresh(paused, go)
    try:
        if query == "wait":
            return r.wait_range(start, end, timeout=5).name
        if query == "contains":
            return str(r.contains_range(start, end))
        raise ValueError(query)
    except Exception as exc:
        return _describe(exc)
    finally:
        r.close()


def gen_switch_reader(spec: Spec, ready: Any, go1: Any, paused: Any, go2: Any,
                      length: int) -> str:
    """Map the current generation; after ``go1`` read [0, length) with a pause just before the
    read maps the (new) generation it computed its length for. Returns a summary of the
    bytes read: ``"<n> bytes of generation bytes [..]"``, or the exception."""
    r = open_spec(spec)
    assert len(r.read(0, length)) == length  # maps the current generation
    ready.set()
    assert go1.wait(30)
    orig = R.Resource._ensure_rmap

    def paused_map(res: R.Resource, need: int) -> memoryview:
        R.Resource._ensure_rmap = orig  # type: ignore[method-assign]
        paused.set()
        assert go2.wait(30)
        return orig(res, need)

    R.Resource._ensure_rmap = paused_map  # type: ignore[method-assign]
    try:
        b = r.read(0, length)
    except Exception as exc:
        return _describe(exc)
    finally:
        r.close()
    return f"{len(b)} bytes of generation bytes {sorted(set(b))}"


# ------------------------------------------------------------------ fork vs. the barrier
def _line_of(fn: Any, needle: str) -> int:
    import inspect

    lines, first = inspect.getsourcelines(fn)
    for i, line in enumerate(lines):
        if needle in line:
            return first + i
    raise AssertionError(f"{needle!r} not in {fn}")


def _hold_fence_tracer(code: Any, line: int, paused: threading.Event,
                       release: threading.Event) -> Any:
    """A trace function that stops its thread at ``line`` of ``code`` (once): there the
    thread holds the barrier lock it acquired on the line before (a preemption point: the
    interpreter may switch threads between any two bytecodes)."""
    armed = [True]

    def local(frame: Any, event: str, arg: Any) -> Any:
        if event == "line" and frame.f_lineno == line and armed[0]:
            armed[0] = False
            paused.set()
            release.wait(30)
        return local

    def glob(frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code is code and armed[0]:
            return local
        return None

    return glob


def fence_fork_parent(spec: Spec, where: str) -> str:
    """A writer process with a second thread stopped between the two halves of the library's
    full barrier (``where``: "parked" - a parked waiter's ``full_barrier``; "writing" - the
    inline barrier of ``write_at``). The main thread forks a child that writes through the
    inherited writer handle. Returns what became of the child."""
    import multiprocessing as mp
    import sys

    from shmstore.ipc import semaphores

    w = open_spec(spec, "r+")
    w.write_at(0, pattern(0, 10))
    paused, release = threading.Event(), threading.Event()
    if where == "parked":
        code = semaphores.full_barrier.__code__
        line = _line_of(semaphores.full_barrier, "_FENCE.release()")
        r = open_spec(spec)

        def body() -> None:
            sys.settrace(_hold_fence_tracer(code, line, paused, release))
            try:
                r.wait_range(1000, 1010, timeout=20)
            except TimeoutError:
                pass

    else:
        code = R.Resource.write_at.__code__
        line = _line_of(R.Resource.write_at, "_FENCE.release()")

        def body() -> None:
            sys.settrace(_hold_fence_tracer(code, line, paused, release))
            w.write_at(20, pattern(20, 10))

    t = threading.Thread(target=body, daemon=True)
    t.start()
    assert paused.wait(30), "the thread never reached the barrier"
    ctx = mp.get_context("fork")
    q = ctx.SimpleQueue()
    g = ctx.Process(target=_fence_fork_child, args=(w, q), daemon=True)
    g.start()
    g.join(3)  # a deadline for a hang, not a synchronisation: the child needs milliseconds
    hung = g.exitcode is None
    if hung:
        os.kill(g.pid, signal.SIGKILL)
        g.join()
    release.set()
    if where == "parked":
        w.write_at(1000, pattern(1000, 10))  # ends the parked wait
    t.join(30)
    result = "child hung (deadlock)" if hung else q.get()
    w.close()
    return result


def _fence_fork_child(w: shmstore.Resource, q: Any) -> None:
    try:
        w.write_at(100, pattern(100, 10))
        w.close()
        q.put("child wrote")
    except BaseException as exc:
        q.put(_describe(exc))


# ------------------------------------------------------ fork while the meta lock is held
def meta_fork_parent(spec: Spec, rounds: int) -> str:
    """A writer process: one thread is stopped inside ``reactivate()`` holding the meta lock
    (after the staged copy); the main thread forks a child that writes through the inherited
    writer handle (its slot is claimed lazily, after the lock is free), while this process
    also writes; then commit(None) must cover both."""
    import multiprocessing as mp

    w = open_spec(spec, "r+")
    inside, release = threading.Event(), threading.Event()
    orig = R.Resource._write_ranges

    def paused(res: R.Resource, suffix: str, ranges: Any) -> None:
        orig(res, suffix, ranges)
        inside.set()
        release.wait(30)

    R.Resource._write_ranges = paused  # type: ignore[method-assign]
    t = threading.Thread(target=w.reactivate, daemon=True)
    t.start()
    assert inside.wait(30)
    R.Resource._write_ranges = orig  # type: ignore[method-assign]
    ctx = mp.get_context("fork")
    q = ctx.SimpleQueue()
    started = ctx.Event()
    g = ctx.Process(target=_lazy_child_writer, args=(w, q, started, rounds), daemon=True)
    g.start()
    assert started.wait(30)
    release.set()  # the child's first write waits for the meta lock until now
    t.join(30)
    for i in range(0, 2 * rounds, 2):
        w.write_at(i * 100, bytes([gen_byte(2)]) * 100)
    got = q.get()
    g.join()
    assert got == "ok", got
    w.commit()
    st = w.status
    w.close()
    return repr(st)


def _lazy_child_writer(w: shmstore.Resource, q: Any, started: Any, rounds: int) -> None:
    try:
        started.set()
        for i in range(1, 2 * rounds, 2):
            w.write_at(i * 100, bytes([gen_byte(2)]) * 100)
        assert w._slot is not None
        w.close()
        q.put("ok")
    except BaseException:
        q.put(traceback.format_exc())


def lazy_fork_pool(spec: Spec, total: int, chunk: int) -> str:
    """A writer process forks a child that writes the odd chunks through the inherited
    writer handle while the parent writes the even ones."""
    import multiprocessing as mp

    w = open_spec(spec, "r+")
    w.write_at(0, pattern(0, chunk))
    ctx = mp.get_context("fork")
    q = ctx.SimpleQueue()
    g = ctx.Process(target=_lazy_pool_child, args=(w, q, total, chunk), daemon=True)
    g.start()
    for off in range(2 * chunk, total, 2 * chunk):
        w.write_at(off, pattern(off, min(chunk, total - off)))
    got = q.get()
    g.join()
    w.close()
    return got


def _lazy_pool_child(w: shmstore.Resource, q: Any, total: int, chunk: int) -> None:
    try:
        for off in range(chunk, total, 2 * chunk):
            w.write_at(off, pattern(off, min(chunk, total - off)))
        slot = w._slot
        w.close()
        q.put(f"child slot {slot}")
    except BaseException:
        q.put(traceback.format_exc())


# ------------------------------------------------------------------ unlink vs. compaction
def compaction_pause_writer(spec: Spec, at_create: Any, listed: Any, created: Any,
                            go2: Any) -> str:
    """Fill this writer's journal, then stop the compaction of the next write just before it
    creates the new journal file (after its "unlinked?" check); create it once the parent's
    unlink has listed the sidecar, and stop again until ``go2``."""
    from shmstore.ipc import segments

    w = open_spec(spec, "r+")
    for i in range(2048):
        w.write_at(2 * i, b"x")
    orig = segments.DirNamespace.open

    def paused(ns: Any, suffix: str, **kw: Any) -> int:
        if suffix.startswith("j") and kw.get("create"):
            segments.DirNamespace.open = orig  # type: ignore[method-assign]
            at_create.set()
            assert listed.wait(30)
            fd = orig(ns, suffix, **kw)
            created.set()
            assert go2.wait(30)
            return fd
        return orig(ns, suffix, **kw)

    segments.DirNamespace.open = paused  # type: ignore[method-assign]
    try:
        w.write_at(2 * 2048, b"x")  # the journal is full: compaction
        out = "wrote"
    except Exception as exc:
        out = _describe(exc)
    w.close()
    return out


# ------------------------------------------------------------- writes racing a commit
def grow_pause_writer(spec: Spec, at_grow: Any, go: Any, off: int, n: int, byte: int) -> str:
    """A pool writer whose write needs growth, stopped just before ``_grow`` (the parent
    commits meanwhile). Returns how the write ended."""
    w = open_spec(spec, "r+")
    orig = R.Resource._grow

    def paused(res: R.Resource, end: int) -> None:
        R.Resource._grow = orig  # type: ignore[method-assign]
        at_grow.set()
        assert go.wait(30)
        orig(res, end)

    R.Resource._grow = paused  # type: ignore[method-assign]
    try:
        w.write_at(off, bytes([byte]) * n)
        out = "wrote"
    except Exception as exc:
        out = type(exc).__name__
    w.close()
    return out


def populate_pause_writer(spec: Spec, paused_evt: Any, go: Any, off: int, n: int) -> str:
    """A pool writer stopped inside ``write_at`` after it mapped the data and checked the
    lifecycle, just before it copies the bytes (the parent commits meanwhile)."""
    w = open_spec(spec, "r+")
    orig = R._populate

    def paused(m: Any, marks: Any, start: int, end: int, size: int, advice: int) -> None:
        if start == off:
            R._populate = orig
            paused_evt.set()
            assert go.wait(30)
        orig(m, marks, start, end, size, advice)

    R._populate = paused
    try:
        w.write_at(off, pattern(off, n))
        out = "wrote"
    except Exception as exc:
        out = type(exc).__name__
    w.close()
    return out


# ------------------------------------------------------------------- lifecycle records
def life_of(n: int) -> L.Life:
    """A life record whose every field is derived from ``n`` (a torn one is detectable)."""
    return L.Life(status=n % 3, final_len=n, final_given=n & 1, data_gen=n,
                  write_gen=n + (n & 1), capacity=3 * n, data_capacity=5 * n,
                  frozen_len=7 * n, used_mask=n & 0xFFFF, unlinked=0, data_ino=11 * n,
                  reason=f"<{n}>" * (n % 23))


def life_n(life: L.Life) -> int:
    """``n`` if ``life == life_of(n)``, else raise AssertionError (a torn record)."""
    n = life.final_len
    assert life == life_of(n), f"torn life record: {life}"
    return n


class SlowView:
    """A u64 view whose every load yields the CPU first: widens the window between the
    loads of one ``read_life`` so lifecycle flips land inside it. Counts LIFE_SEQ loads."""

    def __init__(self, words: Any) -> None:
        self._words = words
        self.seq_loads = 0

    def __getitem__(self, i: Any) -> Any:
        os.sched_yield()
        if i == L.W_LIFE_SEQ:
            self.seq_loads += 1
        return self._words[i]

    def cast(self, fmt: str) -> Any:
        os.sched_yield()
        return self._words.cast(fmt)


def life_flipper(spec: Spec, stop: Any, started: Any) -> int:
    """Publish life_of(1), life_of(2), ... as fast as possible (meta lock held for each)."""
    w = open_spec(spec, "r+")
    words = w._words
    n = 0
    while not stop.is_set():
        n += 1
        with w._meta():
            L.publish_life(words, life_of(n))
        if n == 1:
            started.set()  # only synthetic records from now on
    w.close()  # close publishes no lifecycle: the block keeps the synthetic record
    return n


def map_ctrl_raw(spec: Spec) -> tuple[Any, memoryview]:
    """The control block mapped read-only, without a handle."""
    import mmap as _mmap

    kind, key = spec
    ns = R._namespace(kind, key if kind == "shm" else None, key if kind == "mmap" else None,
                      0o600)
    fd = ns.open("c", create=False)
    try:
        m = _mmap.mmap(fd, L.CTRL_SIZE, _mmap.MAP_SHARED, _mmap.PROT_READ)
    finally:
        os.close(fd)
    return m, memoryview(m).cast("Q")


def life_reader(spec: Spec, stop: Any, slow: bool) -> tuple[int, int]:
    """Read the lifecycle in a loop until ``stop``; every record must be whole, and ``n``
    never goes back. Returns (reads, retries)."""
    m, raw = map_ctrl_raw(spec)
    reads = retries = last = 0
    while not stop.is_set() or reads == 0:
        view = SlowView(raw) if slow else raw
        seq, life = L.read_life(view)  # type: ignore[arg-type]
        if slow:
            retries += view.seq_loads // 2 - 1  # type: ignore[union-attr]
        if seq:
            n = life_n(life)
            assert n >= last, f"lifecycle went back from {last} to {n}"
            last = n
        reads += 1
    raw.release()
    m.close()
    return reads, retries


# -------------------------------------------------- kills at every step, file ops included
class Steps:
    """Counts the steps of an operation (control-block stores and file operations) once
    armed, and SIGKILLs the process just before step ``kill_at``."""

    def __init__(self, kill_at: int | None) -> None:
        self.kill_at = kill_at
        self.armed = False
        self.n = 0
        self.log: list[str] = []

    def tick(self, label: str) -> None:
        if not self.armed:
            return
        if self.kill_at is not None and self.n == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        self.n += 1
        self.log.append(label)


def _word_name(i: Any) -> str:
    if isinstance(i, slice):
        base = i.start - L.RECORDS_OFF // 8
        return f"life record {base // L.R_WORDS}" if 0 <= base < 2 * L.R_WORDS else f"w[{i}]"
    names = {L.W_LIFE_SEQ: "LIFE_SEQ", L.W_INTERRUPT_SEQ: "INTERRUPT_SEQ",
             L.W_WAITERS_MASK: "WAITERS_MASK", L.W_MAGIC: "MAGIC"}
    if i in names:
        return names[i]
    off = i * 8
    if L.WRITERS_OFF <= off < L.WAITERS_OFF:
        slot, rel = divmod(off - L.WRITERS_OFF, L.SLOT_SIZE)
        if rel < L.SLOT_HEADER:
            field = ["HEAD", "JGEN", "CGEN", "EXTENT", "PID"][rel // 8] if rel < 40 else rel
            return f"slot {slot} {field}"
        return f"slot {slot} ring word {(rel - L.SLOT_HEADER) // 8}"
    if off >= L.WAITERS_OFF:
        return f"waiter {(off - L.WAITERS_OFF) // L.WAITER_SIZE}"
    return f"w[{i}]"


class StepView:
    """The control block's u64 view, ticking ``steps`` before every store."""

    def __init__(self, words: Any, steps: Steps) -> None:
        self._words = words
        self._steps = steps

    def __getitem__(self, i: Any) -> Any:
        return self._words[i]

    def __setitem__(self, i: Any, v: Any) -> None:
        self._steps.tick(f"store {_word_name(i)}")
        self._words[i] = v

    def __getattr__(self, name: str) -> Any:
        return getattr(self._words, name)


def install_steps(steps: Steps) -> None:
    """Route every control-block store and every file operation of shmstore through
    ``steps`` (call in the child before it opens the resource)."""
    import posix_ipc

    from shmstore.ipc import segments

    orig_map = R.Resource._map_ctrl

    def map_ctrl(res: R.Resource) -> None:
        orig_map(res)
        res._w = StepView(res._w, steps)  # type: ignore[assignment]

    R.Resource._map_ctrl = map_ctrl  # type: ignore[method-assign]

    def wrap(owner: Any, name: str, label: Callable[..., str | None]) -> None:
        orig = getattr(owner, name)

        def wrapped(*a: Any, **kw: Any) -> Any:
            text = label(*a, **kw)
            if text is not None:
                steps.tick(text)
            return orig(*a, **kw)

        setattr(owner, name, wrapped)

    def base(p: Any) -> str:
        return os.path.basename(str(p))

    wrap(R, "reserve", lambda fd, size, what: f"reserve {size} ({what.split(' of ')[0]})")
    wrap(R, "map_segment", lambda fd, size, writable: f"map {size} w={writable}")
    wrap(os, "ftruncate", lambda fd, n: f"ftruncate {n}")
    wrap(os, "fsync", lambda fd: "fsync")
    wrap(os, "replace", lambda a, b: f"rename {base(a)} -> {base(b)}")
    wrap(os, "unlink", lambda p, **kw: f"unlink {base(p)}")
    wrap(os, "rmdir", lambda p, **kw: f"rmdir {base(p)}")
    wrap(segments, "_fsync_dir", lambda p: "fsync dir")
    wrap(posix_ipc, "unlink_shared_memory", lambda n: f"shm_unlink {n.split('_')[-1]}")
    wrap(posix_ipc, "unlink_semaphore", lambda n: f"sem_unlink {n.split('_')[-1]}")
    for cls in (segments.ShmNamespace, segments.DirNamespace):
        wrap(cls, "open",
             lambda ns, suffix, **kw: f"create {suffix}" if kw.get("create") else None)


STEP_LENGTH = 10_000


def stepkill_writer(spec: Spec, op: str, kill_at: int | None) -> list[str]:
    """Run ``op`` with every step counted; die just before step ``kill_at`` (None: a dry
    run that returns the steps' labels)."""
    steps = Steps(kill_at)
    install_steps(steps)
    n = STEP_LENGTH
    if op == "register":  # the registration itself is the operation
        steps.armed = True
        w = open_spec(spec, "r+")
        w.write_at(n, pattern(n, 100))
    elif op == "unlink":
        r = open_spec(spec)
        steps.armed = True
        r.unlink()
        w = r
    else:
        w = open_spec(spec, "r+")
        if op == "rewrite_commit":
            w.reactivate()
            w.write_at(0, bytes([gen_byte(3)]) * n)
        steps.armed = True
        if op.startswith("reactivate"):
            w.reactivate()
        elif op == "rewrite_commit":
            w.commit()
        elif op == "short_commit":
            w.commit(n // 2)
        elif op == "grow":
            off = w.capacity
            w.write_at(off, pattern(off, 100))
        else:
            raise ValueError(op)
    steps.armed = False
    log = list(steps.log)
    w.close()
    return log


def view_holder(spec: Spec, n: int, ready: Any, go: Any, done: Any) -> str:
    """Hold a view of [0, n) across a commit in another process; it must stay readable
    (no SIGBUS) with the bytes it had."""
    r = open_spec(spec)
    v = r.view(0, n)
    assert bytes(v) == pattern(0, n)
    ready.set()
    assert go.wait(30)
    ok = bytes(v) == pattern(0, n)
    del v
    r.close()
    done.set()
    return "views intact" if ok else "a held view changed"


def rename_pause_committer(spec: Spec, paused: Any, go: Any, die: bool) -> str:
    """Rewrite every byte, then commit; stopped right before the rename that follows the
    commit's lifecycle flip (meta lock held) until ``go`` (or until killed)."""
    n = STEP_LENGTH
    w = open_spec(spec, "r+")
    w.reactivate()
    w.write_at(0, bytes([gen_byte(2)]) * n)
    orig = os.replace

    def paused_replace(a: Any, b: Any) -> None:
        os.replace = orig
        paused.set()
        assert go.wait(60)
        orig(a, b)

    os.replace = paused_replace
    w.commit(n)
    w.close()
    return "committed"


def repair_reader(spec: Spec, n: int, attached: Any, go: Any, entered: Any) -> tuple[str, int]:
    """Attach, then (after ``go``) read the resource; reports the bytes and how many times
    this process renamed a staged file over the data path."""
    from shmstore.ipc import segments

    renames = [0]
    orig_pub = segments.DirNamespace.publish_data

    def counted(ns: Any, gen: int) -> int:
        renames[0] += 1
        return orig_pub(ns, gen)

    segments.DirNamespace.publish_data = counted  # type: ignore[method-assign]
    orig_rep = R.Resource._repair_data_file

    def rep(res: R.Resource) -> None:
        entered.set()
        orig_rep(res)

    R.Resource._repair_data_file = rep  # type: ignore[method-assign]
    r = open_spec(spec)
    attached.set()
    assert go.wait(30)
    try:
        b = r.read(0, n + 10)
        out = f"{len(b)} bytes of generation bytes {sorted(set(b))}"
    except Exception as exc:
        out = _describe(exc)
    r.close()
    return out, renames[0]


def rewrite_half(spec: Spec, length: int, byte: int) -> str:
    w = open_spec(spec, "r+")
    w.write_at(length // 2, bytes([byte]) * (length - length // 2))
    w.close()
    return "ok"


def late_reader(spec: Spec, length: int, byte: int, committed: bool) -> str:
    """A late joiner: the committed generation (or, during a rewrite, the frozen one) holds
    ``length`` bytes of ``byte``, all available."""
    r = open_spec(spec)
    try:
        st = r.status
        if committed:
            assert isinstance(st, shmstore.ResourceStatus.Committed), st
            assert st.length == length, st
        else:
            assert isinstance(st, shmstore.ResourceStatus.Active), st
        got = r.read(0, length + 10)
        assert got == bytes([byte]) * length, (len(got), sorted(set(got)))
        assert r.contains_range(0, length)
        assert r.wait_range(0, length, timeout=5) is shmstore.WaitOutcome.READY
        assert r.next_gap(0, length) is None
        r._check()
    finally:
        r.close()
    return "ok"


def repair_pause_reader(spec: Spec, attached: Any, go: Any, entered: Any, cont: Any) -> str:
    """Attach; after ``go`` read, with a pause at the entry of the roll-forward
    (``_repair_data_file``) until ``cont``. Returns the bytes read or the exception."""
    orig = R.Resource._repair_data_file

    def rep(res: R.Resource) -> None:
        R.Resource._repair_data_file = orig  # type: ignore[method-assign]
        entered.set()
        assert cont.wait(30)
        orig(res)

    R.Resource._repair_data_file = rep  # type: ignore[method-assign]
    r = open_spec(spec)
    attached.set()
    assert go.wait(30)
    try:
        b = r.read(0, STEP_LENGTH)
        return f"{len(b)} bytes of generation bytes {sorted(set(b))}"
    except Exception as exc:
        return _describe(exc)
    finally:
        r.close()


def pool_rewriter(spec: Spec, wrote: Any, go: Any) -> str:
    """A pool writer of a running rewrite: writes generation 2's bytes, then (after ``go``)
    starts and commits the next rewrite itself."""
    n = STEP_LENGTH
    w = open_spec(spec, "r+")
    w.write_at(0, bytes([gen_byte(2)]) * n)
    wrote.set()
    assert go.wait(30)
    w.reactivate()
    w.write_at(0, bytes([gen_byte(3)]) * n)
    w.commit(n)
    w.close()
    return "ok"
