"""Seeded crash-fault trials: writers SIGKILLed at random instants and at chosen steps, many
trials per crash point, every trial checked the same way.

Crash points (``docs/reliability.md`` describes each and the counts of a full run):

* ``write-memcpy``: the parent kills a child that streams offset-patterned writes (window
  after window, each a shuffled partition, so the resource grows as it goes) at a random
  instant: once the seed's write j has started, after a random delay of about one write.
  A progress word the child stores before each write says which write was in flight, and
  the raw data says where the kill landed (before the copy, inside it, copied but not
  published, published, in growth, in a journal compaction).
* ``publish``: the child dies between the copy of a write and its publication, at a chosen
  store of ``SlotPublisher.publish`` (a ``Bomb`` on the journal or the control block) or
  after ``head`` (before the waiters are posted).
* ``grow``, ``commit``, ``reactivate``, ``rewrite-commit``, ``mmap-rename``, ``create``: the
  child dies just before step k of the operation, counted by ``_workers.Steps`` (every
  control-block store and file operation); the seed picks k. ``mmap-rename`` picks k in
  the window of the rewrite commit's ``DirNamespace.publish_data`` (after the lifecycle
  flip: before the rename, before the directory fsync, inside it, right after it).
* ``chunked-commit``, ``atomic-write-all``: the child dies at a ``shmstore.atomic._test_hook``
  point of ``AtomicChunked.commit`` / ``Atomic.write_all`` (or before, or after them).

The seed (``SHMSTORE_TRIAL_SEED``, the point, the backend, the trial number) picks offsets,
sizes, holes, lengths, the variant and the kill instant. Steps are counted once per variant
by a *control run* (the operation runs to the end, then the child is killed; checked like a
trial, counted apart). After each trial: parked waiters (threads here, each on its own handle,
parked before the crash) end with ``WriterDied`` or their exact bytes (or EOF past a committed
end) within ``HANG`` seconds; every range ``ranges()`` reports (to a reader attached before the
crash and to a late joiner) holds exactly the written bytes; the state is the one before or
after the operation, as the step reached says; a committed resource reads back exactly; a new
``open(..., mode="r+")`` resumes and commits; after ``unlink()`` nothing is left and
``create`` of the same name succeeds. A creator killed mid-create must leave a name that
``create`` reclaims.

Each trial holds a reader handle on its resource from creation to unlink, so that a
``shmstore gc --abandoned`` run by another test session on the same machine never takes it
for abandoned between the crash and the resume.

``SHMSTORE_TRIALS`` (default 20) sets the trials per point and backend;
``SHMSTORE_TRIALS_REPORT=<file>`` appends one JSON line per test (counts, kill labels, wait
outcomes, duration, failures). Parked waiters here use a 20 ms safety net instead of 200 ms,
so a waiter learns of the writer's death ten times sooner (the mechanism is the same).
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import random
import re
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait as mp_wait
from pathlib import Path
from typing import Any

import pytest

import shmstore
from shmstore import Atomic, AtomicChunked, ResourceStatus, WaitOutcome
from shmstore import atomic as atomic_mod
from shmstore import resource as R
from shmstore.core import layout as L
from shmstore.core.ranges import RangeSet
from shmstore.core.ring import SlotPublisher
from shmstore.inventory import CREATE_GRACE

from . import _workers as W
from .conftest import Harness

TRIALS = max(1, int(os.environ.get("SHMSTORE_TRIALS", "20")))
SEED = os.environ.get("SHMSTORE_TRIAL_SEED", "0")
REPORT = os.environ.get("SHMSTORE_TRIALS_REPORT")
KINDS = ["shm", "mmap"]
NET = 0.02  # the parked waiters' safety net in this module (the library's default is 0.2 s)
HANG = 10.0  # a wait still blocked after this long is a hang
SHIFT = 7919  # generation g's bytes at offset o are the pattern at o + g * SHIFT

pytestmark = pytest.mark.timeout(int(90 + 3 * TRIALS))


@pytest.fixture(autouse=True)
def _fast_safety_net(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(R, "SAFETY_NET", NET)


# ----------------------------------------------------------------------------- data model
def gbytes(g: int, off: int, n: int) -> bytes:
    """Generation ``g``'s bytes at ``[off, off + n)``: never zero, offset-derived."""
    return W.pattern(off + g * SHIFT, n)


def pieces(rng: random.Random, lo: int, hi: int, max_len: int) -> list[tuple[int, int]]:
    """A partition of ``[lo, hi)`` into pieces of 1..max_len bytes, as (offset, length)."""
    out, pos = [], lo
    while pos < hi:
        n = min(hi - pos, rng.randint(1, max_len))
        out.append((pos, n))
        pos += n
    return out


def extent(writes: list[tuple[int, int]]) -> int:
    return max((o + n for o, n in writes), default=0)


class Model:
    """The bytes and coverage a resource generation must have."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self.cov = RangeSet()

    def write(self, g: int, off: int, n: int) -> None:
        self.data[off : off + n] = gbytes(g, off, n)
        self.cov.add(off, off + n)


@dataclass
class View:
    """What every reader must see after the crash."""

    status: ResourceStatus
    cov: list[tuple[int, int]]
    data: Any  # bytes (or PatternData) of the visible generation, zeros where never written
    length: int | None = None  # committed length; None while active
    given: bool = False
    read_len: int | None = None  # read(0, read_len + 64) must return exactly data[:read_len]

    def wait(self, s: int, e: int) -> tuple[str, bytes | None]:
        """The outcome (and bytes) of ``wait_range(s, e)`` once no writer is left."""
        covered = RangeSet(self.cov).covers(s, e)
        if self.length is None:
            return ("READY", self.data[s:e]) if covered else ("WriterDied", None)
        f = self.length
        if s >= f:
            return "EOF", None
        if self.given or RangeSet(self.cov).covers(s, min(e, f)):
            return "READY", self.data[s : min(e, f)]
        return "EOF", None


def active_view(m: Model) -> View:
    return View(ResourceStatus.Active(), list(m.cov), bytes(m.data))


def committed_view(m: Model, length: int, given: bool) -> View:
    data = bytes(m.data[:length]).ljust(length, b"\0")
    if given:
        cov = [(0, length)] if length else []
    else:
        cov = [(s, min(e, length)) for s, e in m.cov if s < length]
    return View(ResourceStatus.Committed(length if given else None, length), cov, data,
                length=length, given=given, read_len=length)


def rewriting_view(committed: View) -> View:
    """A rewrite in progress: readers see the committed generation, as an active resource."""
    assert committed.length is not None
    return View(ResourceStatus.Active(), committed.cov, committed.data,
                read_len=committed.length)


def diff(got: bytes, want: bytes, off: int) -> str | None:
    if got == want:
        return None
    if len(got) != len(want):
        return f"{len(got)} bytes, want {len(want)}"
    i = next(i for i in range(len(got)) if got[i] != want[i])
    return f"byte {off + i}: got {got[i]}, want {want[i]}"


def norm(label: str) -> str:
    """A step label without its sizes and names, for the per-point counts."""
    if label.startswith("rename"):
        return "rename staged data over the data path"
    return re.sub(r"\d+", "#", label)


# --------------------------------------------------------------------------- child bodies
def _die(conn: Any, *msg: Any) -> None:
    conn.send(("dying", *msg))
    os.kill(os.getpid(), signal.SIGKILL)


def memcpy_stream(seed: str, win: int, max_len: int, limit: int) -> Iterator[tuple[int, int]]:
    """The writes of the streaming writer: window after window of ``win`` bytes, each a
    shuffled partition into pieces of 1..max_len bytes, up to ``limit`` (rarely reached:
    the kill comes first unless the parent is kept off the CPU for milliseconds)."""
    for w in range(limit // win):
        rng = random.Random(f"{seed}:window:{w}")
        ps = pieces(rng, w * win, (w + 1) * win, max_len)
        rng.shuffle(ps)
        yield from ps


PERIOD = 65521  # the pattern's period (_workers.pattern)
assert W.pattern(PERIOD + 5, 100) == W.pattern(5, 100)


def child_memcpy(conn: Any, spec: W.Spec, seed: str, win: int, max_len: int, limit: int,
                 prog: Any) -> None:
    """Stream the pattern until killed. ``prog``: [index of the write in flight, inside
    ``_grow``, all written, inside a journal compaction]."""
    w = W.open_spec(spec, "r+")
    orig_grow, orig_compact = R.Resource._grow, SlotPublisher.compact

    def grow(res: R.Resource, end: int) -> None:
        prog[1] = 1
        orig_grow(res, end)
        prog[1] = 0

    def compact(pub: SlotPublisher) -> None:
        prog[3] = 1
        orig_compact(pub)
        prog[3] = 0

    R.Resource._grow = grow  # type: ignore[method-assign]
    SlotPublisher.compact = compact  # type: ignore[method-assign]
    mv = memoryview(W.pattern(0, PERIOD + max_len))  # the pattern at any offset, no copy
    conn.send("ready")
    assert conn.recv() == "go"
    for k, (off, n) in enumerate(memcpy_stream(seed, win, max_len, limit)):
        prog[0] = k
        p = off % PERIOD
        w.write_at(off, mv[p : p + n])
    prog[2] = 1
    conn.recv()  # the parent kills us here


PUB_POINTS = ["before publish", "before journal start", "before journal end",
              "before ring start", "before ring end", "before ring check", "before ring seq",
              "before extent", "before head", "after head"]


def child_publish(conn: Any, spec: W.Spec, pre: list[tuple[int, int]],
                  fatal: tuple[int, int], point: str, extends: bool) -> None:
    """Write ``pre``; then write ``fatal`` and die at ``point`` of its publication (its bytes
    are copied by then)."""
    w = W.open_spec(spec, "r+")
    for off, n in pre:
        w.write_at(off, W.pattern(off, n))
    conn.send("ready")
    assert conn.recv() == "go"
    orig = SlotPublisher.publish

    def publish(pub: SlotPublisher, start: int, end: int) -> int:
        SlotPublisher.publish = orig  # type: ignore[method-assign]
        if point == "before publish":
            os.kill(os.getpid(), signal.SIGKILL)
        if point in ("before journal start", "before journal end"):
            pub._j = W.Bomb(pub._j, 0 if point.endswith("start") else 1)  # type: ignore[assignment]
        elif point != "after head":
            order = ["before ring start", "before ring end", "before ring check",
                     "before ring seq", *(["before extent"] if extends else []), "before head"]
            pub.words = W.Bomb(pub.words, order.index(point))  # type: ignore[assignment]
        seq = orig(pub, start, end)
        if point == "after head":
            os.kill(os.getpid(), signal.SIGKILL)  # published; the waiters are not posted
        _die(conn, "survived", point)
        return seq

    SlotPublisher.publish = publish  # type: ignore[method-assign]
    off, n = fatal
    w.write_at(off, W.pattern(off, n))
    _die(conn, "survived", point)


class ReportingSteps(W.Steps):
    """``Steps`` that tells the parent which step it dies before, and the steps done."""

    def __init__(self, kill_at: int | None, conn: Any) -> None:
        super().__init__(kill_at)
        self.conn = conn

    def tick(self, label: str) -> None:
        if self.armed and self.kill_at is not None and self.n == self.kill_at:
            self.conn.send(("dying", self.n, label, list(self.log)))
        super().tick(label)


def child_steps(conn: Any, spec: W.Spec, op: str, plan: dict[str, Any],
                kill_at: int | None) -> None:
    """Prepare, then run ``op`` with its steps counted; die before step ``kill_at`` (None:
    run it to the end, then die)."""
    steps = ReportingSteps(kill_at, conn)
    W.install_steps(steps)
    if op == "create":
        conn.send("ready")
        assert conn.recv() == "go"
        steps.armed = True
        W.create_spec(spec, plan["cap"])
    else:
        w = W.open_spec(spec, "r+")
        for off, n in plan.get("pre", []):
            w.write_at(off, W.pattern(off, n))
        if op in ("rewrite-commit", "mmap-rename"):
            w.reactivate()
            for off, n in plan["gen1"]:
                w.write_at(off, gbytes(1, off, n))
        conn.send("ready")
        assert conn.recv() == "go"
        steps.armed = True
        if op == "grow":
            off, n = plan["fatal"]
            w.write_at(off, W.pattern(off, n))
        elif op in ("commit", "rewrite-commit", "mmap-rename"):
            w.commit(plan["final"])
        elif op == "reactivate":
            w.reactivate()
        else:
            raise ValueError(op)
    steps.armed = False
    _die(conn, steps.n, "after", list(steps.log))


def child_chunked(conn: Any, canonical: str, writes: list[tuple[int, int]],
                  final: int | None, barrier: str, hint: int, point: str) -> None:
    w = AtomicChunked.open(canonical, barrier=barrier, capacity_hint=hint)  # type: ignore[arg-type]
    for off, n in writes:
        w.write_at(off, W.pattern(off, n))
    conn.send("ready")
    assert conn.recv() == "go"
    if point == "before commit":
        _die(conn, point)

    def hook(step: str) -> None:
        if step == point:
            _die(conn, step)

    atomic_mod._test_hook = hook
    w.commit(final)
    _die(conn, "after commit")


def child_atomic(conn: Any, path: str, data: bytes, durable: bool, point: str) -> None:
    def hook(step: str) -> None:
        if step == point:
            _die(conn, step)

    atomic_mod._test_hook = hook
    Atomic(path).write_all(data, durable=durable)
    _die(conn, "after write_all")


# ---------------------------------------------------------------------------- the trials
class Waiter:
    """A thread waiting on its own handle; the result is its outcome and bytes."""

    def __init__(self, spec: W.Spec, start: int, end: int) -> None:
        self.h = W.open_spec(spec)
        self.start, self.end = start, end
        self.out: str | None = None
        self.data: bytes | None = None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        try:
            got = self.h.wait_range(self.start, self.end, timeout=HANG)
            self.out = got.name
            if got is WaitOutcome.READY:
                self.data = self.h.read(self.start, self.end - self.start)
        except shmstore.WriterDied:
            self.out = "WriterDied"
        except TimeoutError:
            self.out = f"HANG (still waiting after {HANG} s)"
        except Exception as exc:
            self.out = f"{type(exc).__name__}: {exc}"

    def result(self) -> str:
        self.t.join(HANG + 5)
        if self.t.is_alive():
            return "HANG (thread never returned)"
        assert self.out is not None
        return self.out


class Trial:
    """One trial's child, waiters and handles; ``cleanup`` reaps and removes everything."""

    def __init__(self, H: Harness, kind: str, tmp: Path | None = None) -> None:
        self.H = H
        self.kind = kind
        self.spec: W.Spec | None = H.spec(kind) if kind in KINDS else None
        self.tmp = tmp
        self.p: Any = None
        self.conn: Any = None
        self.waiters: list[Waiter] = []
        self.handles: list[shmstore.Resource] = []
        self.outcomes: Counter[str] = Counter()
        self.keeper: shmstore.Resource | None = None
        self.label = "?"  # where the child died, for the counts and failure messages
        self.control = False  # a control run: the operation runs to the end
        self.variant: str | None = None  # forced (control runs), else the seed picks it

    # -- the child
    def start(self, fn: Callable[..., Any], *args: Any) -> None:
        parent, child = self.H.ctx().Pipe()
        self.conn = parent
        self.p = self.H.start("trial", fn, child, *args)
        child.close()

    def _child_report(self) -> str:
        try:
            _tag, _status, value = self.H.queue().get(timeout=2)
        except queue.Empty:
            return "(no report)"
        return str(value)

    def recv(self, what: str, timeout: float = 30.0) -> Any:
        ready = mp_wait([self.conn, self.p.sentinel], timeout)
        if self.conn in ready:
            try:
                return self.conn.recv()
            except EOFError:
                pass
        if not ready:
            raise AssertionError(f"the child sent no {what} in {timeout} s (a hang)")
        self.p.join()
        raise AssertionError(f"the child ended ({self.p.exitcode}) before {what}: "
                             f"{self._child_report()}")

    def ready(self) -> None:
        msg = self.recv("ready")
        assert msg == "ready", msg

    def go(self) -> None:
        self.conn.send("go")

    def died(self, timeout: float = 30.0) -> list[Any]:
        """Wait for the child's SIGKILL; its messages sent meanwhile."""
        self.p.join(timeout)
        if self.p.exitcode is None:
            self.H.kill(self.p)
            raise AssertionError(f"the child did not die within {timeout} s")
        if self.p.exitcode != -signal.SIGKILL:
            raise AssertionError(f"the child exited with {self.p.exitcode}: "
                                 f"{self._child_report()}")
        msgs = []
        try:
            while self.conn.poll():
                msgs.append(self.conn.recv())
        except EOFError:
            pass
        return msgs

    def dying(self) -> tuple[Any, ...]:
        """The child's last words: ``("dying", ...)`` without the tag."""
        msgs = [m for m in self.died() if isinstance(m, tuple) and m and m[0] == "dying"]
        assert len(msgs) == 1, f"the child's last messages: {msgs}"
        return tuple(msgs[0][1:])

    def keep(self) -> None:
        """Hold a reader handle for the whole trial: the resource is never "abandoned" (no
        writer, no handle) in the eyes of a ``shmstore gc --abandoned`` that another test
        session may run on this machine meanwhile."""
        assert self.spec is not None
        self.keeper = W.open_spec(self.spec)

    # -- waiters and readers
    def park(self, ranges: list[tuple[int, int]]) -> None:
        """Start a waiter per range and return once every one is parked (holds a waiter slot
        with its range)."""
        assert self.spec is not None
        ws = [Waiter(self.spec, s, e) for s, e in ranges]
        self.waiters += ws
        words = ws[0].h._w
        self.H.wait_until(lambda: len(W.waiter_pids(words)) >= len(ws)
                          or any(not w.t.is_alive() for w in ws), "the waiters to park")
        early = [(w.start, w.end, w.out) for w in ws if not w.t.is_alive()]
        assert not early, f"a waiter ended before the crash: {early}"

    def wait_after(self, ranges: list[tuple[int, int]]) -> None:
        """Waiters started after the crash (where none could park before it)."""
        assert self.spec is not None
        self.waiters += [Waiter(self.spec, s, e) for s, e in ranges]

    def check_waiters(self, view: View) -> None:
        problems = []
        for w in self.waiters:
            out = w.result()
            self.outcomes[f"wait -> {out.split(':')[0]}"] += 1
            want, data = view.wait(w.start, w.end)
            if out != want:
                problems.append(f"waiter [{w.start}, {w.end}): {out}, expected {want}")
            elif data is not None and w.data != data:
                problems.append(f"waiter [{w.start}, {w.end}) READY with other bytes: "
                                f"{diff(w.data or b'', data, w.start)}")
        assert not problems, "; ".join(problems)

    def open(self, mode: str = "r") -> shmstore.Resource:
        assert self.spec is not None
        h = W.open_spec(self.spec, mode)
        self.handles.append(h)
        return h

    def check_readers(self, view: View) -> None:
        """The reader attached before the crash and a late joiner see ``view`` exactly."""
        readers = [("late joiner", self.open())]
        if self.waiters:
            readers.insert(0, ("reader attached before the crash", self.waiters[0].h))
        for who, r in readers:
            check_view(r, view, who)
        self.check_invariants(readers[-1][1])
        if self.kind == "mmap" and view.length is not None:
            assert self.spec is not None
            with open(self.spec[1], "rb") as f:
                on_disk = f.read()
            d = diff(on_disk, view.data[: view.length], 0)
            assert d is None, f"the committed data file: {d}"

    def check_invariants(self, r: shmstore.Resource) -> None:
        """``Resource._check()``, except for one known false positive: ``check_slot`` wants
        every ring entry of the last RING_LEN seqs intact, but a writer killed while
        overwriting the ring slot of seq ``head + 1`` (the slot of ``head - RING_LEN + 1``)
        tears that oldest entry. Readers reject it by its check and read the journal (the
        coverage checks above verify that); the checker should allow it."""
        try:
            r._check()
        except AssertionError as exc:
            m = re.fullmatch(r"ring entry (\d+) is torn", str(exc))
            if m is None:
                raise
            w = r._words
            heads = [w[L.slot_word(s, L.S_HEAD)] for s in range(L.N_WRITERS)]
            if int(m.group(1)) + L.RING_LEN - 1 not in heads:
                raise
            self.outcomes["_check(): oldest ring entry torn (check_slot false positive)"] += 1

    def close_readers(self) -> None:
        for w in self.waiters:
            w.h.close()
        for h in self.handles:
            h.close()
        self.handles.clear()

    def cleanup(self) -> None:
        try:
            if self.p is not None:
                if self.p.exitcode is None:
                    self.H.kill(self.p)
                self.p.close()
            if self.conn is not None:
                self.conn.close()
        finally:
            self.close_readers()
            for w in self.waiters:
                w.t.join(HANG + 5)
            if self.keeper is not None:
                self.keeper.close()
            if self.spec is not None:
                W.unlink_spec(self.spec)
            if self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)


def check_view(r: shmstore.Resource, view: View, who: str) -> None:
    st = r.status
    assert st == view.status, f"{who}: status {st}, expected {view.status}"
    cov = r.ranges()
    assert cov == view.cov, f"{who}: ranges() {_short(cov)}, expected {_short(view.cov)}"
    for s, e in cov:
        d = diff(r.read(s, e - s), view.data[s:e], s)
        assert d is None, f"{who}: covered [{s}, {e}) holds bytes never written there: {d}"
    if view.read_len is not None:
        d = diff(r.read(0, view.read_len + 64), view.data[: view.read_len], 0)
        assert d is None, f"{who}: read(0, {view.read_len} + 64): {d}"


def _short(cov: list[tuple[int, int]]) -> str:
    return str(cov) if len(cov) <= 6 else f"{cov[:3]} ... {cov[-3:]} ({len(cov)} ranges)"


def verify_committed(spec: W.Spec, want: bytes, given: bool) -> None:
    r = W.open_spec(spec)
    try:
        n = len(want)
        st = r.status
        assert st == ResourceStatus.Committed(n if given else None, n), f"resumed: {st}"
        d = diff(r.read(0, n + 64), want, 0)
        assert d is None, f"after the resumed commit: {d}"
        assert r.wait_range(0, n, timeout=HANG) is WaitOutcome.READY
        r._check()  # committed by a live writer: no allowance
    finally:
        r.close()


def resume_fill(spec: W.Spec, total: int) -> None:
    """A new writer fills every gap of [0, total) with the pattern and commits(None): the
    whole must be the pattern, and its length the extent."""
    w = W.open_spec(spec, "r+")
    try:
        while (gap := w.next_gap(0, total)) is not None:
            s, e = gap
            w.write_at(s, W.pattern(s, e - s))
        w.commit()
    finally:
        w.close()
    verify_committed(spec, W.pattern(0, total), given=False)


def resume_rewrite(spec: W.Spec, total: int) -> None:
    """A new writer rewrites [0, total) with generation 2 (reactivating a committed resource,
    or joining a rewrite in progress) and commits(total)."""
    w = W.open_spec(spec, "r+")
    try:
        if isinstance(w.status, ResourceStatus.Committed):
            w.reactivate()
        w.write_at(0, gbytes(2, 0, total))
        w.commit(total)
    finally:
        w.close()
    verify_committed(spec, gbytes(2, 0, total), given=True)


def leftovers(spec: W.Spec) -> list[str]:
    base = W.shm_base(spec)
    left = [e for e in os.listdir("/dev/shm")
            if e.startswith(base + "_") or e.startswith("sem." + base + "_")]
    if spec[0] == "mmap":
        left += [p for p in (spec[1], spec[1] + ".shmstore") if os.path.lexists(p)]
    return left


def check_fresh_create(spec: W.Spec) -> None:
    c = W.create_spec(spec, 4096)
    try:
        assert c.status == ResourceStatus.Active(), c.status
        assert c.ranges() == [], f"a fresh resource has coverage {c.ranges()}"
        c.write_at(0, b"fresh")
        c.commit()
        assert c.read(0, 64) == b"fresh"
    finally:
        c.unlink()
        c.close()
    assert not leftovers(spec), leftovers(spec)


def unlink_and_recreate(spec: W.Spec) -> None:
    r = W.open_spec(spec)
    try:
        r.unlink()
    finally:
        r.close()
    left = leftovers(spec)
    assert not left, f"left after unlink(): {left}"
    check_fresh_create(spec)


# --------------------------------------------------------------------------- the tallies
# Steps of each (point, backend, variant), recorded by its control run.
_STEPS: dict[tuple[str, str, str], list[str]] = {}


class Tally:
    def __init__(self, point: str, kind: str) -> None:
        self.point, self.kind = point, kind
        self.labels: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.failures: list[str] = []
        self.trials = self.controls = 0
        self.t0 = time.monotonic()

    def run(self, H: Harness, body: Callable[[Trial, random.Random, Tally], str],
            tmp: bool = False) -> None:
        for i in range(TRIALS):
            seed = f"{SEED}:{self.point}:{self.kind}:{i}"
            self.one(H, body, seed, tmp)
            self.trials += 1
        self.finish()

    def one(self, H: Harness, body: Callable[[Trial, random.Random, Tally], str], seed: str,
            tmp: bool, control: bool = False, variant: str | None = None) -> None:
        d = None
        if tmp:
            d = H.tmp / re.sub(r"[^\w.-]", "_", seed)
            d.mkdir()
        t = Trial(H, self.kind, d)
        t.control, t.variant = control, variant
        label = "?"
        try:
            label = body(t, random.Random(seed), self)
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
            self.failures.append(f"seed {seed!r} [{t.label}]: {text[:600]}")
            label = f"FAILED at {t.label}"
        finally:
            t.cleanup()
        self.labels[("control: " if control else "") + label] += 1
        self.outcomes.update(t.outcomes)

    def kill_at(self, H: Harness, body: Callable[[Trial, random.Random, Tally], str],
                variant: str, rng: random.Random,
                window: Callable[[list[str]], list[int]] | None = None) -> int | None:
        """The step to die before (None: after the operation), chosen by ``rng`` among the
        steps of ``variant``; a control run records those first."""
        key = (self.point, self.kind, variant)
        if key not in _STEPS:
            seed = f"{SEED}:{self.point}:{self.kind}:control:{variant}"
            self.controls += 1
            self.one(H, body, seed, tmp=False, control=True, variant=variant)
            if key not in _STEPS:
                raise AssertionError(f"the control run of {variant} failed: "
                                     f"{self.failures[-1] if self.failures else '?'}")
        steps = _STEPS[key]
        idx = list(range(len(steps) + 1)) if window is None else window(steps)
        k = rng.choice(idx)
        return None if k >= len(steps) else k

    def finish(self) -> None:
        secs = time.monotonic() - self.t0
        if REPORT:
            with open(REPORT, "a") as f:
                f.write(json.dumps({
                    "point": self.point, "kind": self.kind, "trials": self.trials,
                    "controls": self.controls, "failed": len(self.failures),
                    "seconds": round(secs, 2), "labels": dict(sorted(self.labels.items())),
                    "outcomes": dict(sorted(self.outcomes.items())),
                    "failures": self.failures[:40], "seed": SEED,
                    "steps": {v: [norm(x) for x in st] for (p, k, v), st in _STEPS.items()
                              if (p, k) == (self.point, self.kind)}}) + "\n")
        assert not self.failures, (
            f"{len(self.failures)} of {self.trials} trials (+{self.controls} control runs)"
            f" of {self.point}/{self.kind} failed:\n" + "\n".join(self.failures[:20]))


def steps_trial(t: Trial, rng: random.Random, tally: Tally, op: str, variant: str,
                plan: dict[str, Any], body: Callable[[Trial, random.Random, Tally], str],
                window: Callable[[list[str]], list[int]] | None = None) -> int | None:
    """Choose the kill step (recording the variant's steps first if needed) and start the
    child; returns the chosen step."""
    k = None if t.control else tally.kill_at(t.H, body, variant, rng, window)
    t.start(child_steps, t.spec, op, plan, k)
    t.ready()
    return k


def steps_died(t: Trial, tally: Tally, variant: str) -> tuple[str, list[str]]:
    """The step the child died before (or "after") and the steps it completed."""
    _n, label, log = t.dying()
    key = (tally.point, tally.kind, variant)
    if label == "after" and t.control:
        _STEPS[key] = log
    t.label = f"{variant}: {norm(label)}"
    return (f"{variant}: before {norm(label)}" if label != "after"
            else f"{variant}: after the operation"), log


# ------------------------------------------------------------------ 1. inside the memcpy
_PERIOD_BYTES = W.pattern(0, PERIOD)


def fast_pattern(off: int, n: int) -> bytes:
    """``W.pattern(off, n)``, built by whole periods."""
    p = off % PERIOD
    return (_PERIOD_BYTES[p:] + _PERIOD_BYTES * (n // PERIOD + 1))[:n]


assert fast_pattern(70_000, 200_000) == W.pattern(70_000, 200_000)


class PatternData:
    """The pattern at every offset, sliced on demand (the written bytes of the stream)."""

    def __getitem__(self, sl: slice) -> bytes:
        start = sl.start or 0
        return fast_pattern(start, sl.stop - start)


WINDOW = {"shm": 4 << 20, "mmap": 1 << 20}
LIMIT = {"shm": 64 << 20, "mmap": 16 << 20}


def _raw(spec: W.Spec, off: int, n: int) -> bytes:
    """The bytes of generation 0's data, covered or not."""
    kind, key = spec
    ns = R._namespace(kind, key if kind == "shm" else None, key if kind == "mmap" else None,
                      0o600)
    fd = ns.open(ns.data_suffix(0, staged=False), create=False)
    try:
        return os.pread(fd, n, off).ljust(n, b"\0")
    finally:
        os.close(fd)


def _only_pattern_or_zero(raw: bytes, want: bytes) -> bool:
    """Every byte is the pattern or zero (a torn copy), never anything else."""
    mask = raw.translate(bytes([0] + [255] * 255))
    n = len(raw)
    a = int.from_bytes(want, "little") & int.from_bytes(mask, "little")
    return a.to_bytes(n, "little") == raw


def body_memcpy(t: Trial, rng: random.Random, tally: Tally) -> str:
    assert t.spec is not None
    win, limit = WINDOW[t.kind], LIMIT[t.kind]
    # a large capacity is reserved (for shm also zero-filled) up front: the stream is then
    # mostly memcpy until it outgrows it; a small one makes it grow from the start
    cap = rng.choice([4096, 65536, win, 4 * win])
    max_len = rng.choice([4096, 65536, 1 << 20])
    seed = f"{rng.random()}"
    first = list(itertools.islice(memcpy_stream(seed, win, max_len, limit), 4096))
    a = rng.randrange(2 * win)
    b = a + rng.randint(1, 1 << 16)
    # the kill instant: once write j has started, a random delay of up to about what a
    # write of its size takes (5 us + 4 GB/s). On a loaded machine the parent may run
    # later than that: the kill then lands further on, wherever the writer is.
    j = rng.randrange(len(first))
    delay = rng.uniform(0, 5e-6 + first[j][1] / 4e9)
    t.H.create(t.spec, capacity=cap).close()
    t.keep()
    prog = t.H.ctx().RawArray("q", 4)
    t.start(child_memcpy, t.spec, seed, win, max_len, limit, prog)
    t.ready()
    t.park([(limit, limit + 16), (a, b)])
    t.go()
    deadline = time.monotonic() + 30
    while prog[0] < j and not prog[2]:  # busy: the instant matters, not the CPU
        if time.monotonic() > deadline or t.p.exitcode is not None:
            raise AssertionError(f"the writer never reached write {j}")
    end = time.perf_counter() + delay
    while time.perf_counter() < end:
        pass
    t.H.kill(t.p)
    assert t.p.exitcode == -signal.SIGKILL, t.p.exitcode
    k, in_grow, done, in_compact = prog[0], prog[1], prog[2], prog[3]
    writes = list(itertools.islice(memcpy_stream(seed, win, max_len, limit), k + 1))
    before = RangeSet((o, o + n) for o, n in writes[:k])
    with_k = RangeSet((o, o + n) for o, n in writes)
    off, n = writes[k]
    late = t.open()
    cov = late.ranges()
    if done:
        where = "stream done (killed while idle)"
    elif in_grow:
        where = "inside _grow"
    elif cov == list(with_k):
        where = "after the publication"
    else:
        raw = _raw(t.spec, off, n)
        assert _only_pattern_or_zero(raw, fast_pattern(off, n)), (
            f"uncovered bytes of write {k} [{off}, {off + n}) hold neither its pattern nor"
            " zeros")
        present = n - raw.count(0)
        where = ("before the copy" if present == 0 else
                 "copied, in a journal compaction" if present == n and in_compact else
                 "copied, not yet published" if present == n else
                 "inside the memcpy (torn copy)")
    t.label = where
    bucket = "< 100" if k < 100 else "< 1000" if k < 1000 else ">= 1000"
    t.outcomes[f"writes before the kill {bucket}"] += 1
    cov_set = with_k if cov == list(with_k) else before
    view = View(ResourceStatus.Active(), list(cov_set), PatternData())
    t.check_waiters(view)
    t.check_readers(view)
    assert not late.writers_alive()
    t.close_readers()
    resume_fill(t.spec, cov_set.extent() + 16)
    unlink_and_recreate(t.spec)
    return where


@pytest.mark.parametrize("kind", KINDS)
def test_trials_killed_inside_write_at(H: Harness, kind: str) -> None:
    """The parent SIGKILLs a streaming writer at a random instant (mostly inside the
    memcpy or its page faults, sometimes in growth or between a copy and its publication)."""
    Tally("write-memcpy", kind).run(H, body_memcpy)


# --------------------------------------------------- 2. between the copy and the publication
def body_publish(t: Trial, rng: random.Random, tally: Tally) -> str:
    assert t.spec is not None
    cap = rng.choice([4096, 16384, 65536])
    ps = pieces(rng, 0, 1 << 17, rng.choice([8, 64, 512]))
    rng.shuffle(ps)
    count = min(rng.choice([0, 1, 2, 5, 64, 127, 128, 129, 200, 300]), len(ps) - 1)
    pre, fatal = ps[:count], ps[count]
    extends = fatal[0] + fatal[1] > extent(pre)
    point = rng.choice([p for p in PUB_POINTS if extends or p != "before extent"])
    t.label = point
    never = 1 << 18
    m = Model(never + 16)
    for o, n in pre:
        m.write(0, o, n)
    t.H.create(t.spec, capacity=cap).close()
    t.keep()
    t.start(child_publish, t.spec, pre, fatal, point, extends)
    t.ready()
    t.park([(never, never + 16), (fatal[0], fatal[0] + fatal[1])])
    t.go()
    msgs = t.died()
    assert not msgs, f"the child outlived its kill point: {msgs}"
    if point == "after head":
        m.write(0, *fatal)
    view = active_view(m)
    t.check_waiters(view)
    t.check_readers(view)
    t.close_readers()
    resume_fill(t.spec, never + 16)
    unlink_and_recreate(t.spec)
    return point


@pytest.mark.parametrize("kind", KINDS)
def test_trials_killed_between_the_copy_and_its_publication(H: Harness, kind: str) -> None:
    """The writer dies after copying a write's bytes, at a chosen store of its publication
    (journal entry, ring entry fields, extent, head) or after head before posting waiters."""
    Tally("publish", kind).run(H, body_publish)


# ------------------------------------------------------------------------- 3. growth
def body_grow(t: Trial, rng: random.Random, tally: Tally) -> str:
    assert t.spec is not None
    cap = rng.choice([4096, 8192, 65536])
    ps = pieces(rng, 0, cap, rng.choice([16, 512]))
    rng.shuffle(ps)
    pre = ps[: rng.randint(0, min(40, len(ps)))]
    off = rng.randrange(cap // 2, 3 * cap)
    n = rng.randint(max(1, cap - off + 1), 2 * cap)
    never = 1 << 20
    m = Model(never + 16)
    for o, ln in pre:
        m.write(0, o, ln)
    t.H.create(t.spec, capacity=cap).close()
    t.keep()
    variant = "grow"
    steps_trial(t, rng, tally, "grow", variant, {"pre": pre, "fatal": (off, n)}, body_grow)
    t.park([(never, never + 16), (off, off + n)])
    cap_before = t.waiters[0].h.capacity
    t.go()
    label, log = steps_died(t, tally, variant)
    grew = "store LIFE_SEQ" in log
    if any(s.endswith(" HEAD") for s in log):
        m.write(0, off, n)
    view = active_view(m)
    t.check_waiters(view)
    t.check_readers(view)
    capacity = t.handles[-1].capacity
    if grew:
        assert capacity > cap_before and capacity >= off + n, (cap_before, capacity)
    else:
        assert capacity == cap_before, (cap_before, capacity)
    t.close_readers()
    resume_fill(t.spec, never + 16)
    unlink_and_recreate(t.spec)
    return label


@pytest.mark.parametrize("kind", KINDS)
def test_trials_killed_during_growth(H: Harness, kind: str) -> None:
    """The writer dies at a chosen step of a write that grows the resource (the reserve,
    the lifecycle record, its flip, the new mapping, then the publication)."""
    Tally("grow", kind).run(H, body_grow)


# ------------------------------------------------------------------------- 4. commit
def body_commit(t: Trial, rng: random.Random, tally: Tally) -> str:
    assert t.spec is not None
    variant = t.variant or rng.choice(["commit(None)", "commit(extent)", "commit(shorter)",
                                       "commit(longer)"])
    cap = rng.choice([4096, 65536])
    ps = pieces(rng, 0, rng.choice([1000, 20000, 200000]), rng.choice([16, 256, 4096]))
    rng.shuffle(ps)
    count = rng.randint(1, min(len(ps), 200))
    pre, holes = ps[:count], ps[count:]
    e = extent(pre)
    final = {"commit(None)": None, "commit(extent)": e,
             "commit(shorter)": rng.randrange(0, e),
             "commit(longer)": e + rng.randint(1, 5000)}[variant]
    length = e if final is None else final
    x = max(e, length) + rng.randint(0, 100)
    m = Model(x + 16)
    for o, n in pre:
        m.write(0, o, n)
    ranges = [(x, x + 16)]
    below = [(o, o + n) for o, n in holes if o + n <= e]
    if below:
        ranges.append(rng.choice(below))
    if length > e:
        ranges.append((e, min(length, e + 64)))
    t.H.create(t.spec, capacity=cap).close()
    t.keep()
    steps_trial(t, rng, tally, "commit", variant, {"pre": pre, "final": final}, body_commit)
    t.park(ranges)
    t.go()
    label, log = steps_died(t, tally, variant)
    committed = "store LIFE_SEQ" in log
    view = committed_view(m, length, final is not None) if committed else active_view(m)
    t.check_waiters(view)
    t.check_readers(view)
    t.close_readers()
    if committed:
        resume_rewrite(t.spec, x + 16)
    else:
        resume_fill(t.spec, x + 16)
    unlink_and_recreate(t.spec)
    return label


@pytest.mark.parametrize("kind", KINDS)
def test_trials_killed_during_commit(H: Harness, kind: str) -> None:
    """The writer dies at a chosen step of commit (None, the extent, shorter, longer):
    before the lifecycle flip (mmap: trim, fsync, a staged copy) or after it (the wake)."""
    Tally("commit", kind).run(H, body_commit)


# ------------------------------------------------------ 5. reactivate, rewrite commit, rename
def _gen0(t: Trial, rng: random.Random, given: bool) -> tuple[View, Model]:
    """Generation 0, committed by the parent (with ``commit(n)`` if ``given``, else
    ``commit(None)``): its committed view and its model."""
    assert t.spec is not None
    ps = pieces(rng, 0, rng.choice([1000, 30000]), rng.choice([64, 2048]))
    rng.shuffle(ps)
    pre = ps[: rng.randint(1, len(ps))]
    e0 = extent(pre)
    length = rng.randint(1, e0 + 3000) if given else e0
    m0 = Model(length + 40_000)
    for o, n in pre:
        m0.write(0, o, n)
    c = t.H.create(t.spec, capacity=rng.choice([4096, 65536]))
    for o, n in pre:
        c.write_at(o, W.pattern(o, n))
    c.commit(length if given else None)
    c.close()
    t.keep()
    return committed_view(m0, length, given), m0


def body_reactivate(t: Trial, rng: random.Random, tally: Tally) -> str:
    assert t.spec is not None
    variant = t.variant or rng.choice(["after commit(n)", "after commit(None)"])
    v0, _m0 = _gen0(t, rng, variant == "after commit(n)")
    assert v0.length is not None
    steps_trial(t, rng, tally, "reactivate", variant, {}, body_reactivate)
    t.go()
    label, log = steps_died(t, tally, variant)
    view = rewriting_view(v0) if "store LIFE_SEQ" in log else v0
    ranges = [(v0.length + rng.randint(0, 100), v0.length + 200)]
    gaps = RangeSet(v0.cov).first_gap(0, v0.length)
    if gaps is not None:
        ranges.append(gaps)
    t.wait_after(ranges)  # a committed resource parks no waiter: they wait after the crash
    t.check_waiters(view)
    t.check_readers(view)
    t.close_readers()
    resume_rewrite(t.spec, v0.length + 500)
    unlink_and_recreate(t.spec)
    return label


@pytest.mark.parametrize("kind", KINDS)
def test_trials_killed_during_reactivate(H: Harness, kind: str) -> None:
    """The writer dies at a chosen step of reactivate() of a committed resource (the staged
    copy, the base coverage, the flip, the slot's move to the new generation)."""
    Tally("reactivate", kind).run(H, body_reactivate)


def _rename_window(steps: list[str]) -> list[int]:
    """The steps of publish_data: before the rename (the flip is done), before the directory
    fsync (renamed), inside it (the directory is open, before its fsync), and the step after
    it (publish_data returned: the old staged file is not unlinked yet)."""
    i = next((i for i, s in enumerate(steps) if s.startswith("rename")), None)
    assert i is not None, f"no rename among the steps: {steps}"
    return [k for k in (i, i + 1, i + 2, i + 3) if k <= len(steps)]


def body_rewrite(t: Trial, rng: random.Random, tally: Tally) -> str:
    assert t.spec is not None
    point = tally.point
    variant = t.variant or rng.choice([f"{a} then {b}" for a in ("commit(n)", "commit(None)")
                                       for b in ("commit(n)", "commit(None)")])
    given0, given1 = variant.startswith("commit(n)"), variant.endswith("commit(n)")
    v0, m0 = _gen0(t, rng, given0)
    assert v0.length is not None
    # generation 1 starts as the committed bytes and coverage, then takes its own writes
    m1 = Model(len(m0.data))
    m1.data[: v0.length] = v0.data
    for s, e in v0.cov:
        m1.cov.add(s, e)
    r1 = rng.choice([v0.length // 2 + 1, v0.length + 5000])
    ps = pieces(rng, 0, r1, rng.choice([64, 2048]))
    rng.shuffle(ps)
    gen1 = ps[: rng.randint(1, len(ps))]
    for o, n in gen1:
        m1.write(1, o, n)
    e1 = max(v0.length, extent(gen1))
    length1 = rng.randint(1, e1 + 3000) if given1 else e1
    x = max(v0.length, length1, e1) + rng.randint(0, 100)
    if len(m1.data) < x + 16:
        m1.data.extend(bytes(x + 16 - len(m1.data)))
    ranges = [(x, x + 16)]
    fresh = [(o, o + n) for o, n in gen1 if not RangeSet(v0.cov).covers(o, o + n)]
    if fresh:
        ranges.append(rng.choice(fresh))
    window = _rename_window if point == "mmap-rename" else None
    steps_trial(t, rng, tally, point, variant, {"gen1": gen1, "final": length1 if given1 else None},
                body_rewrite, window)
    t.park(ranges)
    t.go()
    label, log = steps_died(t, tally, variant)
    if "store LIFE_SEQ" in log:
        view = committed_view(m1, length1, given1)
    else:
        view = rewriting_view(v0)
    t.check_waiters(view)
    t.check_readers(view)
    t.close_readers()
    resume_rewrite(t.spec, x + 16)
    unlink_and_recreate(t.spec)
    return label


@pytest.mark.parametrize("kind", KINDS)
def test_trials_killed_during_a_rewrite_commit(H: Harness, kind: str) -> None:
    """The writer of a rewrite (generation 1 over a committed generation 0) dies at a chosen
    step of its commit: before the flip readers see generation 0, after it generation 1."""
    Tally("rewrite-commit", kind).run(H, body_rewrite)


def test_trials_killed_during_the_mmap_rename(H: Harness) -> None:
    """mmap: the rewrite's commit dies inside DirNamespace.publish_data (before the rename,
    after it before the directory fsync, right after it). The flip is done: every reader
    sees generation 1, the first one finishing the rename."""
    Tally("mmap-rename", "mmap").run(H, body_rewrite)


# ------------------------------------------------------------------------- 6. create
def body_create(t: Trial, rng: random.Random, tally: Tally) -> str:
    assert t.spec is not None
    cap = rng.choice([4096, 65536, 1 << 20])
    variant = "create"
    steps_trial(t, rng, tally, "create", variant, {"cap": cap}, body_create)
    t.go()
    label, log = steps_died(t, tally, variant)
    if "store MAGIC" in log:  # the resource was whole: a resource without a writer
        t.keep()
        t.wait_after([(0, 16)])
        t.check_waiters(View(ResourceStatus.Active(), [], b""))
        t.check_readers(View(ResourceStatus.Active(), [], b""))
        t.close_readers()
        with pytest.raises(shmstore.ResourceExists):
            W.create_spec(t.spec, 4096)
        resume_fill(t.spec, 100)
        unlink_and_recreate(t.spec)
    else:  # half-created, its creator dead: create() must reclaim the name
        # A creator that died before its control block has any bytes (or, mmap, before the
        # block exists in its sidecar) looks like a live one between two system calls, so
        # the library waits CREATE_GRACE seconds before it reclaims such a name; any other
        # half-created name must be reclaimed at once.
        empty = log == [] or log[-1] == "create c"
        t0 = time.monotonic()
        deadline = t0 + (CREATE_GRACE + 2.0 if empty else 0.0)
        while True:
            try:
                check_fresh_create(t.spec)
                break
            except shmstore.ResourceExists as exc:
                if time.monotonic() > deadline:
                    after = f" nor after {CREATE_GRACE + 2.0} s" if empty else ""
                    raise AssertionError(
                        f"create() of a name whose creator died half-way ({label}) raised"
                        f" ResourceExists{after}: {exc}") from None
                time.sleep(0.05)  # a polled condition: the grace period passing
        waited = time.monotonic() - t0
        if waited > 0.05:
            t.outcomes[f"create reclaimed after the grace ({waited:.1f} s)"] += 1
        else:
            t.outcomes["create reclaimed at once"] += 1
    return label


@pytest.mark.parametrize("kind", KINDS)
def test_trials_creator_killed_mid_create(H: Harness, kind: str) -> None:
    """The creator dies at a chosen step of create(). Once the block is whole (its magic
    stored), the resource is a writerless active one (waits raise WriterDied, r+ resumes,
    create() reports it exists until unlink); before that, create() of the same name must
    reclaim the half-created resource of a dead creator."""
    Tally("create", kind).run(H, body_create)


# --------------------------------------------------------------- 7. AtomicChunked, Atomic
CHUNKED_POINTS = ["before commit", "commit:trim", "commit:fsync", "commit:replace",
                  "commit:fsync-dir", "commit:reopen", "commit:unlock", "after commit"]
CHUNKED_PUBLISHED = {"commit:fsync-dir", "commit:reopen", "commit:unlock", "after commit"}


def body_chunked(t: Trial, rng: random.Random, tally: Tally) -> str:
    assert t.tmp is not None
    canonical = str(t.tmp / "seg.bin")
    tmp = canonical + ".tmp"
    barrier = rng.choice(["inline", "deferred"])
    points = [p for p in CHUNKED_POINTS if barrier == "inline" or "fsync" not in p]
    point = rng.choice(points)
    t.label = f"{barrier}: {point}"
    old = gbytes(3, 0, rng.randint(1, 5000)) if rng.random() < 0.5 else None
    if old is not None:
        Atomic(canonical).write_all(old)
    ps = pieces(rng, 0, rng.randint(1, 1 << 18), rng.choice([512, 65536]))
    rng.shuffle(ps)
    writes = ps[: rng.randint(1, len(ps))]
    e = extent(writes)
    final = rng.choice([None, e, rng.randrange(0, e + 1), e + rng.randint(1, 5000)])
    length = e if final is None else final
    m = Model(max(e, length))
    for o, n in writes:
        m.write(0, o, n)
    want = bytes(m.data[:length])
    t.start(child_chunked, canonical, writes, final, barrier,
            rng.choice([0, 2 * length]), point)
    t.ready()
    with pytest.raises(shmstore.TmpClaimed):  # a live writer's claim holds
        AtomicChunked.open(canonical)
    t.go()
    (where,) = t.dying()
    assert where == point, (where, point)
    if point in CHUNKED_PUBLISHED:
        with open(canonical, "rb") as f:
            d = diff(f.read(), want, 0)
        assert d is None, f"committed file: {d}"
        assert not os.path.exists(tmp), "a tmp is left after the rename"
    else:
        if old is None:
            assert not os.path.exists(canonical), "a file appeared before the rename"
        else:
            with open(canonical, "rb") as f:
                assert f.read() == old, "the previous version changed before the rename"
        assert os.path.exists(tmp)
    # the next writer reclaims the dead writer's tmp, empty, and commits its own bytes
    w = AtomicChunked.open(canonical)
    try:
        assert os.path.getsize(tmp) == 0, "the reclaimed tmp still holds the dead writer's bytes"
        assert w.read(0, 64) == b"" and not w.contains_range(0, 1)
        new = gbytes(4, 0, rng.randint(1, 10000))
        w.write_at(0, new)
        w.commit()
    finally:
        w.close()
    with open(canonical, "rb") as f:
        assert f.read() == new
    assert sorted(os.listdir(t.tmp)) == ["seg.bin"], os.listdir(t.tmp)
    return f"{barrier}: {point}"


def test_trials_killed_during_chunked_commit(H: Harness) -> None:
    """AtomicChunked: the writer dies at a _test_hook point of commit (or before or after
    it): the canonical path holds the previous version (or nothing) until the rename and the
    exact committed bytes after it; the next writer reclaims the tmp empty."""
    Tally("chunked-commit", "file").run(H, body_chunked, tmp=True)


ATOMIC_POINTS = ["atomic:write", "atomic:fsync", "atomic:replace", "atomic:fsync-dir",
                 "after write_all"]


def body_atomic(t: Trial, rng: random.Random, tally: Tally) -> str:
    assert t.tmp is not None
    path = str(t.tmp / "index.json")
    durable = rng.random() < 0.5
    point = rng.choice([p for p in ATOMIC_POINTS if durable or "fsync" not in p])
    t.label = f"durable={durable}: {point}"
    old = gbytes(3, 0, rng.randint(1, 5000)) if rng.random() < 0.5 else None
    if old is not None:
        Atomic(path).write_all(old)
    data = gbytes(5, rng.randrange(1 << 16), rng.randint(1, 1 << 19))
    t.start(child_atomic, path, data, durable, point)
    (where,) = t.dying()
    assert where == point, (where, point)
    replaced = point in ("atomic:fsync-dir", "after write_all")
    if replaced:
        assert Atomic(path).read() == data, "the replaced file is not the new data"
    elif old is None:
        assert not os.path.exists(path)
    else:
        assert Atomic(path).read() == old, "the old file changed before the rename"
    temps = [n for n in os.listdir(t.tmp) if n.endswith(".atomic")]
    assert len(temps) == (0 if replaced else 1), temps
    assert Atomic(path).remove_stale_temps() == len(temps)
    new = gbytes(6, 0, rng.randint(1, 10000))
    Atomic(path).write_all(new)
    assert Atomic(path).read() == new
    assert sorted(os.listdir(t.tmp)) == ["index.json"], os.listdir(t.tmp)
    return f"durable={durable}: {point}"


def test_trials_killed_during_atomic_write_all(H: Harness) -> None:
    """Atomic.write_all: the writer dies at each _test_hook point (or after): the path holds
    the old file (or nothing) or the exact new one; the orphan temp is swept; the next
    write_all succeeds."""
    Tally("atomic-write-all", "file").run(H, body_atomic, tmp=True)
