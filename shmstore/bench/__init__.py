"""shmstore's benchmark suite: ``shmstore bench [--quick] [--only NAMES] [--json FILE]
[--plot FILE.png] [--chunks 64K,1M,4M] [--size SIZE]`` (also ``python -m shmstore.bench``).

Every scenario compares shmstore with baselines measured in the same run on the same
machine, in one process tree, warms up, repeats, and reports medians and tails as ratios
(see ``docs/performance.md``). The scenarios import only the public ``shmstore`` API.
Optional peers (``pip install 'shmstore[bench]'``: faster-fifo, numpy, matplotlib, lmdb; and
iceoryx2, ray where installed) are measured where installed and skipped, never faked.

Modules
    runner          the command line (``run_cli``), the run, the SPEC.md targets summary
    harness         machine, statistics, child processes, names and cleanup, tables, progress
    stream          64 KiB .. 4 MiB chunks producer -> consumer (read_at, view) vs in-process
                    memcpy, a posix_ipc shm ring, shared_memory + Event, Pipe, Queue,
                    faster-fifo, iceoryx2
    numpy_consumer  numpy reduction over each chunk through view() vs in-process memory
    latency         publish-to-wake ping-pong vs a semaphore, os.pipe, multiprocessing.Pipe,
                    iceoryx2 events, pinned
    perop           ns per write_at / wait_range / contains_range / read_at / view
    fragmentation   the same per-op costs as coverage fragments into 10**2 .. 10**6 ranges
    fanout          1 writer, N readers: aggregate throughput and CPU time
    pool            W writer processes filling one resource vs a raw shm pool
    firstbyte       time to the first 1 MiB of a 1 GiB object still being produced vs
                    Queue / Pipe / Ray of the whole object
    logbench        ``--only log``: 1 KiB appends to shmstore.Log (disk; shm) vs a plain
                    file with CRC32 framing, sqlite3 WAL and lmdb, one by one and batched,
                    fsync off and on; writer -> reader tail latency across processes
    plot            ``--plot``: the main figures as a PNG (matplotlib)
    profiling       cProfile + getrusage of each process of a scenario (where the time goes)
    report          a saved results JSON as Markdown tables (docs/performance.md)
"""

from __future__ import annotations

from .runner import SCENARIOS, build_parser, run_cli

__all__ = ["SCENARIOS", "build_parser", "run_cli"]
