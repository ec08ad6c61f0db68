"""The crash-test harness: real processes, every child reaped and every resource unlinked
even when a test fails (before the autouse leak check runs)."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import shmstore

from . import _workers as W

SLOW = os.environ.get("SHMSTORE_SLOW") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SLOW:
        return
    skip = pytest.mark.skip(reason="slow: set SHMSTORE_SLOW=1")
    for item in items:
        if "crash" in item.nodeid and item.get_closest_marker("slow"):
            item.add_marker(skip)


class ChildFailed(AssertionError):
    pass


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.procs: list[Any] = []
        self.pids: list[int] = []  # grandchildren we were told about, killed by pid
        self.specs: list[W.Spec] = []
        self.handles: list[shmstore.Resource] = []
        self.queues: dict[str, Any] = {}

    # -------------------------------------------------------------- resources
    def spec(self, kind: str) -> W.Spec:
        key = uuid.uuid4().hex[:12]
        spec: W.Spec = (kind, str(self.tmp / f"r-{key}.bin")) if kind == "mmap" else (
            kind, f"crash-{key}")
        self.specs.append(spec)
        return spec

    def create(self, spec: W.Spec, capacity: int = 1 << 16) -> shmstore.Resource:
        h = W.create_spec(spec, capacity)
        self.handles.append(h)
        return h

    def open(self, spec: W.Spec, mode: str = "r") -> shmstore.Resource:
        h = W.open_spec(spec, mode)
        self.handles.append(h)
        return h

    # -------------------------------------------------------------- processes
    def ctx(self, method: str = "fork") -> Any:
        return mp.get_context(method)

    def queue(self, method: str = "fork") -> Any:
        q = self.queues.get(method)
        if q is None:
            q = self.queues[method] = self.ctx(method).Queue()
        return q

    def start(self, tag: str, fn: Callable[..., Any], *args: Any, method: str = "fork",
              daemon: bool = True) -> Any:
        """Start ``fn(*args)`` in a child; its result arrives on this method's queue."""
        ctx = self.ctx(method)
        p = ctx.Process(target=W.entry, args=(self.queue(method), tag, fn, args), daemon=daemon)
        self.procs.append(p)
        p.start()
        return p

    def results(self, tags: list[str], deadline: float = 30.0, method: str = "fork",
                hang_hint: Callable[[], str] | None = None) -> dict[str, Any]:
        """Collect the children's results; a child error fails the test with its traceback;
        a child that reports nothing within ``deadline`` seconds (a hang) fails it too."""
        q = self.queue(method)
        want = set(tags)
        done: set[str] = set()
        got: dict[str, Any] = {}
        errors: list[str] = []
        end = time.monotonic() + deadline
        while want - done:
            left = end - time.monotonic()
            if left <= 0:
                hint = hang_hint() if hang_hint else ""
                raise ChildFailed(f"children {sorted(want - done)} never finished (a hang)"
                                  f" {hint}\n" + "\n".join(errors))
            try:
                tag, status, value = q.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            done.add(tag)
            if status == "ok":
                got[tag] = value
            else:
                errors.append(f"{tag}: {value}")
        if errors:
            raise ChildFailed("\n".join(errors))
        return got

    def await_event(self, ev: Any, p: Any, what: str, deadline: float = 30.0) -> None:
        """Wait for a child's Event; if the child ends first, fail with its report."""
        end = time.monotonic() + deadline
        while not ev.wait(0.05):
            if p.exitcode is not None:
                ev_set = ev.is_set()
                if ev_set:
                    return
                q = self.queue()
                try:
                    tag, status, value = q.get(timeout=5)
                except queue.Empty:
                    raise ChildFailed(f"{what}: child exited ({p.exitcode})") from None
                raise ChildFailed(f"{what}: child ended first: {tag} {status} {value}")
            if time.monotonic() > end:
                raise ChildFailed(f"timed out waiting for {what}")

    def kill(self, p: Any) -> None:
        """SIGKILL and reap. (join() without a timeout: it waits on the pid; with one it waits
        on the sentinel pipe, which a grandchild that inherited it keeps open.)"""
        if p.exitcode is None:
            os.kill(p.pid, signal.SIGKILL)
        p.join()

    def wait_until(self, pred: Callable[[], bool], what: str, deadline: float = 20.0) -> None:
        """Wait for a condition on shared state (a polled condition, not a sleep-as-sync)."""
        end = time.monotonic() + deadline
        while not pred():
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.001)

    def close(self) -> None:
        for p in self.procs:
            try:
                self.kill(p)
            except (OSError, ValueError, AssertionError):
                pass
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for q in self.queues.values():
            q.close()
            q.join_thread()
        for h in self.handles:
            try:
                h.close()
            except Exception:
                pass
        for spec in self.specs:
            try:
                W.unlink_spec(spec)
            except Exception:
                pass
        # Our own leak check (the shared one cannot tell our objects from those of another
        # test session on the machine): nothing of our resources may be left.
        bases = [W.shm_base(spec) for spec in self.specs]
        left = [e for e in os.listdir("/dev/shm")
                if any(e.startswith(b) or e.startswith("sem." + b) for b in bases)]
        assert not left, f"left in /dev/shm: {left}"


@pytest.fixture
def H(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()
