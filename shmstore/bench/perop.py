"""Scenario ``perop``: what one call costs, in one process (timeit-style).

Each operation runs in batches of ``BATCH`` calls in a tight loop (methods bound to locals,
arguments prepared beforehand, the garbage collector off during a batch, as ``timeit``
does); a batch's time / ``BATCH`` is one sample, and the table gives the median and p99 of
the samples. The loop's own cost is included (its row shows how much that is).

shmstore operations, on a ``shm`` resource written by this process's writer handle and read
through a second, read-only handle opened by name (as a consumer would):

* ``write_at 4 KiB, fresh pages``: at increasing offsets into new memory (each write maps
  one new page: the cost a producer actually pays);
* ``write_at 4 KiB, rewrite``: over bytes already written (overlapping writes are allowed),
  so no page fault: the library's own overhead;
* ``wait_range 4 KiB, covered`` and ``contains_range 4 KiB, covered``: random covered ranges;
* ``read_at 4 KiB`` into a reusable buffer and ``view 4 KiB``, random offsets.

Baselines measured in the same run: the bare loop, a 4 KiB slice store into a mapped,
already-touched segment (the floor of ``write_at``: ``memoryview[a:b] = data``), and a
4 KiB slice load into a buffer (the floor of ``read_at``).
"""

from __future__ import annotations

import gc
import mmap
import random
import time
from collections.abc import Callable
from typing import Any

import shmstore

from .harness import Config, KiB, Names, Progress, Table, cpus, pin, run_children, summarize

BATCH = 100
OP = 4 * KiB


def timed_batches(batch_fn: Callable[[int], None], n_batches: int, warm: int) -> list[float]:
    """Call ``batch_fn(b)`` for b in range(warm + n_batches); return ns per op per batch."""
    clock = time.perf_counter_ns
    out = []
    enabled = gc.isenabled()
    gc.disable()
    try:
        for b in range(warm + n_batches):
            t0 = clock()
            batch_fn(b)
            t1 = clock()
            if b >= warm:
                out.append((t1 - t0) / BATCH)
    finally:
        if enabled:
            gc.enable()
    return out


def measure(name: str, n_batches: int, warm: int, cpu: int | None) -> dict[str, list[float]]:
    pin(cpu)
    n_ops = (n_batches + warm) * BATCH
    cap = n_ops * OP
    data = random.Random(3).randbytes(OP)
    rng = random.Random(4)
    res: dict[str, list[float]] = {}
    w = shmstore.create(name, capacity=cap)
    r = None
    try:
        # Baselines: the bare loop and raw 4 KiB slice stores and loads on a touched mapping.
        m = mmap.mmap(-1, n_ops * OP)
        mv = memoryview(m)
        mv[:] = bytes(n_ops * OP)
        offs = [i * OP for i in range(n_ops)]
        rand = [rng.randrange(n_ops) * OP for _ in range(n_ops)]
        buf = bytearray(OP)

        def loop(b: int) -> None:
            for _o in offs[b * BATCH:(b + 1) * BATCH]:
                pass

        def store(b: int) -> None:
            for o in offs[b * BATCH:(b + 1) * BATCH]:
                mv[o:o + OP] = data

        def load(b: int) -> None:
            for o in rand[b * BATCH:(b + 1) * BATCH]:
                buf[:] = mv[o:o + OP]

        res["loop"] = timed_batches(loop, n_batches, warm)
        res["store"] = timed_batches(store, n_batches, warm)
        res["load"] = timed_batches(load, n_batches, warm)
        mv.release()
        m.close()

        wr = w.write_at

        def write_fresh(b: int) -> None:
            for o in offs[b * BATCH:(b + 1) * BATCH]:
                wr(o, data)

        res["write_fresh"] = timed_batches(write_fresh, n_batches, warm)

        def write_again(b: int) -> None:
            for o in offs[b * BATCH:(b + 1) * BATCH]:
                wr(o, data)

        res["write_again"] = timed_batches(write_again, n_batches, warm)

        r = shmstore.open(name)
        covered = n_ops * OP
        if not r.contains_range(0, covered):
            raise AssertionError("reader does not see the written bytes")
        wait, contains, read_at, view = r.wait_range, r.contains_range, r.read_at, r.view
        ranges = [(o, o + OP) for o in rand]

        def waits(b: int) -> None:
            for s, e in ranges[b * BATCH:(b + 1) * BATCH]:
                wait(s, e)

        def contained(b: int) -> None:
            for s, e in ranges[b * BATCH:(b + 1) * BATCH]:
                contains(s, e)

        def reads(b: int) -> None:
            for o in rand[b * BATCH:(b + 1) * BATCH]:
                read_at(o, buf)

        def views(b: int) -> None:
            for o in rand[b * BATCH:(b + 1) * BATCH]:
                view(o, OP)

        res["wait"] = timed_batches(waits, n_batches, warm)
        res["contains"] = timed_batches(contained, n_batches, warm)
        res["read"] = timed_batches(reads, n_batches, warm)
        res["view"] = timed_batches(views, n_batches, warm)
        if bytes(buf) != data:
            raise AssertionError("read_at returned wrong bytes")
        return res
    finally:
        if r is not None:
            r.close()
        w.close()


LABELS: list[tuple[str, str, str, float | None]] = [
    # key, operation, compared with (baseline key), SPEC target in ns
    ("loop", "baseline: empty loop iteration", "", None),
    ("store", "baseline: 4 KiB slice store into touched mapping", "", None),
    ("load", "baseline: 4 KiB slice load into buffer", "", None),
    ("write_fresh", "write_at 4 KiB, fresh pages", "store", 2000.0),
    ("write_again", "write_at 4 KiB, rewrite (no page fault)", "store", 2000.0),
    ("wait", "wait_range 4 KiB, covered", "", 1000.0),
    ("contains", "contains_range 4 KiB, covered", "", 1000.0),
    ("read", "read_at 4 KiB", "load", None),
    ("view", "view 4 KiB", "", None),
]


def rows_from(res: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, label, base, target in LABELS:
        s = summarize(res[key])
        row = {"op": label, "median_ns": s["median"], "p99_ns": s["p99"], "min_ns": s["min"],
               "target_ns": target, "stats": s}
        if target is not None:
            row["meets"] = s["median"] < target
        if base:
            row["vs_baseline"] = s["median"] / summarize(res[base])["median"]
        rows.append(row)
    return rows


def run(cfg: Config, names: Names) -> list[Table]:
    n_batches, warm = cfg.reps(300, 100), 10
    cpu = cpus()[-1]
    with Progress("perop", 1) as bar, names.scope() as made:
        bar.step("measuring")
        name = names.resource()
        made.append(name)
        (res,) = run_children([(measure, (name, n_batches, warm, cpu))], timeout=120)
    return [Table(
        "perop",
        "per-operation cost, one process (ns per call; median and p99 over batches)",
        [("op", "operation"), ("median_ns", "median"), ("p99_ns", "p99"), ("min_ns", "min"),
         ("vs_baseline", "x baseline"), ("target_ns", "target <"), ("meets", "met")],
        rows_from(res),
        {"batch": BATCH, "batches": n_batches, "warmup_batches": warm, "op_size": "4 KiB",
         "cpu": cpu},
        ["x baseline: write_at vs the raw 4 KiB store, read_at vs the raw 4 KiB load",
         "targets (SPEC.md): wait_range / contains_range on covered bytes < 1 us;"
         " 4 KiB write_at < 2 us (judged on fresh pages)"],
    )]
