"""Child-process bodies for the integration tests (module level, so spawn and forkserver can
import them)."""

from __future__ import annotations

import os
import random
import signal
from typing import Any

import shmstore

SIZE = 4 << 20


def pattern(size: int = SIZE) -> bytes:
    """Byte x of every test resource is (x % 251) + 1: never zero, so an unwritten byte
    (zero-filled memory) can never pass for a written one."""
    unit = bytes(range(1, 252))
    return (unit * (size // 251 + 1))[:size]


def open_any(backend: str, key: str, mode: str = "r") -> shmstore.Resource:
    if backend == "mmap":
        return shmstore.open(path=key, backend="mmap", mode=mode)
    return shmstore.open(key, mode=mode)


def random_writer(backend: str, key: str, seed: int, size: int, parts: int, part: int) -> None:
    """Write this worker's share of [0, size) in random order and random sizes."""
    w = open_any(backend, key, "r+")
    rng = random.Random(seed)
    pat = pattern(size)
    lo, hi = size * part // parts, size * (part + 1) // parts
    pieces = []
    pos = lo
    while pos < hi:
        n = min(hi - pos, rng.randint(1, 64 << 10))
        pieces.append((pos, n))
        pos += n
    rng.shuffle(pieces)
    for off, n in pieces:
        w.write_at(off, pat[off : off + n])
    w.close()


def random_reader(backend: str, key: str, seed: int, size: int, waits: int) -> int:
    """Wait for random ranges and verify every byte; returns the number of checks."""
    r = open_any(backend, key)
    rng = random.Random(seed)
    pat = pattern(size)
    checked = 0
    for _ in range(waits):
        a = rng.randrange(0, size)
        b = min(size, a + rng.randint(1, 256 << 10))
        out = r.wait_range(a, b, timeout=60)
        assert out is shmstore.WaitOutcome.READY, out
        got = r.read(a, b - a)
        assert got == pat[a:b], f"bytes of [{a}, {b}) differ after READY"
        checked += 1
    r.close()
    return checked


def write_part(handle: shmstore.Resource, off: int, n: int) -> int:
    """A pickled writer handle, in a pool worker: write pattern bytes at [off, off+n)."""
    handle.write_at(off, pattern(off + n)[off:])
    return n


def read_part(handle: shmstore.Resource, off: int, n: int) -> bytes:
    handle.wait_range(off, off + n, timeout=60)
    return handle.read(off, n)


def attach_and_exit(name: str) -> None:
    r = shmstore.open(name)
    r.wait_range(0, 1, timeout=30)
    r.close()


def attach_shared_memory_style(name: str) -> None:
    """Attach and leave without closing: the interpreter's exit must not unlink anything."""
    r = shmstore.open(name)
    r.read(0, 1)
    os._exit(0)


def collect_ranges(backend: str, key: str, q: Any) -> None:
    r = open_any(backend, key)
    q.put(list(r.iter_ranges(timeout=60)))
    r.close()


def late_joiner(name: str, q: Any) -> None:
    r = shmstore.open(name)
    rs = r.ranges()
    q.put((len(rs), rs[:3], rs[-3:], r.status))
    r.close()


def write_then_die(backend: str, key: str, n: int, how: str) -> None:
    w = open_any(backend, key, "r+")
    pat = pattern(n)
    w.write_at(0, pat[: n // 2])
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    w.close()


def hold_until(ev: Any) -> None:
    ev.wait(60)


def pickled_writer_child(handle: shmstore.Resource, off: int, data: bytes) -> None:
    assert handle.writable
    handle.write_at(off, data)
    handle.close()
