"""shmstore.Log with real files, real shared memory and real processes: appends and reads,
waits across processes, one writer and takeover, cursors, recovery, verified reads."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import pickle
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import shmstore
from shmstore.log import format as F

from . import _log_workers as wk

METHODS = ["fork", "spawn", "forkserver"]


@dataclass
class Logs:
    """Makes logs of one backend; removes them all at the end, even after failures."""

    kind: str
    tmp: Path
    keys: list[str] = field(default_factory=list)
    handles: list[shmstore.Log] = field(default_factory=list)

    def create(self, **kw: object) -> shmstore.Log:
        if self.kind == "shm":
            key = f"test-log-{uuid.uuid4().hex[:10]}"
            log = shmstore.Log.create(key, **kw)  # type: ignore[arg-type]
        else:
            key = str(self.tmp / f"log-{uuid.uuid4().hex[:8]}")
            log = shmstore.Log.create(path=key, **kw)  # type: ignore[arg-type]
        self.keys.append(key)
        self.handles.append(log)
        return log

    def open(self, key: str, mode: str = "r") -> shmstore.Log:
        log = wk.open_log(self.kind, key, mode)
        self.handles.append(log)
        return log

    @staticmethod
    def key(log: shmstore.Log) -> str:
        return log.name if log.backend == "shm" else log.path  # type: ignore[return-value]

    def cleanup(self) -> None:
        for h in self.handles:
            h.close()
        for key in self.keys:
            with contextlib.suppress(shmstore.ResourceNotFound):
                if self.kind == "shm":
                    shmstore.Log.remove(key)
                else:
                    shmstore.Log.remove(path=key)


@pytest.fixture(params=["shm", "mmap"])
def logs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Logs]:
    made = Logs(request.param, tmp_path)
    try:
        yield made
    finally:
        made.cleanup()


def _reap(procs: list[mp.process.BaseProcess]) -> None:
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join(10)


def _chain(payloads: list[bytes]) -> bytes:
    h = F.ZERO_HASH
    for p in payloads:
        h = F.chain(h, F.KIND_DATA, p)
    return h


# ------------------------------------------------------------------ appends and reads
def test_append_read_roundtrip_across_segments(logs: Logs) -> None:
    w = logs.create(segment_size=4096, checkpoint_every=5)
    payloads = [wk.payload(i) for i in range(300)]
    nxt, head = 0, b""
    for i in range(0, 300, 7):
        nxt, head = w.append(payloads[i:i + 7], fsync=i % 2 == 0)
        assert nxt == min(i + 7, 300)
        w._check()
    assert head == _chain(payloads) == w.latest_chain_hash
    assert w.segment_count > 5
    r = logs.open(logs.key(w))
    assert r.next_offset == 300
    assert r.latest_chain_hash == head
    assert wk.read_all(r) == payloads
    assert r.verify() == (300, head)
    # at least one record, and the last may overshoot max_bytes
    one = r.read_from(10, 1)
    assert [x.offset for x in one] == [10]
    some = r.read_from(10, len(payloads[10]) + 1)
    assert [x.offset for x in some] == [10, 11]
    assert r.read_from(300) == [] and r.read_from(10**6) == []


def test_same_appends_same_chain_hash_on_both_backends(tmp_path: Path) -> None:
    payloads = [os.urandom(50) * (i % 40) for i in range(400)]
    heads = []
    name = f"test-log-{uuid.uuid4().hex[:10]}"
    logs = [shmstore.Log.create(name, segment_size=8192, checkpoint_every=3),
            shmstore.Log.create(path=tmp_path / "a", segment_size=4096, compress=True),
            shmstore.Log.create(path=tmp_path / "b", checkpoint_every=1000)]
    try:
        for log in logs:
            for i in range(0, 400, 13):
                log.append(payloads[i:i + 13], fsync=False)
            heads.append(log.latest_chain_hash)
            assert log.verify() == (400, heads[-1])
        assert heads == [_chain(payloads)] * 3
    finally:
        for log in logs:
            log.close()
        shmstore.Log.remove(name)


def test_compression_only_when_smaller_and_transparent(tmp_path: Path) -> None:
    w = shmstore.Log.create(path=tmp_path / "l", compress=True)
    try:
        w.append([b"a" * 10_000, os.urandom(10_000)])
        r = shmstore.Log.open(path=tmp_path / "l")
        recs = r.read_from(0, 1 << 20)
        assert bytes(recs[0].payload) == b"a" * 10_000
        assert len(bytes(recs[1].payload)) == 10_000
        seg = (tmp_path / "l" / "0000000000.seg").read_bytes()
        codecs = [seg[p + 5] for p in _frames(seg) if seg[p + 4] == F.KIND_DATA]
        assert codecs == [F.CODEC_ZLIB, F.CODEC_NONE]
        r.close()
    finally:
        w.close()


def _frames(seg: bytes) -> list[int]:
    out, pos = [], 0
    while pos + F.FRAME_OVERHEAD <= len(seg) and seg[pos:pos + 4] == b"SLR1":
        out.append(pos)
        pos += F.FRAME_OVERHEAD + struct.unpack_from("<I", seg, pos + 8)[0]
    return out


def test_bad_calls_get_clear_errors(logs: Logs, tmp_path: Path) -> None:
    w = logs.create(max_record=1000)
    with pytest.raises(ValueError, match="empty batch"):
        w.append([])
    with pytest.raises(shmstore.InvalidRange):
        w.append([b"x" * 1001])
    assert w.next_offset == 0  # nothing of a refused batch was written
    w.append(b"one record")  # a bytes-like object is one record
    r = logs.open(logs.key(w))
    with pytest.raises(shmstore.ReadOnlyError):
        r.append([b"x"])
    with pytest.raises(shmstore.InvalidRange):
        r.read_from(-1)
    with pytest.raises(shmstore.InvalidName):
        r.cursor("no/slash")
    r.close()
    r.close()
    with pytest.raises(shmstore.ResourceClosed):
        r.read_from(0)
    again = {"name": w.name} if logs.kind == "shm" else {"path": w.path}
    with pytest.raises(shmstore.ResourceExists):
        shmstore.Log.create(**again)
    with pytest.raises(shmstore.ResourceNotFound):
        shmstore.Log.open(path=tmp_path / "nothing")
    assert [bytes(x.payload) for x in w.read_from(0)] == [b"one record"]


def test_foreign_or_damaged_settings_file_is_log_corrupt(tmp_path: Path) -> None:
    d = tmp_path / "l"
    shmstore.Log.create(path=d).close()
    raw = bytearray((d / "LOG").read_bytes())
    raw[20] ^= 1
    (d / "LOG").write_bytes(bytes(raw))
    with pytest.raises(shmstore.LogCorrupt):
        shmstore.Log.open(path=d)
    (d / "LOG").write_bytes(b"not a log")
    with pytest.raises(shmstore.LogCorrupt):
        shmstore.Log.open(path=d, mode="a")


# ------------------------------------------------------------------ waits across processes
@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", METHODS)
def test_wait_for_wakes_a_reader_in_another_process(logs: Logs, method: str) -> None:
    """A reader parks in wait_for on records not yet appended, across rotations; each
    wait returns once its record is there, and the record is the one appended."""
    ctx: Any = mp.get_context(method)
    w = logs.create(segment_size=4096, checkpoint_every=4)
    offsets = [0, 1, 5, 40, 41, 200]
    parent, child = ctx.Pipe()
    p = ctx.Process(target=wk.waiter, args=(logs.kind, logs.key(w), offsets, child))
    try:
        p.start()
        child.close()
        i = 0
        for off in offsets:
            assert parent.poll(60) and parent.recv() == ("waiting", off)
            while i <= off:  # append up to and including the awaited record
                w.append([wk.payload(i)], fsync=False)
                i += 1
            assert parent.poll(60)
            assert parent.recv() == ("got", off, wk.payload(off))
        p.join(30)
        assert p.exitcode == 0
        assert w.segment_count > 2
    finally:
        _reap([p])


@pytest.mark.timeout(60)
def test_wait_for_times_out(logs: Logs) -> None:
    w = logs.create()
    r = logs.open(logs.key(w))
    with pytest.raises(TimeoutError):
        r.wait_for(0, timeout=0.05)
    w.append([b"x"])
    assert r.wait_for(0, timeout=0.05) == 1


# ------------------------------------------------------------------ one writer, takeover
@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_second_writer_is_refused_in_any_process(logs: Logs, method: str) -> None:
    w = logs.create()
    with pytest.raises(shmstore.WriterActive):
        logs.open(logs.key(w), "a")
    with mp.get_context(method).Pool(1) as pool:
        got = pool.apply(wk.try_writer, (logs.kind, logs.key(w)))
    assert got.startswith("WriterActive")
    w.close()
    with mp.get_context(method).Pool(1) as pool:
        assert pool.apply(wk.try_writer, (logs.kind, logs.key(w))) == "ok"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", METHODS)
def test_killed_writer_is_taken_over_and_parked_reader_continues(logs: Logs,
                                                                  method: str) -> None:
    """A writer process is killed while a reader in a third process waits for a record it
    never appended: the reader gets WriterDied; the next writer takes the log over (the
    chain goes on) and the reader's next wait gets its record."""
    ctx: Any = mp.get_context(method)
    w = logs.create(segment_size=4096, checkpoint_every=4)
    key = logs.key(w)
    w.append([wk.payload(i) for i in range(10)])
    w.close()
    a_parent, a_child = ctx.Pipe()
    r_parent, r_child = ctx.Pipe()
    writer = ctx.Process(target=wk.appender, args=(logs.kind, key, 10, 50, a_child))
    reader = ctx.Process(target=wk.waiter, args=(logs.kind, key, [60], r_child))
    procs = [writer, reader]
    try:
        writer.start()
        a_child.close()
        assert a_parent.poll(60) and a_parent.recv() == ("writer", 10)
        assert a_parent.poll(60)
        done = a_parent.recv()
        assert done[:2] == ("done", 60)
        reader.start()
        r_child.close()
        assert r_parent.poll(60) and r_parent.recv() == ("waiting", 60)
        writer.kill()
        writer.join(10)
        assert r_parent.poll(60) and r_parent.recv() == ("WriterDied", 60)
        w2 = logs.open(key, "a")  # takeover: recovery, then the chain goes on
        assert w2.next_offset == 60 and w2.latest_chain_hash == done[2]
        w2.append([wk.payload(60)])
        r_parent.send("go")
        assert r_parent.poll(60) and r_parent.recv() == ("got", 60, wk.payload(60))
        reader.join(30)
        assert reader.exitcode == 0
        assert w2.verify()[0] == 61
        assert wk.read_all(w2) == [wk.payload(i) for i in range(61)]
    finally:
        _reap(procs)


@pytest.mark.timeout(60)
def test_forked_child_does_not_inherit_the_writer_claim(logs: Logs) -> None:
    w = logs.create()
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    # the child only waits; it must not keep the parent's claim alive
    p = ctx.Process(target=_hold, args=(child,))
    try:
        p.start()
        child.close()
        assert parent.poll(30) and parent.recv() == "up"
        w.close()
        w2 = logs.open(logs.key(w), "a")
        w2.append([b"after"])
        parent.send("bye")
        p.join(10)
    finally:
        _reap([p])


def _hold(conn: mp.connection.Connection) -> None:
    conn.send("up")
    conn.recv()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_pickled_reader_handle_works_in_a_child(logs: Logs, method: str) -> None:
    w = logs.create()
    r = logs.open(logs.key(w))
    with mp.get_context(method).Pool(1) as pool:
        fut = pool.apply_async(wk.pickled_reader, (r, 3))
        w.append([wk.payload(i) for i in range(4)])
        assert fut.get(60) == wk.payload(3)
    with pytest.raises(TypeError):
        pickle.dumps(w)


# ------------------------------------------------------------------ cursors
@pytest.mark.timeout(60)
def test_cursors_survive_restarts_of_their_consumers(logs: Logs) -> None:
    w = logs.create()
    w.append([wk.payload(i) for i in range(20)])
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=wk.commit_cursor, args=(logs.kind, logs.key(w), "indexer", 12))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    r = logs.open(logs.key(w))
    cur = r.cursor("indexer")
    assert cur.offset == 12
    assert r.cursor("other").offset == 0
    assert r.cursors() == {"indexer": 12}
    assert [x.offset for x in r.read_from(cur.offset, 1)] == [12]
    cur.commit(13)
    assert logs.open(logs.key(w)).cursor("indexer").offset == 13


# ------------------------------------------------------------------ recovery
def _disk(tmp_path: Path, **kw: object) -> tuple[Path, shmstore.Log]:
    d = tmp_path / "l"
    return d, shmstore.Log.create(path=d, **kw)  # type: ignore[arg-type]


def test_torn_tail_is_cut_even_when_the_index_loads(tmp_path: Path) -> None:
    """kimberlite's hazard: a stale index that loads must not hide a torn tail. Records
    beyond the cut, torn bytes and index entries past it are dropped; the next append
    lands right after the last good record."""
    d, w = _disk(tmp_path, checkpoint_every=4)
    payloads = [wk.payload(i) for i in range(10)]
    w.append(payloads)
    w.close()
    seg = d / "0000000000.seg"
    idx = d / "0000000000.idx"
    raw = seg.read_bytes()
    end = _frames(raw)[-1] + F.FRAME_OVERHEAD + len(payloads[-1])
    frame, _ = F.encode_record(10, _chain(payloads), b"torn" * 100, compress=False)
    with open(seg, "r+b") as f:
        f.seek(end)
        f.write(frame[:150])  # a torn write: header and part of the payload
    with open(idx, "ab") as f:
        f.write(struct.pack("<QQ", end, end + 400))  # index entries for records never whole
    w = shmstore.Log.open(path=d, mode="a")
    try:
        assert w.recovered["cut_bytes"] == 150
        assert w.recovered["index_entries_dropped"] == 2
        w._check()
        assert w.next_offset == 10 and w.latest_chain_hash == _chain(payloads)
        w.append([b"eleventh"])
        assert wk.read_all(w) == [*payloads, b"eleventh"]
        assert w.verify()[0] == 11
        assert _frames(seg.read_bytes())[-1] == end  # record 10, where the torn one was
    finally:
        w.close()
    assert idx.stat().st_size == F.IDX_HEADER.size + 8 * 11


def test_garbage_after_the_last_record_is_never_served(tmp_path: Path) -> None:
    d, w = _disk(tmp_path)
    w.append([b"a", b"b"])
    r = shmstore.Log.open(path=d)
    w.close()  # no writer now: a reader serves what the index leads to, checked
    raw = (d / "0000000000.seg").read_bytes()
    end = _frames(raw)[-1] + F.FRAME_OVERHEAD + 1
    with open(d / "0000000000.seg", "r+b") as f:
        f.seek(end)
        f.write(b"\xff" * 300)
    with open(d / "0000000000.idx", "ab") as f:
        f.write(struct.pack("<Q", end))
    assert [bytes(x.payload) for x in r.read_from(0)] == [b"a", b"b"]
    r.close()
    w = shmstore.Log.open(path=d, mode="a")
    assert w.recovered["cut_bytes"] == 300 and w.next_offset == 2
    w.close()


def test_restart_with_many_segments_restores_the_true_chain_head(tmp_path: Path) -> None:
    """kimberlite's hazard: the chain head after a restart comes from the last segment,
    not the first; appends after it keep the chain whole."""
    d, w = _disk(tmp_path, segment_size=4096, checkpoint_every=7)
    payloads = [wk.payload(i) for i in range(500)]
    for i in range(0, 500, 11):
        w.append(payloads[i:i + 11], fsync=False)
    head, segs = w.latest_chain_hash, w.segment_count
    w.close()
    assert segs > 10
    w = shmstore.Log.open(path=d, mode="a")
    try:
        assert w.latest_chain_hash == head == _chain(payloads)
        assert w.recovered["cut_bytes"] == 0
        w._check()
        w.append([b"more"])
        assert w.verify() == (501, _chain([*payloads, b"more"]))
        r = shmstore.Log.open(path=d)
        assert r.latest_chain_hash == w.latest_chain_hash
        r.close()
    finally:
        w.close()


def test_a_crash_right_after_sealing_rotates_on_reopen(tmp_path: Path) -> None:
    d, w = _disk(tmp_path, segment_size=4096)
    w.append([b"x" * 5000])  # one batch past the threshold: sealed, next segment made
    assert w.segment_count == 2
    w.close()
    # as if the writer died between sealing segment 0 and creating segment 1
    os.unlink(d / "0000000001.seg")
    os.unlink(d / "0000000001.idx")
    w = shmstore.Log.open(path=d, mode="a")
    try:
        assert w.segment_count == 2 and w.next_offset == 1
        w.append([b"y"])
        assert w.verify()[0] == 2
    finally:
        w.close()


def test_damaged_sealed_index_is_caught_on_load(tmp_path: Path) -> None:
    d, w = _disk(tmp_path, segment_size=4096)
    w.append([b"x" * 3000, b"y" * 3000])
    w.append([b"z"])
    w.close()
    idx = d / "0000000000.idx"
    raw = bytearray(idx.read_bytes())
    raw[F.IDX_HEADER.size] ^= 0x10  # the first entry
    idx.write_bytes(bytes(raw))
    r = shmstore.Log.open(path=d)
    with pytest.raises(shmstore.LogCorrupt):
        r.read_from(0)
    r.close()


# ------------------------------------------------------------------ verified reads
def _sealed_log(tmp_path: Path, n: int = 6, size: int = 700) -> tuple[Path, list[bytes]]:
    """A log whose segment 0 is sealed (completed, immutable) and holds ``n`` records of
    ``size`` bytes after its checkpoint."""
    d, w = _disk(tmp_path, segment_size=4096, checkpoint_every=100)
    payloads = [bytes([65 + i]) * size for i in range(n)]
    w.append(payloads)
    assert w.segment_count == 2
    w.close()
    return d, payloads


def _rewrite(seg: Path, frames: list[bytes]) -> None:
    raw = seg.read_bytes()
    body = b"".join(frames)
    seg.write_bytes(body + bytes(len(raw) - len(body)))


def _split(seg: Path) -> list[bytes]:
    raw = seg.read_bytes()
    out = []
    for p in _frames(raw):
        n = struct.unpack_from("<I", raw, p + 8)[0]
        out.append(raw[p:p + F.FRAME_OVERHEAD + n])
    return out


def test_verified_reads_detect_a_flipped_bit(tmp_path: Path) -> None:
    d, _ = _sealed_log(tmp_path)
    seg = d / "0000000000.seg"
    raw = bytearray(seg.read_bytes())
    raw[F.CHECKPOINT_FRAME + F.FRAME_OVERHEAD + 700 + 70] ^= 0x04  # record 1's payload
    seg.write_bytes(bytes(raw))
    r = shmstore.Log.open(path=d)
    try:
        assert bytes(r.read_from(0, 1)[0].payload) == b"A" * 700
        with pytest.raises(shmstore.RecordCorrupt):
            r.read_from(1)
        with pytest.raises(shmstore.RecordCorrupt):
            r.verify()
    finally:
        r.close()


def test_verified_reads_detect_reordered_and_missing_records(tmp_path: Path) -> None:
    d, _ = _sealed_log(tmp_path)
    seg = d / "0000000000.seg"
    frames = _split(seg)  # checkpoint, records 0..5
    swapped = [frames[0], frames[1], frames[3], frames[2], *frames[4:]]
    _rewrite(seg, swapped)
    r = shmstore.Log.open(path=d)
    try:
        with pytest.raises(shmstore.RecordOutOfOrder) as e:
            r.read_from(1)
        assert e.value.where == 1
        with pytest.raises(shmstore.RecordOutOfOrder):
            r.verify()
    finally:
        r.close()
    missing = [frames[0], frames[1], frames[3], frames[4], frames[5], frames[6], frames[6]]
    assert len(frames) == 7
    _rewrite(seg, missing)
    r = shmstore.Log.open(path=d)
    try:
        with pytest.raises(shmstore.RecordMissing) as e2:
            r.read_from(1)
        assert e2.value.where == 1
    finally:
        r.close()


def test_verified_reads_detect_a_replaced_record(tmp_path: Path) -> None:
    """A record replaced by another valid frame (CRC and all) breaks the chain at the next
    record: ChainBroken, from a checkpoint anchor and from genesis."""
    d, payloads = _sealed_log(tmp_path)
    seg = d / "0000000000.seg"
    frames = _split(seg)
    forged, _ = F.encode_record(2, _chain(payloads[:2]), b"Z" * 700, compress=False)
    frames[3] = bytes(forged)
    _rewrite(seg, frames)
    r = shmstore.Log.open(path=d)
    try:
        assert bytes(r.read_from(2, 1)[0].payload) == b"Z" * 700  # its own link is right
        with pytest.raises(shmstore.ChainBroken) as e:
            r.read_from(3)
        assert e.value.where == 3
        with pytest.raises(shmstore.ChainBroken):
            r.verify()
        assert [bytes(x.payload) for x in r.read_from(3, verify=False)][:1] == [payloads[3]]
    finally:
        r.close()


def test_a_flipped_bit_in_the_active_segment_ends_it_for_readers_and_recovery(
        tmp_path: Path) -> None:
    """The policy (docs/design.md): recovery cuts the active segment at its first invalid
    record, and a reader with no writer serves nothing past it either. Sealed segments are
    never cut: there a flipped bit is a RecordCorrupt for the reads that reach it."""
    d, w = _disk(tmp_path)
    w.append([b"a" * 100, b"b" * 100, b"c" * 100])
    w.close()
    seg = d / "0000000000.seg"
    raw = bytearray(seg.read_bytes())
    raw[F.CHECKPOINT_FRAME + F.FRAME_OVERHEAD + 100 + F.HEADER.size + 5] ^= 1  # record 1
    seg.write_bytes(bytes(raw))
    r = shmstore.Log.open(path=d)
    assert [bytes(x.payload) for x in r.read_from(0)] == [b"a" * 100]
    r.close()
    w = shmstore.Log.open(path=d, mode="a")
    assert w.next_offset == 1 and w.recovered["records"] == 1
    assert w.recovered["cut_bytes"] == 2 * (F.FRAME_OVERHEAD + 100)
    w.close()


def test_readers_follow_a_writer_that_closes_and_one_that_takes_over(logs: Logs) -> None:
    w = logs.create()
    key = logs.key(w)
    r = logs.open(key)
    w.append([b"a"])
    w.close()
    with pytest.raises(shmstore.WriterDied):
        r.wait_for(1, timeout=5)
    assert [bytes(x.payload) for x in r.read_from(0)] == [b"a"]
    w2 = logs.open(key, "a")
    w2.append([b"b"])
    assert r.wait_for(1, timeout=5) == 2
    assert [bytes(x.payload) for x in r.read_from(0)] == [b"a", b"b"]
    it = r.follow(0, timeout=5)
    assert [bytes(next(it).payload) for _ in range(2)] == [b"a", b"b"]


def test_a_reader_of_many_segments_keeps_a_bounded_number_open(tmp_path: Path) -> None:
    import psutil
    d, w = _disk(tmp_path, segment_size=4096)
    payloads = [wk.payload(i) * 8 for i in range(400)]
    for i in range(0, 400, 10):
        w.append(payloads[i:i + 10], fsync=False)
    assert w.segment_count > 40
    r = shmstore.Log.open(path=d)
    me = psutil.Process()
    fds = me.num_fds()
    assert wk.read_all(r) == payloads
    assert r.verify()[0] == 400
    assert me.num_fds() - fds <= 24  # 16 sealed segments mapped (a dup each), the active one
    r.close()
    w.close()
    assert me.num_fds() <= fds


def test_a_reader_sees_segments_of_a_writer_that_came_and_went(tmp_path: Path) -> None:
    """(Found by a helper.) A reader that listed the segments while no writer was there
    must still see what a writer appended, across rotations, after it left."""
    d = tmp_path / "l"
    shmstore.Log.create(path=d, segment_size=4096).close()
    r = shmstore.Log.open(path=d)
    assert r.next_offset == 0
    with shmstore.Log.open(path=d, mode="a") as w:
        for i in range(60):
            w.append(bytes([i]) * 300)
        assert w.inspect()["records"] == 60  # inspect works on a writer handle too
        assert w.segment_count > 3
    assert r.next_offset == 60
    assert [bytes(x.payload) for x in r.read_from(0, 1 << 30)] == [
        bytes([i]) * 300 for i in range(60)]
    assert r.wait_for(12, timeout=1) == 60
    r.close()


@pytest.mark.timeout(60)
def test_a_creator_killed_mid_create_leaves_nothing_the_next_create_keeps(
        tmp_path: Path) -> None:
    """A creator killed before its log was renamed into place leaves a half-made
    ``<dir>.creating-*``; the next create of that path removes it (its claim is free)
    and never one whose creator is alive."""
    d = tmp_path / "l"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child dies inside create
        from shmstore.log import log as L

        def die(*a: object, **kw: object) -> None:
            os.kill(os.getpid(), 9)

        L._make_segment = die  # type: ignore[assignment]
        shmstore.Log.create(path=d)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    left = [n for n in os.listdir(tmp_path) if n.startswith("l.creating-")]
    assert len(left) == 1 and not d.exists()
    # a live creator's claim is respected: hold one as a creator would
    live = tmp_path / "l.creating-live0000"
    live.mkdir()
    import fcntl
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        shmstore.Log.create(path=d).close()
        assert sorted(os.listdir(tmp_path)) == ["l", "l.creating-live0000"]
    finally:
        os.close(fd)
    shmstore.Log.remove(path=d)
