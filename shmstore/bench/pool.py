"""Scenario ``pool``: a worker pool of W writer processes filling one resource, while one
reader streams it in order.

The resource (256 MiB, 64 MiB with ``--quick``; ``--size``) is cut into 1 MiB chunks;
writer i of W writes chunks i, i + W, i + 2W, ... (``shmstore.open(name, mode="r+")``: each
worker attaches by name), so the chunks land interleaved and out of order, and the reader
waits each chunk in turn (``wait_range`` + ``read_at``). The first writer creates the
resource (prefaulted, outside the timed region) and commits it once every writer is done.
Each W runs twice: writers alone (the fill rate, comparable with the baseline), and writers
with the reader (the delivered rate; on a small machine the reader competes for CPUs).

Baseline, measured in the same run for the same W: ``raw shm pool``, the same W processes
copying the same chunks into one plain POSIX shm segment whose pages each worker has
already mapped (a first pass before the clock starts): no publication, no page faults, no
reader: the memcpy limit of any pool writing into shared memory.

Reported per W (median over repeats): fill GB/s (size / (last writer's end - first writer's
start)) and its ratio to the raw pool and to W = 1; with the reader: the fill rate and the
delivered GB/s (to the reader's last byte), and the reader's sleeps per chunk; writer CPU
per MiB.
"""

from __future__ import annotations

import mmap
import os
import time
from typing import Any

import posix_ipc

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
from .stream import TIMEOUT, make_chunk

SIZE = 256 * MiB
QUICK_SIZE = 64 * MiB
CHUNK = MiB
WRITERS = (1, 2, 4)

Side = dict[str, Any]


def pool_writer(name: str, i: int, w: int, size: int, data: bytes, created: Any, go: Any,
                done: Any) -> Side:
    """Writer ``i`` of ``w``: chunks i, i + w, ...; writer 0 creates and commits."""
    if i == 0:
        h = shmstore.create(name, capacity=size)
        created.set()
    else:
        if not created.wait(TIMEOUT):
            raise TimeoutError("writer 0 did not create the resource")
        h = shmstore.open(name, mode="r+")
    try:
        wr, step = h.write_at, len(data)
        offsets = range(i * step, size, w * step)
        go.wait(TIMEOUT)
        before = usage()
        t0 = time.perf_counter()
        for off in offsets:
            wr(off, data)
        t_end = time.perf_counter()
        out: Side = usage_since(before)
        out["t0"], out["t_end"] = t0, t_end
        done.wait(TIMEOUT)  # every writer has finished: a commit may not race a write
        if i == 0:
            h.commit()
        return out
    finally:
        h.close()


def pool_reader(name: str, size: int, data: bytes, created: Any, go: Any) -> Side:
    if not created.wait(TIMEOUT):
        raise TimeoutError("writer 0 did not create the resource")
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
        out: Side = usage_since(before)
        out["t1"] = t1
        if bytes(buf) != data or r.read(0, step) != data:
            raise AssertionError("read_at returned wrong bytes")
        return out
    finally:
        r.close()


def raw_writer(seg: str, i: int, w: int, size: int, data: bytes, go: Any) -> Side:
    shm = posix_ipc.SharedMemory(seg)
    m = mmap.mmap(shm.fd, size)
    shm.close_fd()
    try:
        mv = memoryview(m)
        step = len(data)
        offsets = range(i * step, size, w * step)
        for off in offsets:  # map our pages before the clock starts: the limit is hot memcpy
            mv[off:off + step] = data
        go.wait(TIMEOUT)
        before = usage()
        t0 = time.perf_counter()
        for off in offsets:
            mv[off:off + step] = data
        t_end = time.perf_counter()
        out: Side = usage_since(before)
        out["t0"], out["t_end"] = t0, t_end
        mv.release()
        return out
    finally:
        m.close()


def _touch(seg: str, size: int) -> None:
    """Fill the segment with zeros once, as ``create(prefault=True)`` does."""
    shm = posix_ipc.SharedMemory(seg)
    try:
        os.posix_fallocate(shm.fd, 0, size)
        with mmap.mmap(shm.fd, size) as m:
            zero = bytes(MiB)
            for off in range(0, size, MiB):
                m[off:off + min(MiB, size - off)] = zero[:min(MiB, size - off)]
    finally:
        shm.close_fd()


def one_shm(names: Names, w: int, size: int, data: bytes, reader: bool) -> dict[str, float]:
    created, go, done = CTX.Event(), CTX.Barrier(w + int(reader)), CTX.Barrier(w)
    with names.scope() as made:
        name = names.resource()
        made.append(name)
        specs: list[tuple[Any, tuple[Any, ...]]] = [
            (pool_writer, (name, i, w, size, data, created, go, done)) for i in range(w)]
        if reader:
            specs.append((pool_reader, (name, size, data, created, go)))
        res = run_children(specs, timeout=TIMEOUT)
    ws = res[:w]
    t0 = min(x["t0"] for x in ws)
    out = {"fill_s": max(x["t_end"] for x in ws) - t0,
           "writer_cpu_us_per_mib": sum(x["cpu_s"] for x in ws) / (size / MiB) * 1e6}
    if reader:
        r = res[w]
        out["deliver_s"] = r["t1"] - t0
        out["reader_sleeps_per_chunk"] = r["nvcsw"] / (size // len(data))
    return out


def one_raw(names: Names, w: int, size: int, data: bytes) -> dict[str, float]:
    go = CTX.Barrier(w)
    with names.scope() as made:
        seg = names.segment(size)
        made.append(seg)
        _touch(seg, size)
        ws = run_children([(raw_writer, (seg, i, w, size, data, go)) for i in range(w)],
                          timeout=TIMEOUT)
    t0 = min(x["t0"] for x in ws)
    return {"fill_s": max(x["t_end"] for x in ws) - t0,
            "writer_cpu_us_per_mib": sum(x["cpu_s"] for x in ws) / (size / MiB) * 1e6}


def run(cfg: Config, names: Names) -> list[Table]:
    size = cfg.stream_size(SIZE, QUICK_SIZE)
    size -= size % CHUNK
    if size < max(WRITERS) * CHUNK:
        raise ValueError(f"the pool scenario needs --size >= {human(max(WRITERS) * CHUNK)}")
    data = make_chunk(CHUNK)
    warm, reps = 1, cfg.reps(5, 2)
    shm: dict[int, list[dict[str, float]]] = {w: [] for w in WRITERS}
    both: dict[int, list[dict[str, float]]] = {w: [] for w in WRITERS}
    raw: dict[int, list[dict[str, float]]] = {w: [] for w in WRITERS}
    with Progress("pool", (warm + reps) * len(WRITERS) * 3) as bar:
        for rep in range(warm + reps):
            tag = f"round {rep + 1}/{warm + reps}" + (" (warm-up)" if rep < warm else "")
            for w in WRITERS:
                bar.step(f"{tag}, {w} writer(s): raw shm pool")
                got_raw = one_raw(names, w, size, data)
                bar.step(f"{tag}, {w} writer(s): shmstore")
                got_shm = one_shm(names, w, size, data, reader=False)
                bar.step(f"{tag}, {w} writer(s): shmstore + reader")
                got_both = one_shm(names, w, size, data, reader=True)
                if rep >= warm:
                    raw[w].append(got_raw)
                    shm[w].append(got_shm)
                    both[w].append(got_both)

    def med(xs: list[dict[str, float]], key: str) -> float:
        return summarize([x[key] for x in xs])["median"]

    base = size / med(shm[WRITERS[0]], "fill_s") / GB
    rows: list[dict[str, Any]] = []
    for w in WRITERS:
        fill = size / med(shm[w], "fill_s") / GB
        raw_fill = size / med(raw[w], "fill_s") / GB
        rows.append({
            "writers": w,
            "fill_gbps": fill,
            "raw_gbps": raw_fill,
            "vs_raw": fill / raw_fill,
            "vs_1": fill / base,
            "writer_cpu_us_per_mib": med(shm[w], "writer_cpu_us_per_mib"),
            "raw_cpu_us_per_mib": med(raw[w], "writer_cpu_us_per_mib"),
            "fill_with_reader_gbps": size / med(both[w], "fill_s") / GB,
            "deliver_gbps": size / med(both[w], "deliver_s") / GB,
            "reader_sleeps_per_chunk": med(both[w], "reader_sleeps_per_chunk"),
            "samples": shm[w],
            "with_reader_samples": both[w],
            "raw_samples": raw[w],
        })
    return [Table(
        "pool",
        f"writer pool: W processes fill one resource ({human(CHUNK)} chunks, interleaved),"
        " 1 reader streams it (median of repeats)",
        [("writers", "W"), ("fill_gbps", "fill GB/s"), ("raw_gbps", "raw pool (limit)"),
         ("vs_raw", "x raw"), ("vs_1", "x W=1"),
         ("writer_cpu_us_per_mib", "writer CPU us/MiB"),
         ("raw_cpu_us_per_mib", "raw CPU us/MiB"),
         ("fill_with_reader_gbps", "+reader: fill GB/s"), ("deliver_gbps", "to reader GB/s"),
         ("reader_sleeps_per_chunk", "reader sleeps/chunk")],
        rows,
        {"size": human(size), "chunk": human(CHUNK), "warmup": warm, "repeats": reps,
         "cpus": len(os.sched_getaffinity(0))},
        ["fill GB/s: W shmstore writers alone; x raw: over W processes memcpy-ing the same"
         " chunks into one POSIX shm segment they have already mapped (no publication, no"
         " page faults, no reader: the limit), same W, this run; x W=1: over shmstore's own"
         " 1-writer fill",
         "+reader: the same pool with one reader copying every chunk out in order; to reader"
         " GB/s = size / (first write -> the reader's last byte); processes are not pinned"
         " (with more processes than CPUs they share them)"],
    )]
