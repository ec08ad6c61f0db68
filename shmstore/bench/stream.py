"""Scenario ``stream``: a producer process writes a resource front to back in chunks of
64 KiB .. 4 MiB (``--chunks``); a consumer process takes each chunk as soon as it lands.
One table per chunk size, and a summary of every variant at every chunk size.

Variants (each a fresh producer and consumer process, producer pinned to the first usable
CPU and consumer to the second, so every variant sees the same placement):

* ``memcpy into shm mapping (hot)``: one process copies the chunks into an already-touched
  POSIX shm mapping: in-process memcpy, the memory-bandwidth limit of any copy-in design.
* ``memcpy into shm mapping (fresh)``: the same into a fresh segment, reserved with
  ``posix_fallocate`` as shmstore reserves its data, so the copy pays one page fault per
  4 KiB page to map it, as any writer into new memory does.
* ``shmstore read_at``: ``write_at`` / ``wait_range`` + ``read_at`` into a reusable buffer.
* ``shmstore view``: ``wait_range`` + ``view`` (zero copy), touching one byte per page.
* ``shm ring, 2 posix_ipc sems``: a hand-rolled ring of 8 chunk-sized slots in a named
  segment, an "empty" and a "full" semaphore; copy in, copy out. The reference a library is
  held to.
* ``shared_memory + Event ring``: the same ring built from the standard library alone: a
  ``multiprocessing.shared_memory`` segment of 8 slots and a pair of ``multiprocessing.Event``
  per slot (empty / full).
* ``multiprocessing.Pipe``: ``send_bytes`` / ``recv_bytes_into`` (``duplex=False``, a pipe).
* ``multiprocessing.Queue``: ``put(bytes)`` / ``get()`` (pickled, through a pipe, by the
  queue's feeder thread), at most 8 chunks in flight.
* ``faster-fifo``: ``put(bytes)`` / ``get()`` with identity ``dumps``/``loads``; ``get``
  copies the message out of the shared circular buffer into faster-fifo's receive buffer
  (the copy out). Skipped, never faked, when the package is missing.
* ``iceoryx2 pub/sub``: where the ``iceoryx2`` package is installed: a ``Slice[c_uint8]``
  publish-subscribe service (no overflow, a blocking publisher, 8 samples buffered) with an
  event service for the wake-up; loan, copy in, send / receive, copy out. Skipped, never
  faked, when the package is missing.

Throughput = bytes / (consumer's last byte - producer's first write), both sides released by
one barrier. Each side also reports its CPU time, minor page faults and context switches
over the timed region (``getrusage``): where the time goes. A fresh shmstore resource is
created per repeat (outside the timed region): a resource is written once, so a rerun over
the same one would find every range covered.
"""

from __future__ import annotations

import ctypes
import importlib
import itertools
import mmap
import os
import random
import time
from collections.abc import Callable
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import posix_ipc

import shmstore

from .harness import (
    CTX,
    GB,
    PAGE,
    Config,
    KiB,
    MiB,
    Names,
    Progress,
    Table,
    brief,
    cpus,
    human,
    peer,
    pin,
    run_children,
    skipped,
    summarize,
    usage,
    usage_since,
)

SIZE = 256 * MiB
QUICK_SIZE = 64 * MiB
CHUNK = MiB
CHUNKS = (64 * KiB, 256 * KiB, MiB, 4 * MiB)
QUICK_CHUNKS = (64 * KiB, MiB, 4 * MiB)
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


# ---------------------------------------------------------------------------------- Queue
def queue_producer(q: Any, size: int, data: bytes, cpu: int | None, go: Any) -> Side:
    pin(cpu)
    put = q.put
    go.wait(TIMEOUT)
    before = usage()
    t0 = time.perf_counter()
    for _ in range(size // len(data)):
        put(data, True, TIMEOUT)
    out: Side = usage_since(before)
    out["t0"], out["t_end"] = t0, time.perf_counter()
    q.close()
    q.join_thread()  # the feeder thread has handed every chunk to the pipe
    return out


def queue_consumer(q: Any, size: int, data: bytes, cpu: int | None, go: Any) -> Side:
    pin(cpu)
    get = q.get
    msg: Any = b""
    go.wait(TIMEOUT)
    before = usage()
    for _ in range(size // len(data)):
        msg = get(True, TIMEOUT)  # unpickled: a new bytes object per chunk
    t1 = time.perf_counter()
    out: Side = usage_since(before)
    out["t1"] = t1
    if msg != data:
        raise AssertionError("multiprocessing.Queue returned wrong bytes")
    return out


def run_queue(names: Names, size: int, data: bytes) -> Run:
    pc, cc = placement()
    go = CTX.Barrier(2)
    q = CTX.Queue(SLOTS)
    try:
        p, c = run_children([
            (queue_producer, (q, size, data, pc, go)),
            (queue_consumer, (q, size, data, cc, go)),
        ], timeout=TIMEOUT)
    finally:
        q.close()
        q.join_thread()
    return _pair(p, c)


# ---------------------------------------------------------------------------------- shared_memory
def shmev_producer(seg: str, empty: list[Any], full: list[Any], size: int, data: bytes,
                   cpu: int | None, go: Any) -> Side:
    pin(cpu)
    shm = SharedMemory(name=seg)  # attach by name, as an unrelated process would
    try:
        buf = shm.buf
        assert buf is not None
        step, slots = len(data), len(empty)
        go.wait(TIMEOUT)
        before = usage()
        t0 = time.perf_counter()
        for k in range(size // step):
            i = k % slots
            if not empty[i].wait(TIMEOUT):
                raise TimeoutError("consumer did not free a slot")
            empty[i].clear()
            o = i * step
            buf[o:o + step] = data
            full[i].set()
        out: Side = usage_since(before)
        out["t0"], out["t_end"] = t0, time.perf_counter()
        del buf
        return out
    finally:
        shm.close()


def shmev_consumer(seg: str, empty: list[Any], full: list[Any], size: int, data: bytes,
                   cpu: int | None, go: Any) -> Side:
    pin(cpu)
    shm = SharedMemory(name=seg)
    try:
        buf = shm.buf
        assert buf is not None
        step, slots = len(data), len(empty)
        dst = bytearray(step)
        go.wait(TIMEOUT)
        before = usage()
        for k in range(size // step):
            i = k % slots
            if not full[i].wait(TIMEOUT):
                raise TimeoutError("producer did not fill a slot")
            full[i].clear()
            o = i * step
            dst[:] = buf[o:o + step]
            empty[i].set()
        t1 = time.perf_counter()
        out: Side = usage_since(before)
        out["t1"] = t1
        del buf
        if dst != data:
            raise AssertionError("shared_memory ring returned wrong bytes")
        return out
    finally:
        shm.close()


def run_shmev(names: Names, size: int, data: bytes) -> Run:
    pc, cc = placement()
    go = CTX.Barrier(2)
    empty = [CTX.Event() for _ in range(SLOTS)]
    full = [CTX.Event() for _ in range(SLOTS)]
    for e in empty:
        e.set()
    with names.scope() as made:
        seg = names.shared_memory(SLOTS * len(data))
        made.append(seg.name)
        p, c = run_children([
            (shmev_producer, (seg.name, empty, full, size, data, pc, go)),
            (shmev_consumer, (seg.name, empty, full, size, data, cc, go)),
        ], timeout=TIMEOUT)
    return _pair(p, c)


# ---------------------------------------------------------------------------------- iceoryx2
# Written against the iceoryx2 Python bindings (``import iceoryx2``); it only runs where the
# package is installed. A failure there is reported as a failed row, never as a figure.
def _iox_services(iox2: Any, node: Any, service: str) -> tuple[Any, Any]:
    data_svc = (node.service_builder(iox2.ServiceName.new(service))
                .publish_subscribe(iox2.Slice[ctypes.c_uint8])
                .enable_safe_overflow(False)
                .subscriber_max_buffer_size(SLOTS)
                .open_or_create())
    event_svc = (node.service_builder(iox2.ServiceName.new(service + ".wake"))
                 .event().open_or_create())
    return data_svc, event_svc


_IOX_SEQ = itertools.count()  # a new service name per run


def iox_producer(service: str, size: int, data: bytes, cpu: int | None, created: Any,
                 go: Any) -> Side:
    pin(cpu)
    iox2: Any = importlib.import_module("iceoryx2")
    step = len(data)
    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    data_svc, event_svc = _iox_services(iox2, node, service)
    publisher = (data_svc.publisher_builder().initial_max_slice_len(step)
                 .unable_to_deliver_strategy(iox2.UnableToDeliverStrategy.Block).create())
    notifier = event_svc.notifier_builder().create()
    created.set()
    go.wait(TIMEOUT)
    before = usage()
    t0 = time.perf_counter()
    for _ in range(size // step):
        sample = publisher.loan_slice_uninit(step)
        ctypes.memmove(sample.payload_ptr, data, step)
        sample.assume_init().send()
        notifier.notify()
    out: Side = usage_since(before)
    out["t0"], out["t_end"] = t0, time.perf_counter()
    del notifier, publisher, event_svc, data_svc, node  # dropped before the child exits
    return out


def iox_consumer(service: str, size: int, data: bytes, cpu: int | None, created: Any,
                 go: Any) -> Side:
    pin(cpu)
    iox2: Any = importlib.import_module("iceoryx2")
    step = len(data)
    if not created.wait(TIMEOUT):
        raise TimeoutError("producer did not create the service")
    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    data_svc, event_svc = _iox_services(iox2, node, service)
    subscriber = data_svc.subscriber_builder().create()
    listener = event_svc.listener_builder().create()
    dst = bytearray(step)
    dst_addr = ctypes.addressof((ctypes.c_char * step).from_buffer(dst))
    go.wait(TIMEOUT)
    before = usage()
    got = 0
    n = size // step
    while got < n:
        sample = subscriber.receive()
        if sample is None:
            listener.blocking_wait_one()
            continue
        ctypes.memmove(dst_addr, sample.payload_ptr, step)
        del sample  # hands the slot back to the publisher
        got += 1
    t1 = time.perf_counter()
    out: Side = usage_since(before)
    out["t1"] = t1
    del listener, subscriber, event_svc, data_svc, node
    if dst != data:
        raise AssertionError("iceoryx2 returned wrong bytes")
    return out


def run_iox(names: Names, size: int, data: bytes) -> Run:
    pc, cc = placement()
    created, go = CTX.Event(), CTX.Barrier(2)
    service = f"shmstore-bench/{os.getpid()}/stream-{next(_IOX_SEQ)}"
    p, c = run_children([
        (iox_producer, (service, size, data, pc, created, go)),
        (iox_consumer, (service, size, data, cc, created, go)),
    ], timeout=TIMEOUT)
    return _pair(p, c)


# ---------------------------------------------------------------------------------- scenario
LIMIT = "memcpy into shm mapping (hot)"
FRESH = "memcpy into shm mapping (fresh)"
SHM_READ = "shmstore read_at"
SHM_VIEW = "shmstore view (touch 1 B/page)"
RING = "shm ring, 2 posix_ipc sems"
SHMEV = "shared_memory + Event ring"
PIPE = "multiprocessing.Pipe"
QUEUE = "multiprocessing.Queue"
FIFO = "faster-fifo"
IOX = "iceoryx2 pub/sub"

Variant = tuple[str, Callable[[Names, int, bytes], Run] | None, str | None]
# label, runner (None: peer missing), optional peer module (failures of an optional peer's
# adapter are reported in its row instead of failing the scenario)
VARIANTS: list[Variant] = [
    (LIMIT, lambda n, s, d: run_memcpy(n, s, d, hot=True), None),
    (FRESH, lambda n, s, d: run_memcpy(n, s, d, hot=False), None),
    (SHM_READ, lambda n, s, d: run_shmstore(n, s, d, "read_at"), None),
    (SHM_VIEW, lambda n, s, d: run_shmstore(n, s, d, "view"), None),
    (RING, run_ring, None),
    (SHMEV, run_shmev, None),
    (PIPE, run_pipe, None),
    (QUEUE, run_queue, None),
    (FIFO, run_fifo if faster_fifo is not None else None, "faster_fifo"),
    (IOX, run_iox if peer("iceoryx2") else None, "iceoryx2"),
]


def chunk_table(size: int, chunk: int, runs: dict[str, list[Run]], failed: dict[str, str],
                warm: int, reps: int) -> Table:
    chunks = size // chunk

    def gbps(label: str) -> float | None:
        rs = runs.get(label)
        return size / summarize([r["s"] for r in rs])["median"] / GB if rs else None

    def side(rs: list[Run], who: str, key: str, per: float) -> float | None:
        vals = [r[who][key] / per for r in rs if who in r]
        return summarize(vals)["median"] if vals else None

    ring, limit, fresh = gbps(RING), gbps(LIMIT), gbps(FRESH)
    rows: list[dict[str, Any]] = []
    for label, fn, mod in VARIANTS:
        if fn is None:
            rows.append({"variant": f"{label}: not installed, skipped", "skipped": True,
                         "chunk": chunk})
            continue
        if label in failed:
            rows.append({"variant": f"{label}: failed ({failed[label]})", "failed": True,
                         "peer": mod, "chunk": chunk})
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
            "chunk": chunk,
            "gbps": med,
            "gbps_min": min(rates),
            "gbps_max": max(rates),
            "us_per_chunk": summarize(secs)["median"] / chunks * 1e6,
            "vs_ring": med / ring if ring else None,
            "vs_limit": med / limit if limit else None,
            "vs_fresh": med / fresh if fresh else None,
            "prod_gbps": summarize(prod_rates)["median"] if prod_rates else None,
            "prod_faults_per_mib": side(rs, "prod", "minflt", size / MiB),
            "cons_faults_per_mib": side(rs, "cons", "minflt", size / MiB),
            "cons_wakes_per_chunk": side(rs, "cons", "nvcsw", chunks),
            "prod_cpu_us_per_chunk": side(rs, "prod", "cpu_s", chunks / 1e6),
            "cons_cpu_us_per_chunk": side(rs, "cons", "cpu_s", chunks / 1e6),
            "runs": rs,
        })
    pc, cc = placement()
    return Table(
        "stream",
        f"stream: 1 producer -> 1 consumer process, {human(chunk)} chunks (GB/s = 1e9 B/s,"
        f" median of repeats)",
        [("variant", "variant"), ("gbps", "GB/s"), ("gbps_min", "min"), ("gbps_max", "max"),
         ("vs_ring", "x ring"), ("vs_fresh", "x fresh"), ("vs_limit", "x memcpy"),
         ("us_per_chunk", "us/chunk"), ("prod_gbps", "prod GB/s"),
         ("prod_cpu_us_per_chunk", "prod CPU us"),
         ("cons_cpu_us_per_chunk", "cons CPU us"), ("prod_faults_per_mib", "prod flt/MiB"),
         ("cons_faults_per_mib", "cons flt/MiB"), ("cons_wakes_per_chunk", "cons sleeps")],
        rows,
        {"size": human(size), "chunk": human(chunk), "ring_slots": SLOTS,
         "warmup": warm, "repeats": reps, "producer_cpu": pc, "consumer_cpu": cc},
        ["x ring / x fresh / x memcpy: GB/s relative to the posix_ipc shm ring and to one"
         " process's memcpy into fresh (reserved, unmapped) and into hot (mapped) shm pages"
         " (the limit), all measured in this run",
         "memcpy rows are one process (no consumer): ceilings, not competitors",
         "prod GB/s: the producer's own rate (its first to its last write); per chunk,"
         " medians: CPU us of each side and the consumer's voluntary context switches"
         " (sleeps); minor page faults per MiB",
         "shmstore writes into a fresh resource (prefaulted at create, outside the timed"
         " region); the rings, Pipe, Queue and faster-fifo reuse a few hot chunks"],
    )


def summary_table(size: int, chunks: tuple[int, ...], tables: list[Table]) -> Table:
    by = {(r["variant"], r["chunk"]): r for t in tables for r in t.rows if "gbps" in r}
    cols: list[tuple[str, str]] = [("variant", "variant")]
    for c in chunks:
        cols += [(f"gbps_{c}", f"{human(c)} GB/s"), (f"ring_{c}", "x ring"),
                 (f"limit_{c}", "x memcpy")]
    rows: list[dict[str, Any]] = []
    failed = {r["variant"].split(":")[0] for t in tables for r in t.rows if r.get("failed")}
    for label, fn, _mod in VARIANTS:
        row: dict[str, Any] = {"variant": label if fn is not None
                               else f"{label}: not installed, skipped"}
        if label in failed:
            row["variant"] = f"{label}: failed (see above)"
        for c in chunks:
            r = by.get((label, c))
            if r is not None:
                row[f"gbps_{c}"] = r["gbps"]
                row[f"ring_{c}"] = r["vs_ring"]
                row[f"limit_{c}"] = r["vs_limit"]
        rows.append(row)
    return Table("stream", f"stream summary: GB/s by chunk size, {human(size)} per run,"
                 " and the ratio to the shm ring and to in-process memcpy (the limit)",
                 cols, rows, {"size": human(size), "chunks": ",".join(map(human, chunks))},
                 ["same runs as the per-chunk tables above; '-': not measured"])


def run(cfg: Config, names: Names) -> list[Table]:
    size = cfg.stream_size(SIZE, QUICK_SIZE)
    chunks = cfg.chunks or (QUICK_CHUNKS if cfg.quick else CHUNKS)
    warm, reps = 1, cfg.reps(5, 2)
    active = [(label, fn, mod) for label, fn, mod in VARIANTS if fn is not None]
    runs: dict[int, dict[str, list[Run]]] = {c: {v: [] for v, _, _ in active} for c in chunks}
    failed: dict[int, dict[str, str]] = {c: {} for c in chunks}
    datas = {c: make_chunk(c) for c in chunks}
    with Progress("stream", (warm + reps) * len(chunks) * len(active)) as bar:
        # Round-robin over the variants so slow drift (thermal, neighbours) hits them alike.
        for rep in range(warm + reps):
            for c in chunks:
                for label, fn, mod in active:
                    assert fn is not None
                    bar.step(f"round {rep + 1}/{warm + reps}"
                             + (" (warm-up)" if rep < warm else "")
                             + f", {human(c)} chunks: {label}")
                    if label in failed[c]:
                        continue
                    if mod == "iceoryx2":  # an adapter this suite cannot test everywhere
                        try:
                            got = fn(names, size, datas[c])
                        except Exception as exc:
                            failed[c][label] = brief(exc)
                            continue
                    else:
                        got = fn(names, size, datas[c])
                    if rep >= warm:
                        runs[c][label].append(got)
    tables = [chunk_table(size, c, runs[c], failed[c], warm, reps) for c in chunks]
    summary = summary_table(size, chunks, tables)
    for mod in ("faster_fifo", "iceoryx2"):
        if not peer(mod):
            summary.notes.append(skipped(mod))
    return [*tables, summary]
