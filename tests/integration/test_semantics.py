"""Every row of SPEC.md's semantics table, on every backend, within one process.

The writer handle and the reader handle are separate handles (``backend.reader(w)``), so the
reader always goes through the shared state, never through the writer's local view. Threads
stand in for other processes where a waiter must be parked; a thread is known to be parked
when its waiter slot shows in the control block's waiter mask (``parked``), never by sleeping.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import shmstore
from shmstore import ResourceStatus, WaitOutcome
from shmstore.core import layout as L
from tests.conftest import Backend

pytestmark = pytest.mark.timeout(30)

MAX = 2**63


# ------------------------------------------------------------------------------ helpers
class Runner(threading.Thread):
    """Runs ``fn`` in a thread and keeps its result or exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.elapsed = -1.0
        self.began = threading.Event()
        self.start()

    def run(self) -> None:
        self.began.set()
        t0 = time.monotonic()
        try:
            self.result = self.fn()
        except BaseException as exc:
            self.error = exc
        self.elapsed = time.monotonic() - t0

    def finish(self, timeout: float = 10.0) -> Any:
        """Join; re-raise the thread's exception; return its result."""
        self.join(timeout)
        assert not self.is_alive(), "the thread did not finish in time"
        if self.error is not None:
            raise self.error
        return self.result


def parked(res: shmstore.Resource) -> int:
    """How many waiters are parked on the resource now (its waiter mask in shared state)."""
    return bin(res._words[L.W_WAITERS_MASK]).count("1")


def wait_parked(res: shmstore.Resource, n: int, timeout: float = 10.0) -> None:
    """Block until ``n`` waiters are parked (a condition with a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout
    while parked(res) < n:
        assert time.monotonic() < deadline, f"{n} waiters never parked"
        time.sleep(0.001)


def pattern(n: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(n))


@contextlib.contextmanager
def closing_all(*handles: shmstore.Resource) -> Iterator[None]:
    try:
        yield
    finally:
        for h in handles:
            h.close()


# ------------------------------------------------------------------------------ empty ranges
def test_empty_range(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    assert r.wait_range(5, 5) is WaitOutcome.READY  # active, nothing written: still READY
    assert r.wait_range(0, 0, timeout=0) is WaitOutcome.READY
    assert r.contains_range(5, 5) is True
    assert r.next_gap(5, 5) is None
    calls: list[tuple[int, int]] = []
    w.on_write(lambda s, e: calls.append((s, e)))
    w.write_at(5, b"")
    w.write_at(0, bytearray())
    assert calls == []
    assert r.ranges() == []
    assert w.ranges() == []
    assert r.read(5, 0) == b""
    assert r.read_at(5, bytearray(0)) == 0
    assert len(r.view(5, 0)) == 0
    assert r.status == ResourceStatus.Active()


# ------------------------------------------------------------------------------ invalid ranges
BAD_RANGES = [(5, 3), (-1, 3), (-5, -1), (0, MAX + 1), (MAX - 1, MAX + 1), (MAX + 1, MAX + 2)]


@pytest.mark.parametrize(("start", "end"), BAD_RANGES)
def test_invalid_range_queries(backend: Backend, start: int, end: int) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"abcdef")
    for h in (r, w):
        with pytest.raises(shmstore.InvalidRange) as info:
            h.wait_range(start, end, timeout=0.05)
        assert (info.value.start, info.value.end) == (start, end)
        assert isinstance(info.value, ValueError)
        with pytest.raises(shmstore.InvalidRange):
            h.contains_range(start, end)
        with pytest.raises(shmstore.InvalidRange):
            h.next_gap(start, end)
    assert r.ranges() == [(0, 6)]


def test_invalid_reads_and_writes(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"abcdef")
    bad_calls: list[Callable[[], object]] = [
        lambda: r.read(-1, 5),
        lambda: r.read(0, -1),
        lambda: r.read(MAX - 1, 2),
        lambda: r.read_at(-1, bytearray(4)),
        lambda: r.read_at(MAX - 2, bytearray(4)),
        lambda: r.view(-1, 4),
        lambda: r.view(0, -4),
        lambda: r.view(MAX - 1, 2),
        lambda: w.write_at(-1, b"x"),
        lambda: w.write_at(MAX - 1, b"xy"),
        lambda: w.write_at(MAX, b"x"),
        lambda: w.commit(-1),
        lambda: w.commit(MAX),
    ]
    for call in bad_calls:
        with pytest.raises(shmstore.InvalidRange):
            call()
    # nothing was touched
    assert r.ranges() == [(0, 6)]
    assert r.read(0, 6) == b"abcdef"
    assert r.status == ResourceStatus.Active()


# ------------------------------------------------------------------------------ active: blocks
def test_active_uncovered_wait_times_out(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"0123456789")
    for start, end in [(10, 11), (5, 15), (100, 200), (1 << 40, (1 << 40) + 1)]:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            r.wait_range(start, end, timeout=0.05)
        elapsed = time.monotonic() - t0
        assert 0.04 <= elapsed < 5, elapsed  # honoured the timeout, never EOF while active
    assert r.wait_range(0, 10, timeout=0.05) is WaitOutcome.READY
    assert r.status == ResourceStatus.Active()


def test_zero_timeout_never_blocks(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    with pytest.raises(TimeoutError):
        r.wait_range(0, 1, timeout=0)
    w.write_at(0, b"x")
    assert r.wait_range(0, 1, timeout=0) is WaitOutcome.READY


def test_parked_wait_returns_once_whole_range_is_covered(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    t = Runner(lambda: r.wait_range(0, 10, timeout=20))
    wait_parked(w, 1)
    w.write_at(0, b"01234")  # half of it: the waiter must keep waiting
    t.join(0.3)
    assert t.is_alive(), f"woke on a partial range: {t.result!r} {t.error!r}"
    w.write_at(5, b"56789")
    assert t.finish() is WaitOutcome.READY
    assert r.read(0, 10) == b"0123456789"


def test_overlapping_writes_last_one_wins(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"aaaaaaaaaa")
    w.write_at(3, b"BBBB")
    w.write_at(8, memoryview(b"cccc"))
    w.write_at(1, np.frombuffer(b"\x01\x02", dtype=np.uint8))
    assert r.wait_range(0, 12) is WaitOutcome.READY
    assert r.read(0, 12) == b"a\x01\x02BBBBacccc"
    assert r.ranges() == [(0, 12)]


# ----------------------------------------------------------------------------- committed, final_len
def test_committed_with_final_len(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"AAAA")
    w.write_at(8, b"BBBB")
    w.commit(16)
    assert r.status == ResourceStatus.Committed(16, 16)
    assert w.status == ResourceStatus.Committed(16, 16)
    # 0..16 counts as available; holes read as zeros
    assert r.wait_range(0, 16) is WaitOutcome.READY
    assert r.wait_range(4, 8) is WaitOutcome.READY
    assert r.wait_range(12, 16) is WaitOutcome.READY
    assert r.read(0, 16) == b"AAAA\0\0\0\0BBBB\0\0\0\0"
    assert r.contains_range(4, 8) is True
    assert r.contains_range(0, 16) is True
    assert r.next_gap(0, 16) is None
    # start >= n: EOF
    assert r.wait_range(16, 17) is WaitOutcome.EOF
    assert r.wait_range(100, 200) is WaitOutcome.EOF
    assert r.contains_range(16, 17) is False
    # straddling n: READY, reads are short
    assert r.wait_range(10, 30) is WaitOutcome.READY
    assert r.read(10, 20) == b"BB\0\0\0\0"
    buf = bytearray(b"\xff" * 20)
    assert r.read_at(10, buf) == 6
    assert bytes(buf) == b"BB\0\0\0\0" + b"\xff" * 14
    assert bytes(r.view(10, 20)) == b"BB\0\0\0\0"
    assert r.read(16, 5) == b""
    assert r.contains_range(10, 30) is False


def test_commit_shorter_than_written(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, pattern(100))
    w.commit(40)
    assert r.status == ResourceStatus.Committed(40, 40)
    assert r.read(0, 100) == pattern(100)[:40]
    assert r.wait_range(40, 50) is WaitOutcome.EOF
    assert r.wait_range(30, 50) is WaitOutcome.READY


def test_ranges_after_commit_with_length(backend: Backend) -> None:
    # ranges(): "the available ranges ... or [(0, final_len)] once commit(final_len) made
    # every byte below it available"; iter_ranges yields them before it ends.
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, pattern(100))
    w.commit(40)
    assert r.ranges() == [(0, 40)]
    assert list(r.iter_ranges(timeout=5)) == [(0, 40)]
    w2 = backend.create("holes")
    r2 = backend.reader(w2)
    w2.write_at(5, b"abc")
    w2.commit(20)
    assert r2.ranges() == [(0, 20)]
    pieces = list(r2.iter_ranges(timeout=5))
    assert sorted(pieces) == [(0, 5), (5, 8), (8, 20)]


def test_commit_zero(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"gone")
    w.commit(0)
    assert r.status == ResourceStatus.Committed(0, 0)
    assert r.wait_range(0, 1) is WaitOutcome.EOF
    assert r.read(0, 10) == b""


def test_commit_longer_than_capacity(backend: Backend) -> None:
    w = backend.create(capacity=4096)
    r = backend.reader(w)
    w.write_at(0, b"head")
    n = 3 * 4096 + 5
    w.commit(n)
    assert r.status == ResourceStatus.Committed(n, n)
    data = r.read(0, n + 10)
    assert len(data) == n
    assert data[:4] == b"head"
    assert data[4:] == bytes(n - 4)
    assert r.wait_range(n - 1, n + 1) is WaitOutcome.READY
    assert r.wait_range(n, n + 1) is WaitOutcome.EOF


def test_second_commit(backend: Backend) -> None:
    w = backend.create()
    w.write_at(0, b"0123456789")
    w.commit(10)
    w.commit(10)  # same length: a no-op
    w.commit()  # None: keeps the committed length
    assert w.status == ResourceStatus.Committed(10, 10)
    with pytest.raises(shmstore.ReadOnlyError):
        w.commit(11)
    assert w.status == ResourceStatus.Committed(10, 10)


# ------------------------------------------------------------------------------ committed, None
def test_committed_with_none(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"AAAA")
    w.write_at(8, b"BBBB")
    assert r.status == ResourceStatus.Active()  # the reader has drained nothing yet
    w.commit()
    # the length is the written extent, published by commit itself
    assert r.status == ResourceStatus.Committed(None, 12)
    assert w.status == ResourceStatus.Committed(None, 12)
    assert r.wait_range(0, 4) is WaitOutcome.READY
    assert r.wait_range(8, 12) is WaitOutcome.READY
    assert r.wait_range(8, 20) is WaitOutcome.READY  # covered up to the length: short read
    assert r.read(8, 20) == b"BBBB"
    assert r.wait_range(4, 8) is WaitOutcome.EOF  # uncovered: EOF
    assert r.wait_range(2, 10) is WaitOutcome.EOF
    assert r.wait_range(12, 13) is WaitOutcome.EOF
    assert r.contains_range(0, 4) is True
    assert r.contains_range(4, 8) is False
    assert r.contains_range(0, 12) is False
    assert r.next_gap(0, 100) == (4, 8)
    assert r.next_gap(8, 100) is None
    assert r.ranges() == [(0, 4), (8, 12)]
    assert r.read(0, 100) == b"AAAA\0\0\0\0BBBB"


def test_commit_none_of_nothing(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.commit()
    assert r.status == ResourceStatus.Committed(None, 0)
    assert r.wait_range(0, 1) is WaitOutcome.EOF
    assert r.read(0, 1) == b""


def test_commit_wakes_parked_waiters(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"abc")
    past = Runner(lambda: r.wait_range(10, 20, timeout=20))
    straddle = Runner(lambda: r.wait_range(2, 20, timeout=20))
    wait_parked(w, 2)
    w.commit(5)
    assert past.finish() is WaitOutcome.EOF
    assert straddle.finish() is WaitOutcome.READY
    assert r.read(0, 20) == b"abc\0\0"


# ------------------------------------------------------------------------------ failed
def test_failed(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"0123456789")
    parked_waiter = Runner(lambda: r.wait_range(20, 30, timeout=20))
    writer_waiter = Runner(lambda: w.wait_range(40, 50, timeout=20))
    wait_parked(w, 2)
    w.fail("disk on fire")
    for t in (parked_waiter, writer_waiter):
        with pytest.raises(shmstore.ResourceFailed) as info:
            t.finish()
        assert info.value.reason == "disk on fire"
        assert not isinstance(info.value, shmstore.WriterDied)
    assert r.status == ResourceStatus.Failed("disk on fire")
    assert w.status == ResourceStatus.Failed("disk on fire")
    calls: list[Callable[[], object]] = [
        lambda: r.wait_range(0, 10),  # covered bytes too
        lambda: r.wait_range(20, 30, timeout=5),
        lambda: r.wait_range(0, 10, timeout=0),
        lambda: r.read(0, 10),
        lambda: r.read_at(0, bytearray(4)),
        lambda: r.view(0, 4),
        lambda: w.wait_range(0, 10),
        lambda: w.read(0, 10),
    ]
    for call in calls:
        with pytest.raises(shmstore.ResourceFailed) as info:
            call()
        assert info.value.reason == "disk on fire"
    with pytest.raises(shmstore.ResourceFailed):
        w.write_at(10, b"x")
    with pytest.raises(shmstore.ResourceFailed):
        w.commit()
    w.fail("second reason")  # a second fail keeps the first reason
    assert r.status == ResourceStatus.Failed("disk on fire")
    with pytest.raises(shmstore.ResourceFailed) as info:
        r.read(0, 1)
    assert info.value.reason == "disk on fire"


def test_fail_after_commit(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"abc")
    w.commit()
    w.fail("bad checksum")
    assert r.status == ResourceStatus.Failed("bad checksum")
    with pytest.raises(shmstore.ResourceFailed):
        r.read(0, 3)
    with pytest.raises(shmstore.ResourceFailed):
        r.wait_range(0, 3)


def test_reactivate_after_fail_keeps_coverage(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"0123456789")
    w.fail("transient")
    w.reactivate()
    assert r.status == ResourceStatus.Active()
    assert r.wait_range(0, 10) is WaitOutcome.READY
    assert r.read(0, 10) == b"0123456789"
    w.write_at(10, b"abc")
    w.commit()
    assert r.status == ResourceStatus.Committed(None, 13)
    assert r.read(0, 20) == b"0123456789abc"


# ------------------------------------------------------------------------------ writer death
def test_last_writer_close_raises_writer_died(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"0123456789")
    assert r.writers_alive() is True
    waiter = Runner(lambda: r.wait_range(5, 20, timeout=20))
    wait_parked(r, 1)
    w.close()
    with pytest.raises(shmstore.WriterDied) as info:
        waiter.finish()
    assert isinstance(info.value, shmstore.ResourceFailed)
    # WriterDied rather than TimeoutError(20 s): the death was noticed; how fast is measured
    # by the benchmarks (target under 1 s), not asserted here.
    assert r.writers_alive() is False
    # a fresh wait on uncovered bytes raises at once
    t0 = time.monotonic()
    with pytest.raises(shmstore.WriterDied):
        r.wait_range(10, 11, timeout=10)
    assert time.monotonic() - t0 < 1.0
    # covered bytes stay readable; the resource itself stays active
    assert r.wait_range(0, 10) is WaitOutcome.READY
    assert r.read(0, 10) == b"0123456789"
    assert r.contains_range(0, 10) is True
    assert r.status == ResourceStatus.Active()


def test_new_writer_resumes_after_last_writer_closed(xbackend: Backend) -> None:
    w = xbackend.create()
    r = xbackend.reader(w)
    w.write_at(0, b"01234")
    w.close()
    with pytest.raises(shmstore.WriterDied):
        r.wait_range(0, 10, timeout=5)
    w2 = xbackend.writer(w)
    assert w2.ranges() == [(0, 5)]
    waiter = Runner(lambda: r.wait_range(0, 10, timeout=20))
    w2.write_at(5, b"56789")
    assert waiter.finish() is WaitOutcome.READY
    w2.commit()
    assert r.status == ResourceStatus.Committed(None, 10)
    assert r.read(0, 20) == b"0123456789"


def test_one_writer_of_two_closing_is_not_death(xbackend: Backend) -> None:
    w = xbackend.create()
    w2 = xbackend.writer(w)
    r = xbackend.reader(w)
    w.write_at(0, b"aa")
    w2.write_at(2, b"bb")
    w.close()
    assert r.writers_alive() is True
    with pytest.raises(TimeoutError):
        r.wait_range(0, 10, timeout=0.05)
    assert r.read(0, 4) == b"aabb"
    w2.close()
    with pytest.raises(shmstore.WriterDied):
        r.wait_range(0, 10, timeout=5)


def test_commit_none_uses_the_extent_of_every_writer(xbackend: Backend) -> None:
    w = xbackend.create()
    w2 = xbackend.writer(w)
    r = xbackend.reader(w)
    w.write_at(0, b"a" * 100)
    w2.write_at(0, b"b" * 10)
    w2.commit()
    assert r.status == ResourceStatus.Committed(None, 100)
    assert r.read(0, 200) == b"b" * 10 + b"a" * 90


def test_committed_resource_is_unaffected_by_writer_close(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"done")
    w.commit()
    w.close()
    assert r.wait_range(0, 4) is WaitOutcome.READY
    assert r.wait_range(4, 10, timeout=5) is WaitOutcome.EOF
    assert r.wait_range(2, 10, timeout=5) is WaitOutcome.READY
    assert r.read(0, 10) == b"done"
    assert r.status == ResourceStatus.Committed(None, 4)


# ------------------------------------------------------------------------------ reactivate
def test_reactivate_rewrite_is_invisible_until_commit(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    old = b"A" * 64
    w.write_at(0, old)
    w.commit()
    assert r.read(0, 100) == old
    view_before = r.view(0, 64)
    w.reactivate()
    assert w.status == ResourceStatus.Active()
    assert r.status == ResourceStatus.Active()
    w.write_at(0, b"B" * 32)
    w.write_at(64, b"C" * 16)
    # readers keep seeing the committed bytes until the next commit (no torn reads)
    assert r.read(0, 100) == old
    assert r.wait_range(0, 64) is WaitOutcome.READY
    assert bytes(r.view(0, 64)) == old
    assert bytes(view_before) == old
    assert r.contains_range(0, 64) is True
    assert r.contains_range(60, 70) is False
    with pytest.raises(TimeoutError):  # bytes past the committed ones block, never EOF
        r.wait_range(64, 80, timeout=0.05)
    with pytest.raises(shmstore.ReadOnlyError):
        r.reactivate()
    w.commit()
    new = b"B" * 32 + b"A" * 32 + b"C" * 16
    assert r.status == ResourceStatus.Committed(None, 80)
    assert r.read(0, 100) == new
    assert bytes(r.view(0, 80)) == new
    assert r.wait_range(64, 80) is WaitOutcome.READY
    assert bytes(view_before) == old  # a view of the old generation is not torn either


def test_reactivate_wakes_waiter_only_at_the_next_commit(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"x" * 10)
    w.commit()
    w.reactivate()
    waiter = Runner(lambda: r.wait_range(10, 20, timeout=20))
    wait_parked(w, 1)
    w.write_at(10, b"y" * 10)
    waiter.join(0.3)
    assert waiter.is_alive(), "a rewrite's bytes became visible before its commit"
    w.commit()
    assert waiter.finish() is WaitOutcome.READY
    assert r.read(0, 20) == b"x" * 10 + b"y" * 10


def test_reactivate_does_not_cover_holes(backend: Backend) -> None:
    # commit(None): "covered -> READY, anything uncovered -> EOF". Bytes nobody ever wrote
    # must not become available because the resource went through a rewrite.
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"0123456789")
    w.write_at(20, b"abcd")
    w.commit()
    assert r.wait_range(12, 16) is WaitOutcome.EOF
    w.reactivate()
    # during the rewrite readers keep the committed view: the hole is not READY
    try:
        during = r.wait_range(12, 16, timeout=0.05)
    except TimeoutError:
        during = None
    assert during is not WaitOutcome.READY
    assert r.contains_range(12, 16) is False
    w.write_at(30, b"xy")
    w.commit()
    assert r.status == ResourceStatus.Committed(None, 32)
    assert r.wait_range(12, 16) is WaitOutcome.EOF
    assert r.ranges() == [(0, 10), (20, 24), (30, 32)]
    assert r.next_gap(0, 100) == (10, 20)


def test_reactivate_after_fail_of_committed(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"committed")
    w.commit()
    w.fail("bad checksum")
    w.reactivate()
    assert r.status == ResourceStatus.Active()
    assert r.read(0, 100) == b"committed"
    w.write_at(0, b"C")
    assert r.read(0, 100) == b"committed"
    w.commit()
    assert r.read(0, 100) == b"Committed"


def test_reactivate_twice(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    for i in range(3):
        if i:
            w.reactivate()
        w.write_at(i * 4, bytes([65 + i]) * 4)
        w.commit()
        assert r.read(0, 100) == b"".join(bytes([65 + k]) * 4 for k in range(i + 1))
        assert r.status == ResourceStatus.Committed(None, 4 * (i + 1))


def test_reactivate_of_active_is_a_noop(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"abc")
    w.reactivate()
    assert r.status == ResourceStatus.Active()
    assert r.read(0, 3) == b"abc"
    assert r.ranges() == [(0, 3)]


# ------------------------------------------------------------------------------ read-only
def test_write_after_commit(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"abc")
    w.commit()
    with pytest.raises(shmstore.ReadOnlyError):
        w.write_at(3, b"d")
    with pytest.raises(shmstore.ReadOnlyError):
        w.write_at(0, b"X")
    assert r.read(0, 10) == b"abc"
    w.reactivate()
    w.write_at(3, b"d")
    w.commit()
    assert r.read(0, 10) == b"abcd"


def test_read_only_handle_refuses_changes(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"abc")
    assert r.writable is False
    assert w.writable is True
    for call in (lambda: r.write_at(0, b"x"), lambda: r.write_at(10, b"y"),
                 lambda: r.commit(), lambda: r.commit(3), lambda: r.fail("no"),
                 lambda: r.reactivate(), lambda: r.cancel()):
        with pytest.raises(shmstore.ReadOnlyError):
            call()
    assert r.status == ResourceStatus.Active()
    assert r.read(0, 10) == b"abc"
    assert r.ranges() == [(0, 3)]
    w.commit()
    with pytest.raises(shmstore.ReadOnlyError):
        r.reactivate()
    with pytest.raises(shmstore.ReadOnlyError):
        r.fail("no")
    assert r.status == ResourceStatus.Committed(None, 3)


# ------------------------------------------------------------------------------ cancel
def test_per_wait_cancel(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    token = shmstore.CancelToken()
    mine = Runner(lambda: r.wait_range(0, 10, timeout=20, cancel=token))
    other = Runner(lambda: r.wait_range(0, 10, timeout=20))
    other_token = shmstore.CancelToken()
    third = Runner(lambda: w.wait_range(5, 10, timeout=20, cancel=other_token))
    wait_parked(w, 3)
    canceller = Runner(token.cancel)  # from yet another thread
    canceller.finish()
    assert token.cancelled is True
    with pytest.raises(shmstore.Cancelled):
        mine.finish()
    # the others are unaffected: still parked, then served normally
    other.join(0.2)
    assert other.is_alive()
    assert third.is_alive()
    assert other_token.cancelled is False
    assert r.status == ResourceStatus.Active()
    w.write_at(0, b"0123456789")
    assert other.finish() is WaitOutcome.READY
    assert third.finish() is WaitOutcome.READY
    # a cancelled token cancels every later wait it is passed to, at once
    with pytest.raises(shmstore.Cancelled):
        r.wait_range(20, 30, timeout=5, cancel=token)
    assert r.wait_range(0, 10, cancel=shmstore.CancelToken()) is WaitOutcome.READY


def test_resource_wide_cancel(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"abc")
    waiters = [Runner(lambda: r.wait_range(10, 20, timeout=20)),
               Runner(lambda: w.wait_range(30, 40, timeout=20))]
    wait_parked(w, 2)
    w.cancel()
    for t in waiters:
        with pytest.raises(shmstore.Cancelled):
            t.finish()
    assert r.status == ResourceStatus.Cancelled()
    for call in (lambda: r.wait_range(0, 3), lambda: r.wait_range(10, 20, timeout=5),
                 lambda: r.read(0, 3), lambda: w.write_at(3, b"d"), lambda: w.commit(),
                 lambda: w.reactivate(), lambda: w.fail("late")):
        with pytest.raises(shmstore.Cancelled):
            call()
    w.cancel()  # idempotent
    assert w.status == ResourceStatus.Cancelled()


def test_cancel_of_committed_is_refused(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"abc")
    w.commit()
    with pytest.raises(shmstore.ReadOnlyError):
        w.cancel()
    assert r.status == ResourceStatus.Committed(None, 3)
    assert r.read(0, 3) == b"abc"


# ------------------------------------------------------------------------------ interrupt
def test_interrupt(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    a = Runner(lambda: r.wait_range(0, 10, timeout=20))
    b = Runner(lambda: w.wait_range(100, 200, timeout=20))
    wait_parked(w, 2)
    r.interrupt()  # any handle, a reader too
    assert a.finish() is WaitOutcome.INTERRUPTED
    assert b.finish() is WaitOutcome.INTERRUPTED
    assert r.status == ResourceStatus.Active()
    # waits that start later are unaffected
    with pytest.raises(TimeoutError):
        r.wait_range(0, 10, timeout=0.05)
    w.write_at(0, b"0123456789")
    assert r.wait_range(0, 10) is WaitOutcome.READY


# ------------------------------------------------------------------------------ read past the end
def test_read_past_the_end(backend: Backend) -> None:
    w = backend.create(capacity=4096)
    r = backend.reader(w)
    w.write_at(0, b"0123456789")
    assert r.read(10, 5) == b""
    assert r.read(5, 100) == b"56789"
    assert r.read(4096, 10) == b""
    assert r.read(1 << 40, 10) == b""
    assert r.read(MAX - 10, 10) == b""
    buf = bytearray(b"\xee" * 8)
    assert r.read_at(1 << 30, buf) == 0
    assert bytes(buf) == b"\xee" * 8
    assert len(r.view(1 << 30, 8)) == 0
    w.commit(12)
    assert r.read(12, 5) == b""
    assert r.read(10, 5) == b"\0\0"
    assert r.read(1 << 40, 1) == b""
    assert r.read_at(20, buf) == 0


def test_read_with_a_huge_size_is_short_not_an_allocation(backend: Backend) -> None:
    # "read past the end: returns 0 bytes, never raises" - whatever size is asked for.
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"0123456789")
    assert r.read(5, 2**62) == b"56789"
    assert r.read(100, 2**62) == b""
    w.commit()
    assert r.read(0, 2**62) == b"0123456789"
    assert r.read(10, 2**62) == b""


# ------------------------------------------------------------------------------ growth
def test_growth_keeps_earlier_bytes_readable(backend: Backend) -> None:
    w = backend.create(capacity=4096)
    r = backend.reader(w)
    first = pattern(4096, 1)
    w.write_at(0, first)
    assert w.capacity == 4096
    assert r.read(0, 4096) == first
    held = r.view(0, 4096)
    arr = np.frombuffer(held, dtype=np.uint8)
    w.write_at(4096, b"x")  # one byte past: doubles
    assert w.capacity == 8192
    assert r.capacity == 8192
    far = pattern(5000, 2)
    w.write_at(100_000, far)  # far past: at least the end
    assert w.capacity >= 105_000
    assert r.wait_range(100_000, 105_000) is WaitOutcome.READY
    assert r.read(0, 4096) == first
    assert r.read(4096, 1) == b"x"
    assert r.read(100_000, 5000) == far
    assert r.read(4097, 10) == bytes(10)  # a hole below the extent reads as zeros
    assert bytes(held) == first  # views taken before growth stay valid
    assert arr.tobytes() == first
    w.commit()
    assert r.read(0, 200_000) == first + b"x" + bytes(100_000 - 4097) + far


def test_many_growth_steps_while_reading(backend: Backend) -> None:
    w = backend.create(capacity=4096)
    r = backend.reader(w)
    chunk = 3000
    expect = bytearray()
    for i in range(40):
        data = pattern(chunk, i)
        w.write_at(i * chunk, data)
        expect += data
        assert r.wait_range(0, len(expect), timeout=5) is WaitOutcome.READY
        assert r.read(0, len(expect)) == bytes(expect)
    assert r.ranges() == [(0, 40 * chunk)]


# ------------------------------------------------------------------------------ view
def test_view_is_read_only_and_zero_copy(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, bytes(range(16)))
    v = r.view(0, 16)
    assert isinstance(v, memoryview)
    assert v.readonly is True
    assert bytes(v) == bytes(range(16))
    arr = np.frombuffer(v, dtype=np.uint8)
    assert arr.tolist() == list(range(16))
    assert arr.flags.writeable is False
    words = np.frombuffer(v, dtype="<u4")
    assert words[0] == 0x03020100
    with pytest.raises(TypeError):
        v[0] = 9
    with pytest.raises(ValueError, match="read-only"):
        arr[0] = 9
    # zero copy: an overwrite through the writer shows through the reader's view
    w.write_at(0, b"\xaa\xbb")
    assert bytes(v[:3]) == b"\xaa\xbb\x02"
    assert arr[:2].tolist() == [0xAA, 0xBB]
    assert bytes(r.view(14, 100)) == bytes([14, 15])  # short at the end
    assert bytes(r.view(16, 4)) == b""


def test_view_survives_close(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"persist")
    v = r.view(0, 7)
    r.close()
    assert bytes(v) == b"persist"


def test_read_at_into_buffers(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, pattern(64))
    out = np.zeros(16, dtype=np.uint32)
    assert r.read_at(0, out) == 64
    assert out.tobytes() == pattern(64)
    with pytest.raises(TypeError):
        r.read_at(0, b"immutable")


# ------------------------------------------------------------------------------ queries
def test_next_gap_contains_range_ranges(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    assert r.next_gap(0, 100) == (0, 100)
    assert r.ranges() == []
    w.write_at(0, b"x" * 10)
    w.write_at(20, b"y" * 10)
    assert r.ranges() == [(0, 10), (20, 30)]
    assert r.contains_range(0, 10) is True
    assert r.contains_range(0, 11) is False
    assert r.contains_range(25, 30) is True
    assert r.contains_range(10, 20) is False
    assert r.contains_range(5, 25) is False
    assert r.next_gap(0, 100) == (10, 20)
    assert r.next_gap(0, 10) is None
    assert r.next_gap(12, 15) == (12, 15)
    assert r.next_gap(20, 100) == (30, 100)
    assert r.next_gap(25, 30) is None
    w.write_at(10, b"z" * 10)  # fills the gap: ranges merge
    assert r.ranges() == [(0, 30)]
    assert r.next_gap(0, 100) == (30, 100)
    assert r.contains_range(0, 30) is True
    w.write_at(40, b"w")
    w.commit()
    assert r.ranges() == [(0, 30), (40, 41)]
    assert r.next_gap(0, 100) == (30, 40)
    assert r.next_gap(35, 100) == (35, 40)
    assert r.next_gap(40, 100) is None  # the search stops at the length


def test_next_gap_committed_with_length(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(5, b"abc")
    w.commit(20)
    assert r.next_gap(0, 100) is None
    assert r.contains_range(0, 20) is True
    assert r.contains_range(0, 21) is False


def test_writer_and_reader_agree(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    for i in range(0, 300, 3):
        w.write_at(i, b"ab")
    want = [(i, i + 2) for i in range(0, 300, 3)]
    assert r.ranges() == want
    assert w.ranges() == want
    assert r.next_gap(0, 1000) == (2, 3)


def test_reader_lapped_by_many_writes_sees_exact_coverage(backend: Backend) -> None:
    # more than a ring (128 entries) and more than a journal (2048 entries) of fragments
    w = backend.create(capacity=1 << 16)
    r = backend.reader(w)
    early = backend.reader(w)
    assert early.ranges() == []
    want: list[tuple[int, int]] = []
    for i in range(2600):
        w.write_at(3 * i, b"\x01")
        want.append((3 * i, 3 * i + 1))
        if i % 700 == 0:
            assert early.ranges() == want
    assert r.ranges() == want
    assert early.ranges() == want
    assert r.read(0, 7) == b"\x01\0\0\x01\0\0\x01"


# ------------------------------------------------------------------------------ callbacks
def test_on_write_and_on_commit(backend: Backend) -> None:
    w = backend.create()
    writes: list[tuple[int, int]] = []
    commits: list[int] = []
    unsub_w = w.on_write(lambda s, e: writes.append((s, e)))
    unsub_c = w.on_commit(commits.append)
    w.write_at(0, b"abc")
    w.write_at(10, b"de")
    assert writes == [(0, 3), (10, 12)]
    unsub_w()
    w.write_at(20, b"f")
    assert writes == [(0, 3), (10, 12)]
    w.commit()
    assert commits == [21]
    w.reactivate()
    w.commit(30)
    assert commits == [21, 30]
    unsub_c()
    w.reactivate()
    w.commit()
    assert commits == [21, 30]


def test_iter_ranges(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"x" * 10)
    w.write_at(20, b"y" * 10)
    it = r.iter_ranges(timeout=10)
    with contextlib.closing(it):
        assert next(it) == (0, 10)
        assert next(it) == (20, 30)
        w.write_at(5, b"z" * 20)  # only [10, 20) is new
        assert next(it) == (10, 20)
        w.write_at(40, b"w" * 5)
        assert next(it) == (40, 45)
        w.commit()
        assert list(it) == []  # ends at the commit


def test_iter_ranges_from_another_thread(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    got = Runner(lambda: list(r.iter_ranges(timeout=10)))
    wait_parked(w, 1)
    for i in range(10):
        w.write_at(i * 10, b"q" * 5)
    w.commit()
    pieces = got.finish()
    assert sorted(pieces) == [(i * 10, i * 10 + 5) for i in range(10)]


def test_iter_ranges_of_committed_resource(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"abc")
    w.write_at(10, b"def")
    w.commit()
    assert list(r.iter_ranges(timeout=5)) == [(0, 3), (10, 13)]


def test_iter_ranges_raises_on_failure(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"a")
    it = r.iter_ranges(timeout=10)
    with contextlib.closing(it):
        assert next(it) == (0, 1)
        w.fail("upstream 500")
        with pytest.raises(shmstore.ResourceFailed) as info:
            next(it)
        assert info.value.reason == "upstream 500"


def test_iter_ranges_times_out(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    it = r.iter_ranges(timeout=0.05)
    with contextlib.closing(it), pytest.raises(TimeoutError):
        next(it)


# ------------------------------------------------------------------------------ close
def test_close_is_idempotent_and_closed_handle_raises(backend: Backend) -> None:
    w = backend.create()
    r = backend.reader(w)
    w.write_at(0, b"abc")
    r.close()
    r.close()
    assert r.closed is True
    for call in (lambda: r.read(0, 3), lambda: r.read_at(0, bytearray(3)),
                 lambda: r.view(0, 3), lambda: r.wait_range(0, 3),
                 lambda: r.contains_range(0, 3), lambda: r.next_gap(0, 3),
                 lambda: r.ranges(), lambda: r.status, lambda: r.interrupt()):
        with pytest.raises(shmstore.ResourceClosed):
            call()
    # the writer is unaffected by the reader's close
    assert w.read(0, 3) == b"abc"
    w.close()
    w.close()
    for call in (lambda: w.write_at(3, b"d"), lambda: w.commit(), lambda: w.fail("x"),
                 lambda: w.reactivate(), lambda: w.cancel(), lambda: w.read(0, 1)):
        with pytest.raises(shmstore.ResourceClosed):
            call()


_CLOSE_WHILE_PARKED = r"""
import sys, threading, time
import shmstore
from shmstore.core import layout as L

kind, where = sys.argv[1], sys.argv[2]
if kind == "shm":
    r = shmstore.open(where)
elif kind == "mmap":
    r = shmstore.open(path=where, backend="mmap")
else:
    w = shmstore.create(backend="mem", capacity=4096)
    r = w.reader()
out = []

def wait():
    t0 = time.monotonic()
    try:
        out.append(repr(r.wait_range(0, 10, timeout=5)))
    except BaseException as exc:
        out.append(type(exc).__name__)
    out.append(time.monotonic() - t0)

t = threading.Thread(target=wait)
t.start()
deadline = time.monotonic() + 10
while not r._words[L.W_WAITERS_MASK]:
    assert time.monotonic() < deadline
    time.sleep(0.001)
r.close()
t.join(10)
assert not t.is_alive()
print(out[0], round(out[1], 3))
"""


@pytest.mark.timeout(60)
def test_close_while_a_thread_is_parked(backend: Backend) -> None:
    # Closing a handle another thread is parked on must wake that thread with a clear
    # error (ResourceClosed), not crash the process or leak a raw ValueError.
    import subprocess
    import sys

    if backend.kind == "mem":
        where = ""
    else:
        w = backend.create()
        where = w.name if backend.kind == "shm" else str(w.path)
    proc = subprocess.run([sys.executable, "-c", _CLOSE_WHILE_PARKED, backend.kind, where],
                          capture_output=True, text=True, timeout=50,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, f"child died: rc={proc.returncode} {proc.stderr[-2000:]}"
    outcome, _elapsed = proc.stdout.split()
    assert outcome == "ResourceClosed"  # woken by close, not by its own 5 s timeout


def test_close_never_unlinks(xbackend: Backend) -> None:
    w = xbackend.create()
    w.write_at(0, b"kept")
    w.commit()
    w.close()
    r = xbackend.reader(w)
    assert r.read(0, 10) == b"kept"
    assert r.status == ResourceStatus.Committed(None, 4)


def test_context_manager(backend: Backend) -> None:
    w = backend.create()
    with backend.reader(w) as r:
        w.write_at(0, b"ctx")
        assert r.read(0, 3) == b"ctx"
    assert r.closed is True
    with pytest.raises(shmstore.ResourceClosed):
        r.read(0, 3)
    with pytest.raises(KeyError), w:
        raise KeyError("propagates")
    assert w.closed is True


# ------------------------------------------------------------------------------ pickling
def test_pickle_round_trip(xbackend: Backend) -> None:
    w = xbackend.create()
    r = xbackend.reader(w)
    w.write_at(0, b"pickled")
    r2 = pickle.loads(pickle.dumps(r))
    w2 = pickle.loads(pickle.dumps(w))
    with closing_all(r2, w2):
        assert isinstance(r2, shmstore.Resource)
        assert r2.writable is False
        assert w2.writable is True
        assert r2.backend == xbackend.kind
        assert r2.wait_range(0, 7) is WaitOutcome.READY
        assert r2.read(0, 7) == b"pickled"
        w2.write_at(7, b"!")  # a usable second writer
        assert r.wait_range(0, 8, timeout=5) is WaitOutcome.READY
        assert r2.read(0, 8) == b"pickled!"
        with pytest.raises(shmstore.ReadOnlyError):
            r2.write_at(0, b"x")
        w2.commit()
        assert r.status == ResourceStatus.Committed(None, 8)


def test_mem_handles_do_not_pickle(tmp_path: Path) -> None:
    b = Backend("mem", tmp_path, [])
    try:
        w = b.create()
        r = b.reader(w)
        with pytest.raises(TypeError):
            pickle.dumps(w)
        with pytest.raises(TypeError):
            pickle.dumps(r)
    finally:
        for h in b.made:
            h.close()


# ------------------------------------------------------------------------------ names
def test_create_existing_name(name: str) -> None:
    w = shmstore.create(name, capacity=4096)
    try:
        w.write_at(0, b"mine")
        with pytest.raises(shmstore.ResourceExists) as info:
            shmstore.create(name)
        assert isinstance(info.value, FileExistsError)
        # the failed create destroyed nothing
        with shmstore.open(name) as r:
            assert r.read(0, 4) == b"mine"
            assert r.status == ResourceStatus.Active()
    finally:
        w.unlink()
        w.close()


def test_open_missing_name(name: str) -> None:
    with pytest.raises(shmstore.ResourceNotFound) as info:
        shmstore.open(name)
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(shmstore.ResourceNotFound):
        shmstore.open(name, mode="r+")


def test_unlink_removes_the_name(name: str) -> None:
    w = shmstore.create(name, capacity=4096)
    try:
        w.write_at(0, b"abc")
        w.unlink()
        with pytest.raises(shmstore.ResourceNotFound):
            shmstore.open(name)
        w.unlink()  # idempotent
    finally:
        w.close()


def _objects_of(res: shmstore.Resource) -> list[str]:
    """Entries of /dev/shm that belong to ``res`` (its segments and semaphores)."""
    base = res._ns.base
    return sorted(e for e in os.listdir("/dev/shm")
                  if e.startswith(base + "_") or e.startswith("sem." + base + "_"))


def test_open_handles_keep_reading_after_unlink(xbackend: Backend) -> None:
    # Resource.unlink: "Handles already open keep reading what is covered; everything that
    # would need a new shared object fails instead of recreating a name nobody would
    # remove: writes and lifecycle changes raise ResourceNotFound, and so does a wait on
    # bytes that are not covered (parked waiters are woken to raise it)."
    w = xbackend.create(capacity=1 << 16)
    r = xbackend.reader(w)
    late = xbackend.reader(w)  # attached before the unlink, never read
    w.write_at(0, b"abc")
    assert r.read(0, 3) == b"abc"
    parked_waiter = Runner(lambda: r.wait_range(100, 200, timeout=20))
    wait_parked(w, 1)
    w.unlink()
    with pytest.raises(shmstore.ResourceNotFound):
        parked_waiter.finish()
    assert r.read(0, 3) == b"abc"
    assert r.wait_range(0, 3, timeout=5) is WaitOutcome.READY
    assert late.read(0, 3) == b"abc"
    assert late.wait_range(0, 3, timeout=5) is WaitOutcome.READY
    assert late.ranges() == [(0, 3)]
    with pytest.raises(shmstore.ResourceNotFound):
        r.wait_range(100, 200, timeout=5)
    for call in (lambda: w.write_at(3, b"d"), lambda: w.commit(), lambda: w.fail("x"),
                 lambda: w.reactivate(), lambda: w.cancel()):
        with pytest.raises(shmstore.ResourceNotFound):
            call()
    assert r.read(0, 10) == b"abc"
    w.unlink()  # idempotent
    r.unlink()  # from a read-only handle too


def test_unlinked_name_is_not_resurrected(xbackend: Backend) -> None:
    # After unlink nothing of the resource may reappear in /dev/shm: nobody would remove it.
    w = xbackend.create(capacity=1 << 16)
    r = xbackend.reader(w)
    w.write_at(0, b"abc")
    assert r.read(0, 3) == b"abc"
    w.unlink()
    assert _objects_of(w) == []
    with pytest.raises(shmstore.ResourceNotFound):
        r.wait_range(100, 200, timeout=0.05)  # a waiter after the unlink
    def many_writes() -> None:  # enough to compact the writer's journal
        for i in range(2100):
            w.write_at(10 + 2 * i, b"x")

    with pytest.raises(shmstore.ResourceNotFound):
        many_writes()
    with pytest.raises(shmstore.ResourceNotFound):
        w.write_at(1 << 20, b"grow")
    assert _objects_of(w) == []
    assert xbackend.kind != "mmap" or not os.path.exists(str(w.path) + ".shmstore")


def test_mmap_unlink_removes_file_and_sidecar(tmp_path: Path) -> None:
    # Resource.unlink: "every segment and semaphore of its name (for mmap the data file and
    # its sidecar)".
    p = tmp_path / "gone.bin"
    w = shmstore.create(backend="mmap", path=p)
    try:
        w.write_at(0, b"downloaded")
        w.commit()
        w.unlink()
        assert not p.exists()
        assert not os.path.exists(str(p) + ".shmstore")
        with pytest.raises(shmstore.ResourceNotFound):
            shmstore.open(backend="mmap", path=p)
        assert w.read(0, 100) == b"downloaded"
    finally:
        w.close()


@pytest.mark.parametrize("bad", ["", "a\x00b", "x" * 256, "é" * 128])
def test_invalid_names(bad: str) -> None:
    with pytest.raises(shmstore.InvalidName):
        shmstore.create(bad)
    with pytest.raises(shmstore.InvalidName):
        shmstore.open(bad)


def test_bad_mode_and_backend(name: str) -> None:
    with pytest.raises(ValueError, match="mode"):
        shmstore.open(name, mode="w")
    with pytest.raises(ValueError, match="backend"):
        shmstore.create(name, backend="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mem"):
        shmstore.open(backend="mem")
    with pytest.raises(shmstore.InvalidRange):
        shmstore.create(name, capacity=-1)
    assert not any(name in e for e in os.listdir("/dev/shm"))


def test_non_string_name_is_invalid() -> None:
    with pytest.raises(shmstore.InvalidName):
        shmstore.create(42)  # type: ignore[arg-type]


def test_longest_valid_name(name: str) -> None:
    long = (name + "-" + "n" * 255)[:255]
    w = shmstore.create(long, capacity=4096)
    try:
        w.write_at(0, b"long")
        with shmstore.open(long) as r:
            assert r.read(0, 4) == b"long"
            assert r.name == long
        with pytest.raises(shmstore.ResourceNotFound):
            shmstore.open(long[:-1])
    finally:
        w.unlink()
        w.close()


def test_mmap_create_existing_path(tmp_path: Path) -> None:
    p = tmp_path / "exists.bin"
    p.write_bytes(b"user data")
    with pytest.raises(shmstore.ResourceExists):
        shmstore.create(backend="mmap", path=p)
    assert p.read_bytes() == b"user data"
    assert not os.path.exists(str(p) + ".shmstore")


def test_mmap_open_missing_path(tmp_path: Path) -> None:
    with pytest.raises(shmstore.ResourceNotFound):
        shmstore.open(backend="mmap", path=tmp_path / "missing.bin")
    with pytest.raises(shmstore.ResourceNotFound):
        shmstore.open(backend="mmap", path=tmp_path / "missing.bin", mode="r+")


def test_mmap_empty_path_is_invalid() -> None:
    with pytest.raises(shmstore.InvalidName):
        shmstore.create(backend="mmap", path="")


# ------------------------------------------------------------------------------ mmap specifics
def test_mmap_plain_file_opens_committed(tmp_path: Path) -> None:
    p = tmp_path / "plain.bin"
    data = pattern(10_000, 3)
    p.write_bytes(data)
    r = shmstore.open(path=p, backend="mmap")
    with closing_all(r):
        assert r.writable is False
        assert r.status == ResourceStatus.Committed(10_000, 10_000)
        assert r.wait_range(0, 10_000) is WaitOutcome.READY
        assert r.wait_range(9_990, 20_000) is WaitOutcome.READY
        assert r.wait_range(10_000, 10_001) is WaitOutcome.EOF
        assert r.read(0, 20_000) == data
        assert r.read(9_995, 10) == data[9_995:]
        assert bytes(r.view(100, 50)) == data[100:150]
        assert r.contains_range(0, 10_000) is True
        assert r.next_gap(0, 20_000) is None
        with pytest.raises(shmstore.ReadOnlyError):
            r.write_at(0, b"x")
        with pytest.raises(shmstore.ReadOnlyError):
            r.reactivate()
    assert p.read_bytes() == data


def test_mmap_plain_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.bin"
    p.write_bytes(b"")
    r = shmstore.open(path=p, backend="mmap")
    with closing_all(r):
        assert r.status == ResourceStatus.Committed(0, 0)
        assert r.wait_range(0, 1) is WaitOutcome.EOF
        assert r.read(0, 10) == b""


def test_mmap_plain_file_adopted_for_writing(tmp_path: Path) -> None:
    p = tmp_path / "adopt.bin"
    p.write_bytes(b"old contents")
    w = shmstore.open(path=p, backend="mmap", mode="r+")
    try:
        assert w.status == ResourceStatus.Committed(12, 12)
        w.reactivate()
        w.write_at(0, b"NEW")
        w.commit()
        assert p.read_bytes() == b"NEW contents"
        with shmstore.open(path=p, backend="mmap") as r:
            assert r.read(0, 100) == b"NEW contents"
    finally:
        w.unlink()
        w.close()


@pytest.mark.parametrize(("final_len", "want"), [(None, 300), (300, 300), (1000, 1000), (120, 120),
                                                 (0, 0)])
def test_mmap_data_file_holds_exactly_the_bytes(tmp_path: Path, final_len: int | None,
                                                want: int) -> None:
    b = Backend("mmap", tmp_path, [])
    try:
        w = b.create(capacity=1 << 16)
        r = b.reader(w)
        w.write_at(0, pattern(100))
        w.write_at(200, pattern(100, 9))
        w.commit(final_len)
        assert w.path is not None
        assert os.path.getsize(w.path) == want
        full = pattern(100) + bytes(100) + pattern(100, 9) + bytes(700)
        with open(w.path, "rb") as f:
            assert f.read() == full[:want]
        assert r.read(0, 2000) == full[:want]
    finally:
        for h in b.made:
            h.unlink()
            h.close()


def test_mmap_data_file_after_rewrite(tmp_path: Path) -> None:
    b = Backend("mmap", tmp_path, [])
    try:
        w = b.create()
        w.write_at(0, b"first version")
        w.commit()
        w.reactivate()
        w.write_at(0, b"FIRST")
        w.write_at(13, b" and more")
        w.commit()
        assert w.path is not None
        assert os.path.getsize(w.path) == 22
        with open(w.path, "rb") as f:
            assert f.read() == b"FIRST version and more"
    finally:
        for h in b.made:
            h.unlink()
            h.close()


def test_mmap_resume_after_every_handle_closed(tmp_path: Path) -> None:
    p = tmp_path / "resume.bin"
    w = shmstore.create(backend="mmap", path=p, capacity=1 << 16)
    try:
        w.write_at(0, pattern(100))
        w.write_at(300, pattern(50, 5))
        with shmstore.open(path=p, backend="mmap") as r:
            assert r.ranges() == [(0, 100), (300, 350)]
        w.close()  # every handle is closed now
        w2 = shmstore.open(path=p, backend="mmap", mode="r+")
        with closing_all(w2):
            assert w2.status == ResourceStatus.Active()
            assert w2.ranges() == [(0, 100), (300, 350)]
            assert w2.next_gap(0, 400) == (100, 300)
            with shmstore.open(path=p, backend="mmap") as r:
                assert r.ranges() == [(0, 100), (300, 350)]
                assert r.read(0, 100) == pattern(100)
                assert r.read(300, 50) == pattern(50, 5)
                w2.write_at(100, pattern(200, 7))
                w2.commit()
                assert r.status == ResourceStatus.Committed(None, 350)
                assert r.read(0, 1000) == pattern(100) + pattern(200, 7) + pattern(50, 5)
            assert p.read_bytes() == pattern(100) + pattern(200, 7) + pattern(50, 5)
    finally:
        w.unlink()
        w.close()
    assert not os.path.exists(str(p) + ".shmstore")


def test_shm_resume_after_every_handle_closed(name: str) -> None:
    w = shmstore.create(name, capacity=1 << 16)
    try:
        w.write_at(0, b"part one|")
        w.close()
        with shmstore.open(name, mode="r+") as w2:
            assert w2.ranges() == [(0, 9)]
            w2.write_at(9, b"part two")
            w2.commit()
        with shmstore.open(name) as r:
            assert r.read(0, 100) == b"part one|part two"
    finally:
        w.unlink()
