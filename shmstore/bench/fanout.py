"""Scenario ``fanout``: one writer, N reader processes streaming the same resource.

The writer writes 128 MiB (64 MiB with ``--quick``; ``--size``) in 1 MiB chunks; each of N
in (1, 2, 4, 8) readers waits every chunk (``wait_range``) and copies it out (``read_at``).
Processes are not pinned: with more processes than CPUs the scheduler has to share them, as
in production.

Reported per N (median over repeats):

* aggregate GB/s = N x size / (last reader's end - writer's first write), and the median
  reader's own GB/s;
* CPU seconds spent in the timed region, summed over the writer and readers (each child's
  ``getrusage`` delta), the writer's share, and the median reader's CPU per MiB it read;
* wake-ups: a reader's voluntary context switches per chunk (it blocks once per chunk it
  finds missing; a thundering herd would show many more) and involuntary ones.
* CPU of the children over the whole repeat including start-up (``os.times``), for scale.
"""

from __future__ import annotations

import os
import time
from typing import Any

import shmstore

from .harness import (
    CTX,
    GB,
    Config,
    MiB,
    Names,
    Progress,
    Table,
    human,
    run_children,
    summarize,
    usage,
    usage_since,
)
from .stream import CHUNK, TIMEOUT, make_chunk

SIZE = 128 * MiB
QUICK_SIZE = 64 * MiB
READERS = (1, 2, 4, 8)


def writer(name: str, size: int, data: bytes, created: Any, go: Any) -> dict[str, Any]:
    w = shmstore.create(name, capacity=size)
    try:
        created.set()
        wr, step = w.write_at, len(data)
        go.wait(TIMEOUT)
        before = usage()
        t0 = time.perf_counter()
        for off in range(0, size, step):
            wr(off, data)
        out: dict[str, Any] = usage_since(before)
        out["t0"] = t0
        w.commit()
        return out
    finally:
        w.close()


def reader(name: str, size: int, data: bytes, created: Any, go: Any) -> dict[str, Any]:
    if not created.wait(TIMEOUT):
        raise TimeoutError("writer did not create the resource")
    r = shmstore.open(name)
    try:
        wait, read_at, step = r.wait_range, r.read_at, len(data)
        buf = bytearray(step)
        go.wait(TIMEOUT)
        before = usage()
        for off in range(0, size, step):
            wait(off, off + step, TIMEOUT)
            read_at(off, buf)
        t1 = time.perf_counter()
        out: dict[str, Any] = usage_since(before)
        out["t1"] = t1
        if bytes(buf) != data:
            raise AssertionError("read_at returned wrong bytes")
        return out
    finally:
        r.close()


def one(names: Names, n: int, size: int, data: bytes) -> dict[str, float]:
    created, go = CTX.Event(), CTX.Barrier(n + 1)
    t_before = os.times()
    with names.scope() as made:
        name = names.resource()
        made.append(name)
        res = run_children([(writer, (name, size, data, created, go))]
                           + [(reader, (name, size, data, created, go))] * n, timeout=TIMEOUT)
    t_after = os.times()
    w, rs = res[0], res[1:]
    t0 = w["t0"]
    chunks = size // len(data)
    cpu = w["cpu_s"] + sum(r["cpu_s"] for r in rs)
    return {
        "aggregate_gbps": n * size / (max(r["t1"] for r in rs) - t0) / GB,
        "reader_gbps": summarize([size / (r["t1"] - t0) / GB for r in rs])["median"],
        "cpu_s": cpu,
        "writer_cpu_s": w["cpu_s"],
        "reader_cpu_us_per_mib": summarize([r["cpu_s"] / (size / MiB) * 1e6 for r in rs])[
            "median"],
        "wakes_per_chunk": summarize([r["nvcsw"] / chunks for r in rs])["median"],
        "preempt_per_chunk": summarize([r["nivcsw"] / chunks for r in rs])["median"],
        "children_cpu_s": (t_after.children_user + t_after.children_system
                           - t_before.children_user - t_before.children_system),
    }


KEYS = ("aggregate_gbps", "reader_gbps", "cpu_s", "writer_cpu_s", "reader_cpu_us_per_mib",
        "wakes_per_chunk", "preempt_per_chunk", "children_cpu_s")


def run(cfg: Config, names: Names) -> list[Table]:
    size, data = cfg.stream_size(SIZE, QUICK_SIZE), make_chunk()
    warm, reps = 1, cfg.reps(7, 2)
    samples: dict[int, list[dict[str, float]]] = {n: [] for n in READERS}
    with Progress("fanout", (warm + reps) * len(READERS)) as bar:
        for rep in range(warm + reps):
            for n in READERS:
                bar.step(f"round {rep + 1}/{warm + reps}"
                         + (" (warm-up)" if rep < warm else "") + f", {n} reader(s)")
                got = one(names, n, size, data)
                if rep >= warm:
                    samples[n].append(got)
    rows = []
    base_cpu = None
    for n in READERS:
        row: dict[str, Any] = {"readers": n}
        for k in KEYS:
            row[k] = summarize([s[k] for s in samples[n]])["median"]
        if base_cpu is None:
            base_cpu = row["reader_cpu_us_per_mib"]
        row["cpu_per_mib_vs_1"] = row["reader_cpu_us_per_mib"] / base_cpu
        row["samples"] = samples[n]
        rows.append(row)
    return [Table(
        "fanout",
        "fan-out: 1 writer, N readers, same resource, read_at per 1 MiB chunk (median of"
        " repeats)",
        [("readers", "N"), ("aggregate_gbps", "aggregate GB/s"), ("reader_gbps", "per reader"),
         ("cpu_s", "CPU s"), ("writer_cpu_s", "writer CPU s"),
         ("reader_cpu_us_per_mib", "reader CPU us/MiB"), ("cpu_per_mib_vs_1", "x N=1"),
         ("wakes_per_chunk", "wakes/chunk"), ("preempt_per_chunk", "preempt/chunk"),
         ("children_cpu_s", "CPU s incl. start")],
        rows,
        {"size": human(size), "chunk": human(CHUNK), "warmup": warm,
         "repeats": reps, "cpus": len(os.sched_getaffinity(0))},
        ["x N=1: ratio to the 1-reader run of this table (same run);"
         " CPU s: writer + readers inside the timed region (getrusage); reader CPU us/MiB:"
         " the median reader's CPU per MiB it read (a herd would make it grow with N)",
         "wakes/chunk: a reader's voluntary context switches per chunk (<= 1 when each"
         " write wakes only the readers waiting for it)"],
    )]
