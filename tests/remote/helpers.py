"""Helpers shared by the remote tests."""

from __future__ import annotations

import time
from collections.abc import Callable

import shmstore

from .server import Server


def covered_once(http: Server, path: str, size: int) -> None:
    """Every byte served exactly once (besides the one-byte probes)."""
    # (a body's bytes are recorded after the server sent them, which may be after the
    # client has them: wait for the server's books)
    until(lambda: sum(b - a for p, a, b in list(http.state.ranges) if p == path) >= size,
           what="the server to record every body")
    all_ranges = [(a, b) for p, a, b in http.state.ranges if p == path and b > a]
    probes = all_ranges.count((0, 1))
    ranges = sorted(r for r in all_ranges if r != (0, 1))
    pos = 0
    for a, b in ranges:
        assert a == pos, f"bytes {pos}..{a} never served, or {a}..{pos} twice: {ranges[:20]}"
        pos = b
    assert pos == size
    assert http.state.served[path] == size + probes


def until(cond: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
    """Poll a condition another process or thread makes true."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        time.sleep(0.002)


def unlink(name: str | None = None, path: str | None = None) -> None:
    """Remove a test's resource by name or path, if it is still there."""
    try:
        r = shmstore.open(name) if path is None else shmstore.open(path=path, backend="mmap")
    except shmstore.ResourceNotFound:
        return
    r.unlink()
    r.close()
