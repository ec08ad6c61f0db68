"""Scenario ``firstbyte``: how long until a consumer holds the first 1 MiB of a large
resource (1 GiB; 256 MiB with ``--quick``) that a producer is still producing?

The producer produces the object in 1 MiB chunks (copying a prepared chunk: production at
memory speed). The clock starts in the producer, right after both processes are released
by one barrier, before anything is created or allocated, and stops in the consumer when the
first 1 MiB is in its hands; the time to hold every byte is reported too.

* ``shmstore``: the producer creates the resource (``prefault=False``: nothing is zero-filled
  up front) and writes it front to back; the consumer, told the name, opens it,
  ``wait_range(0, 1 MiB)`` and ``read_at`` the first MiB; later ``wait_range`` of the last
  chunk. The producer's own time to its first written MiB is shown for scale.
* ``multiprocessing.Queue (whole blob)`` / ``multiprocessing.Pipe (whole blob)``: what a
  design without partial objects must do: produce the whole object into a ``bytearray``,
  then ``put`` / ``send_bytes`` it; the consumer holds the first MiB when ``get`` /
  ``recv_bytes`` returns the object.
* ``Ray object store (whole object)``: where ``ray`` is installed: a Ray task produces the
  object the same way and returns it; the consumer's ``ray.get`` returns it once sealed.
  Skipped, never faked, when the package is missing.

Ratios (``x Queue``) are times over the Queue's, measured in the same run: below 1 is
faster.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

import shmstore

from .harness import (
    CTX,
    Config,
    MiB,
    Names,
    Progress,
    Table,
    brief,
    human,
    peer,
    pin,
    run_children,
    skipped,
    summarize,
)
from .stream import make_chunk, placement

SIZE = 1 << 30
QUICK_SIZE = 256 * MiB
FIRST = MiB
CHUNK = MiB
TIMEOUT = 300.0

Side = dict[str, Any]


def _produce(size: int, data: bytes) -> bytearray:
    """The whole object, produced chunk by chunk into new memory."""
    blob = bytearray(size)
    mv = memoryview(blob)
    step = len(data)
    for off in range(0, size, step):
        mv[off:off + step] = data
    mv.release()
    return blob


# ---------------------------------------------------------------------------------- shmstore
def shm_producer(name: str, size: int, data: bytes, cpu: int | None, created: Any,
                 go: Any) -> Side:
    pin(cpu)
    go.wait(TIMEOUT)
    t0 = time.perf_counter()
    w = shmstore.create(name, capacity=size, prefault=False)
    try:
        created.set()
        wr, step = w.write_at, len(data)
        t_first = 0.0
        for off in range(0, size, step):
            wr(off, data)
            if not t_first and off + step >= FIRST:
                t_first = time.perf_counter()
        t_end = time.perf_counter()
        w.commit()
        return {"t0": t0, "t_first_write": t_first, "t_end": t_end}
    finally:
        w.close()


def shm_consumer(name: str, size: int, data: bytes, cpu: int | None, created: Any,
                 go: Any) -> Side:
    pin(cpu)
    buf = bytearray(FIRST)
    go.wait(TIMEOUT)
    if not created.wait(TIMEOUT):
        raise TimeoutError("producer did not create the resource")
    r = shmstore.open(name)
    try:
        r.wait_range(0, FIRST, TIMEOUT)
        r.read_at(0, buf)
        t_first = time.perf_counter()
        r.wait_range(size - FIRST, size, TIMEOUT)
        last = r.read(size - FIRST, FIRST)
        t_all = time.perf_counter()
        if buf != data[:FIRST] or last != data[-FIRST:]:
            raise AssertionError("shmstore returned wrong bytes")
        return {"t_first": t_first, "t_all": t_all}
    finally:
        r.close()


def run_shm(names: Names, size: int, data: bytes) -> dict[str, float]:
    pc, cc = placement()
    created, go = CTX.Event(), CTX.Barrier(2)
    with names.scope() as made:
        name = names.resource()
        made.append(name)
        p, c = run_children([
            (shm_producer, (name, size, data, pc, created, go)),
            (shm_consumer, (name, size, data, cc, created, go)),
        ], timeout=TIMEOUT)
    return {"first_s": c["t_first"] - p["t0"], "all_s": c["t_all"] - p["t0"],
            "prod_first_s": p["t_first_write"] - p["t0"], "prod_all_s": p["t_end"] - p["t0"]}


# ---------------------------------------------------------------------------------- Queue
def queue_producer(q: Any, size: int, data: bytes, cpu: int | None, go: Any) -> Side:
    pin(cpu)
    go.wait(TIMEOUT)
    t0 = time.perf_counter()
    blob = _produce(size, data)
    t_made = time.perf_counter()
    q.put(blob)
    del blob
    q.close()
    q.join_thread()
    return {"t0": t0, "t_made": t_made}


def queue_consumer(q: Any, size: int, data: bytes, cpu: int | None, go: Any) -> Side:
    pin(cpu)
    go.wait(TIMEOUT)
    blob = q.get(True, TIMEOUT)
    t1 = time.perf_counter()
    if len(blob) != size or blob[:FIRST] != data[:FIRST]:
        raise AssertionError("multiprocessing.Queue returned wrong bytes")
    return {"t1": t1}


def run_queue(names: Names, size: int, data: bytes) -> dict[str, float]:
    pc, cc = placement()
    go = CTX.Barrier(2)
    q = CTX.Queue(1)
    try:
        p, c = run_children([
            (queue_producer, (q, size, data, pc, go)),
            (queue_consumer, (q, size, data, cc, go)),
        ], timeout=TIMEOUT)
    finally:
        q.close()
        q.join_thread()
    s = c["t1"] - p["t0"]
    return {"first_s": s, "all_s": s, "prod_all_s": p["t_made"] - p["t0"]}


# ---------------------------------------------------------------------------------- Pipe
def pipe_producer(conn: Any, size: int, data: bytes, cpu: int | None, go: Any) -> Side:
    pin(cpu)
    go.wait(TIMEOUT)
    t0 = time.perf_counter()
    blob = _produce(size, data)
    t_made = time.perf_counter()
    conn.send_bytes(blob)
    return {"t0": t0, "t_made": t_made}


def pipe_consumer(conn: Any, size: int, data: bytes, cpu: int | None, go: Any) -> Side:
    pin(cpu)
    go.wait(TIMEOUT)
    blob = conn.recv_bytes()
    t1 = time.perf_counter()
    if len(blob) != size or blob[:FIRST] != data[:FIRST]:
        raise AssertionError("multiprocessing.Pipe returned wrong bytes")
    return {"t1": t1}


def run_pipe(names: Names, size: int, data: bytes) -> dict[str, float]:
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
    s = c["t1"] - p["t0"]
    return {"first_s": s, "all_s": s, "prod_all_s": p["t_made"] - p["t0"]}


# ---------------------------------------------------------------------------------- Ray
# Written against Ray's public API (ray.init / ray.remote / ray.get); it only runs where
# ``ray`` is installed. Ray is started and shut down inside one benchmark child process.
def _ray_produce(size: int, data: bytes) -> bytearray:
    return _produce(size, data)


def ray_child(size: int, data: bytes, reps: int) -> list[dict[str, float]]:
    ray: Any = importlib.import_module("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             object_store_memory=max(3 * size, 512 * MiB))
    try:
        produce = ray.remote(_ray_produce)
        ray.get(produce.remote(FIRST, data[:FIRST]))  # start the worker: not timed
        out = []
        for _ in range(reps):
            t0 = time.perf_counter()
            blob = ray.get(produce.remote(size, data))
            t1 = time.perf_counter()
            if len(blob) != size or bytes(blob[:FIRST]) != data[:FIRST]:
                raise AssertionError("ray returned wrong bytes")
            del blob
            out.append({"first_s": t1 - t0, "all_s": t1 - t0})
        return out
    finally:
        ray.shutdown()


# ---------------------------------------------------------------------------------- scenario
SHM = "shmstore (wait_range + read_at)"
QUEUE = "multiprocessing.Queue (whole blob)"
PIPE = "multiprocessing.Pipe (whole blob)"
RAY = "Ray object store (whole object)"


def run(cfg: Config, names: Names) -> list[Table]:
    size = QUICK_SIZE if cfg.quick else SIZE
    data = make_chunk(CHUNK, seed=11)
    reps = cfg.reps(3, 2)
    variants: list[tuple[str, Callable[[Names, int, bytes], dict[str, float]]]] = [
        (SHM, run_shm), (QUEUE, run_queue), (PIPE, run_pipe)]
    have_ray = peer("ray")
    got: dict[str, list[dict[str, float]]] = {v: [] for v, _ in variants}
    ray_error = None
    with Progress("firstbyte", reps * len(variants) + have_ray) as bar:
        for rep in range(reps):
            for label, fn in variants:
                bar.step(f"round {rep + 1}/{reps}, {human(size)}: {label}")
                got[label].append(fn(names, size, data))
        if have_ray:
            bar.step(f"{reps} rounds, {human(size)}: {RAY}")
            try:
                (got[RAY],) = run_children([(ray_child, (size, data, reps))],
                                           timeout=TIMEOUT * reps)
            except Exception as exc:
                ray_error = brief(exc)

    def med(label: str, key: str) -> float:
        return summarize([g[key] for g in got[label]])["median"]

    base = med(QUEUE, "first_s")
    rows: list[dict[str, Any]] = []
    for label in [SHM, QUEUE, PIPE] + ([RAY] if have_ray else []):
        if label == RAY and ray_error is not None:
            rows.append({"variant": f"{RAY}: failed ({ray_error})", "failed": True,
                         "peer": "ray"})
            continue
        first = med(label, "first_s")
        rows.append({
            "variant": label,
            "first_ms": first * 1e3,
            "first_min_ms": min(g["first_s"] for g in got[label]) * 1e3,
            "vs_queue": first / base,
            "speedup": base / first,
            "all_ms": med(label, "all_s") * 1e3,
            "prod_first_ms": med(label, "prod_first_s") * 1e3 if label == SHM else None,
            "prod_all_ms": (med(label, "prod_all_s") * 1e3
                            if "prod_all_s" in got[label][0] else None),
            "samples": got[label],
        })
    if not have_ray:
        rows.append({"variant": f"{RAY}: not installed, skipped", "skipped": True})
    notes = ["x Queue: time over the Queue's (measured in this run); below 1 is faster;"
             " speedup = the Queue's time over this one",
             "producer 1st MiB ms: when the shmstore producer had written its first MiB"
             " (create included); producer done ms: when the producer had produced (and,"
             " for shmstore, published) every byte"]
    if not have_ray:
        notes.append(skipped("ray"))
    return [Table(
        "firstbyte",
        f"first byte: time until a consumer process holds the first {human(FIRST)} of a"
        f" {human(size)} object still being produced (ms, median of {reps})",
        [("variant", "variant"), ("first_ms", f"first {human(FIRST)} ms"),
         ("first_min_ms", "min"), ("vs_queue", "x Queue"), ("speedup", "speedup"),
         ("all_ms", "all bytes ms"), ("prod_first_ms", "producer 1st MiB ms"),
         ("prod_all_ms", "producer done ms")],
        rows,
        {"size": human(size), "first": human(FIRST), "chunk": human(CHUNK), "repeats": reps},
        notes,
    )]
