"""Scenario ``stream``: a producer process writes a resource front to back in 1 MiB chunks;
a consumer process takes each chunk as soon as it lands.

Variants (each a fresh producer and consumer process, producer pinned to the first usable
CPU and consumer to the second, so every variant sees the same placement):

* ``memcpy into shm mapping (hot)``: one process copies the chunks into an already-touched
  POSIX shm mapping: the memory-bandwidth limit of any copy-in design.
* ``memcpy into shm mapping (fresh)``: the same into a fresh segment, reserved with
  ``posix_fallocate`` as shmstore reserves its data, so the copy pays one page fault per
  4 KiB page to map it, as any writer into new memory does.
* ``shmstore read_at``: ``write_at`` / ``wait_range`` + ``read_at`` into a reusable buffer.
* ``shmstore view``: ``wait_range`` + ``view`` (zero copy), touching one byte per page.
* ``shm ring, 2 posix_ipc sems``: a hand-rolled ring of 8 x 1 MiB slots in a named segment,
  an "empty" and a "full" semaphore; copy in, copy out. The reference a library is held to.
* ``multiprocessing.Pipe``: ``send_bytes`` / ``recv_bytes_into`` (``duplex=False``, a pipe).
* ``faster-fifo``: ``put(bytes)`` / ``get()`` with identity ``dumps``/``loads``; ``get``
  copies the message out of the shared circular buffer into faster-fifo's receive buffer
  (the copy out). Skipped, never faked, when the package is missing.

Throughput = bytes / (consumer's last byte - producer's first write), both sides released by
one barrier. Each side also reports its CPU time, minor page faults and context switches
over the timed region (``getrusage``): where the time goes. A fresh shmstore resource is
created per repeat (outside the timed region): a resource is written once, so a rerun over
the same one would find every range covered.
"""

from __future__ import annotations

import mmap
import os
import random
import time
from collections.abc import Callable
from typing import Any

import posix_ipc

import shmstore

from .harness import (
    CTX,
    GB,
    PAGE,
    Config,
    MiB,
    Names,
    Table,
    cpus,
    log,
    pin,
    run_children,
    summarize,
    usage,
    usage_since,
)

SIZE = 256 * MiB
CHUNK = MiB
SLOTS = 8
TIMEOUT = 60.0

try:
    import faster_fifo  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # optional: the row is reported as skipped
    faster_fifo = None


def make_chunk(size: int = CHUNK, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def placement() -> tuple[int | None, int | None]:
    """(producer cpu, consumer cpu): two distinct CPUs when there are two."""
    c = cpus()
    return (c[0], c[1]) if len(c) >= 2 else (None, None)


# ---------------------------------------------------------------------------------- shmstore
Side = dict[str, Any]  # "t0" (producer) or "t1" (consumer), plus usage_since() keys


def shm_producer(name: str, size: int, data: bytes, cpu: int | None, created: Any,
                 go: Any) -> Side:
    """Create the resource, write it front to back in ``len(data)`` chunks, commit."""
    pin(cpu)
    w = shmstore.create(name, capacity=size)
    try:
        created.set()
        wr = w.write_at
        step = len(data)
        go.wait(TIMEOUT)
        before = usage()
        t0 = time.perf_counter()
        for off in range(0, size, step):
            wr(off, data)
        out: Side = usage_since(before)
        out["t0"], out["t_end"] = t0, time.perf_counter()
        w.commit()
        return out
    finally:
        w.close()


def shm_consumer(name: str, size: int, data: bytes, cpu: int | None, created: Any, go: Any,
                 mode: str) -> Side:
    """Wait for each chunk and take it with ``read_at`` (mode "read_at") or ``view`` ("view")."""
    pin(cpu)
    if not created.wait(TIMEOUT):
        raise TimeoutError("producer did not create the resource")
    r = shmstore.open(name)
    try:
        step = len(data)
        wait, read_at, view = r.wait_range, r.read_at, r.view
        buf = bytearray(step)
        touched = 0
        go.wait(TIMEOUT)
        before = usage()
        if mode == "read_at":
            for off in range(0, size, step):
                wait(off, off + step, TIMEOUT)
                read_at(off, buf)
        else:
            for off in range(0, size, step):
                wait(off, off + step, TIMEOUT)
                v = view(off, step)
                touched += sum(v[::PAGE])  # one byte of every page: zero copy, but touched
        t1 = time.perf_counter()
        out: Side = usage_since(before)
        out["t1"] = t1
        # Check the harness measured real data (outside the timed region).
        if mode == "read_at" and bytes(buf) != data:
            raise AssertionError("read_at returned wrong bytes")
        if mode == "view" and touched != sum(data[::PAGE]) * (size // step):
            raise AssertionError("view returned wrong bytes")
        if r.read(size - step, step) != data:
            raise AssertionError("last chunk differs")
        return out
    finally:
        r.close()


Run = dict[str, Any]  # "s": seconds, "prod" / "cons": usage of each side (cons may be absent)


def _pair(p: Side, c: Side) -> Run:
    return {"s": float(c["t1"] - p["t0"]), "prod": p, "cons": c}


def run_shmstore(names: Names, size: int, data: bytes, mode: str) -> Run:
    pc, cc = placement()
    created, go = CTX.Event(), CTX.Barrier(2)
    with names.scope() as made:
        name = names.resource()
        made.append(name)
        p, c = run_children([
            (shm_producer, (name, size, data, pc, created, go)),
            (shm_consumer, (name, size, data, cc, created, go, mode)),
        ], timeout=TIMEOUT)
    return _pair(p, c)


# ---------------------------------------------------------------------------------- memcpy
def memcpy_child(seg: str, size: int, data: bytes, cpu: int | None, hot: bool) -> Side:
    pin(cpu)
    shm = posix_ipc.SharedMemory(seg)
    os.posix_fallocate(shm.fd, 0, size)  # reserved like a shmstore resource: faults only map
    m = mmap.mmap(shm.fd, size)
    shm.close_fd()
    try:
        mv = memoryview(m)
        step = len(data)
        if hot:
            for off in range(0, size, step):
                mv[off:off + step] = data
        before = usage()
        t0 = time.perf_counter()
        for off in range(0, size, step):
            mv[off:off + step] = data
        t1 = time.perf_counter()
        out: Side = usage_since(before)
        out["dt"] = t1 - t0
        mv.release()
        return out
    finally:
        m.close()


def run_memcpy(names: Names, size: int, data: bytes, hot: bool) -> Run:
    _, cc = placement()
    with names.scope() as made:
        seg = names.segment(size)
        made.append(seg)
        (p,) = run_children([(memcpy_child, (seg, size, data, cc, hot))], timeout=TIMEOUT)
    return {"s": float(p["dt"]), "prod": p}


# ---------------------------------------------------------------------------------- ring
def ring_producer(seg: str, empty_n: str, full_n: str, size: int, data: bytes,
                  cpu: int | None, go: Any) -> Side:
    pin(cpu)
    shm = posix_ipc.SharedMemory(seg)
    m = mmap.mmap(shm.fd, SLOTS * len(data))
    shm.close_fd()
    empty, full = posix_ipc.Semaphore(empty_n), posix_ipc.Semaphore(full_n)
    try:
        mv = memoryview(m)
        step = len(data)
        acquire, release = empty.acquire, full.release
        go.wait(TIMEOUT)
        before = usage()
        t0 = time.perf_counter()
        for k in range(size // step):
            acquire(TIMEOUT)
            o = (k % SLOTS) * step
            mv[o:o + step] = data
            release()
        out: Side = usage_since(before)
        out["t0"], out["t_end"] = t0, time.perf_counter()
        mv.release()
        return out
    finally:
        empty.close()
        full.close()
        m.close()


def ring_consumer(seg: str, empty_n: str, full_n: str, size: int, data: bytes,
                  cpu: int | None, go: Any) -> Side:
    pin(cpu)
    shm = posix_ipc.SharedMemory(seg)
    m = mmap.mmap(shm.fd, SLOTS * len(data))
    shm.close_fd()
    empty, full = posix_ipc.Semaphore(empty_n), posix_ipc.Semaphore(full_n)
    try:
        mv = memoryview(m)
        step = len(data)
        buf = bytearray(step)
        acquire, release = full.acquire, empty.release
        go.wait(TIMEOUT)
        before = usage()
        for k in range(size // step):
            acquire(TIMEOUT)
            o = (k % SLOTS) * step
            buf[:] = mv[o:o + step]
            release()
        t1 = time.perf_counter()
        out: Side = usage_since(before)
        out["t1"] = t1
        mv.release()
        if buf != data:
            raise AssertionError("ring returned wrong bytes")
        return out
    finally:
        empty.close()
        full.close()
        m.close()


def run_ring(names: Names, size: int, data: bytes) -> Run:
    pc, cc = placement()
    go = CTX.Barrier(2)
    with names.scope() as made:
        seg = names.segment(SLOTS * len(data))
        made.append(seg)
        empty = names.semaphore(SLOTS)
        made.append(empty)
        full = names.semaphore(0)
        made.append(full)
        p, c = run_children([
            (ring_producer, (seg, empty, full, size, data, pc, go)),
            (ring_consumer, (seg, empty, full, size, data, cc, go)),
        ], timeout=TIMEOUT)
    return _pair(p, c)


# ---------------------------------------------------------------------------------- Pipe
def pipe_producer(conn: Any, size: int, data: bytes, cpu: int | None, go: Any) -> Side:
    pin(cpu)
    send = conn.send_bytes
    go.wait(TIMEOUT)
    before = usage()
    t0 = time.perf_counter()
    for _ in range(size // len(data)):
        send(data)
    out: Side = usage_since(before)
    out["t0"], out["t_end"] = t0, time.perf_counter()
    return out


def pipe_consumer(conn: Any, size: int, data: bytes, cpu: int | None, go: Any) -> Side:
    pin(cpu)
    buf = bytearray(len(data))
    recv = conn.recv_bytes_into
    go.wait(TIMEOUT)
    before = usage()
    for _ in range(size // len(data)):
        recv(buf)
    t1 = time.perf_counter()
    out: Side = usage_since(before)
    out["t1"] = t1
    if buf != data:
        raise AssertionError("pipe returned wrong bytes")
    return out


def run_pipe(names: Names, size: int, data: bytes) -> Run:
    pc, cc = placement()
    go = CTX.Barrier(2)
    rx, tx = CTX.Pipe(duplex=False)
    try:
        p, c = run_children([
            (pipe_producer, (tx, size, data, pc, go)),
            (pipe_consumer, (rx, size, data, cc, go)),
        ], timeout=TIMEOUT)
    finally:
        rx.close()
        tx.close()
    return _pair(p, c)


# ---------------------------------------------------------------------------------- faster-fifo
def _identity(x: Any) -> Any:
    return x


def fifo_producer(q: Any, size: int, data: bytes, cpu: int | None, go: Any) -> Side:
    pin(cpu)
    put = q.put
    go.wait(TIMEOUT)
    before = usage()
    t0 = time.perf_counter()
    for _ in range(size // len(data)):
        put(data, True, TIMEOUT)
    out: Side = usage_since(before)
    out["t0"], out["t_end"] = t0, time.perf_counter()
    return out


def fifo_consumer(q: Any, size: int, data: bytes, cpu: int | None, go: Any) -> Side:
    pin(cpu)
    get = q.get
    msg: Any = b""
    go.wait(TIMEOUT)
    before = usage()
    for _ in range(size // len(data)):
        msg = get(True, TIMEOUT)  # a view of faster-fifo's receive buffer: the copy out
    t1 = time.perf_counter()
    out: Side = usage_since(before)
    out["t1"] = t1
    if bytes(msg) != data:
        raise AssertionError("faster-fifo returned wrong bytes")
    return out


def run_fifo(names: Names, size: int, data: bytes) -> Run:
    assert faster_fifo is not None
    pc, cc = placement()
    go = CTX.Barrier(2)
    q = faster_fifo.Queue(max_size_bytes=SLOTS * (len(data) + 64), loads=_identity,
                          dumps=_identity)
    try:
        p, c = run_children([
            (fifo_producer, (q, size, data, pc, go)),
            (fifo_consumer, (q, size, data, cc, go)),
        ], timeout=TIMEOUT)
    finally:
        q.close()
    return _pair(p, c)


# ---------------------------------------------------------------------------------- scenario
LIMIT = "memcpy into shm mapping (hot)"
FRESH = "memcpy into shm mapping (fresh)"
SHM_READ = "shmstore read_at"
SHM_VIEW = "shmstore view (touch 1 B/page)"
RING = "shm ring, 2 posix_ipc sems"
PIPE = "multiprocessing.Pipe"
FIFO = "faster-fifo"


def run(cfg: Config, names: Names) -> list[Table]:
    size = SIZE
    data = make_chunk()
    chunks = size // CHUNK
    warm, reps = 1, cfg.reps(9, 3)
    variants: list[tuple[str, Callable[[], Run] | None]] = [
        (LIMIT, lambda: run_memcpy(names, size, data, hot=True)),
        (FRESH, lambda: run_memcpy(names, size, data, hot=False)),
        (SHM_READ, lambda: run_shmstore(names, size, data, "read_at")),
        (SHM_VIEW, lambda: run_shmstore(names, size, data, "view")),
        (RING, lambda: run_ring(names, size, data)),
        (PIPE, lambda: run_pipe(names, size, data)),
        (FIFO, (lambda: run_fifo(names, size, data)) if faster_fifo is not None else None),
    ]
    runs: dict[str, list[Run]] = {v: [] for v, _ in variants}
    # Round-robin over the variants so slow drift (thermal, neighbours) hits them all alike.
    for rep in range(warm + reps):
        log(f"stream: round {rep + 1}/{warm + reps}" + (" (warm-up)" if rep < warm else ""))
        for label, fn in variants:
            if fn is None:
                continue
            got = fn()
            if rep >= warm:
                runs[label].append(got)

    def gbps(label: str) -> float | None:
        rs = runs[label]
        return size / summarize([r["s"] for r in rs])["median"] / GB if rs else None

    def side(rs: list[Run], who: str, key: str, per: float) -> float | None:
        vals = [r[who][key] / per for r in rs if who in r]
        return summarize(vals)["median"] if vals else None

    ring, limit, fresh = gbps(RING), gbps(LIMIT), gbps(FRESH)
    rows: list[dict[str, Any]] = []
    for label, fn in variants:
        if fn is None:
            rows.append({"variant": f"{label}: not installed, skipped"})
            continue
        rs = runs[label]
        secs = [r["s"] for r in rs]
        rates = [size / t / GB for t in secs]
        med = gbps(label)
        assert med is not None
        prod_rates = [size / (r["prod"]["t_end"] - r["prod"]["t0"]) / GB
                      for r in rs if "t_end" in r["prod"]]
        rows.append({
            "variant": label,
            "gbps": med,
            "gbps_min": min(rates),
            "gbps_max": max(rates),
            "us_per_chunk": summarize(secs)["median"] / chunks * 1e6,
            "vs_ring": med / ring if ring else None,
            "vs_limit": med / limit if limit else None,
            "vs_fresh": med / fresh if fresh else None,
            "prod_gbps": summarize(prod_rates)["median"] if prod_rates else None,
            "prod_faults_per_mib": side(rs, "prod", "minflt", chunks),
            "cons_faults_per_mib": side(rs, "cons", "minflt", chunks),
            "cons_wakes_per_chunk": side(rs, "cons", "nvcsw", chunks),
            "prod_cpu_us_per_chunk": side(rs, "prod", "cpu_s", chunks / 1e6),
            "cons_cpu_us_per_chunk": side(rs, "cons", "cpu_s", chunks / 1e6),
            "runs": rs,
        })
    pc, cc = placement()
    return [Table(
        "stream",
        "stream: 1 producer -> 1 consumer process, 1 MiB chunks (GB/s = 1e9 B/s, median of"
        " repeats)",
        [("variant", "variant"), ("gbps", "GB/s"), ("gbps_min", "min"), ("gbps_max", "max"),
         ("vs_ring", "x ring"), ("vs_fresh", "x fresh"), ("vs_limit", "x hot"),
         ("us_per_chunk", "us/chunk"), ("prod_gbps", "prod GB/s"),
         ("prod_cpu_us_per_chunk", "prod CPU us"),
         ("cons_cpu_us_per_chunk", "cons CPU us"), ("prod_faults_per_mib", "prod flt/MiB"),
         ("cons_faults_per_mib", "cons flt/MiB"), ("cons_wakes_per_chunk", "cons sleeps")],
        rows,
        {"size": f"{size // MiB} MiB", "chunk": f"{CHUNK // MiB} MiB", "ring_slots": SLOTS,
         "warmup": warm, "repeats": reps, "producer_cpu": pc, "consumer_cpu": cc},
        ["x ring / x fresh / x hot: GB/s relative to the shm ring and to one process's memcpy"
         " into fresh (reserved, unmapped) and into hot (mapped) shm pages",
         "memcpy rows are one process (no consumer): ceilings, not competitors",
         "prod GB/s: the producer's own rate (its first to its last write); per chunk,"
         " medians: CPU us of each side, minor page faults per MiB, the consumer's voluntary"
         " context switches (sleeps)",
         "shmstore writes into a fresh resource (1 page fault per 4 KiB unless it prefaults);"
         " ring, Pipe and faster-fifo reuse a few hot MiB"],
    )]
