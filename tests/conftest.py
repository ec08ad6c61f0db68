"""Shared fixtures: unique names, a backend matrix, and a leak check that fails any test
leaving shared-memory segments, semaphores or sidecar files behind."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import shmstore

SHM = "/dev/shm"


def _shm_entries() -> set[str]:
    try:
        return {e for e in os.listdir(SHM) if "shmstore" in e}
    except FileNotFoundError:
        return set()


_SESSION_START: set[str] = set()


def pytest_sessionstart(session: pytest.Session) -> None:
    _SESSION_START.update(_shm_entries())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Leave nothing behind, even after failures: remove what the session's tests leaked.
    (Per test the leak is only reported: removing it there could also remove the live
    objects of another test session running on the same machine.)"""
    if os.environ.get("SHMSTORE_TEST_SHARED_MACHINE"):
        return  # the new entries may be another session's live objects: leave them
    for entry in _shm_entries() - _SESSION_START:
        path = os.path.join(SHM, entry)
        if os.path.isdir(path):  # a shared-memory log's directory
            shutil.rmtree(path, ignore_errors=True)
            continue
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if it leaves shmstore objects in /dev/shm."""
    before = _shm_entries()
    yield
    leaked = _shm_entries() - before
    # SHMSTORE_TEST_SHARED_MACHINE=1: another test session runs beside this one (its objects
    # would be blamed on our tests); leaks are then only removed at the session's end.
    if os.environ.get("SHMSTORE_TEST_SHARED_MACHINE"):
        return
    if leaked and not request.node.get_closest_marker("allow_leaks"):
        pytest.fail(f"test left objects in {SHM}: {sorted(leaked)}")


@pytest.fixture
def name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@dataclass
class Backend:
    """Makes resources of one backend and opens more handles on them."""

    kind: str
    tmp: Path
    made: list[shmstore.Resource]

    def create(self, key: str = "r", capacity: int = 1 << 16) -> shmstore.Resource:
        if self.kind == "shm":
            w = shmstore.create(f"test-{uuid.uuid4().hex[:12]}-{key}", capacity=capacity)
        elif self.kind == "mmap":
            w = shmstore.create(backend="mmap", path=self.tmp / f"{key}-{uuid.uuid4().hex[:8]}.bin",
                                capacity=capacity)
        else:
            w = shmstore.create(backend="mem", capacity=capacity)
        self.made.append(w)
        return w

    def reader(self, w: shmstore.Resource) -> shmstore.Resource:
        if self.kind == "mem":
            r = w.reader()
        elif self.kind == "mmap":
            r = shmstore.open(path=w.path, backend="mmap")
        else:
            r = shmstore.open(w.name)
        self.made.append(r)
        return r

    def writer(self, w: shmstore.Resource) -> shmstore.Resource:
        if self.kind == "mem":
            raise pytest.skip.Exception("mem has no second writer handle")
        if self.kind == "mmap":
            r = shmstore.open(path=w.path, backend="mmap", mode="r+")
        else:
            r = shmstore.open(w.name, mode="r+")
        self.made.append(r)
        return r


def _backend(kind: str, tmp_path: Path) -> Iterator[Backend]:
    b = Backend(kind, tmp_path, [])
    try:
        yield b
    finally:
        for r in b.made:
            try:
                r.unlink()
            except shmstore.StorageError:
                pass
        for r in b.made:
            r.close()


@pytest.fixture(params=["shm", "mmap", "mem"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from _backend(request.param, tmp_path)


@pytest.fixture(params=["shm", "mmap"])
def xbackend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The backends that cross processes."""
    yield from _backend(request.param, tmp_path)


Opener = Callable[[], shmstore.Resource]
