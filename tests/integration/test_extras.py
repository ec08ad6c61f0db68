"""Limits and edges: a full waiter table, a full /dev/shm, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

import shmstore


@pytest.mark.timeout(60)
def test_more_waiters_than_waiter_slots_all_wake(name: str) -> None:
    """70 parked threads on 64 waiter slots: the six without a slot poll, and every one
    returns READY once the bytes land."""
    w = shmstore.create(name)
    r = shmstore.open(name)
    results: list[object] = []
    started = threading.Barrier(71)

    def wait(i: int) -> None:
        started.wait()
        results.append(r.wait_range(i, i + 1, timeout=30))

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(70)]
    try:
        for t in threads:
            t.start()
        started.wait()
        w.write_at(0, bytes(70))
        for t in threads:
            t.join(40)
        assert results == [shmstore.WaitOutcome.READY] * 70
    finally:
        w.unlink()
        w.close()
        r.close()


@pytest.mark.timeout(30)
def test_capacity_beyond_free_shm_is_storage_full(name: str) -> None:
    free = os.statvfs("/dev/shm").f_bavail * os.statvfs("/dev/shm").f_frsize
    with pytest.raises(shmstore.StorageFull):
        shmstore.create(name, capacity=free + (1 << 30))
    with pytest.raises(shmstore.ResourceNotFound):
        shmstore.open(name)


@pytest.mark.timeout(60)
def test_cli_inspect_reports_status_and_coverage(name: str) -> None:
    w = shmstore.create(name)
    try:
        w.write_at(0, b"x" * 10)
        w.write_at(20, b"y" * 5)
        out = subprocess.run([sys.executable, "-m", "shmstore", "inspect", name, "--json"],
                             capture_output=True, text=True, timeout=30, check=True)
        info = json.loads(out.stdout)
        assert info["status"] == "ResourceStatus.Active()"
        assert info["covered_bytes"] == 15
        assert info["ranges"] == 2
        assert info["writers_alive"] is True
        missing = subprocess.run([sys.executable, "-m", "shmstore", "inspect", name + "-no"],
                                 capture_output=True, text=True, timeout=30)
        assert missing.returncode == 1
        assert "no resource" in missing.stderr
    finally:
        w.unlink()
        w.close()
