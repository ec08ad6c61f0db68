"""shmstore benchmark suite: ``python -m benchmarks [--quick] [--json FILE] [--only NAME]``.

Every scenario compares shmstore with baselines measured in the same run on the same
machine, warms up, repeats, and reports medians and tails (see ``docs/performance.md``).
The scenarios import only the public ``shmstore`` API.

Modules
    harness         machine description, statistics, child processes, names and cleanup, tables
    stream          1 MiB chunks producer -> consumer (read_at, view) vs memcpy, shm ring, Pipe,
                    faster-fifo
    numpy_consumer  numpy reduction over each chunk through view() vs in-process memory
    latency         publish-to-wake ping-pong vs a bare semaphore and a pipe, pinned
    perop           ns per write_at / wait_range / contains_range / read_at / view
    fragmentation   the same per-op costs as coverage fragments into 10**2 .. 10**6 ranges
    fanout          1 writer, N readers: aggregate throughput and CPU time
    profiling       cProfile + getrusage of each process of a scenario (where the time goes)
    report          a saved results JSON as Markdown tables (docs/performance.md)
"""
