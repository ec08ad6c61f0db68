"""SIGKILL of real appending processes, on disk and in shared memory, with the fork, spawn
and forkserver start methods.

A writer child opens the log (``mode="a"``: after a kill this is the takeover, and runs
recovery) and appends deterministic payloads in random batches with random fsync flags,
telling the parent every acknowledged append (the offset after it) through a pipe. The
parent kills it at a random moment (after a random number of acknowledgements, plus a random
extra delay: randomness, not synchronisation), reads what the pipe still holds, and checks
with a fresh reader: every acknowledged record is there (``fsync=False`` ones too: they are
in the page cache), every record served is the payload its writer appended at that offset
(the payload names its offset and its writer's generation), ``verify()`` passes. The next
child takes over (reporting where recovery left the log: never below what was acknowledged
or served) and appends. At the end the parent takes over and appends.

A reader child parked in ``wait_for(next_offset)`` (it tells the parent when it really
sleeps: the waker's ``wait`` is wrapped) while the writer is killed gets ``WriterDied``; a
new writer takes over and appends, and the reader's next ``wait_for`` returns with the new
record, on the same handle; parked again, a live writer's append wakes it.

``SHMSTORE_LOG_TRIALS`` multiplies the number of kills.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import random
import signal
import struct
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shmstore import Log, WriterDied
from shmstore import resource as R
from shmstore.log import format as F
from shmstore.log.faults import drop_live_objects
from shmstore.log.fileio import FileIO
from shmstore.log.log import _live_name

SCALE = max(1, int(os.environ.get("SHMSTORE_LOG_TRIALS", "1")))
METHODS = ["fork", "spawn", "forkserver"]
KILLS = {"fork": 16, "spawn": 5, "forkserver": 5}
EARLY = {"fork": 0.02, "spawn": 0.4, "forkserver": 0.1}  # how long a child takes to start
DEADLINE = 30.0  # a child that says nothing for this long hangs

Spec = tuple[str, str]  # ("disk", path) or ("shm", name)


# ------------------------------------------------------------------------------ shared
def payload(offset: int, gen: int) -> bytes:
    """What writer generation ``gen`` appends at ``offset``: names both, then filler (some
    compressible, some not, some empty)."""
    r = random.Random(offset * 1_000_003 + gen)
    head = struct.pack("<QI", offset, gen)
    k = r.random()
    if k < 0.05:
        return head
    if k < 0.5:
        return head + bytes([r.randrange(256)]) * r.randint(0, 1500)
    return head + r.randbytes(r.randint(0, 800))


def open_log(spec: Spec, mode: str = "r") -> Log:
    kind, key = spec
    if kind == "disk":
        return Log.open(path=key, mode=mode)
    return Log.open(key, mode=mode)


def create_log(spec: Spec, rng: random.Random) -> None:
    kind, key = spec
    kw: dict[str, Any] = {"segment_size": rng.choice([4096, 8192, 32768]),
                          "checkpoint_every": rng.choice([1, 3, 16]),
                          "compress": rng.random() < 0.5}
    log = Log.create(path=key, **kw) if kind == "disk" else Log.create(key, **kw)
    log.close()


def log_dir(spec: Spec) -> str:
    with open_log(spec) as r:
        return r.path


# ------------------------------------------------------------------------------ children
def appender(conn: Any, spec: Spec, gen: int, seed: int) -> None:
    """Take the log over and append forever, acknowledging each append."""
    rng = random.Random(seed)
    log = open_log(spec, "a")
    conn.send(("open", log.next_offset, dict(log.recovered)))
    while True:
        off = log.next_offset
        batch = [payload(off + i, gen) for i in range(rng.randint(1, 8))]
        nxt, _head = log.append(batch, fsync=rng.random() < 0.3)
        conn.send(("ack", nxt))


def commanded_writer(conn: Any, spec: Spec, gen: int) -> None:
    """Take the log over, report, then append ``n`` records per ``("append", n)`` command."""
    log = open_log(spec, "a")
    conn.send(("open", log.next_offset, dict(log.recovered)))
    while True:
        cmd, n = conn.recv()
        assert cmd == "append"
        off = log.next_offset
        nxt, _ = log.append([payload(off + i, gen) for i in range(n)], fsync=bool(n % 2))
        conn.send(("ack", nxt))


def waiting_reader(conn: Any, spec: Spec) -> None:
    """One reader handle; per ``("wait", offset)``: ``wait_for`` it, reporting ``parked``
    when the wait really goes to sleep, then ``("ready", end, [payload at offset])`` or
    ``("died",)``."""
    from shmstore.ipc import semaphores

    parked = [False]
    orig = semaphores.NamedWaker.wait

    def wait(self: Any, timeout: float) -> bool:
        if not parked[0]:
            parked[0] = True
            conn.send(("parked",))
        return orig(self, timeout)

    semaphores.NamedWaker.wait = wait  # type: ignore[method-assign]
    r = open_log(spec)
    conn.send(("open", r.next_offset))
    while True:
        cmd, offset = conn.recv()
        if cmd == "stop":
            r.close()
            conn.send(("stopped",))
            return
        parked[0] = False
        try:
            end = r.wait_for(offset, timeout=DEADLINE)
        except WriterDied:
            conn.send(("died",))
            continue
        recs = r.read_from(offset, 1)
        conn.send(("ready", end, bytes(recs[0].payload)))


class KillAtIO(FileIO):
    """A ``FileIO`` whose process SIGKILLs itself at its ``kill_at``-th state-changing
    operation (counting from 1; reads change nothing, a kill before one is a kill before the
    next change): before it, or for a ``pwrite`` with ``torn`` after half of its bytes (what
    a kill between the partial writes of one ``pwrite`` leaves)."""

    def __init__(self, kill_at: int, torn: bool, durable: bool) -> None:
        super().__init__(durable=durable)
        self.kill_at, self.torn, self.n = kill_at, torn, 0
        self.kinds: list[str] = []

    def _step(self, kind: str, tearable: bool = False) -> bool:
        """Count an operation; die at ``kill_at`` (True instead: a pwrite to tear)."""
        self.n += 1
        self.kinds.append(kind)
        if self.n != self.kill_at:
            return False
        if not (tearable and self.torn):
            os.kill(os.getpid(), signal.SIGKILL)
        return True

    def open(self, path: str, *, create: bool = False, **kw: Any) -> int:  # type: ignore[override]
        if create:
            self._step("create")
        return super().open(path, create=create, **kw)

    def pwrite(self, fd: int, data: Any, offset: int) -> None:
        if self._step("pwrite", tearable=True):
            raw = bytes(data)
            super().pwrite(fd, raw[:len(raw) // 2], offset)
            os.kill(os.getpid(), signal.SIGKILL)
        super().pwrite(fd, data, offset)

    def truncate(self, fd: int, size: int) -> None:
        self._step("truncate")
        super().truncate(fd, size)

    def fsync(self, fd: int) -> None:
        self._step("fsync")
        super().fsync(fd)

    def fsync_dir(self, path: str) -> None:
        self._step("fsync_dir")
        super().fsync_dir(path)

    def rename(self, src: str, dst: str) -> None:
        self._step("rename")
        super().rename(src, dst)

    def unlink(self, path: str) -> None:
        self._step("unlink")
        super().unlink(path)


STEP_APPENDS = 12


def stepped_appender(conn: Any, spec: Spec, gen: int, seed: int, kill_at: int,
                     torn: bool) -> None:
    """Take the log over through a ``KillAtIO`` and append ``STEP_APPENDS`` batches (the
    same ones for the same seed), unless it kills us first; then report ``done``."""
    rng = random.Random(seed)
    kind, key = spec
    io = KillAtIO(kill_at, torn, durable=kind == "disk")
    log = (Log.open(path=key, mode="a", _io=io) if kind == "disk"
           else Log.open(key, mode="a", _io=io))
    conn.send(("open", log.next_offset, dict(log.recovered)))
    for _ in range(STEP_APPENDS):
        off = log.next_offset
        batch = [payload(off + i, gen) for i in range(rng.randint(1, 8))]
        nxt, _head = log.append(batch, fsync=rng.random() < 0.3)
        conn.send(("ack", nxt))
    conn.send(("done", io.kinds))


# ------------------------------------------------------------------------------ parent side
def child_entry(conn: Any, fn: Any, *args: Any) -> None:
    """Run ``fn(conn, *args)``; an error goes to the parent (``("error", text)``) first."""
    try:
        fn(conn, *args)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
        raise


class ChildFailed(AssertionError):
    pass


class Child:
    """A child process and the parent's end of its pipe."""

    def __init__(self, ctx: Any, fn: Any, *args: Any) -> None:
        self.conn, child_end = ctx.Pipe()
        self.proc = ctx.Process(target=child_entry, args=(child_end, fn, *args), daemon=True)
        self.proc.start()
        child_end.close()

    def recv(self, what: str, deadline: float = DEADLINE) -> Any:
        if not self.conn.poll(deadline):
            raise AssertionError(f"no {what} from the child within {deadline} s (a hang; "
                                 f"exit code {self.proc.exitcode})")
        try:
            msg = self.conn.recv()
        except EOFError:
            raise AssertionError(f"the child ended ({self.proc.exitcode}) before {what}"
                                 ) from None
        if msg[0] == "error":
            raise ChildFailed(f"the child failed before {what}: {msg[1]}")
        return msg

    def kill(self) -> None:
        if self.proc.exitcode is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join()  # on the pid: no grandchild holds anything of ours

    def drain(self) -> list[Any]:
        """What the (dead) child sent before it died (``ChildFailed`` if it failed)."""
        out = []
        while True:
            try:
                if not self.conn.poll(0):
                    break
                out.append(self.conn.recv())
            except (EOFError, OSError):
                break
        for msg in out:
            if msg[0] == "error":
                raise ChildFailed(f"the child failed: {msg[1]}")
        return out

    def close(self) -> None:
        self.kill()
        self.conn.close()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    made: list[Child] = []
    try:
        yield made
    finally:
        for c in made:
            c.close()


def gen_of(offset: int, starts: list[tuple[int, int]]) -> int:
    """The generation that wrote ``offset``: the last writer that started at or before it."""
    g = starts[0][1]
    for start, gen in starts:
        if start <= offset:
            g = gen
    return g


def expected(n: int, starts: list[tuple[int, int]]) -> list[bytes]:
    return [payload(i, gen_of(i, starts)) for i in range(n)]


def chain_of(payloads: list[bytes]) -> bytes | None:
    h = F.ZERO_HASH
    for p in payloads:
        h = F.chain(h, F.KIND_DATA, p)
    return h if payloads else None


def check_log(spec: Spec, starts: list[tuple[int, int]], acked: int, rng: random.Random,
              who: str) -> int:
    """A fresh reader serves every acknowledged record, only the right payloads, and its
    ``verify()`` passes. Returns how many it serves."""
    with open_log(spec) as r:
        served: list[bytes] = []
        while recs := r.read_from(len(served), rng.choice([1, 700, 1 << 20])):
            assert recs[0].offset == len(served)
            served += [bytes(x.payload) for x in recs]
        want = expected(len(served), starts)
        for i, (got, exp) in enumerate(zip(served, want, strict=True)):
            assert got == exp, (f"{who}: record {i} is {got[:12]!r}..., appended "
                                f"{exp[:12]!r}... (generation {gen_of(i, starts)})")
        assert len(served) >= acked, (f"{who}: {len(served)} records served, {acked} "
                                      "acknowledged")
        assert r.verify() == (len(served), chain_of(want))
        assert r.latest_chain_hash == chain_of(want)
        return len(served)


def read_on(r: Log, offset: int, rng: random.Random) -> list[bytes]:
    """Every record from ``offset`` to the end, through an existing handle."""
    out: list[bytes] = []
    while recs := r.read_from(offset + len(out), rng.choice([1, 700, 1 << 20])):
        assert recs[0].offset == offset + len(out)
        out += [bytes(x.payload) for x in recs]
    return out


def cleanup(spec: Spec) -> None:
    """Remove the log, its live indexes (those a killed writer left too) and check that
    nothing of it is left in /dev/shm."""
    kind, key = spec
    try:
        directory = log_dir(spec)
    except Exception:
        return
    with open(os.path.join(directory, "LOG"), "rb") as fh:
        inst = F.unpack_settings(fh.read(F.SETTINGS.size + 1)).instance
    drop_live_objects(directory)
    if kind == "disk":
        Log.remove(path=key)
    else:
        Log.remove(key)
    bases = [str(R._namespace("shm", _live_name(inst, k), None, 0o600).base)
             for k in range(256)]
    left = [e for e in os.listdir("/dev/shm")
            if any(e.startswith(b) for b in bases) or e == os.path.basename(directory)]
    assert not left, f"left in /dev/shm: {left}"


@contextlib.contextmanager
def interference_guard(spec: Spec) -> Iterator[None]:
    """Skip, not fail, when the log's directory vanished under the test: the
    ``pytest_sessionfinish`` of another test session on the machine removes every
    ``shmstore`` entry that appeared in /dev/shm during it, our shared-memory logs included
    (docs/reliability.md, "Interference"). A log never removes its own directory: only
    ``Log.remove``, which runs after this guard."""
    directory = log_dir(spec)
    ino = os.stat(directory).st_ino
    try:
        yield
    except Exception as exc:
        try:
            same = (os.stat(directory).st_ino == ino
                    and os.path.exists(os.path.join(directory, "LOG")))
        except FileNotFoundError:
            same = False
        if not same:
            pytest.skip(f"{directory} was removed under the test (another test session's "
                        f"cleanup of /dev/shm): {type(exc).__name__}: {exc}")
        # the same sweep removes a live index's files: its writer, mapping them lazily,
        # finds them gone (the log never commits nor unlinks a live index it writes to)
        text = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ChildFailed):
            text = str(exc).split("failed", 1)[1].split(": ", 1)[-1]
        if (text.startswith(("ReadOnlyError", "ResourceNotFound", "CorruptResource"))
                and "shmstore-log:" in text.split("\n")[0]):
            pytest.skip(f"a live index vanished under its user (another test session's "
                        f"cleanup of /dev/shm): {text.splitlines()[0]}")
        raise


def make_spec(backend: str, tmp_path: Path) -> Spec:
    if backend == "disk":
        return ("disk", str(tmp_path / f"log-{uuid.uuid4().hex[:8]}"))
    return ("shm", f"test-logkill-{uuid.uuid4().hex[:12]}")


# ------------------------------------------------------------------------------ tests
@pytest.mark.timeout(120 * SCALE)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("backend", ["disk", "shm"])
def test_appenders_sigkilled_at_random_moments(backend: str, method: str, tmp_path: Path,
                                               children: list[Child]) -> None:
    """Generation after generation of appending children, each SIGKILLed at a random moment
    (a quarter of them early: starting, recovering, first appends); after each kill a fresh
    reader and a reader held open since the start serve every acknowledged record and only
    the right payloads; each takeover starts at or past what was acknowledged and served."""
    ctx = mp.get_context(method)
    seed = f"kill:{backend}:{method}"
    rng = random.Random(seed)
    spec = make_spec(backend, tmp_path)
    create_log(spec, rng)
    starts: list[tuple[int, int]] = []
    acked = served = 0
    where: list[tuple[int, int, int]] = []  # (acks waited for, last ack, records after)
    held_reader = open_log(spec)  # open across every kill and takeover
    held: list[bytes] = []
    try:
        with interference_guard(spec):
            starts.append((0, 0))  # (nothing is written by generation 0 before the end)
            for gen in range(1, KILLS[method] * SCALE + 1):
                child = Child(ctx, appender, spec, gen, rng.randrange(1 << 32))
                children.append(child)
                msgs = []
                if rng.random() < 0.25:
                    # killed early: starting up, recovering (the takeover), or in its first appends
                    wait_acks = -1
                    time.sleep(rng.random() * EARLY[method])  # randomness, not a sync
                else:
                    msgs.append(child.recv("open"))
                    wait_acks = rng.choice([0, 1, 2, 5, 10, 20, 40])
                    msgs += [child.recv("ack") for _ in range(wait_acks)]
                    time.sleep(rng.random() * 0.003)  # randomness of the kill instant, not a sync
                child.kill()
                for tag, *rest in msgs + child.drain():
                    if tag == "ack":
                        acked = rest[0]
                        continue
                    start, recovered = rest
                    assert start >= acked, (f"kill {gen}: the takeover starts at {start}, "
                                            f"{acked} were acknowledged ({recovered})")
                    assert start >= served, (f"kill {gen}: the takeover starts at {start}, a "
                                             f"reader was served {served} ({recovered})")
                    starts.append((start, gen))
                served = check_log(spec, starts, acked, rng, f"after kill {gen} (seed {seed})")
                where.append((wait_acks, acked, served - acked))
                # the reader that has been open all along goes on from where it was
                held += read_on(held_reader, len(held), rng)
                assert held == expected(len(held), starts), f"kill {gen}: the held reader"
                assert len(held) == served, (f"kill {gen}: the held reader reads "
                                             f"{len(held)} records, a fresh one {served}")
            # the parent takes the log over last, checks, appends
            with open_log(spec, "a") as w:
                n = w.next_offset
                assert n >= served
                starts.append((n, 0))
                w.append(payload(n, 0))
            check_log(spec, starts, n + 1, rng, f"after the last takeover (seed {seed})")
            held += read_on(held_reader, len(held), rng)
            assert held == expected(n + 1, starts), "the held reader, at the end"
            print(f"\n{seed}: {len(where)} kills (acks waited, acked, records beyond the "
                  f"last ack): {where}")
    finally:
        held_reader.close()
        for c in children:
            c.kill()
        cleanup(spec)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("backend", ["disk", "shm"])
def test_parked_reader_sees_writer_death_then_the_takeover(
        backend: str, method: str, tmp_path: Path, children: list[Child]) -> None:
    """A reader process parked in ``wait_for`` (it reports the sleep itself) gets
    ``WriterDied`` when its writer is SIGKILLed, at once again while no writer is there,
    then the new writer's record on the same handle; twice over."""
    ctx = mp.get_context(method)
    rng = random.Random(f"reader:{backend}:{method}")
    spec = make_spec(backend, tmp_path)
    create_log(spec, rng)
    try:
        with interference_guard(spec):
            w1 = Child(ctx, commanded_writer, spec, 1)
            children.append(w1)
            assert w1.recv("open")[:2] == ("open", 0)
            w1.conn.send(("append", rng.randint(1, 30)))
            _, n = w1.recv("ack")
            reader = Child(ctx, waiting_reader, spec)
            children.append(reader)
            assert reader.recv("reader open") == ("open", n)
            # parked on the next record while its writer is alive and idle; then the writer dies
            reader.conn.send(("wait", n))
            assert reader.recv("parked") == ("parked",)
            w1.kill()
            assert reader.recv("WriterDied") == ("died",)
            # no writer: the next wait ends at once, in WriterDied again
            reader.conn.send(("wait", n))
            msg = reader.recv("WriterDied")
            if msg == ("parked",):
                msg = reader.recv("WriterDied")
            assert msg == ("died",)
            # a new writer takes over and appends: the same reader handle's wait returns
            w2 = Child(ctx, commanded_writer, spec, 2)
            children.append(w2)
            assert w2.recv("open")[:2] == ("open", n)
            w2.conn.send(("append", 1))
            assert w2.recv("ack") == ("ack", n + 1)
            reader.conn.send(("wait", n))
            tag, end, got = reader.recv("the record")
            assert (tag, end, got) == ("ready", n + 1, payload(n, 2))
            # parked on the live writer's next record: its append wakes it
            reader.conn.send(("wait", n + 1))
            assert reader.recv("parked") == ("parked",)
            w2.conn.send(("append", 2))
            assert w2.recv("ack") == ("ack", n + 3)
            tag, end, got = reader.recv("the record")
            assert tag == "ready" and end >= n + 2 and got == payload(n + 1, 2)
            # killed again while the reader is parked; a third writer, the reader wakes
            reader.conn.send(("wait", n + 3))
            assert reader.recv("parked") == ("parked",)
            w2.kill()
            assert reader.recv("WriterDied") == ("died",)
            w3 = Child(ctx, commanded_writer, spec, 3)
            children.append(w3)
            assert w3.recv("open")[:2] == ("open", n + 3)
            w3.conn.send(("append", 1))
            assert w3.recv("ack") == ("ack", n + 4)
            reader.conn.send(("wait", n + 3))
            assert reader.recv("the record") == ("ready", n + 4, payload(n + 3, 3))
            reader.conn.send(("stop", 0))
            assert reader.recv("stop") == ("stopped",)
            check_log(spec, [(0, 1), (n, 2), (n + 3, 3)], n + 4, rng, "at the end")
    finally:
        for c in children:
            c.kill()
        cleanup(spec)


def prefill(spec: Spec, n: int) -> int:
    """Fill a new log with ``n`` generation-0 records (a few segments) and leave its active
    segment ending in a torn record and an index entry for it, as a crash left it: a
    takeover has to cut."""
    w = open_log(spec, "a")
    try:
        for i in range(0, n, 5):
            w.append([payload(j, 0) for j in range(i, min(n, i + 5))], fsync=False)
        info = w.inspect()
    finally:
        w.close()
    last = info["segments"][-1]
    base = os.path.join(info["path"], f"{last['segment']:010d}")
    frame, _ = F.encode_record(n, bytes(32), payload(n, 0), compress=False)
    with open(base + ".seg", "r+b") as fh:
        fh.seek(last["bytes"])
        fh.write(frame[:len(frame) // 2])
    with open(base + ".idx", "ab") as fh:
        fh.write(struct.pack("<Q", last["bytes"]))
    return n


@pytest.mark.timeout(180 * SCALE)
@pytest.mark.parametrize("backend", ["disk", "shm"])
def test_appender_killed_at_each_file_operation(backend: str, tmp_path: Path,
                                                children: list[Child]) -> None:
    """A writer that takes over a log with a torn tail (recovery cuts it), then appends 12
    batches (rotations, checkpoints, fsyncs), kills itself at its k-th state-changing file
    operation, for every k (a control run counts them; every pwrite once whole-then-killed
    and once torn in the middle). After each: the checks of the random kills, and the next
    writer's takeover starts at or past what was acknowledged and served, and appends."""
    ctx = mp.get_context("fork")
    seed = random.Random(f"steps:{backend}").randrange(1 << 32)
    rng = random.Random(seed)

    def run(kill_at: int, torn: bool) -> tuple[list[tuple[int, int]], int, Any]:
        spec = make_spec(backend, tmp_path)
        kind, key = spec
        kw: dict[str, Any] = {"segment_size": 4096, "checkpoint_every": 3, "compress": True}
        (Log.create(path=key, **kw) if kind == "disk" else Log.create(key, **kw)).close()
        try:
            with interference_guard(spec):
                n = prefill(spec, 60)
                child = Child(ctx, stepped_appender, spec, 1, seed, kill_at, torn)
                children.append(child)
                child.proc.join(DEADLINE)
                assert child.proc.exitcode is not None, f"step {kill_at}: the child hangs"
                msgs = child.drain()
                assert child.proc.exitcode in (0, -signal.SIGKILL), (
                    f"step {kill_at}: the child failed ({child.proc.exitcode})")
                starts, acked, done = [(0, 0)], 0, None
                for tag, *rest in msgs:
                    if tag == "ack":
                        acked = rest[0]
                    elif tag == "open":
                        start, recovered = rest
                        assert start == n, (f"step {kill_at}: recovery kept {start} of {n} "
                                            f"({recovered})")
                        starts.append((start, 1))
                    else:
                        done = rest[0]
                children.remove(child)
                child.close()
                where = f"the kill at step {kill_at}{' (torn)' if torn else ''}, seed {seed}"
                served = check_log(spec, starts, acked, rng, f"after {where}")
                with open_log(spec, "a") as w:
                    m = w.next_offset
                    assert m >= served, f"{where}: recovery cut served records ({w.recovered})"
                    starts.append((m, 2))
                    w.append(payload(m, 2))
                check_log(spec, starts, m + 1, rng, f"after {where} and a takeover")
                return starts, acked, done
        finally:
            cleanup(spec)

    _, _, kinds = run(0, False)  # the control run: never killed
    assert kinds, "the control run did not finish"
    steps = [(k, False) for k in range(1, len(kinds) + 1)]
    steps += [(k, True) for k, kind in enumerate(kinds, 1) if kind == "pwrite"]
    for k, torn in steps:
        run(k, torn)
    print(f"\n{backend}: killed at each of {len(kinds)} file operations "
          f"({', '.join(f'{kinds.count(x)} {x}' for x in sorted(set(kinds)))}), pwrites "
          f"also torn: {len(steps)} kills")


def _dies_creating_the_next_segment(conn: Any, path: str) -> None:
    from shmstore.log import log as L

    def die(*a: Any, **kw: Any) -> Any:
        os.kill(os.getpid(), signal.SIGKILL)

    L._make_segment = die  # after the next segment's live index exists, before its files
    w = Log.open(path=path, mode="a")
    conn.send(("open", w.next_offset, {}))
    while True:
        w.append(b"x" * 500, fsync=False)


@pytest.mark.timeout(60)
def test_remove_after_a_writer_died_mid_rotation_leaves_nothing(tmp_path: Path) -> None:
    """Found here: ``Log.remove`` unlinked the live indexes of the listed segments only; the
    next segment's live index, which a rotation makes before the segment's files, stayed in
    /dev/shm when the writer died in between."""
    path = str(tmp_path / "log")
    Log.create(path=path, segment_size=4096).close()
    with open(os.path.join(path, "LOG"), "rb") as fh:
        inst = F.unpack_settings(fh.read(F.SETTINGS.size + 1)).instance
    bases = [str(R._namespace("shm", _live_name(inst, k), None, 0o600).base) for k in range(4)]
    child = Child(mp.get_context("fork"), _dies_creating_the_next_segment, path)
    try:
        child.proc.join(DEADLINE)
        assert child.proc.exitcode == -signal.SIGKILL
        Log.remove(path=path)
        left = [e for e in os.listdir("/dev/shm") if any(e.startswith(b) for b in bases)]
        assert not left, f"Log.remove left in /dev/shm: {left}"
    finally:
        child.close()
        from shmstore.log.log import _unlink_live
        for k in range(4):
            _unlink_live(inst, k)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["disk", "shm"])
def test_a_reader_that_looked_without_a_writer_sees_later_rotations(
        backend: str, tmp_path: Path) -> None:
    """Found by the held reader of the random kills (fixed in 8212198): a reader handle that
    looked at the log while it had no live index did not list the segments a later writer
    added; read_from stopped at the end of the segment it knew, follow() ended in
    WriterDied there."""
    spec = make_spec(backend, tmp_path)
    kind, key = spec
    w = (Log.create(path=key, segment_size=4096) if kind == "disk"
         else Log.create(key, segment_size=4096))
    w.close()
    try:
        with interference_guard(spec), open_log(spec) as r:
            assert r.next_offset == 0  # no writer: no live index
            with open_log(spec, "a") as w:
                for i in range(20):
                    w.append(payload(i, 1))  # 3 segments
                assert w.segment_count > 1
            got: list[bytes] = []

            def follow_to_the_end() -> None:
                got.extend(bytes(rec.payload) for rec in r.follow(0, timeout=10))

            with pytest.raises(WriterDied):
                follow_to_the_end()
            assert got == [payload(i, 1) for i in range(20)], f"follow() read {len(got)} of 20"
    finally:
        cleanup(spec)
