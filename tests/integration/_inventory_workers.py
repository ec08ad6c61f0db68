"""Child bodies for test_inventory (importable under spawn)."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import shmstore
from shmstore.core import layout as L


def die_during_create(name: str) -> None:
    """SIGKILL ourselves inside create(), after the control block has bytes and before
    its magic word: a creator killed mid-create."""
    def init_then_die(*args: Any, **kw: Any) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    L.init_block = init_then_die  # type: ignore[assignment]
    shmstore.create(name)


def hold_open(name: str, ready: Any, done: Any) -> None:
    r = shmstore.open(name)
    ready.set()
    done.wait(30)
    r.close()


def claim_and_die(path: str, ready: Any) -> None:
    w = shmstore.AtomicChunked.open(path)
    w.write_at(0, b"half of it")
    ready.set()
    os.kill(os.getpid(), signal.SIGKILL)


def claim_and_hold(path: str, ready: Any, done: Any) -> None:
    w = shmstore.AtomicChunked.open(path)
    ready.set()
    done.wait(30)
    w.close()


def park(r: shmstore.Resource, out: list[object]) -> threading.Thread:
    def run() -> None:
        try:
            out.append(r.wait_range(10_000, 10_001, timeout=20))
        except BaseException as exc:  # reported to the test
            out.append(exc)

    t = threading.Thread(target=run)
    t.start()
    return t
