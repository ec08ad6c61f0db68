"""``make run``: one producer, three consumers, one 256 MiB resource being produced.

The producer process writes the resource in 1 MiB chunks in a shuffled order; for each chunk
it also writes the chunk's BLAKE2b digest into a second, small resource. Three consumer
processes attach by name and read the data front to back: each waits for the next chunk with
``wait_range``, checks it through a zero-copy ``view`` against its digest, and reports its
throughput. Nothing is left in ``/dev/shm`` afterwards, whatever happens.

Run: ``python -m shmstore.demo [--size-mib 256] [--consumers 3]``.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import os
import random
import sys
import time

import shmstore

CHUNK = 1 << 20
DIGEST = 32


def _chunk_bytes(seed: int, index: int) -> bytes:
    return random.Random(seed * 1_000_003 + index).randbytes(CHUNK)


def producer(name: str, chunks: int, seed: int) -> None:
    data = shmstore.open(name, mode="r+")
    digests = shmstore.open(name + ".digests", mode="r+")
    order = list(range(chunks))
    random.Random(seed).shuffle(order)
    for i in order:
        chunk = _chunk_bytes(seed, i)
        data.write_at(i * CHUNK, chunk)  # bytes first,
        digests.write_at(i * DIGEST, hashlib.blake2b(chunk, digest_size=DIGEST).digest())
    data.commit(chunks * CHUNK)
    digests.commit(chunks * DIGEST)
    data.close()
    digests.close()


def consumer(name: str, chunks: int, out: mp.SimpleQueue[tuple[int, float, float, int]],
             index: int) -> None:
    data = shmstore.open(name)
    digests = shmstore.open(name + ".digests")
    t0 = time.perf_counter()
    first = 0.0
    bad = 0
    for i in range(chunks):
        data.wait_range(i * CHUNK, (i + 1) * CHUNK, timeout=60)
        digests.wait_range(i * DIGEST, (i + 1) * DIGEST, timeout=60)
        if i == 0:
            first = time.perf_counter() - t0
        view = data.view(i * CHUNK, CHUNK)
        if hashlib.blake2b(view, digest_size=DIGEST).digest() != digests.read(i * DIGEST, DIGEST):
            bad += 1
        view.release()
    out.put((index, first, time.perf_counter() - t0, bad))
    data.close()
    digests.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--consumers", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)
    chunks = args.size_mib
    name = f"demo-{os.getpid()}"
    ctx = mp.get_context("spawn")
    data = shmstore.create(name, capacity=chunks * CHUNK)
    digests = shmstore.create(name + ".digests", capacity=chunks * DIGEST)
    procs: list[mp.process.BaseProcess] = []
    try:
        out: mp.SimpleQueue[tuple[int, float, float, int]] = ctx.SimpleQueue()
        procs.extend(ctx.Process(target=consumer, args=(name, chunks, out, k))
                     for k in range(args.consumers))
        prod = ctx.Process(target=producer, args=(name, chunks, args.seed))
        procs.append(prod)
        print(f"shmstore demo: {chunks} MiB resource {name!r}, 1 producer (shuffled 1 MiB"
              f" chunks), {args.consumers} consumers reading front to back")
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        results = [out.get() for _ in range(args.consumers)]
        wall = time.perf_counter() - t0
        for p in procs:
            p.join(timeout=60)
        ok = all(bad == 0 for _, _, _, bad in results) and prod.exitcode == 0
        print(f"{'consumer':>8} {'first chunk':>12} {'all chunks':>11} {'MiB/s':>8} {'bad':>4}")
        for k, first, total, bad in sorted(results):
            print(f"{k:>8} {first * 1e3:>10.1f}ms {total:>10.2f}s {chunks / total:>8.0f} {bad:>4}")
        print(f"status: {data.status}; wall time {wall:.2f}s; every byte verified: {ok}")
        return 0 if ok else 1
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()
        data.unlink()
        digests.unlink()
        data.close()
        digests.close()


if __name__ == "__main__":
    sys.exit(main())
