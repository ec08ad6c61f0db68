"""Scenario ``frag``: per-operation cost as coverage fragments.

For each K in 10**2, 10**4, 10**5, 10**6 (``--quick`` stops at 10**5), a fresh process
builds a resource whose coverage is K disjoint ranges: it writes every other 16-byte block
(``write_at(32 * i, 16 bytes)``, i < K), then checks through a reader handle that
``ranges()`` really has K entries. Then, timeit-style (see ``perop``):

* ``wait_range 16 B, covered`` and ``contains_range 16 B, covered``: a random written block,
  through the reader handle;
* ``contains_range 16 B, hole``: a random unwritten block (answer False: the slow path,
  which drains the writers' rings before it says no);
* ``write_at 4 KiB``: through the writer, at offsets past the fragmented region with a 4 KiB
  hole between writes, so each write adds one more disjoint range.

Also reported: the mean cost of the K building writes (``write_at`` of 16 B into ever more
fragmented coverage) and the reader's catch-up (``open`` plus its first call, which
between them load the K ranges). The point is that the per-op columns stay flat as K grows.
"""

from __future__ import annotations

import random
import time
from typing import Any

import shmstore

from .harness import Config, KiB, Names, Progress, Table, cpus, pin, run_children, summarize
from .perop import BATCH, timed_batches

BLOCK = 16
STRIDE = 32
OP = 4 * KiB


def measure(name: str, k: int, n_batches: int, warm: int, cpu: int | None) -> dict[str, Any]:
    pin(cpu)
    n_ops = (n_batches + warm) * BATCH
    base = k * STRIDE
    cap = base + 2 * OP * n_ops
    block = random.Random(5).randbytes(BLOCK)
    data = random.Random(6).randbytes(OP)
    rng = random.Random(7)
    res: dict[str, Any] = {"k": k}
    w = shmstore.create(name, capacity=cap)
    r = None
    try:
        wr = w.write_at
        t0 = time.perf_counter()
        for i in range(k):
            wr(i * STRIDE, block)
        res["build_ns"] = (time.perf_counter() - t0) / k * 1e9

        t0 = time.perf_counter()
        r = shmstore.open(name)
        r.contains_range(0, BLOCK)
        res["catchup_ms"] = (time.perf_counter() - t0) * 1e3
        n_ranges = len(r.ranges())
        if n_ranges != k:
            raise AssertionError(f"coverage has {n_ranges} ranges, expected {k}")
        res["ranges"] = n_ranges

        wait, contains = r.wait_range, r.contains_range
        hits = [(j * STRIDE, j * STRIDE + BLOCK) for j in
                (rng.randrange(k) for _ in range(n_ops))]
        holes = [(s + BLOCK, s + STRIDE) for s, _ in hits]

        def waits(b: int) -> None:
            for s, e in hits[b * BATCH:(b + 1) * BATCH]:
                wait(s, e)

        def contained(b: int) -> None:
            for s, e in hits[b * BATCH:(b + 1) * BATCH]:
                contains(s, e)

        def missing(b: int) -> None:
            for s, e in holes[b * BATCH:(b + 1) * BATCH]:
                contains(s, e)

        res["wait"] = timed_batches(waits, n_batches, warm)
        res["contains"] = timed_batches(contained, n_batches, warm)
        res["contains_hole"] = timed_batches(missing, n_batches, warm)
        if contains(*holes[0]) or not contains(*hits[0]):
            raise AssertionError("contains_range answers wrongly")

        offs = [base + 2 * OP * i for i in range(n_ops)]

        def writes(b: int) -> None:
            for o in offs[b * BATCH:(b + 1) * BATCH]:
                wr(o, data)

        res["write"] = timed_batches(writes, n_batches, warm)
        return res
    finally:
        if r is not None:
            r.close()
        w.close()


OPS = [("wait", "wait_range"), ("contains", "contains_range"),
       ("contains_hole", "contains_range (hole)"), ("write", "write_at 4 KiB")]


def run(cfg: Config, names: Names) -> list[Table]:
    ks = [10**2, 10**4, 10**5] if cfg.quick else [10**2, 10**4, 10**5, 10**6]
    n_batches, warm = cfg.reps(200, 60), 10
    cpu = cpus()[-1]
    results = []
    with Progress("frag", len(ks)) as bar:
        for k in ks:
            bar.step(f"{k:,} ranges")
            with names.scope() as made:
                name = names.resource()
                made.append(name)
                (res,) = run_children([(measure, (name, k, n_batches, warm, cpu))],
                                      timeout=300)
            results.append(res)
    first = results[0]
    rows = []
    for res in results:
        row: dict[str, Any] = {"ranges": res["ranges"], "build_ns": res["build_ns"],
                               "catchup_ms": res["catchup_ms"]}
        for key, _ in OPS:
            s = summarize(res[key])
            row[f"{key}_ns"] = s["median"]
            row[f"{key}_p99"] = s["p99"]
            row[f"{key}_growth"] = s["median"] / summarize(first[key])["median"]
            row[f"{key}_stats"] = s
        rows.append(row)
    cols: list[tuple[str, str]] = [("ranges", "ranges")]
    for key, label in OPS:
        cols += [(f"{key}_ns", f"{label} p50"), (f"{key}_p99", "p99")]
    cols += [("build_ns", "build write_at 16B"), ("catchup_ms", "open + catch-up ms")]
    growth = max(r[f"{k}_growth"] for r in rows for k, _ in OPS if k != "contains_hole")
    return [Table(
        "frag",
        "fragmentation: per-op ns as coverage splits into K disjoint ranges (median, p99)",
        cols,
        rows,
        {"block": f"{BLOCK} B every {STRIDE} B", "batch": BATCH, "batches": n_batches,
         "warmup_batches": warm, "cpu": cpu},
        [f"largest growth of a covered-range or write median vs {first['ranges']:,} ranges:"
         f" {growth:.2f}x (target: flat)",
         "build write_at 16B: mean cost of the K writes that fragment the coverage"],
    )]
