"""Scenario ``numpy``: a consumer doing real work on each chunk, through ``view``.

The consumer runs a numpy kernel over every 1 MiB chunk of a 256 MiB resource (64 MiB with
``--quick``; ``--size``):

* ``uint8 histogram``: ``np.bincount(np.frombuffer(chunk, np.uint8), minlength=256)``, about
  0.8 GB/s: real work slower than the producer, so the pipeline's own overhead shows;
* ``uint8 sum``: ``np.frombuffer(chunk, np.uint8).sum()`` (widened to uint64), about as fast
  as a producer writing fresh pages;
* ``float64 sum``: ``np.frombuffer(chunk, np.float64).sum()``, memory-bound and far faster
  than any producer: a streaming consumer can only wait for it.

* ``in-process bytearray``: the consumer's own ``bytearray``, filled before timing; the same
  loop (memoryview slice -> frombuffer -> sum). The reference: like a shm mapping it is
  backed by 4 KiB pages.
* ``in-process numpy array``: the same over an ``np.empty`` array. numpy asks for
  transparent huge pages on large arrays (``madvise(MADV_HUGEPAGE)``), which a tmpfs mapping
  does not get while ``/sys/kernel/mm/transparent_hugepage/shmem_enabled`` is ``never``: the
  difference between the two in-process rows is the TLB, not shmstore.
* ``shmstore view, streaming``: a producer process writes the chunks while the consumer
  waits each with ``wait_range`` and reduces it through ``view``. The SPEC target (>= 0.8x).
* ``shmstore view, already written``: the same consumer, second pass over the now complete
  resource (its pages mapped): the cost of ``view`` itself without the pipeline.

Producer and consumer are pinned to distinct CPUs; the in-process consumer to the
consumer's CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

import shmstore

from .harness import (
    CTX,
    GB,
    Config,
    Names,
    Progress,
    Table,
    human,
    pin,
    run_children,
    summarize,
)
from .stream import CHUNK, QUICK_SIZE, SIZE, TIMEOUT, placement, shm_producer

Kernel = Callable[[memoryview], float]


def _hist(mv: memoryview) -> float:
    counts = np.bincount(np.frombuffer(mv, dtype=np.uint8), minlength=256)
    return float(counts @ np.arange(256))  # the byte sum, computed from the histogram


def _u8sum(mv: memoryview) -> float:
    return float(np.frombuffer(mv, dtype=np.uint8).sum())


def _f64sum(mv: memoryview) -> float:
    return float(np.frombuffer(mv, dtype=np.float64).sum())


KERNELS: dict[str, Kernel] = {"uint8 histogram": _hist, "uint8 sum": _u8sum,
                              "float64 sum": _f64sum}
BYTES = "in-process bytearray"
ARRAY = "in-process numpy array (THP)"
STREAM = "shmstore view, streaming"
SECOND = "shmstore view, already written"
PRODUCER = "producer alone"  # the streaming producer's own rate, first to last write


def make_chunk(size: int = CHUNK) -> bytes:
    """Floats in [0, 1): no NaN, infinity or subnormal to slow a float kernel down."""
    return np.random.default_rng(7).random(size // 8).tobytes()


def _check(total: float, data: bytes, kernel: str, n: int) -> None:
    want = KERNELS[kernel](memoryview(data)) * n
    if abs(total - want) > 1e-6 * max(1.0, abs(want)):
        raise AssertionError(f"{kernel}: {total} != {want}")


def inproc_consumer(size: int, data: bytes, kernel: str, cpu: int | None, kind: str) -> float:
    pin(cpu)
    step = len(data)
    if kind == "numpy":
        arr = np.empty(size, dtype=np.uint8)
        arr.reshape(-1, step)[:] = np.frombuffer(data, dtype=np.uint8)  # filled and touched
        mv = arr.data
    else:
        mv = memoryview(bytearray(size))
        for off in range(0, size, step):
            mv[off:off + step] = data
    work = KERNELS[kernel]
    total = 0.0
    t0 = time.perf_counter()
    for off in range(0, size, step):
        total += work(mv[off:off + step])
    t1 = time.perf_counter()
    _check(total, data, kernel, size // step)
    return t1 - t0


def view_consumer(name: str, size: int, data: bytes, kernel: str, cpu: int | None,
                  created: Any, go: Any) -> dict[str, float]:
    pin(cpu)
    if not created.wait(TIMEOUT):
        raise TimeoutError("producer did not create the resource")
    r = shmstore.open(name)
    try:
        step = len(data)
        wait, view, work = r.wait_range, r.view, KERNELS[kernel]
        total = 0.0
        go.wait(TIMEOUT)
        for off in range(0, size, step):
            wait(off, off + step, TIMEOUT)
            total += work(view(off, step))
        t1 = time.perf_counter()
        _check(total, data, kernel, size // step)
        # Second pass: every byte is there and mapped; the cost of view + wait alone.
        total = 0.0
        t2 = time.perf_counter()
        for off in range(0, size, step):
            wait(off, off + step, TIMEOUT)
            total += work(view(off, step))
        t3 = time.perf_counter()
        _check(total, data, kernel, size // step)
        return {"t1": t1, "second_pass": t3 - t2}
    finally:
        r.close()


def run_view(names: Names, size: int, data: bytes, kernel: str) -> tuple[float, float, float]:
    pc, cc = placement()
    created, go = CTX.Event(), CTX.Barrier(2)
    with names.scope() as made:
        name = names.resource()
        made.append(name)
        p, c = run_children([
            (shm_producer, (name, size, data, pc, created, go)),
            (view_consumer, (name, size, data, kernel, cc, created, go)),
        ], timeout=TIMEOUT)
    return (float(c["t1"] - p["t0"]), float(c["second_pass"]),
            float(p["t_end"] - p["t0"]))


def run(cfg: Config, names: Names) -> list[Table]:
    size = cfg.stream_size(SIZE, QUICK_SIZE)
    size -= size % CHUNK
    if size == 0:
        raise ValueError(f"the numpy scenario needs --size >= {human(CHUNK)}")
    data = make_chunk()
    warm, reps = 1, cfg.reps(7, 2)
    _, cc = placement()
    times: dict[tuple[str, str], list[float]] = {}
    with Progress("numpy", (warm + reps) * len(KERNELS)) as bar:
        for rep in range(warm + reps):
            for kernel in KERNELS:
                bar.step(f"round {rep + 1}/{warm + reps}"
                         + (" (warm-up)" if rep < warm else "") + f", {kernel}")
                (t_ba,) = run_children(
                    [(inproc_consumer, (size, data, kernel, cc, "bytearray"))], timeout=TIMEOUT)
                (t_np,) = run_children(
                    [(inproc_consumer, (size, data, kernel, cc, "numpy"))], timeout=TIMEOUT)
                t_stream, t_second, t_prod = run_view(names, size, data, kernel)
                if rep >= warm:
                    for label, t in ((BYTES, t_ba), (ARRAY, t_np), (STREAM, t_stream),
                                     (SECOND, t_second), (PRODUCER, t_prod)):
                        times.setdefault((kernel, label), []).append(float(t))
    rows = []
    for kernel in KERNELS:
        base = summarize(times[(kernel, BYTES)])["median"]
        base_np = summarize(times[(kernel, ARRAY)])["median"]
        for label in (BYTES, ARRAY, STREAM, SECOND):
            ts = times[(kernel, label)]
            med = summarize(ts)["median"]
            rates = [size / t / GB for t in ts]
            prod = None
            if label == STREAM:
                prod = size / summarize(times[(kernel, PRODUCER)])["median"] / GB
            rows.append({
                "kernel": kernel,
                "variant": label,
                "gbps": size / med / GB,
                "prod_gbps": prod,
                "gbps_min": min(rates),
                "gbps_max": max(rates),
                "us_per_chunk": med / (size // CHUNK) * 1e6,
                "vs_inproc": base / med,
                "vs_numpy": base_np / med,
                "samples_s": ts,
            })
    return [Table(
        "numpy",
        "numpy consumer: a numpy kernel over each 1 MiB chunk (median of repeats)",
        [("kernel", "kernel"), ("variant", "variant"), ("gbps", "GB/s"), ("gbps_min", "min"),
         ("gbps_max", "max"), ("us_per_chunk", "us/chunk"), ("vs_inproc", "x bytearray"),
         ("vs_numpy", "x numpy array"), ("prod_gbps", "producer GB/s")],
        rows,
        {"size": human(size), "chunk": human(CHUNK), "warmup": warm,
         "repeats": reps, "consumer_cpu": cc},
        ["target (SPEC.md): shmstore view, streaming >= 0.8x in-process memory",
         "producer GB/s: the streaming producer's own rate (its first to its last write)",
         "streaming cannot beat its producer: compare with the stream scenario's"
         " shmstore rows (the producer writes into fresh pages)"],
    )]
