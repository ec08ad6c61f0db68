"""Adversarial tests of shmstore.Log: real processes against the reader/writer protocol.

Followers in several processes through many rotations and writer handovers; writers killed
at every file operation of appends, rotations and recoveries, and at random times, then
taken over; readers opening while writers recover; read_from's max_bytes and checkpoint
edges; the verified-read cache after a takeover; handles across fork and pickle; removal
under open readers; index files with wrong entries; descriptor and shared-memory leaks.

Tests named after a bug are the minimal reproductions of what this review found (now fixed).
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import os
import random
import signal
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import shmstore
from shmstore.errors import StorageError
from shmstore.ipc.segments import SHM_DIR, shm_base
from shmstore.log import format as F
from shmstore.log import log as L
from shmstore.log.fileio import FileIO

SEG = 4096


# ------------------------------------------------------------------ helpers
def payload(i: int) -> bytes:
    """The payload appended at offset ``i`` in every test here (so any reader can check
    what it got without being told)."""
    return (b"%08d" % i) * (1 + i % 11)


def big(i: int) -> bytes:
    return (b"%08d" % i) * (150 + i % 40)  # 1.2-1.5 KB: a rotation every few records


def chain(payloads: list[bytes]) -> bytes:
    h = F.ZERO_HASH
    for p in payloads:
        h = F.chain(h, F.KIND_DATA, p)
    return h


def open_log(kind: str, key: str, mode: str = "r", **kw: Any) -> shmstore.Log:
    if kind == "shm":
        return shmstore.Log.open(key, mode=mode, **kw)
    return shmstore.Log.open(path=key, mode=mode, **kw)


def read_all(log: shmstore.Log, verify: bool = True) -> list[bytes]:
    out: list[bytes] = []
    off = 0
    while True:
        recs = log.read_from(off, 1 << 16, verify=verify)
        if not recs:
            return out
        for r in recs:
            assert r.offset == off
            out.append(bytes(r.payload))
            off += 1


def live_objects(instance: bytes, upto: int) -> list[int]:
    """Segment numbers (below ``upto``) whose live index has a control block in /dev/shm."""
    present = set(os.listdir(SHM_DIR))
    return [k for k in range(upto) if shm_base(L._live_name(instance, k)) + "_c" in present]


def live_files(instance: bytes, upto: int) -> list[str]:
    bases = [shm_base(L._live_name(instance, k)) for k in range(upto)]
    return sorted(e for e in os.listdir(SHM_DIR) if any(e.startswith(b) for b in bases))


class Made:
    """Logs of one backend, removed at the end (and checked gone: files and live indexes)."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind, self.tmp = kind, tmp
        self.keys: list[tuple[str, bytes]] = []
        self.handles: list[shmstore.Log] = []

    def create(self, **kw: Any) -> tuple[str, shmstore.Log]:
        if self.kind == "shm":
            key = f"test-logadv-{uuid.uuid4().hex[:10]}"
            log = shmstore.Log.create(key, **kw)
        else:
            key = str(self.tmp / f"log-{uuid.uuid4().hex[:8]}")
            log = shmstore.Log.create(path=key, **kw)
        self.keys.append((key, log._inst))
        self.handles.append(log)
        return key, log

    def open(self, key: str, mode: str = "r", **kw: Any) -> shmstore.Log:
        log = open_log(self.kind, key, mode, **kw)
        self.handles.append(log)
        return log

    def remove(self, key: str) -> None:
        if self.kind == "shm":
            shmstore.Log.remove(key)
        else:
            shmstore.Log.remove(path=key)

    def cleanup(self, check: bool) -> None:
        for h in self.handles:
            h.close()
        problems = []
        for key, inst in self.keys:
            directory = L._shm_dir(key) if self.kind == "shm" else key
            nums = L._list_segments(directory) if os.path.isdir(directory) else []
            with contextlib.suppress(shmstore.ResourceNotFound):
                self.remove(key)
            if os.path.exists(directory):
                problems.append(f"{directory} is still there after Log.remove")
            left = live_files(inst, max(nums, default=0) + 3)
            if left:
                problems.append(f"live index objects left: {left}")
        if check:
            assert not problems, problems


@pytest.fixture(params=["shm", "mmap"])
def made(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Made]:
    m = Made(request.param, tmp_path)
    ok = False
    try:
        yield m
        ok = True
    finally:
        m.cleanup(check=ok)


@pytest.fixture
def shm(tmp_path: Path) -> Iterator[Made]:
    m = Made("shm", tmp_path)
    ok = False
    try:
        yield m
        ok = True
    finally:
        m.cleanup(check=ok)


def reap(procs: list[Any]) -> None:
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join(10)


class KillIO(FileIO):
    """A FileIO that SIGKILLs its process at its ``at``-th call (any method): a writer
    killed between any two file operations of an open, an append, a rotation."""

    def __init__(self, at: int) -> None:
        super().__init__(durable=False)
        self.at, self.n = at, 0

    def _tick(self) -> None:
        self.n += 1
        if self.n == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


def _wrap(name: str) -> Any:
    base = getattr(FileIO, name)

    def method(self: KillIO, *a: Any, **k: Any) -> Any:
        self._tick()
        return base(self, *a, **k)

    return method


for _m in ("open", "close", "pwrite", "pread", "size", "truncate", "fsync", "fsync_dir",
           "rename", "unlink", "map"):
    setattr(KillIO, _m, _wrap(_m))


# ------------------------------------------------------------------ child bodies
def fd_kinds() -> dict[str, int]:
    """This process's descriptors by what they lead to (shm objects by their base name)."""
    out: dict[str, int] = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            t = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
        t = t[:19] if t.startswith("shmstore_") else ("*.seg" if t.endswith(".seg") else t)
        out[t] = out.get(t, 0) + 1
    return out


def follower(kind: str, key: str, conn: Any, stop_at: bytes | None, total: int | None,
             limit: float, max_bytes: int = 1 << 20, ready: bool = False) -> None:
    """Follow from 0 (verified) until ``total`` records or the record ``stop_at``, riding
    out writer handovers (WriterDied: wait and follow again). Reports the count, the chain
    over what it got, how many WriterDied it rode out and its descriptor growth (once the
    records it was handed are dropped), or the first problem."""
    log = open_log(kind, key)
    if ready:
        conn.send(("ready",))  # open, and about to follow
    proc = psutil.Process()
    fds0 = proc.num_fds()
    h, off = F.ZERO_HASH, 0
    deadline = time.monotonic() + limit
    died = 0
    done = False
    try:
        while not done and time.monotonic() < deadline:
            it = log.follow(off, timeout=max(0.1, deadline - time.monotonic()),
                            max_bytes=max_bytes)
            try:
                for rec in it:
                    p = bytes(rec.payload)
                    if rec.offset != off:
                        conn.send(("error", f"got offset {rec.offset}, expected {off}"))
                        return
                    if stop_at is not None and p == stop_at:
                        done = True
                        break
                    if p != payload(off) and p != big(off):
                        conn.send(("error", f"record {off}: wrong payload {p[:20]!r}"))
                        return
                    h = F.chain(h, F.KIND_DATA, p)
                    off += 1
                    if total is not None and off == total:
                        done = True
                        break
            except shmstore.WriterDied:
                died += 1
                time.sleep(0.002)  # no writer for now: look again (what `tail -f` does)
            finally:
                it.close()  # drops the batch it holds (its views pin segment mappings)
                rec = None
        if not done:
            conn.send(("error", f"timed out at {off}"))
            return
        conn.send(("done", off, h, proc.num_fds() - fds0, died, fd_kinds()))
    except BaseException as exc:  # report, do not hang the parent
        conn.send(("error", f"{type(exc).__name__}: {exc} at {off}"))
    finally:
        log.close()
        conn.close()


def killable_writer(kind: str, key: str, conn: Any, batch_max: int, size: str) -> None:
    """Take the log over and append ``payload(i)`` batches forever, acking each returned
    append's next offset (the parent kills this process)."""
    log = open_log(kind, key, "a")
    make = big if size == "big" else payload
    i = log.next_offset
    conn.send(("writer", i))
    rnd = random.Random(i)
    while True:
        n = rnd.randint(1, batch_max)
        i, _ = log.append([make(j) for j in range(i, i + n)], fsync=False)
        conn.send(("ack", i))


def plain_writer(kind: str, key: str, count: int, size: str, sentinel: bool) -> None:
    log = open_log(kind, key, "a")
    make = big if size == "big" else payload
    try:
        i = log.next_offset
        end = i + count
        rnd = random.Random(i)
        while i < end:
            n = min(end - i, rnd.randint(1, 5))
            i, _ = log.append([make(j) for j in range(i, i + n)], fsync=False)
        if sentinel:
            log.append([b"END"], fsync=False)
    finally:
        log.close()


def hash_poller(kind: str, key: str, conn: Any, until: int) -> None:
    """Poll latest_chain_hash / next_offset / read_from while a writer appends."""
    log = open_log(kind, key)
    seen: list[tuple[int, bytes | None, int]] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            h = log.latest_chain_hash
            n = log.next_offset
            seen.append((n, h, len(log.read_from(max(0, n - 3), 1 << 20))))
            if n >= until:
                break
        conn.send(seen)
    except BaseException as exc:
        conn.send(f"{type(exc).__name__}: {exc}")
    finally:
        log.close()


def takeover_loop(kind: str, key: str, rounds: int, seed: int) -> None:
    """Writers one after another, each recovering the log, appending a few records and
    either closing or dying (SIGKILL from within)."""
    rnd = random.Random(seed)
    for _ in range(rounds):
        pid = os.fork()
        if pid == 0:
            try:
                log = open_log(kind, key, "a")
                i = log.next_offset
                log.append([payload(j) for j in range(i, i + rnd.randint(1, 3))], fsync=False)
                if rnd.random() < 0.5:
                    os.kill(os.getpid(), signal.SIGKILL)
                log.close()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)


def pickled_follow(log: shmstore.Log, n: int) -> list[bytes]:
    try:
        return [bytes(r.payload) for r in itertools.islice(log.follow(0, timeout=30), n)]
    finally:
        log.close()


# ------------------------------------------------------------------ followers and rotation
@pytest.mark.timeout(60)
def test_followers_in_three_start_methods_see_every_record_once_through_rotations(
        made: Made) -> None:
    """One writer appends ~1500 records in random batches with 4 KiB segments (a rotation
    every ~30 records) and checkpoint_every=3; followers started by fork, spawn and
    forkserver each get exactly the appended payloads in order (verified, chain equal),
    and their descriptors stay bounded after ~50 rotations."""
    key, w = made.create(segment_size=SEG, checkpoint_every=3)
    total = 1500
    procs, pipes = [], []
    for method in ("fork", "spawn", "forkserver"):
        ctx: Any = mp.get_context(method)
        a, b = ctx.Pipe()
        p = ctx.Process(target=follower, args=(made.kind, key, b, None, total, 45))
        p.start()
        b.close()
        procs.append(p)
        pipes.append(a)
    try:
        rnd = random.Random(1)
        i = 0
        while i < total:
            n = min(total - i, rnd.choice([1, 1, 2, 5, 17, 40]))
            i, _ = w.append([payload(j) for j in range(i, i + n)], fsync=False)
            if rnd.random() < 0.05:
                time.sleep(0.002)  # let followers park now and then
        head = chain([payload(j) for j in range(total)])
        assert w.latest_chain_hash == head and w.segment_count > 30
        for a in pipes:
            assert a.poll(50)
            got = a.recv()
            assert got[0] == "done", got
            assert got[1:3] == (total, head)
            # at most 16 sealed segments stay mapped (each mmap holds a descriptor)
            assert got[3] < 40, f"descriptors grew by {got[3]} while following: {got[5]}"
        assert w.verify() == (total, head)
    finally:
        reap(procs)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cut", [False, True])
def test_followers_ride_handovers_between_writers_with_rapid_rotation(made: Made,
                                                                      cut: bool) -> None:
    """Writers in turn (closing cleanly, each rotating many times on 4 KiB segments),
    with a torn tail appended between them when ``cut`` (recovery must cut it): followers
    parked in other processes get every record once, in order, and never the torn one."""
    key, w = made.create(segment_size=SEG, checkpoint_every=2)
    w.close()
    ctx: Any = mp.get_context("fork")
    procs, pipes = [], []
    for _ in range(2):
        a, b = ctx.Pipe()
        p = ctx.Process(target=follower, args=(made.kind, key, b, b"END", None, 45),
                        kwargs={"ready": True})
        p.start()
        b.close()
        procs.append(p)
        pipes.append(a)
    try:
        for a in pipes:  # both follow the empty log before the first writer comes
            assert a.poll(30) and a.recv() == ("ready",)
        for _ in range(6):
            wp = ctx.Process(target=plain_writer, args=(made.kind, key, 40, "big", False))
            wp.start()
            wp.join(20)
            assert wp.exitcode == 0
            if cut:
                r = made.open(key)
                n, head = r.next_offset, r.latest_chain_hash or F.ZERO_HASH
                r.close()
                directory = L._shm_dir(key) if made.kind == "shm" else key
                active = L._list_segments(directory)[-1]
                seg = Path(directory) / f"{active:010d}.seg"
                raw = seg.read_bytes()
                idx = (Path(directory) / f"{active:010d}.idx").read_bytes()
                entries = struct.unpack_from(f"<{(len(idx) - F.IDX_HEADER.size) // 8}Q", idx,
                                             F.IDX_HEADER.size)
                if entries:
                    end = entries[-1] + F.FRAME_OVERHEAD + struct.unpack_from(
                        "<I", raw, entries[-1] + 8)[0]
                else:
                    end = F.CHECKPOINT_FRAME
                frame, _ = F.encode_record(n, head, b"TORN" * 300, compress=False)
                with open(seg, "r+b") as f:
                    f.seek(end)
                    f.write(frame[:700])
        # the last writer stays while the followers finish
        last = made.open(key, "a")
        assert last.recovered["cut_bytes"] == (700 if cut else 0)
        last.append([b"END"])
        r = made.open(key)
        n = r.next_offset
        assert read_all(r)[:n - 1] == [big(i) for i in range(n - 1)]
        head = chain([big(i) for i in range(n - 1)])
        for a in pipes:
            assert a.poll(40)
            got = a.recv()
            assert got[0] == "done", got
            assert got[1:3] == (n - 1, head)
        assert r.verify()[0] == n == 241
        last.close()
    finally:
        reap(procs)


# ------------------------------------------------------------------ kills and takeover
@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["shm", "mmap"])
def test_writer_killed_at_every_file_operation_is_taken_over(tmp_path: Path,
                                                             kind: str) -> None:
    """A writer SIGKILLed at its n-th file operation, for every n up to 160 (opens and
    recoveries, appends, and every step of ~40 rotations of 4 KiB segments): the next
    writer keeps every acknowledged record, verify() passes, the log appends again, no live
    index of a sealed segment is left behind, and the payloads are exactly the appended
    ones."""
    made = Made(kind, tmp_path)
    key, w = made.create(segment_size=SEG, checkpoint_every=2)
    w.close()
    inst = made.keys[0][1]
    try:
        for at in range(1, 160):
            rfd, wfd = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(rfd)
                    log = open_log(kind, key, "a", _io=KillIO(at))
                    i = log.next_offset
                    while True:
                        i, _ = log.append([big(j) for j in range(i, i + 1 + i % 3)],
                                          fsync=False)
                        os.write(wfd, b"%d\n" % i)
                finally:
                    os._exit(3)
            os.close(wfd)
            _, status = os.waitpid(pid, 0)
            with os.fdopen(rfd, "rb") as f:
                acks = f.read().split()
            assert os.WIFSIGNALED(status), (at, status)
            acked = int(acks[-1]) if acks else 0
            w = open_log(kind, key, "a")
            try:
                n = w.next_offset
                assert n >= acked, f"kill at op {at}: {acked} acknowledged, {n} kept"
                assert w.verify()[0] == n
                segs = w.segment_count
                assert live_objects(inst, segs + 3) == [segs - 1], at
            finally:
                w.close()
        r = open_log(kind, key)
        try:
            got = read_all(r)
            assert got == [big(i) for i in range(len(got))] and len(got) > 100
            assert r.verify() == (len(got), chain(got))
            assert r.segment_count > 30
        finally:
            r.close()
        w = open_log(kind, key, "a")
        w.append([b"again"])
        w.close()
    finally:
        made.cleanup(check=True)


@pytest.mark.timeout(60)
def test_random_sigkills_with_followers_lose_nothing_acknowledged(shm: Made) -> None:
    """A writer process killed at random moments (often mid-rotation: 4 KiB segments,
    ~1.3 KB records) and taken over by the next, 15 times, while two followers in other
    processes ride it out: nothing acknowledged is lost, the followers get every record
    once in order and agree with verify()."""
    key, w = shm.create(segment_size=SEG, checkpoint_every=3)
    w.close()
    ctx: Any = mp.get_context("fork")
    procs, pipes = [], []
    for _ in range(2):
        a, b = ctx.Pipe()
        p = ctx.Process(target=follower, args=("shm", key, b, b"END", None, 50))
        p.start()
        b.close()
        procs.append(p)
        pipes.append(a)
    rnd = random.Random(7)
    acked = 0
    try:
        for _ in range(15):
            a, b = ctx.Pipe()
            wp = ctx.Process(target=killable_writer, args=("shm", key, b, 3, "big"))
            wp.start()
            b.close()
            assert a.poll(20)
            first = a.recv()
            assert first[0] == "writer" and first[1] >= acked
            time.sleep(rnd.uniform(0.0, 0.03))
            wp.kill()
            wp.join(10)
            while a.poll(0):
                try:
                    msg = a.recv()
                except EOFError:
                    break
                acked = max(acked, msg[1])
            a.close()
        r = shm.open(key)
        n0 = r.next_offset  # what the dead writer published (it may have written more)
        assert n0 >= acked
        # the last writer stays while the followers finish
        last = shm.open(key, "a")
        assert n0 <= last.next_offset <= n0 + 3  # its last batch (<= 3) may be unpublished
        i = last.next_offset
        last.append([big(j) for j in range(i, i + 5)])
        last.append([b"END"])
        n = r.next_offset
        assert n == i + 6
        got = read_all(r)
        assert got[:-1] == [big(i) for i in range(n - 1)]
        head = chain(got[:-1])
        for a in pipes:
            assert a.poll(40)
            msg = a.recv()
            assert msg[0] == "done", msg
            assert msg[1:3] == (n - 1, head)
        assert r.verify() == (n, chain(got))
        last.close()
    finally:
        reap(procs)


@pytest.mark.timeout(60)
def test_readers_opening_while_writers_recover_see_a_consistent_growing_log(
        shm: Made) -> None:
    """Writers take over one after another (recovering, appending 1-3 records, closing or
    dying) while this process keeps opening fresh readers: each sees a verified prefix of
    the appended payloads with a matching chain hash; waits end in a record, a timeout or
    WriterDied, nothing else; a long-lived reader never errs and, with a writer present,
    catches up. (A fresh reader seeing fewer records than an earlier one was a bug of its
    own: test_records_hidden_by_a_writer_killed_before_filling_its_live_index.)"""
    key, w = shm.create(segment_size=SEG, checkpoint_every=2)
    w.append([payload(0)])
    w.close()
    ctx: Any = mp.get_context("fork")
    p = ctx.Process(target=takeover_loop, args=("shm", key, 150, 3))
    p.start()
    opened = 0
    heads = [F.ZERO_HASH]  # heads[k]: the chain hash after the first k payloads
    held = shm.open(key)  # one long-lived reader too
    try:
        while p.is_alive() or opened < 20:
            r = shmstore.Log.open(key)
            try:
                n = r.next_offset
                got = read_all(r)
                assert len(got) >= n
                assert got == [payload(i) for i in range(len(got))]
                h = r.latest_chain_hash or F.ZERO_HASH  # None: empty
                m = r.next_offset
                while len(heads) <= m:
                    heads.append(F.chain(heads[-1], F.KIND_DATA, payload(len(heads) - 1)))
                assert h in heads[n:m + 1]  # the chain of a prefix between the two looks
                with contextlib.suppress(TimeoutError, shmstore.WriterDied):
                    r.wait_for(m, timeout=0.01)
                hn = held.next_offset  # a long-lived handle: never an error
                assert len(held.read_from(max(0, hn - 1), 1 << 20)) >= min(hn, 1)
            finally:
                r.close()
            opened += 1
        p.join(30)
        assert p.exitcode == 0
        final = shmstore.Log.open(key)
        w = shm.open(key, "a")  # a writer present: a wait brings the held reader up to date
        try:
            n = final.next_offset
            assert w.next_offset == n
            assert held.wait_for(n - 1, timeout=10) == n
            assert held.next_offset == n
            assert read_all(held) == read_all(final) == [payload(i) for i in range(n)]
            assert final.verify()[0] == n
        finally:
            final.close()
            w.close()
    finally:
        reap([p])


# ------------------------------------------------------------------ reads: edges
@pytest.mark.parametrize("every", [1, 2, 7, 1000])
def test_read_from_max_bytes_and_segment_edges(made: Made, every: int) -> None:
    """read_from(offset, max_bytes) against a model for every offset, several max_bytes
    (0, 1, exactly one record, one record plus a byte, a few records, everything), through
    a fresh handle (checkpoint anchor) and one continuing (the verified-read cache), with
    and without verification; reading at each segment's first record."""
    key, w = made.create(segment_size=SEG, checkpoint_every=every)
    payloads = [payload(i) for i in range(220)]
    rnd = random.Random(every)
    i = 0
    while i < len(payloads):
        n = min(len(payloads) - i, rnd.randint(1, 9))
        w.append(payloads[i:i + n], fsync=False)
        i += n
    assert w.segment_count > 4
    r = made.open(key)
    assert r.next_offset == len(payloads)
    firsts = list(r._firsts)
    assert firsts[0] == 0 and len(firsts) == w.segment_count

    def model(off: int, mb: int) -> list[int]:
        out, total = [], 0
        while off < len(payloads) and (total < mb or not out):
            out.append(off)
            total += len(payloads[off])
            off += 1
        return out

    cont = made.open(key)
    coff = 0
    for off in range(0, len(payloads) + 2):
        sizes = [0, 1, -5, 1 << 30]
        if off < len(payloads):
            sizes += [len(payloads[off]), len(payloads[off]) + 1, 300]
        for mb in sizes:
            want = model(off, mb)
            for verify in (True, False):
                fresh = open_log(made.kind, key)
                try:
                    got = fresh.read_from(off, mb, verify=verify)
                finally:
                    fresh.close()
                assert [x.offset for x in got] == want, (off, mb, verify)
                assert [bytes(x.payload) for x in got] == [payloads[j] for j in want]
        # the continuing handle reads on from where it stopped (its cache) in small steps
        if coff < len(payloads):
            got = cont.read_from(coff, rnd.choice([1, 100, 700]))
            assert got[0].offset == coff
            assert [bytes(x.payload) for x in got] == payloads[coff:coff + len(got)]
            coff += len(got)
    for f in firsts:  # each segment's first record, and the one before it, alone
        for off in (f, f - 1):
            if 0 <= off < len(payloads):
                fresh = open_log(made.kind, key)
                try:
                    assert bytes(fresh.read_from(off, 0)[0].payload) == payloads[off]
                    got = fresh.read_from(off, 1 << 20)
                    assert [bytes(x.payload) for x in got] == payloads[off:]
                finally:
                    fresh.close()
    assert r.verify() == (len(payloads), chain(payloads))
    assert r.latest_chain_hash == chain(payloads)


@pytest.mark.timeout(60)
def test_latest_chain_hash_from_a_reader_during_appends(made: Made) -> None:
    """A reader in another process polls latest_chain_hash, next_offset and read_from while
    the writer appends with rotation: every hash it sees is the chain of a prefix, and the
    prefixes never go back."""
    key, w = made.create(segment_size=SEG, checkpoint_every=4)
    total = 800
    prefix = {chain([payload(j) for j in range(n)]): n for n in range(total + 1)}
    ctx: Any = mp.get_context("fork")
    a, b = ctx.Pipe()
    p = ctx.Process(target=hash_poller, args=(made.kind, key, b, total))
    p.start()
    b.close()
    try:
        i = 0
        while i < total:
            i, _ = w.append([payload(j) for j in range(i, min(total, i + 3))], fsync=False)
        assert a.poll(30)
        seen = a.recv()
        assert not isinstance(seen, str), seen
        assert seen[-1][0] == total
        last = 0
        for n, h, k in seen:
            at = 0 if h is None else prefix[h]  # KeyError: not the chain of any prefix
            assert last <= at <= n, (last, at, n)
            assert k >= min(3, n)
            last = at
    finally:
        reap([p])


def test_verified_read_cache_after_takeover_that_cut_records(tmp_path: Path) -> None:
    """A reader has verified up to offset 12 (its cache: the chain hash before 12). Record
    10 is damaged, the next writer's recovery cuts 10 and 11, and new, different records
    take offsets 10-14. The old handle must not serve records unchecked: from 12 it serves
    exactly what a fresh handle serves, or refuses (ChainBroken)."""
    d = tmp_path / "l"
    w = shmstore.Log.create(path=d, checkpoint_every=100)
    w.append([payload(i) for i in range(12)])
    w.close()
    r = shmstore.Log.open(path=d)
    try:
        assert len(r.read_from(0, 1 << 20)) == 12  # the cache is (12, h(0..11))
        seg = d / "0000000000.seg"
        idx = (d / "0000000000.idx").read_bytes()
        pos10 = struct.unpack_from("<Q", idx, F.IDX_HEADER.size + 80)[0]
        raw = bytearray(seg.read_bytes())
        raw[pos10 + F.HEADER.size] ^= 1
        seg.write_bytes(bytes(raw))
        w = shmstore.Log.open(path=d, mode="a")
        assert w.next_offset == 10 and w.recovered["records"] == 10
        new = [b"NEW-%d" % i for i in range(10, 15)]
        w.append(new)
        fresh = shmstore.Log.open(path=d)
        try:
            truth = fresh.read_from(12, 1 << 20)
            assert [bytes(x.payload) for x in truth] == new[2:]
        finally:
            fresh.close()
        try:
            got = r.read_from(12, 1 << 20)
        except shmstore.ChainBroken:
            pass
        else:
            assert [bytes(x.payload) for x in got] == new[2:]
        # a read from an anchor the cache does not cover is checked from the checkpoint
        assert [bytes(x.payload) for x in r.read_from(10, 1 << 20)] == new
        assert [bytes(x.payload) for x in r.read_from(0, 1 << 20)] == \
            [payload(i) for i in range(10)] + new
        w.close()
    finally:
        r.close()


def test_reader_without_writer_ignores_wrong_index_entries(made: Made) -> None:
    """No writer (the live index is gone): the active segment's index file gets extra and
    wrong entries (to zeros, to a checkpoint, a duplicate, past the end, huge); a reader
    serves exactly the real records; the next writer's recovery drops the entries."""
    key, w = made.create(segment_size=1 << 16, checkpoint_every=3)
    payloads = [payload(i) for i in range(8)]
    w.append(payloads)
    w.close()
    directory = L._shm_dir(key) if made.kind == "shm" else key
    idx_path = Path(directory) / "0000000000.idx"
    seg_path = Path(directory) / "0000000000.seg"
    raw = idx_path.read_bytes()
    entries = struct.unpack_from("<8Q", raw, F.IDX_HEADER.size)
    data_end = entries[-1] + F.FRAME_OVERHEAD + len(payloads[-1])
    size = seg_path.stat().st_size
    for extra in ([data_end], [entries[3] - F.CHECKPOINT_FRAME], [entries[7]], [entries[0]],
                  [size + 10], [2**63], [2**64 - 1], [data_end + 4096, data_end]):
        idx_path.write_bytes(raw + struct.pack(f"<{len(extra)}Q", *extra))
        r = made.open(key)
        try:
            assert r.next_offset == 8, extra
            assert read_all(r) == payloads
            assert r.verify() == (8, chain(payloads))
            with pytest.raises(shmstore.WriterDied):
                r.wait_for(8, timeout=5)
        finally:
            r.close()
    # a wrong entry inside the index (record 5 -> record 6's position): served up to it
    bad = bytearray(raw)
    struct.pack_into("<Q", bad, F.IDX_HEADER.size + 40, entries[6])
    idx_path.write_bytes(bytes(bad))
    r = made.open(key)
    try:
        assert r.next_offset == 5
        assert read_all(r) == payloads[:5]
    finally:
        r.close()
    idx_path.write_bytes(raw + struct.pack("<3Q", data_end, 7, 2**40))
    w = made.open(key, "a")
    assert w.next_offset == 8 and w.recovered["index_entries_dropped"] == 3
    w.append([payload(8)])
    w.close()
    assert idx_path.stat().st_size == F.IDX_HEADER.size + 8 * 9
    r = made.open(key)
    assert read_all(r) == [payload(i) for i in range(9)]


# ------------------------------------------------------------------ fork, pickle, close
@pytest.mark.timeout(60)
def test_handles_across_fork(made: Made) -> None:
    """A reader forked into a child reads and waits there; a writer forked into a child is
    closed there (append: ResourceClosed) and the child's exit takes nothing of the
    parent's (its live index: a third process still wakes on the parent's appends)."""
    key, w = made.create(segment_size=SEG)
    w.append([payload(0)])
    r = made.open(key)
    assert r.next_offset == 1
    ctx: Any = mp.get_context("fork")
    a, b = ctx.Pipe()

    def child() -> None:
        try:
            with pytest.raises(shmstore.ResourceClosed):
                w.append([b"from the child"])
            assert w.closed
            assert bytes(r.read_from(0)[0].payload) == payload(0)
            b.send("ready")
            r.wait_for(40, timeout=20)
            b.send([bytes(x.payload) for x in r.read_from(0, 1 << 20)])
        except BaseException as exc:
            b.send(f"{type(exc).__name__}: {exc}")
        finally:
            b.close()

    p = ctx.Process(target=child)
    q = ctx.Process(target=lambda: (w.close(), r.close()))  # a child that only closes them
    a2, b2 = ctx.Pipe()
    f = ctx.Process(target=follower, args=(made.kind, key, b2, None, 41, 30))
    try:
        q.start()
        q.join(10)
        assert q.exitcode == 0
        p.start()
        f.start()
        b.close()
        b2.close()
        assert a.poll(20) and a.recv() == "ready"
        for i in range(1, 41):
            w.append([payload(i)], fsync=False)
        assert a.poll(20)
        assert a.recv() == [payload(i) for i in range(41)]
        assert a2.poll(20)
        assert a2.recv()[:2] == ("done", 41)
        p.join(10)
        assert p.exitcode == 0
        assert not w.closed and not r.closed
        w.append([payload(41)])
        assert r.wait_for(41, timeout=5) == 42
    finally:
        reap([p, q, f])


@pytest.mark.timeout(60)
def test_pickled_reader_follows_in_spawned_child(made: Made) -> None:
    key, w = made.create(segment_size=SEG)
    r = made.open(key)
    r.read_from(0)
    with mp.get_context("spawn").Pool(1) as pool:
        fut = pool.apply_async(pickled_follow, (r, 120))
        for i in range(120):
            w.append([payload(i)], fsync=False)
        assert fut.get(40) == [payload(i) for i in range(120)]
    assert w.segment_count > 2


def test_closed_handles_refuse_everything(made: Made) -> None:
    key, w = made.create()
    w.append([b"x"])
    r = made.open(key)
    r.close()
    w.close()
    calls: list[Any] = [lambda h: h.next_offset, lambda h: h.latest_chain_hash,
                        lambda h: h.segment_count, lambda h: h.read_from(0),
                        lambda h: h.wait_for(0, timeout=1), lambda h: next(h.follow(0)),
                        lambda h: h.verify(), lambda h: h.inspect(),
                        lambda h: h.cursor("c")]
    for h in (r, w):
        for call in calls:
            with pytest.raises(shmstore.ResourceClosed):
                call(h)
    with pytest.raises(shmstore.ResourceClosed):
        w.append([b"y"])
    with pytest.raises(shmstore.ResourceClosed):
        w.flush()


@pytest.mark.timeout(30)
def test_close_from_another_thread_ends_a_parked_wait(made: Made) -> None:
    key, writer = made.create()
    r = made.open(key)
    got: list[BaseException | None] = []
    live = writer._active.live
    assert live is not None

    def park() -> None:
        try:
            r.wait_for(0)
            got.append(None)
        except BaseException as exc:
            got.append(exc)

    t = threading.Thread(target=park)
    t.start()
    # parked: its range is in the live index's waiter table (a state, not a guess)
    deadline = time.monotonic() + 10
    while live._waiting_ranges() != [(0, 8)]:
        assert time.monotonic() < deadline, "the wait never parked"
        time.sleep(0.001)
    r.close()
    t.join(5)
    assert not t.is_alive(), "a wait on a closed handle did not end"
    assert isinstance(got[0], shmstore.ResourceClosed)


# ------------------------------------------------------------------ removal and leaks
@pytest.mark.timeout(60)
def test_remove_with_readers_open(made: Made) -> None:
    """Log.remove under a live writer: WriterActive, nothing removed. Without one: the
    directory and every live index are gone; open readers fail cleanly (no hang) and a
    writer can no longer take the old handle's log over."""
    key, w = made.create(segment_size=SEG)
    inst = made.keys[0][1]
    for i in range(0, 200, 10):
        w.append([payload(j) for j in range(i, i + 10)], fsync=False)
    r = made.open(key)
    assert read_all(r) == [payload(i) for i in range(200)]
    with pytest.raises(shmstore.WriterActive):
        made.remove(key)
    assert r.next_offset == 200
    segs = w.segment_count
    w.close()
    made.remove(key)
    directory = L._shm_dir(key) if made.kind == "shm" else key
    assert not os.path.exists(directory)
    assert live_files(inst, segs + 3) == []
    with pytest.raises((shmstore.ResourceNotFound, shmstore.WriterDied, FileNotFoundError)):
        r.wait_for(200, timeout=5)
    with pytest.raises(shmstore.ResourceNotFound):
        open_log(made.kind, key)
    r.close()


@pytest.mark.timeout(60)
def test_long_following_reader_keeps_descriptors_and_mappings_bounded(made: Made) -> None:
    """A reader following a log through 300 rotations (and a writer making them) holds a
    bounded number of descriptors and mappings."""
    key, w = made.create(segment_size=SEG)
    r = made.open(key)
    me = psutil.Process()

    def maps() -> int:
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)

    it = r.follow(0, timeout=10)
    i = k = 0
    at: dict[int, tuple[int, int]] = {}
    while w.segment_count < 300:
        w.append([big(j) for j in range(i, i + 2)], fsync=False)
        i += 2
        while k < i:
            rec = next(it)
            assert rec.offset == k and bytes(rec.payload) == big(k)
            k += 1
        if w.segment_count in (60, 299):
            at.setdefault(w.segment_count, (me.num_fds(), maps()))
    assert r.next_offset == i
    assert read_all(r)[-1] == big(i - 1)
    (fds60, maps60), (fds299, maps299) = at[60], at[299]
    assert fds299 - fds60 < 5, (fds60, fds299)
    assert maps299 - maps60 < 10, (maps60, maps299)


# ------------------------------------------------------------------ bugs
@pytest.mark.timeout(30)
def test_reader_without_live_index_misses_segments_rotated_meanwhile(made: Made) -> None:
    key, w = made.create(segment_size=SEG)
    w.append([b"a"])
    w.close()
    r = made.open(key)
    assert r.next_offset == 1  # no writer: counted from the index file, no live index
    w = made.open(key, "a")
    for _ in range(20):
        w.append([b"x" * 500])
    assert w.segment_count == 3
    w.close()
    got: list[int] = []
    with contextlib.suppress(shmstore.WriterDied):
        got.extend(rec.offset for rec in r.follow(0, timeout=5))
    assert r.next_offset == 21
    assert got == list(range(21))


def _hammer(r: shmstore.Log, stop: threading.Event) -> None:
    while not stop.is_set():
        r.read_from(1900, 1)  # anchors ~1900 records back: long inside the handle's lock


@pytest.mark.timeout(30)
def test_fork_while_another_thread_reads_leaves_the_child_usable(shm: Made) -> None:
    key, w = shm.create(checkpoint_every=100_000)
    w.append([b"x" * 50] * 2000, fsync=False)
    r = shm.open(key)
    stop = threading.Event()
    t = threading.Thread(target=_hammer, args=(r, stop))
    t.start()
    hung = 0
    try:
        for _ in range(3):
            time.sleep(0.005)
            pid = os.fork()
            if pid == 0:
                signal.signal(signal.SIGALRM, signal.SIG_DFL)  # not pytest-timeout's
                signal.alarm(2)  # a hung child dies of SIGALRM
                try:
                    _ = r.next_offset
                finally:
                    os._exit(0)
            _, status = os.waitpid(pid, 0)
            hung += os.WIFSIGNALED(status)
    finally:
        stop.set()
        t.join()
    assert hung == 0, f"{hung} of 3 forked children hung on the inherited handle lock"


class _FailingIO(FileIO):
    def __init__(self) -> None:
        super().__init__(durable=True)
        self.fail: str | None = None

    def fsync(self, fd: int) -> None:
        if self.fail == "fsync":
            self.fail = None
            raise StorageError("injected: fsync EIO")
        super().fsync(fd)


def test_failed_fsync_while_sealing_breaks_the_writer(tmp_path: Path) -> None:
    io = _FailingIO()
    w = shmstore.Log.create(path=tmp_path / "l", segment_size=SEG, _io=io)
    try:
        w.append([b"a" * 3000], fsync=False)
        io.fail = "fsync"  # the next append fills the segment: the seal's fsync fails
        # the batch itself landed and was published, so that append returns (a caller
        # retrying it would duplicate it); the broken rotation fails every later call
        assert w.append([b"b" * 3000], fsync=False)[0] == 2
        with pytest.raises(StorageError, match="rotation failed"):
            w.append([b"c"], fsync=False)
        w.close()
        w = shmstore.Log.open(path=tmp_path / "l", mode="a")  # reopening recovers
        assert w.next_offset == 2
        w.append([b"c"])
        assert w.verify()[0] == 3
    finally:
        w.close()


class _KillAtCreate(FileIO):
    def open(self, path: str, *, create: bool = False, writable: bool = False,
             mode: int = 0o600) -> int:
        if create and ".idx.tmp-" in path:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().open(path, create=create, writable=writable, mode=mode)


def test_remove_after_a_kill_mid_rotation_leaves_no_live_index(shm: Made) -> None:
    key, w = shm.create(segment_size=SEG)
    inst = shm.keys[0][1]
    w.close()
    pid = os.fork()
    if pid == 0:
        try:
            log = shmstore.Log.open(key, mode="a", _io=_KillAtCreate(durable=False))
            log.append([b"x" * 5000])  # fills segment 0: rotation, killed making segment 1
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    shmstore.Log.remove(key)
    shm.keys.clear()  # removed here; the leak (if any) is cleaned below, not by the fixture
    left = live_files(inst, 4)
    for e in left:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(SHM_DIR, e))
    assert left == []


class _HookIO(FileIO):
    """Runs a hook (once) inside a reader's file operation: after it measured a segment's
    size (before mapping it), or before it opens a given file."""

    def __init__(self) -> None:
        super().__init__(durable=False)
        self.on_size: Any = None
        self.on_open: tuple[str, Any] | None = None

    def size(self, fd: int) -> int:
        n = super().size(fd)
        if self.on_size is not None and os.readlink(f"/proc/self/fd/{fd}").endswith(".seg"):
            hook, self.on_size = self.on_size, None
            hook()
        return n

    def open(self, path: str, **kw: Any) -> int:
        if self.on_open is not None and path.endswith(self.on_open[0]):
            hook, self.on_open = self.on_open[1], None
            hook()
        return super().open(path, **kw)


def test_reader_attaching_a_segment_already_rotated_away_keeps_up(shm: Made) -> None:
    key, w = shm.create(segment_size=SEG)
    io = _HookIO()
    r = shmstore.Log.open(key, _io=io)
    try:
        w.append([b"a" * 5000])  # segment 0 -> 1
        assert r.next_offset == 1
        w.append([b"b" * 5000])  # segment 1 -> 2
        # while the reader lists segment 2, the writer fills it: 2 -> 3 (a fast writer)
        io.on_open = ("0000000002.seg", lambda: w.append([b"c" * 5000]))
        assert r.next_offset == 3
        w.append([b"d"])
        w.append([b"e"])
        assert r.next_offset == 5  # it stayed 3 before the fix
    finally:
        r.close()


def test_reader_mapping_the_active_segment_races_its_sealing(shm: Made) -> None:
    key, w = shm.create(segment_size=SEG)
    w.append([b"r0"])
    io = _HookIO()
    r = shmstore.Log.open(key, _io=io)
    try:
        # after the reader measured segment 0 (4204 bytes preallocated), the writer appends
        # to 4130 bytes: over segment_size, so it rotates and truncates segment 0 to 4130
        io.on_size = lambda: w.append([b"x" * 3900])
        assert [bytes(x.payload) for x in r.read_from(0, 1)] == [b"r0"]
    finally:
        r.close()


def _killed_before_filling_its_live_index(key: str) -> None:
    def die(self: Any, *a: Any, **k: Any) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    shmstore.resource.Resource.write_at = die  # type: ignore[method-assign]
    shmstore.Log.open(key, mode="a")  # recovery: _fresh_live creates, then would fill


@pytest.mark.timeout(30)
def test_records_hidden_by_a_writer_killed_before_filling_its_live_index(shm: Made) -> None:
    key, w = shm.create(segment_size=1 << 16)
    w.append([b"r%d" % i for i in range(5)])
    w.close()
    p = mp.get_context("fork").Process(target=_killed_before_filling_its_live_index,
                                       args=(key,))
    p.start()
    p.join(10)
    assert p.exitcode == -signal.SIGKILL
    r = shm.open(key)
    assert r.next_offset == 5  # it was 0 before the fix
    assert len(r.read_from(0)) == 5
