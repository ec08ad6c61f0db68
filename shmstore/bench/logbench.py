"""Scenario ``log``: appending 1 KiB records to a log on disk, and how soon another process
has each one, against the stores a Python user would otherwise reach for.

Stores (each in a fresh directory under ``$TMPDIR``, on disk, for every measurement):

* ``shmstore Log (disk)``: ``shmstore.Log.create(path=...)``; ``append(record, fsync=...)``
  or ``append(batch, fsync=...)`` (one ``pwrite`` of the frames and one of the index
  entries per call; with fsync an ``fdatasync`` of each of the two files).
* ``shmstore Log (shm)``: the same log in shared memory (``Log.create(name)``), an extra
  row: nothing to sync there, so fsync-off rows only.
* ``file + CRC32``: a plain ``O_APPEND`` file of ``[u32 length][u32 crc32][payload]``
  frames, one ``os.write`` per call (a batch joined into one buffer), ``os.fdatasync``
  after it when fsync is on. No index, no chain, no recovery: the floor of a log.
* ``sqlite3 WAL``: ``journal_mode=WAL``, a table ``(seq INTEGER PRIMARY KEY, payload
  BLOB)``, autocommit connection: one ``INSERT`` (its own transaction) per record, or
  ``BEGIN`` / ``executemany`` / ``COMMIT`` per batch. fsync off = ``synchronous=NORMAL``
  (in WAL mode a commit is not synced; the WAL is synced at checkpoints), fsync on =
  ``synchronous=FULL`` (the WAL is synced at every commit). The default automatic
  checkpoint (every 1000 WAL pages) runs inside the timed region, as it does in use.
* ``lmdb``: ``lmdb.open(dir, sync=...)`` (``sync=False`` for fsync off: commits are not
  flushed; ``sync=True``: they are), big-endian 8-byte sequence keys put with
  ``append=True``, one write transaction per record or per batch. Skipped, never faked,
  when the package is missing.

Appends: one process pinned to the last usable CPU, the garbage collector off during the
timed loop; a warm-up of a few calls, then each call timed with ``perf_counter_ns``;
``os.sync()`` before every measurement, so no other measurement's dirty pages are written
back during it. records/s = records / the timed loop's wall time (median over repeats, each
repeat a fresh store in a fresh child, round-robin over the stores); per-call p50/p99 over
the calls of every repeat; CPU us per record from ``getrusage`` (the rest of the wall time
is waiting for the disk). Four cases: one record per call and 100 records per call, each
with fsync off and on (fsync-on rounds make fewer calls).

Tail latency: a writer process (first CPU) appends one record at a time, with fsync off,
then sleeps 0.5-1.5 ms (uniformly random, so the readers' poll cycle does not phase-lock
with it); a reader process (second CPU) is blocked on the next record. The writer stamps
``perf_counter_ns`` into each record just before its append and keeps the time its append
returned; the reader takes the time it has the record in hand (payload read, CRC checked
where the store does not). Reported: append returned -> reader has it (p50/p90/p99/max; it
can be negative: a store that publishes before its append returns can be read before the
writer is back), and append called -> reader has it (end to end). Readers:

* shmstore: ``wait_for(offset)`` then ``read_from(offset)`` (parks on the log's live index;
  no polling).
* ``file + CRC32, posix_ipc semaphore``: the writer posts a named semaphore after each
  write (counted in its append); the reader waits on it, then reads. The hand-rolled
  cross-process wake-up; the baseline of the ``x sem`` ratios.
* ``file + CRC32``, ``sqlite3 WAL``, ``lmdb``: poll, with ``time.sleep(100 us)`` after
  every empty poll (none of them can wait for another process's commit).
* ``file + CRC32, busy poll``: polls without sleeping: the floor of polling, at the price
  of a whole CPU.

The reader's CPU time per record (``getrusage``) shows what waiting costs.
"""

from __future__ import annotations

import gc
import importlib
import os
import random
import sqlite3
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import posix_ipc

import shmstore

from .harness import (
    CTX,
    Config,
    KiB,
    Names,
    Progress,
    Table,
    brief,
    cpus,
    peer,
    pin,
    run_children,
    skipped,
    summarize,
    usage,
    usage_since,
)

REC = 1 * KiB
BATCH = 100
POLL = 100e-6  # seconds a polling reader sleeps after an empty poll
GAP = (0.5e-3, 1.5e-3)  # the tail writer's pause between appends, seconds (uniform)
TIMEOUT = 60.0
LMDB_MAP = 1 << 30
_FRAME = struct.Struct("<II")  # file peer: length, crc32
_KEY = struct.Struct(">Q")  # lmdb keys: sequence numbers that sort as bytes
_STAMP = struct.Struct("<qq")  # tail records start with (sequence, perf_counter_ns)

LOG_DISK, LOG_SHM = "shmstore Log (disk)", "shmstore Log (shm)"
FILE, SQLITE, LMDB = "file + CRC32", "sqlite3 WAL", "lmdb"
STORES = [LOG_DISK, LOG_SHM, FILE, SQLITE, LMDB]

# (key, label, records per call, fsync)
CASES = [("one-nosync", "one by one, fsync off", 1, False),
         ("one-sync", "one by one, fsync on", 1, True),
         ("batch-nosync", f"batches of {BATCH}, fsync off", BATCH, False),
         ("batch-sync", f"batches of {BATCH}, fsync on", BATCH, True)]


# ---------------------------------------------------------------------------------- stores
@dataclass
class Store:
    """A writer: ``one(record)``, ``many(records)``, ``count()`` (records stored), and
    ``close()``."""

    one: Callable[[bytes], Any]
    many: Callable[[list[bytes]], Any]
    count: Callable[[], int]
    close: Callable[[], None]


def _lmdb() -> Any:
    return importlib.import_module("lmdb")


def open_store(kind: str, where: str, fsync: bool) -> Store:
    """Create the store ``kind`` at ``where`` (a path; a log name for the shm log) and return
    its writer."""
    if kind in (LOG_DISK, LOG_SHM):
        log = (shmstore.Log.create(path=where) if kind == LOG_DISK
               else shmstore.Log.create(where))
        append = log.append

        def one(rec: bytes) -> Any:
            return append(rec, fsync=fsync)

        def many(recs: list[bytes]) -> Any:
            return append(recs, fsync=fsync)

        return Store(one, many, lambda: log.next_offset, log.close)
    if kind == FILE:
        fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC,
                     0o600)
        write, sync, pack, crc = os.write, os.fdatasync, _FRAME.pack, zlib.crc32

        def fone(rec: bytes) -> None:
            buf = pack(len(rec), crc(rec)) + rec
            if write(fd, buf) != len(buf):
                raise OSError("short write")
            if fsync:
                sync(fd)

        def fmany(recs: list[bytes]) -> None:
            buf = b"".join([pack(len(r), crc(r)) + r for r in recs])
            if write(fd, buf) != len(buf):
                raise OSError("short write")
            if fsync:
                sync(fd)

        def fcount() -> int:
            return os.fstat(fd).st_size // (_FRAME.size + REC)

        return Store(fone, fmany, fcount, lambda: os.close(fd))
    if kind == SQLITE:
        conn = sqlite3.connect(where, isolation_level=None)  # autocommit
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise RuntimeError(f"sqlite3 refused WAL mode ({mode})")
        conn.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        conn.execute("CREATE TABLE log (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        ins = "INSERT INTO log(payload) VALUES (?)"
        execute, executemany = conn.execute, conn.executemany

        def sone(rec: bytes) -> None:
            execute(ins, (rec,))

        def smany(recs: list[bytes]) -> None:
            execute("BEGIN")
            executemany(ins, [(r,) for r in recs])
            execute("COMMIT")

        def scount() -> int:
            return int(conn.execute("SELECT count(*) FROM log").fetchone()[0])

        return Store(sone, smany, scount, conn.close)
    if kind == LMDB:
        env = _lmdb().open(where, map_size=LMDB_MAP, sync=fsync, max_dbs=0)
        begin, key = env.begin, _KEY.pack
        seq = [0]

        def lone(rec: bytes) -> None:
            with begin(write=True) as txn:
                txn.put(key(seq[0]), rec, append=True)
            seq[0] += 1

        def lmany(recs: list[bytes]) -> None:
            i = seq[0]
            with begin(write=True) as txn:
                put = txn.put
                for r in recs:
                    put(key(i), r, append=True)
                    i += 1
            seq[0] = i

        return Store(lone, lmany, lambda: int(env.stat()["entries"]), env.close)
    raise ValueError(kind)


def _records(n: int) -> list[bytes]:
    rng = random.Random(11)
    return [rng.randbytes(REC) for _ in range(n)]


# ---------------------------------------------------------------------------------- appends
def append_child(kind: str, where: str, per_call: int, fsync: bool, calls: int, warm: int,
                 cpu: int | None) -> dict[str, Any]:
    pin(cpu)
    recs = _records(256)
    store = open_store(kind, where, fsync)
    try:
        if per_call == 1:
            fn: Callable[[Any], Any] = store.one
            args: list[Any] = [recs[i % len(recs)] for i in range(warm + calls)]
        else:
            fn = store.many
            batches = [[recs[(b * per_call + i) % len(recs)] for i in range(per_call)]
                       for b in range(8)]
            args = [batches[i % len(batches)] for i in range(warm + calls)]
        clock = time.perf_counter_ns
        samples: list[int] = []
        add = samples.append
        enabled = gc.isenabled()
        gc.disable()
        try:
            for a in args[:warm]:
                fn(a)
            before = usage()
            t0 = clock()
            for a in args[warm:]:
                s = clock()
                fn(a)
                add(clock() - s)
            t1 = clock()
            used = usage_since(before)
        finally:
            if enabled:
                gc.enable()
        stored = store.count()
        if stored != (warm + calls) * per_call:
            raise AssertionError(f"{kind}: {stored} records stored, expected"
                                 f" {(warm + calls) * per_call}")
        return {"call_us": [s / 1000.0 for s in samples], "wall_s": (t1 - t0) / 1e9,
                "records": calls * per_call, **used}
    finally:
        store.close()


def _place(names: Names, kind: str, made: list[str]) -> str:
    """Where a fresh store of ``kind`` goes; registered for release in ``made``."""
    if kind == LOG_SHM:
        name = names.log()
        made.append(name)
        return name
    d = names.tempdir()
    made.append(d)
    where = os.path.join(d, "store")
    if kind == LOG_DISK:
        names.log_path(where)
    return where


def measure_append(names: Names, kind: str, per_call: int, fsync: bool, calls: int,
                   warm: int, cpu: int | None) -> dict[str, Any]:
    with names.scope() as made:
        where = _place(names, kind, made)
        os.sync()  # the previous measurement's dirty pages are not flushed during this one
        (got,) = run_children([(append_child, (kind, where, per_call, fsync, calls, warm,
                                               cpu))], timeout=TIMEOUT * 2)
        return dict(got)


# ---------------------------------------------------------------------------------- tail
def tail_writer(kind: str, where: str, sem: str | None, n: int, cpu: int | None,
                ready: Any, go: Any, done: Any) -> dict[str, Any]:
    pin(cpu)
    store = open_store(kind, where, False)
    s = posix_ipc.Semaphore(sem) if sem else None
    try:
        filler = bytearray(random.Random(12).randbytes(REC))
        rng = random.Random(13)
        gaps = [rng.uniform(*GAP) for _ in range(n)]
        one, clock, sleep, stamp = store.one, time.perf_counter_ns, time.sleep, _STAMP.pack_into
        post = s.release if s is not None else None
        before_ns: list[int] = []
        after_ns: list[int] = []
        ready.set()
        go.wait(TIMEOUT)
        gc.disable()
        for i in range(n):
            t0 = clock()
            stamp(filler, 0, i, t0)
            one(bytes(filler))
            if post is not None:
                post()
            t1 = clock()
            before_ns.append(t0)
            after_ns.append(t1)
            sleep(gaps[i])
        gc.enable()
        if not done.wait(TIMEOUT):
            raise TimeoutError("the reader did not get every record")
        return {"before_ns": before_ns, "after_ns": after_ns}
    finally:
        if s is not None:
            s.close()
        store.close()


def _file_frames(data: bytes, out: list[bytes]) -> int:
    """Complete, CRC-checked frames at the start of ``data`` into ``out``; bytes used."""
    p, size, unpack, crc = 0, len(data), _FRAME.unpack_from, zlib.crc32
    while size - p >= _FRAME.size:
        ln, c = unpack(data, p)
        end = p + _FRAME.size + ln
        if ln == 0 or end > size:
            break  # not written yet (or half written)
        payload = data[p + _FRAME.size:end]
        if crc(payload) != c:
            break  # a write in progress: read again
        out.append(payload)
        p = end
    return p


def tail_reader(kind: str, how: str, where: str, sem: str | None, n: int, cpu: int | None,
                ready: Any, go: Any, done: Any) -> dict[str, Any]:
    pin(cpu)
    if not ready.wait(TIMEOUT):
        raise TimeoutError("the writer did not create its store")
    clock, sleep = time.perf_counter_ns, time.sleep
    seqs: list[int] = []
    stamps: list[int] = []
    have_ns: list[int] = []

    def got(payloads: list[Any], t: int) -> None:
        for p in payloads:
            i, t0 = _STAMP.unpack_from(p, 0)
            seqs.append(i)
            stamps.append(t0)
            have_ns.append(t)

    closers: list[Callable[[], None]] = []
    try:
        gc.disable()
        if kind in (LOG_DISK, LOG_SHM):
            log = (shmstore.Log.open(path=where) if kind == LOG_DISK
                   else shmstore.Log.open(where))
            closers.append(log.close)
            wait_for, read_from = log.wait_for, log.read_from
            go.wait(TIMEOUT)
            before = usage()
            off = 0
            while off < n:
                wait_for(off, TIMEOUT)
                recs = read_from(off)
                got([r.payload for r in recs], clock())
                off += len(recs)
        elif kind == FILE:
            fd = os.open(where, os.O_RDONLY | os.O_CLOEXEC)
            closers.append(lambda: os.close(fd))
            s = posix_ipc.Semaphore(sem) if sem else None
            if s is not None:
                closers.append(s.close)
            pread = os.pread
            pos = 0
            go.wait(TIMEOUT)
            before = usage()
            deadline = time.monotonic() + TIMEOUT
            while len(seqs) < n:
                if s is not None:
                    s.acquire(TIMEOUT)
                out: list[bytes] = []
                pos += _file_frames(pread(fd, 1 << 16, pos), out)
                if out:
                    got(out, clock())
                elif how == "sleep":
                    sleep(POLL)
                elif time.monotonic() > deadline:
                    raise TimeoutError("records stopped coming")
        elif kind == SQLITE:
            conn = sqlite3.connect(where, isolation_level=None)
            closers.append(conn.close)
            q = "SELECT seq, payload FROM log WHERE seq > ? ORDER BY seq"
            execute = conn.execute
            last = 0
            go.wait(TIMEOUT)
            before = usage()
            while len(seqs) < n:
                rows = execute(q, (last,)).fetchall()
                if rows:
                    got([r[1] for r in rows], clock())
                    last = rows[-1][0]
                else:
                    sleep(POLL)
        elif kind == LMDB:
            env = _lmdb().open(where, map_size=LMDB_MAP, readonly=True, max_dbs=0)
            closers.append(env.close)
            begin, key = env.begin, _KEY.pack
            go.wait(TIMEOUT)
            before = usage()
            while len(seqs) < n:
                out = []
                with begin() as txn:
                    cur = txn.cursor()
                    if cur.set_range(key(len(seqs))):
                        out = [bytes(v) for _, v in cur]
                if out:
                    got(out, clock())
                else:
                    sleep(POLL)
        else:
            raise ValueError(kind)
        used = usage_since(before)
        gc.enable()
        if seqs != list(range(n)):
            raise AssertionError(f"{kind}: records out of order or missing")
        return {"stamp_ns": stamps, "have_ns": have_ns, **used}
    finally:
        done.set()
        for c in reversed(closers):
            c()


def measure_tail(names: Names, kind: str, how: str, n: int, cw: int | None,
                 cr: int | None) -> dict[str, Any]:
    ready, go, done = CTX.Event(), CTX.Barrier(2), CTX.Event()
    with names.scope() as made:
        where = _place(names, kind, made)
        sem = None
        if how == "sem":
            sem = names.semaphore(0)
            made.append(sem)
        os.sync()
        w, r = run_children([
            (tail_writer, (kind, where, sem, n, cw, ready, go, done)),
            (tail_reader, (kind, how, where, sem, n, cr, ready, go, done)),
        ], timeout=TIMEOUT * 2)
    if r["stamp_ns"] != w["before_ns"]:
        raise AssertionError(f"{kind}: the reader's stamps are not the writer's")
    return {"after_us": [(h - a) / 1000.0 for h, a in zip(r["have_ns"], w["after_ns"],
                                                          strict=True)],
            "e2e_us": [(h - b) / 1000.0 for h, b in zip(r["have_ns"], w["before_ns"],
                                                        strict=True)],
            "append_us": [(a - b) / 1000.0 for a, b in zip(w["after_ns"], w["before_ns"],
                                                           strict=True)],
            "reader_cpu_s": r["cpu_s"], "reader_nvcsw": r["nvcsw"]}


# (label, store, reader: "wait" | "sem" | "sleep" | "busy")
TAILS = [(f"{LOG_DISK}: wait_for + read_from", LOG_DISK, "wait"),
         (f"{LOG_SHM}: wait_for + read_from", LOG_SHM, "wait"),
         (f"{FILE}, posix_ipc semaphore", FILE, "sem"),
         (f"{FILE}, poll every 100 us", FILE, "sleep"),
         (f"{FILE}, busy poll", FILE, "busy"),
         (f"{SQLITE}, poll every 100 us", SQLITE, "sleep"),
         (f"{LMDB}, poll every 100 us", LMDB, "sleep")]
SEM_TAIL = TAILS[2][0]


# ---------------------------------------------------------------------------------- scenario
def _fs_of(path: str) -> str:
    """The file system type and device under ``path`` (from /proc/self/mounts)."""
    best, out = "", "?"
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                dev, mnt, fstype = line.split()[:3]
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(
                        best):
                    best, out = mnt, f"{fstype} on {dev} ({mnt})"
    except OSError:
        pass
    return out


def _sleep_us() -> float:
    """What ``time.sleep(POLL)`` actually lasts here (median of 200), us."""
    clock, xs = time.perf_counter_ns, []
    for _ in range(200):
        t = clock()
        time.sleep(POLL)
        xs.append((clock() - t) / 1000.0)
    return summarize(xs)["median"]


def run(cfg: Config, names: Names) -> list[Table]:
    reps = cfg.reps(3, 1)
    # (calls, warm-up calls) per case: fsync-on rounds make fewer calls
    full = {"one-nosync": (10_000, 500), "one-sync": (300, 20), "batch-nosync": (200, 10),
            "batch-sync": (60, 5)}
    quick = {"one-nosync": (1_000, 50), "one-sync": (30, 5), "batch-nosync": (20, 2),
             "batch-sync": (8, 2)}
    counts = quick if cfg.quick else full
    tail_n, tail_warm, tail_rounds = cfg.reps(600, 150), cfg.reps(60, 20), cfg.reps(5, 1)
    have_lmdb = peer("lmdb")
    stores = [s for s in STORES if s != LMDB or have_lmdb]
    c = cpus()
    cpu_a = c[-1]
    cw, cr = c[0], c[1] if len(c) > 1 else c[0]
    probe = names.tempdir()
    fs = _fs_of(probe)
    names.release(probe)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    failed: dict[str, str] = {}
    tails: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in TAILS}
    tail_specs = [t for t in TAILS if t[1] != LMDB or have_lmdb]
    units = [(case, s) for case in CASES for s in stores if not (s == LOG_SHM and case[3])]
    with Progress("log", reps * len(units) + tail_rounds * len(tail_specs)) as bar:
        # round-robin over the stores, so drift hits them alike
        for rep in range(reps):
            for (key, label, per_call, fsync), kind in units:
                bar.step(f"appends, repeat {rep + 1}/{reps}: {label}: {kind}")
                if kind in failed:
                    continue
                calls, warm = counts[key]
                try:
                    got = measure_append(names, kind, per_call, fsync, calls, warm, cpu_a)
                except Exception as exc:
                    if kind != LMDB:
                        raise
                    failed[kind] = brief(exc)
                    continue
                runs.setdefault((key, kind), []).append(got)
        for rnd in range(tail_rounds):
            for label, kind, how in tail_specs:
                bar.step(f"tail latency, round {rnd + 1}/{tail_rounds}: {label}")
                if kind in failed:
                    continue
                try:
                    got = measure_tail(names, kind, how, tail_warm + tail_n, cw, cr)
                except Exception as exc:
                    if kind != LMDB:
                        raise
                    failed[kind] = brief(exc)
                    continue
                for k in ("after_us", "e2e_us", "append_us"):
                    got[k] = got[k][tail_warm:]
                tails[label].append(got)
    sleep_us = _sleep_us()
    versions = {"sqlite": sqlite3.sqlite_version}
    if have_lmdb:
        lm = _lmdb()
        versions["lmdb"] = f"{lm.__version__} (LMDB {'.'.join(map(str, lm.version()))})"
    params = {"record": "1 KiB", "batch": BATCH, "repeats": reps,
              "calls": {k: v[0] for k, v in counts.items()},
              "warmup_calls": {k: v[1] for k, v in counts.items()},
              "cpu": cpu_a, "dir": fs, **versions}
    return [append_table(runs, stores, failed, have_lmdb, params),
            summary_table(runs, stores, failed),
            tail_table(tails, tail_specs, failed, have_lmdb,
                       {"records": tail_n * tail_rounds, "warmup_per_round": tail_warm,
                        "rounds": tail_rounds, "gap_ms": f"{GAP[0] * 1e3}-{GAP[1] * 1e3}",
                        "writer_cpu": cw, "reader_cpu": cr, "poll_sleep_us": POLL * 1e6,
                        "poll_sleep_actual_us": round(sleep_us, 1), "dir": fs})]


def _append_stats(rs: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [r["records"] / r["wall_s"] for r in rs]
    calls = [x for r in rs for x in r["call_us"]]
    s = summarize(calls)
    recs = sum(r["records"] for r in rs)
    return {"rec_s": summarize(rates)["median"], "rec_s_min": min(rates),
            "rec_s_max": max(rates), "p50_us": s["median"], "p99_us": s["p99"],
            "max_us": s["max"], "cpu_us_rec": sum(r["cpu_s"] for r in rs) / recs * 1e6,
            "sleeps_rec": sum(r["nvcsw"] for r in rs) / recs, "stats": s}


def append_table(runs: dict[tuple[str, str], list[dict[str, Any]]], stores: list[str],
                 failed: dict[str, str], have_lmdb: bool, params: dict[str, Any]) -> Table:
    rows: list[dict[str, Any]] = []
    for key, label, _, fsync in CASES:
        base = runs.get((key, FILE))
        base_rate = _append_stats(base)["rec_s"] if base else None
        for kind in STORES:
            if kind == LOG_SHM and fsync:
                continue
            if kind == LMDB and not have_lmdb:
                rows.append({"case": label, "store": f"{LMDB}: not installed, skipped",
                             "skipped": True})
                continue
            if kind in failed:
                rows.append({"case": label, "store": f"{kind}: failed ({failed[kind]})",
                             "failed": True, "peer": "lmdb"})
                continue
            if kind not in stores or (key, kind) not in runs:
                continue
            st = _append_stats(runs[(key, kind)])
            rows.append({"case": label, "store": kind, **st,
                         "mb_s": st["rec_s"] * REC / 1e6,
                         "us_rec": 1e6 / st["rec_s"],
                         "x_file": st["rec_s"] / base_rate if base_rate else None})
    notes = ["rec/s: median over repeats of records / wall time of the timed loop; x file:"
             " rec/s over the plain file + CRC32 append's, same case, this run",
             "call p50/p99: one append call (one record, or one batch of"
             f" {BATCH}); us/rec = 1e6 / rec/s; CPU us/rec: user + system (getrusage), the"
             " rest of us/rec is waiting for the disk",
             "fsync off: shmstore append(fsync=False), os.write alone, sqlite3"
             " synchronous=NORMAL (WAL), lmdb sync=False; fsync on: append(fsync=True)"
             " (fdatasync of the segment and of its index), os.write + os.fdatasync, sqlite3"
             " synchronous=FULL (WAL), lmdb sync=True",
             "sqlite3: one INSERT per transaction (autocommit) one by one, BEGIN +"
             " executemany + COMMIT per batch; lmdb: one write txn per call, put(append=True)",
             "shmstore Log (shm): in /dev/shm, where fsync has nothing to do: fsync-off"
             " cases only"]
    if not have_lmdb:
        notes.append(skipped("lmdb"))
    return Table(
        "log", "log appends: 1 KiB records, one process, on disk (records/s, per-call us)",
        [("case", "case"), ("store", "store"), ("rec_s", "rec/s"), ("x_file", "x file"),
         ("mb_s", "MB/s"), ("us_rec", "us/rec"), ("p50_us", "call p50 us"),
         ("p99_us", "call p99 us"), ("cpu_us_rec", "CPU us/rec")],
        rows, params, notes)


def summary_table(runs: dict[tuple[str, str], list[dict[str, Any]]], stores: list[str],
                  failed: dict[str, str]) -> Table:
    rows: list[dict[str, Any]] = []
    for key, label, _, _ in CASES:
        if (key, LOG_DISK) not in runs:
            continue
        mine = _append_stats(runs[(key, LOG_DISK)])["rec_s"]
        row: dict[str, Any] = {"case": label, "rec_s": mine}
        for kind, col in ((FILE, "x_file"), (SQLITE, "x_sqlite"), (LMDB, "x_lmdb")):
            if (key, kind) in runs:
                other = _append_stats(runs[(key, kind)])["rec_s"]
                row[col] = mine / other
                row[col.replace("x_", "rec_s_")] = other
        rows.append(row)
    return Table(
        "log", "log appends: shmstore Log (disk) records/s over each peer's, same case, same"
               " run (above 1: shmstore is faster)",
        [("case", "case"), ("rec_s", "shmstore rec/s"), ("x_file", "x file + CRC32"),
         ("x_sqlite", "x sqlite3 WAL"), ("x_lmdb", "x lmdb")],
        rows, {}, [f"{k}: {v}" for k, v in failed.items()])


def tail_table(tails: dict[str, list[dict[str, Any]]], specs: list[tuple[str, str, str]],
               failed: dict[str, str], have_lmdb: bool, params: dict[str, Any]) -> Table:
    stats: dict[str, dict[str, Any]] = {}
    for label, _, _ in specs:
        rs = tails.get(label) or []
        if not rs:
            continue
        after = [x for r in rs for x in r["after_us"]]
        e2e = [x for r in rs for x in r["e2e_us"]]
        app = [x for r in rs for x in r["append_us"]]
        n = len(after)
        by_round = [summarize(r["after_us"])["median"] for r in rs]
        stats[label] = {"a": summarize(after), "e": summarize(e2e), "w": summarize(app),
                        "lo": min(by_round), "hi": max(by_round), "by_round": by_round,
                        "cpu": sum(r["reader_cpu_s"] for r in rs) / n * 1e6,
                        "sleeps": sum(r["reader_nvcsw"] for r in rs) / n}
    sem = stats.get(SEM_TAIL)
    rows: list[dict[str, Any]] = []
    for label, kind, _ in TAILS:
        if kind == LMDB and not have_lmdb:
            rows.append({"reader": f"{LMDB}: not installed, skipped", "skipped": True})
            continue
        if kind in failed:
            rows.append({"reader": f"{label}: failed ({failed[kind]})", "failed": True,
                         "peer": "lmdb"})
            continue
        if label not in stats:
            continue
        s = stats[label]
        a, e = s["a"], s["e"]
        rows.append({
            "reader": label, "p50_us": a["median"], "p90_us": a["p90"], "p99_us": a["p99"],
            "max_us": a["max"],
            "p50_vs_sem": a["median"] / sem["a"]["median"] if sem else None,
            "p99_vs_sem": a["p99"] / sem["a"]["p99"] if sem else None,
            "e2e_p50_us": e["median"], "e2e_p99_us": e["p99"],
            "append_p50_us": s["w"]["median"], "reader_cpu_us": s["cpu"],
            "reader_sleeps": s["sleeps"], "round_p50_lo": s["lo"], "round_p50_hi": s["hi"],
            "p50_by_round": s["by_round"], "stats_after": a, "stats_e2e": e,
            "stats_append": s["w"],
        })
    notes = ["p50..max: append returned (writer) -> reader has the record, us; negative when"
             " the reader has it before the writer's append call is back; e2e: append called"
             " -> reader has it; append p50: the writer's append call (fsync off; for the"
             " semaphore row, write + post)",
             "x sem: over the file + CRC32 reader woken by a posix_ipc semaphore, this run;"
             " round p50 min/max: the p50 of each round (the rounds run round-robin over the"
             " readers): how much the same reader moves within one run",
             "polling readers sleep time.sleep(100 us) after an empty poll (it lasts"
             f" {params['poll_sleep_actual_us']} us here); the busy poll never sleeps",
             "reader CPU us and sleeps per record: the reader's getrusage over its whole run,"
             " idle gaps included (what waiting costs)"]
    if not have_lmdb:
        notes.append(skipped("lmdb"))
    return Table(
        "log", "log tail latency: writer process -> reader process, one 1 KiB record at a"
               " time (us)",
        [("reader", "reader"), ("p50_us", "p50"), ("p90_us", "p90"), ("p99_us", "p99"),
         ("max_us", "max"), ("round_p50_lo", "round p50 min"),
         ("round_p50_hi", "round p50 max"), ("p50_vs_sem", "p50 x sem"),
         ("p99_vs_sem", "p99 x sem"), ("e2e_p50_us", "e2e p50"), ("e2e_p99_us", "e2e p99"),
         ("append_p50_us", "append p50"), ("reader_cpu_us", "reader CPU us/rec"),
         ("reader_sleeps", "reader sleeps/rec")],
        rows, params, notes)
