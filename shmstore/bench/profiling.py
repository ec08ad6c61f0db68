"""Where the time goes: cProfile of one side or both sides of a scenario.

    python -m shmstore.bench.profiling stream [--mode read_at|view] [--size-mib 256]
    python -m shmstore.bench.profiling numpy [--kernel "uint8 sum"] [--size-mib 256]
    python -m shmstore.bench.profiling latency [--placement same|cross] [--rounds 5000]
    python -m shmstore.bench.profiling frag [--ranges 100000]
    python -m shmstore.bench.profiling perop

Each profiled process prints its top functions by internal time, with its ``getrusage``
deltas (CPU, minor page faults, context switches) over the profiled region. cProfile adds
per-call overhead, so read the shares, not the absolute times; the figures to quote come
from ``shmstore bench``. Like the suite, this imports only the public API, and every
name it creates is released on exit.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import pstats
import random
import sys
from collections.abc import Callable
from typing import Any

import shmstore

from . import fragmentation, latency, numpy_consumer, stream
from .harness import CTX, MiB, Names, cpus, run_children, usage, usage_since
from .perop import BATCH


def profiled(fn: Callable[..., Any], label: str, top: int) -> Callable[..., Any]:
    """Wrap a child function: profile it and print its report (from the child)."""

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        prof = cProfile.Profile()
        before = usage()
        prof.enable()
        try:
            return fn(*args)
        finally:
            prof.disable()
            u = usage_since(before)
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
            body = "\n".join(out.getvalue().splitlines()[3:])  # drop the header lines
            print(f"\n#### {label}: cpu {u['cpu_s'] * 1e3:.1f} ms, minor faults"
                  f" {u['minflt']:.0f}, voluntary switches {u['nvcsw']:.0f}, involuntary"
                  f" {u['nivcsw']:.0f}\n{body}", flush=True)

    return wrapper


def prof_stream(names: Names, mode: str, size: int, top: int) -> None:
    data = stream.make_chunk()
    pc, cc = stream.placement()
    created, go = CTX.Event(), CTX.Barrier(2)
    with names.scope() as made:
        name = names.resource()
        made.append(name)
        p, c = run_children([
            (profiled(stream.shm_producer, "producer", top), (name, size, data, pc, created, go)),
            (profiled(stream.shm_consumer, f"consumer ({mode})", top),
             (name, size, data, cc, created, go, mode)),
        ])
    print(f"\nthroughput under the profiler: {size / (c['t1'] - p['t0']) / 1e9:.2f} GB/s")


def prof_numpy(names: Names, kernel: str, size: int, top: int) -> None:
    data = numpy_consumer.make_chunk()
    pc, cc = stream.placement()
    created, go = CTX.Event(), CTX.Barrier(2)
    with names.scope() as made:
        name = names.resource()
        made.append(name)
        p, c = run_children([
            (profiled(stream.shm_producer, "producer", top), (name, size, data, pc, created, go)),
            (profiled(numpy_consumer.view_consumer, f"consumer ({kernel}, two passes)", top),
             (name, size, data, kernel, cc, created, go)),
        ])
    print(f"\nstreaming pass under the profiler: {size / (c['t1'] - p['t0']) / 1e9:.2f} GB/s;"
          f" second pass {size / c['second_pass'] / 1e9:.2f} GB/s")


def prof_latency(names: Names, placement: str, rounds: int, top: int) -> None:
    c = cpus()
    ca, cb = (c[0], c[0]) if placement == "same" or len(c) < 2 else (c[0], c[1])
    a_ready, b_ready, go = CTX.Event(), CTX.Event(), CTX.Barrier(2)
    with names.scope() as made:
        x, y = names.resource(), names.resource()
        made += [x, y]
        a, _ = run_children([
            (profiled(latency.shm_a, "A: write_at X, wait_range Y", top),
             (x, y, rounds, 100, ca, a_ready, b_ready, go)),
            (profiled(latency.shm_b, "B: wait_range X, write_at Y", top),
             (x, y, rounds, 100, cb, a_ready, b_ready, go)),
        ])
    s = sorted(a["samples"])
    print(f"\none way under the profiler: p50 {s[len(s) // 2]:.1f} us")


def _frag(name: str, k: int, n: int) -> None:
    w = shmstore.create(name, capacity=k * fragmentation.STRIDE + 4096)
    r = None
    try:
        block = bytes(fragmentation.BLOCK)
        for i in range(k):
            w.write_at(i * fragmentation.STRIDE, block)
        r = shmstore.open(name)
        r.contains_range(0, 1)
        rng = random.Random(1)
        hits = [(j * 32, j * 32 + 16) for j in (rng.randrange(k) for _ in range(n))]
        inner = profiled(lambda: [r.contains_range(s, e) for s, e in hits],
                         f"{n} x contains_range on {k} ranges", 25)
        inner()
    finally:
        if r is not None:
            r.close()
        w.close()


def prof_frag(names: Names, k: int) -> None:
    with names.scope() as made:
        name = names.resource()
        made.append(name)
        run_children([(_frag, (name, k, 100 * BATCH))], timeout=600)


def _perop(name: str, n: int, top: int) -> None:
    data = bytes(4096)
    w = shmstore.create(name, capacity=n * 4096)
    r = None
    try:
        def writes() -> None:
            for i in range(n):
                w.write_at(i * 4096, data)

        profiled(writes, f"{n} x write_at 4 KiB (fresh pages)", top)()
        profiled(writes, f"{n} x write_at 4 KiB (rewrite)", top)()
        r = shmstore.open(name)
        buf = bytearray(4096)
        profiled(lambda: [r.read_at(i * 4096, buf) for i in range(n)],
                 f"{n} x read_at 4 KiB", top)()
        profiled(lambda: [r.wait_range(i * 4096, i * 4096 + 4096) for i in range(n)],
                 f"{n} x wait_range 4 KiB", top)()
    finally:
        if r is not None:
            r.close()
        w.close()


def prof_perop(names: Names, top: int) -> None:
    with names.scope() as made:
        name = names.resource()
        made.append(name)
        run_children([(_perop, (name, 20_000, top))], timeout=300)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shmstore.bench.profiling",
                                 description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("stream")
    s.add_argument("--mode", choices=("read_at", "view"), default="read_at")
    s.add_argument("--size-mib", type=int, default=256)
    s.add_argument("--top", type=int, default=20)
    nu = sub.add_parser("numpy")
    nu.add_argument("--kernel", choices=list(numpy_consumer.KERNELS), default="uint8 sum")
    nu.add_argument("--size-mib", type=int, default=256)
    nu.add_argument("--top", type=int, default=20)
    la = sub.add_parser("latency")
    la.add_argument("--placement", choices=("same", "cross"), default="cross")
    la.add_argument("--rounds", type=int, default=5000)
    la.add_argument("--top", type=int, default=25)
    f = sub.add_parser("frag")
    f.add_argument("--ranges", type=int, default=100_000)
    po = sub.add_parser("perop")
    po.add_argument("--top", type=int, default=15)
    args = ap.parse_args(argv)
    names = Names()
    try:
        if args.what == "stream":
            prof_stream(names, args.mode, args.size_mib * MiB, args.top)
        elif args.what == "numpy":
            prof_numpy(names, args.kernel, args.size_mib * MiB, args.top)
        elif args.what == "latency":
            prof_latency(names, args.placement, args.rounds, args.top)
        elif args.what == "frag":
            prof_frag(names, args.ranges)
        else:
            prof_perop(names, args.top)
    finally:
        names.cleanup()
    left = names.leftovers()
    if left:
        print(f"left behind: {left}", file=sys.stderr)
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
