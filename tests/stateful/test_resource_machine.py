"""A Hypothesis state machine over one shm resource, checked against a plain-Python oracle.

The oracle is a bytearray (the bytes of the generation being written), a set of covered
offsets and the lifecycle, following SPEC.md's semantics table:

* active: a wait on covered bytes is READY, anything else blocks (``timeout=0`` -> TimeoutError);
  reads stop at the written extent;
* committed(n): ``0..n`` is available (holes are zeros), ``start >= n`` is EOF, a straddling
  range is READY with short reads; committed(None): covered -> READY, uncovered -> EOF, the
  length is the written extent;
* failed: every wait and read raises ``ResourceFailed(reason)``; a second fail keeps the reason;
* reactivate of a committed resource: a rewrite; readers keep seeing the committed bytes (and
  waits on anything else block) until the next commit; holes of a commit(None) stay holes.

Every observation goes through a separate read-only handle (and, for the status, the writer's
handle too), so the writer's local view never answers for the reader.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import shmstore
from shmstore import ResourceStatus, WaitOutcome

SPAN = 600  # writes land in [0, SPAN + 64)
QUERY = 800  # queries reach past every write and every committed length
SIZE = 1024  # the oracle's bytearray: room for every write and committed length

offsets = st.integers(0, SPAN)
lengths = st.integers(1, 64)
query_start = st.integers(0, QUERY)
query_len = st.integers(1, 120)


@dataclass
class Oracle:
    data: bytearray = field(default_factory=lambda: bytearray(SIZE))
    cov: set[int] = field(default_factory=set)
    state: str = "active"  # active | committed | failed
    final: int = 0
    given: bool = False
    reason: str = ""
    failed_from: str = ""  # the state a failed resource was in before fail()
    rewrite: bool = False  # a reactivated commit whose rewrite is not committed yet
    frozen: bytes = b""  # the committed bytes readers see during a rewrite
    frozen_cov: set[int] = field(default_factory=set)  # ... and which of them are available

    def extent(self) -> int:
        return max(self.cov) + 1 if self.cov else 0

    def covers(self, s: int, e: int) -> bool:
        return all(p in self.cov for p in range(s, e))

    def first_gap(self, s: int, lim: int) -> tuple[int, int] | None:
        p = s
        while p < lim and p in self.cov:
            p += 1
        if p >= lim:
            return None
        q = p
        while q < lim and q not in self.cov:
            q += 1
        return (p, q)

    def runs(self, upto: int | None = None) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for p in sorted(self.cov):
            if upto is not None and p >= upto:
                break
            if out and out[-1][1] == p:
                out[-1] = (out[-1][0], p + 1)
            else:
                out.append((p, p + 1))
        return out

    def status(self) -> ResourceStatus:
        if self.state == "committed":
            return ResourceStatus.Committed(self.final if self.given else None, self.final)
        if self.state == "failed":
            return ResourceStatus.Failed(self.reason)
        return ResourceStatus.Active()

    def frozen_gap(self, s: int, lim: int) -> tuple[int, int] | None:
        saved, self.cov = self.cov, self.frozen_cov
        try:
            return self.first_gap(s, lim)
        finally:
            self.cov = saved

    def start_rewrite(self) -> None:
        """reactivate of a committed resource: a copy of the committed bytes. After
        commit(final_len) every byte below it is committed; after commit(None) only the
        covered ones (holes stay holes, in the frozen view and after the next commit)."""
        n = self.final
        self.frozen = bytes(self.data[:n])
        self.data = bytearray(self.frozen) + bytearray(SIZE - n)
        self.cov = set(range(n)) if self.given else {p for p in self.cov if p < n}
        self.frozen_cov = set(self.cov)
        self.rewrite = True
        self.state = "active"
        self.final = 0
        self.given = False
        self.reason = ""


class ResourceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.name = f"test-sm-{uuid.uuid4().hex[:12]}"
        self.w: shmstore.Resource | None = None
        self.r: shmstore.Resource | None = None
        self.m = Oracle()

    def _create(self) -> shmstore.Resource:
        return shmstore.create(self.name, capacity=4096)

    def _open(self) -> shmstore.Resource:
        return shmstore.open(self.name)

    @initialize()
    def create(self) -> None:
        self.w = self._create()
        self.r = self._open()

    def teardown(self) -> None:
        if self.r is not None:
            self.r.close()
        if self.w is not None:
            self.w.unlink()
            self.w.close()

    # -------------------------------------------------------------------- helpers
    @property
    def writer(self) -> shmstore.Resource:
        assert self.w is not None
        return self.w

    @property
    def reader(self) -> shmstore.Resource:
        assert self.r is not None
        return self.r

    # -------------------------------------------------------------------- writes
    @rule(off=offsets, n=lengths, seed=st.integers(0, 255))
    def write_at(self, off: int, n: int, seed: int) -> None:
        payload = bytes((seed + 31 * i) % 256 for i in range(n))
        m = self.m
        if m.state == "failed":
            with pytest.raises(shmstore.ResourceFailed) as info:
                self.writer.write_at(off, payload)
            assert info.value.reason == m.reason
            return
        if m.state == "committed":
            with pytest.raises(shmstore.ReadOnlyError):
                self.writer.write_at(off, payload)
            return
        self.writer.write_at(off, payload)
        m.data[off : off + n] = payload
        m.cov.update(range(off, off + n))

    @precondition(lambda self: self.m.state == "active")
    @rule(n=lengths, seed=st.integers(0, 255))
    def append(self, n: int, seed: int) -> None:
        """Write at the extent: keeps coverage contiguous, so commit(None) has no holes."""
        off = min(self.m.extent(), SPAN)
        self.write_at(off, n, seed)

    @precondition(lambda self: self.m.state == "active")
    @rule(start=st.integers(0, 200), count=st.integers(130, 300))
    def burst(self, start: int, count: int) -> None:
        """More single-byte writes than the ring holds: the reader must resync."""
        for k in range(count):
            off = start + 2 * k
            self.writer.write_at(off, b"\x5a")
            self.m.data[off] = 0x5A
            self.m.cov.add(off)

    # -------------------------------------------------------------------- lifecycle
    @rule(final_len=st.one_of(st.none(), st.integers(0, QUERY - 50)))
    def commit(self, final_len: int | None) -> None:
        m = self.m
        if m.state == "failed":
            with pytest.raises(shmstore.ResourceFailed):
                self.writer.commit(final_len)
            return
        if m.state == "committed":
            if final_len is None or final_len == m.final:
                self.writer.commit(final_len)
            else:
                with pytest.raises(shmstore.ReadOnlyError):
                    self.writer.commit(final_len)
            return
        self.writer.commit(final_len)
        m.final = m.extent() if final_len is None else final_len
        m.given = final_len is not None
        m.state = "committed"
        m.rewrite = False
        m.frozen = b""
        m.frozen_cov = set()

    @rule()
    def reactivate(self) -> None:
        m = self.m
        self.writer.reactivate()
        if m.state == "committed":
            m.start_rewrite()
        elif m.state == "failed":
            if m.failed_from == "committed":  # even committed empty: a rewrite
                m.start_rewrite()
            else:
                # failed while active: active again, coverage kept
                m.state = "active"
                m.reason = ""
                m.final = 0
                m.given = False

    @rule(reason=st.sampled_from(["disk on fire", "upstream 503", "checksum mismatch"]),
          go=st.integers(0, 2))
    def fail(self, reason: str, go: int) -> None:
        if go:
            return  # fail is terminal-ish: drawn as often as the others, taken a third of the time
        m = self.m
        self.writer.fail(reason)
        if m.state != "failed":
            m.failed_from = m.state
            m.state = "failed"
            m.reason = reason

    @rule()
    def reopen_reader(self) -> None:
        """A late joiner: a fresh handle rebuilds the coverage from shared state."""
        self.reader.close()
        self.r = self._open()

    # -------------------------------------------------------------------- observations
    @rule(off=query_start, size=st.integers(0, 200), via_view=st.booleans())
    def read(self, off: int, size: int, via_view: bool) -> None:
        m = self.m
        r = self.reader
        if m.state == "failed" and size:
            with pytest.raises(shmstore.ResourceFailed) as info:
                r.view(off, size) if via_view else r.read(off, size)
            assert info.value.reason == m.reason
            return
        if m.state == "committed":
            want = bytes(m.data[off : max(off, min(off + size, m.final))])
        elif m.rewrite:
            want = m.frozen[off : off + size]
        else:
            want = bytes(m.data[off : max(off, min(off + size, m.extent()))])
        got = bytes(r.view(off, size)) if via_view else r.read(off, size)
        assert got == want, (off, size)

    @rule(start=query_start, n=query_len)
    def wait_range(self, start: int, n: int) -> None:
        m = self.m
        end = start + n
        r = self.reader
        if m.state == "failed":
            with pytest.raises(shmstore.ResourceFailed) as info:
                r.wait_range(start, end, timeout=0)
            assert info.value.reason == m.reason
            return
        if m.state == "committed":
            if start >= m.final:
                want = WaitOutcome.EOF
            elif m.given or m.covers(start, min(end, m.final)):
                want = WaitOutcome.READY
            else:
                want = WaitOutcome.EOF
            assert r.wait_range(start, end, timeout=0) is want, (start, end)
            return
        cov = m.frozen_cov if m.rewrite else m.cov
        ready = all(p in cov for p in range(start, end))
        if ready:
            assert r.wait_range(start, end, timeout=0) is WaitOutcome.READY, (start, end)
        else:
            with pytest.raises(TimeoutError):
                r.wait_range(start, end, timeout=0)

    @precondition(lambda self: self.m.state != "failed")
    @rule(start=query_start, n=st.integers(0, 120))
    def contains_range(self, start: int, n: int) -> None:
        m = self.m
        end = start + n
        if n == 0:
            want = True
        elif m.state == "committed":
            want = end <= m.final and (m.given or m.covers(start, end))
        elif m.rewrite:
            want = all(p in m.frozen_cov for p in range(start, end))
        else:
            want = m.covers(start, end)
        assert self.reader.contains_range(start, end) is want, (start, end)

    @precondition(lambda self: self.m.state != "failed")
    @rule(start=query_start, n=st.integers(0, 300))
    def next_gap(self, start: int, n: int) -> None:
        m = self.m
        limit = start + n
        want: tuple[int, int] | None
        if m.state == "committed":
            upper = min(limit, m.final)
            want = None if m.given or start >= upper else m.first_gap(start, upper)
        elif m.rewrite:
            want = m.frozen_gap(start, limit)
        else:
            want = m.first_gap(start, limit)
        assert self.reader.next_gap(start, limit) == want, (start, limit)

    @rule(start=query_start)
    def empty_range(self, start: int) -> None:
        if self.m.state != "failed":
            assert self.reader.wait_range(start, start, timeout=0) is WaitOutcome.READY
        assert self.reader.contains_range(start, start) is True
        if self.m.state == "active":
            self.writer.write_at(start, b"")  # a no-op: the oracle does not change

    # -------------------------------------------------------------------- invariants
    @invariant()
    def status_agrees(self) -> None:
        if self.w is None:
            return
        want = self.m.status()
        assert self.reader.status == want
        assert self.writer.status == want

    @invariant()
    def coverage_agrees(self) -> None:
        if self.r is None:
            return
        m = self.m
        if m.state == "active":
            if m.rewrite:
                saved, m.cov = m.cov, m.frozen_cov
                want = m.runs()
                m.cov = saved
            else:
                want = m.runs()
            assert self.reader.ranges() == want
        elif m.state == "committed":
            # ranges(): the available ranges - every byte below a given final_len, else the
            # covered ones (cut at the length)
            got = [(s, min(e, m.final)) for s, e in self.reader.ranges() if s < m.final]
            if m.given:
                assert got == ([(0, m.final)] if m.final else [])
            else:
                assert got == m.runs(upto=m.final)


ResourceMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestResourceMachine = pytest.mark.timeout(120)(ResourceMachine.TestCase)


class MmapResourceMachine(ResourceMachine):
    """The same machine on the mmap backend (staged copies, truncation, renames)."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="shmstore-sm-")
        self.path = f"{self.dir}/data.bin"

    def _create(self) -> shmstore.Resource:
        return shmstore.create(backend="mmap", path=self.path, capacity=4096)

    def _open(self) -> shmstore.Resource:
        return shmstore.open(backend="mmap", path=self.path)

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


MmapResourceMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestMmapResourceMachine = pytest.mark.timeout(120)(MmapResourceMachine.TestCase)
