"""Writers SIGKILLed at random instants and at every store of the publish and lifecycle
protocols. After any crash: no covered byte holds anything but what was written, waits on
missing bytes raise WriterDied (never hang), the committed state is whole, and a new writer
(``mode="r+"``) resumes and commits."""

from __future__ import annotations

import random
from typing import Any

import pytest

import shmstore
from shmstore import ResourceStatus, WaitOutcome

from . import _workers as W
from .conftest import Harness

KINDS = ["shm", "mmap"]


def check_covered_bytes(r: shmstore.Resource) -> list[tuple[int, int]]:
    cov = r.ranges()
    for s, e in cov:
        bad = W.bad_bytes(r.read(s, e - s), s)
        assert bad is None, f"covered range [{s}, {e}) holds bytes never written: {bad}"
    return cov


def resume_and_commit(spec: W.Spec, total: int) -> None:
    """A new writer fills every gap of [0, total) and commits; the whole is verified."""
    w = W.open_spec(spec, "r+")
    try:
        while (gap := w.next_gap(0, total)) is not None:
            s, e = gap
            w.write_at(s, W.pattern(s, e - s))
        w.commit()
        st = w.status
        assert st == ResourceStatus.Committed(None, total), (
            f"resumed commit(None) published {st}, the covered extent is {total}")
    finally:
        w.close()
    r = W.open_spec(spec)
    try:
        assert r.wait_range(0, total) is WaitOutcome.READY
        assert W.bad_bytes(r.read(0, total + 1), 0) is None
    finally:
        r.close()


# -------------------------------------------------------------------- random instants
def _chunks(rng: random.Random, total: int) -> list[tuple[int, int]]:
    out, pos = [], 0
    while pos < total:
        n = min(total - pos, rng.randint(1, 200))
        out.append((pos, n))
        pos += n
    rng.shuffle(out)
    return out


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("kind", "trials"), [
    ("shm", 6), ("mmap", 6),
    pytest.param("shm", 60, marks=pytest.mark.slow),
    pytest.param("mmap", 60, marks=pytest.mark.slow),
])
def test_writer_sigkilled_at_random_instants(H: Harness, kind: str, trials: int) -> None:
    """Trials: a writer process publishes ~3,000 shuffled chunks (growing the resource,
    compacting its journal), then rewrites random chunks forever; the parent kills it at a
    random point after it signals progress. A waiter parked elsewhere before the kill must
    get WriterDied; the covered bytes must all be the written pattern; a wait on a gap raises
    WriterDied at once; a new writer resumes, fills the gaps and commits the exact extent."""
    rng = random.Random(20240607 + trials)
    total = 300_000
    for trial in range(trials):
        spec = H.spec(kind)
        H.create(spec, capacity=4096).close()  # the child will be the only writer
        chunks = _chunks(rng, total)
        threshold = rng.choice([1, 2, 50, 127, 129, 1000, 2047, 2049, 2500,
                                len(chunks), len(chunks) + 300])
        ctx = H.ctx()
        ready = ctx.Event()
        H.start(f"parked{trial}", W.parked_waiter, spec, total, total + 10, ready)
        parent_end, child_end = ctx.Pipe()
        p = H.start(f"writer{trial}", W.death_writer, spec, child_end, threshold, chunks,
                    trial)
        assert ready.wait(30)
        assert parent_end.poll(30), "writer never reached its threshold"
        parent_end.recv()
        W.spin(rng.randrange(0, 200_000))  # land the kill anywhere in the next writes
        H.kill(p)
        assert p.exitcode == -9, f"trial {trial}: writer exit code {p.exitcode}"
        assert H.results([f"parked{trial}"])[f"parked{trial}"] == "WriterDied"

        r = W.open_spec(spec)
        try:
            cov = check_covered_bytes(r)
            assert not r.writers_alive()
            gap = r.next_gap(0, total + 10)
            assert gap is not None
            with pytest.raises(shmstore.WriterDied):
                r.wait_range(*gap)
            assert sum(e - s for s, e in cov) <= total
        finally:
            r.close()  # mmap: every process is gone before the resume
        resume_and_commit(spec, total + 10)


# ------------------------------------------------------------ every store of a publish
@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("point", W.PUBLISH_POINTS + W.COMPACT_POINTS)
def test_writer_killed_at_each_step_of_a_publish(H: Harness, kind: str, point: str) -> None:
    """The writer dies just before each store of publishing [200, 300) (ring entry fields,
    head, extent) or inside the journal compaction that publish triggers. The coverage is
    then either without [200, 300) or with it, never a torn entry; and a resumed writer's
    commit(None) must publish the covered extent."""
    spec = H.spec(kind)
    H.create(spec, capacity=4096).close()
    if point in W.COMPACT_POINTS:
        base = [(16 * i, 4) for i in range(2048)]  # the next publish compacts the journal
        last = (16 * 2048, 100)
    else:
        base = [(0, 100)]
        last = (200, 100)
    p = H.start("writer", W.crashpoint_writer, spec, point, base, last)
    p.join(30)
    assert p.exitcode == -9
    r = W.open_spec(spec)
    try:
        cov = check_covered_bytes(r)
        want_base = sorted((o, o + n) for o, n in base)
        with_last = sorted([*want_base, (last[0], last[0] + last[1])])
        assert cov in (want_base, with_last), cov
        with pytest.raises(shmstore.WriterDied):
            r.wait_range(0, last[0] + last[1])
    finally:
        r.close()
    # The resumed writer fills the gaps below the last write; the last write itself is
    # either covered (kept) or rewritten.
    resume_and_commit(spec, last[0] + last[1])


# ------------------------------------------------- every store of a lifecycle change
LENGTH = 10_000


def _prepare(H: Harness, kind: str, op: str) -> W.Spec:
    spec = H.spec(kind)
    c = H.create(spec, capacity=4096)
    if op == "grow":
        c.write_at(0, W.pattern(0, 100))
    else:
        c.write_at(0, W.pattern(0, LENGTH))
        if op != "commit":
            c.commit()
    c.close()
    return spec


def _check_after_crash(spec: W.Spec, op: str) -> str | None:
    """None if the state after the crash is whole and resumable, else what is wrong."""
    d0 = W.pattern(0, LENGTH)
    d1 = bytes([W.gen_byte(2)]) * LENGTH
    r = W.open_spec(spec)
    try:
        st = r.status
        if op == "grow":
            cov = check_covered_bytes(r)
            if not isinstance(st, ResourceStatus.Active) or (0, 100) not in cov:
                return f"{st}, coverage {cov}"
        else:
            allowed = {"commit": [d0], "reactivate": [d0], "rewrite_commit": [d0, d1]}[op]
            got = r.read(0, LENGTH)
            if got not in allowed:
                return f"{st}: read(0, {LENGTH}) returned {len(got)} bytes of another state"
            if not isinstance(st, ResourceStatus.Active | ResourceStatus.Committed):
                return f"status {st}"
            if isinstance(st, ResourceStatus.Committed) and st.length != LENGTH:
                return f"committed with length {st.length}"
            if not r.contains_range(0, LENGTH):
                return f"{st} but contains_range(0, {LENGTH}) is False"
            out = r.wait_range(0, LENGTH, timeout=5)
            if out is not WaitOutcome.READY:
                return f"{st} but wait_range(0, {LENGTH}) -> {out}"
    finally:
        r.close()
    # resume
    w = W.open_spec(spec, "r+")
    try:
        if op == "grow":
            w.write_at(4096, W.pattern(4096, 100))
            w.write_at(100, W.pattern(100, 3996))
            w.commit()
            want, n = W.pattern(0, 4196), 4196
        else:
            if op == "reactivate":
                if isinstance(w.status, ResourceStatus.Committed):
                    w.reactivate()
                w.write_at(0, d1)
            w.commit()
            want, n = (d0 if op == "commit" else d1), LENGTH
        got = w.read(0, n + 1)
        if got != want:
            return f"after resume+commit: read {len(got)} bytes, not the expected data"
    finally:
        w.close()
    return None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("op", ["commit", "rewrite_commit", "reactivate", "grow"])
def test_writer_killed_at_each_store_of_a_lifecycle_change(
        H: Harness, kind: str, op: str) -> None:
    """The writer dies just before each store it makes into the control block during
    ``op`` (inside the meta lock). Readers must see the state before or after ``op`` (never
    a committed resource that lost its bytes or its coverage), and a new writer must resume
    and commit."""
    spec = _prepare(H, kind, op)
    H.start("dry", W.lifecycle_crash_writer, spec, op, None, LENGTH)
    stores = H.results(["dry"])["dry"]
    # A lifecycle change is the inactive record (one slice store) and the flip, plus the
    # slot's stores for a reactivate: at least two kill points.
    assert stores >= 2
    failures: list[str] = []
    for k in range(stores):
        spec = _prepare(H, kind, op)
        p = H.start(f"k{k}", W.lifecycle_crash_writer, spec, op, k, LENGTH)
        p.join(30)
        assert p.exitcode == -9, f"store {k}: writer exit code {p.exitcode}"
        try:
            why = _check_after_crash(spec, op)
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
        if why:
            failures.append(f"killed before store {k}/{stores}: {why}")
    assert not failures, "\n".join(failures)


@pytest.mark.timeout(60)
def test_mmap_rewrite_commit_killed_after_the_rename(H: Harness) -> None:
    """mmap rewrite: commit renames the staged generation over the data path, fsyncs the
    directory, then publishes the new generation and inode in the control block. A writer
    killed between the rename and that update must leave a resource whose committed bytes
    stay readable (old or new generation) and that a new writer can resume and commit."""
    spec = H.spec("mmap")
    c = H.create(spec, capacity=4096)
    c.write_at(0, W.pattern(0, LENGTH))
    c.commit(LENGTH)
    c.close()
    p = H.start("writer", W.mmap_rename_crash_writer, spec, LENGTH)
    p.join(30)
    assert p.exitcode == -9
    d0, d1 = W.pattern(0, LENGTH), bytes([W.gen_byte(2)]) * LENGTH
    r = W.open_spec(spec)
    try:
        assert r.read(0, LENGTH) in (d0, d1)
    finally:
        r.close()
    w = W.open_spec(spec, "r+")
    try:
        if isinstance(w.status, ResourceStatus.Committed):
            w.reactivate()
        w.write_at(0, d1)
        w.commit(LENGTH)
        assert w.read(0, LENGTH) == d1
    finally:
        w.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_no_writer_died_for_bytes_the_last_writer_covered_before_closing(
        H: Harness, kind: str) -> None:
    """A waiter checks coverage (missing), then probes liveness. If, in between, the last
    writer publishes exactly those bytes and closes, the waiter must not raise WriterDied:
    the bytes are there. The interleaving is forced by pausing the waiter right before its
    probe."""
    spec = H.spec(kind)
    H.create(spec).close()
    ctx = H.ctx()
    ready, go, wgo, wdone = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
    H.start("writer", W.covered_then_close_writer, spec, wgo, wdone, 64)
    H.start("waiter", W.probe_pause_waiter, spec, ready, go, 64)
    assert ready.wait(30)
    wgo.set()
    assert wdone.wait(30)
    go.set()
    got: dict[str, Any] = H.results(["writer", "waiter"])
    assert got["waiter"] == "READY bad=None", got["waiter"]
