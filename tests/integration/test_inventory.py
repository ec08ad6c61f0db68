"""shmstore ls / gc: what is on the machine, and removing what nobody can use."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import pytest

import shmstore
from shmstore.core import layout as L
from shmstore.inventory import collect, list_resources
from shmstore.ipc.segments import SHM_DIR, shm_base

from . import _inventory_workers as iw

pytestmark = pytest.mark.timeout(60)


def _objects(name: str) -> list[str]:
    base = shm_base(name)
    return sorted(e for e in os.listdir(SHM_DIR) if base in e)


def _info(name: str) -> shmstore.inventory.ResourceInfo:  # type: ignore[name-defined]
    (info,) = [i for i in list_resources() if i.name == name]
    return info


def _wait_parked(r: shmstore.Resource, n: int) -> None:
    for _ in range(10_000):
        if bin(r._w[L.W_WAITERS_MASK]).count("1") >= n and r._parked:  # type: ignore[index]
            return
        os.sched_yield()
    raise AssertionError("the waiter never parked")


def test_ls_reports_status_size_coverage_and_who_is_attached(name: str) -> None:
    w = shmstore.create(name)
    r = shmstore.open(name)
    ctx = mp.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    p = ctx.Process(target=iw.hold_open, args=(name, ready, done))
    got: list[object] = []
    try:
        w.write_at(0, b"x" * 1000)
        w.write_at(3000, b"y" * 1000)
        p.start()
        assert ready.wait(30)
        t = iw.park(r, got)
        _wait_parked(r, 1)
        info = _info(name)
        assert (info.backend, info.status, info.length, info.covered, info.ranges) == (
            "shm", "active", 4000, 2000, 2)
        assert info.coverage == 0.5
        assert (info.writers, info.handles, info.waiters) == (1, 3, 1)
        w.write_at(10_000, b"z")
        t.join(20)
        assert got == [shmstore.WaitOutcome.READY]
        w.commit(20_000)
        info = _info(name)
        assert (info.status, info.length, info.covered) == ("committed", 20_000, 20_000)
    finally:
        done.set()
        p.join(30)
        w.unlink()
        w.close()
        r.close()


def test_ls_json_from_the_command_line(name: str) -> None:
    w = shmstore.create(name)
    try:
        w.write_at(0, b"abc")
        w.fail("upstream said 404")
        out = subprocess.run([sys.executable, "-m", "shmstore", "ls", "--json"],
                             capture_output=True, text=True, timeout=30, check=True)
        (row,) = [r for r in json.loads(out.stdout) if r["name"] == name]
        assert row["status"] == "failed"
        assert row["problem"] == "upstream said 404"
        assert row["writers"] == 1
    finally:
        w.unlink()
        w.close()


def test_a_creator_killed_mid_create_is_reclaimed_by_create_and_by_gc(name: str) -> None:
    ctx = mp.get_context("spawn")
    for how in ("create", "gc"):
        p = ctx.Process(target=iw.die_during_create, args=(name,))
        p.start()
        p.join(30)
        assert p.exitcode == -9
        assert _objects(name), "the killed creator left its control block"
        assert _info(shm_base(name)).status == "incomplete"
        with pytest.raises(shmstore.CorruptResource):
            shmstore.open(name)
        if how == "gc":
            removed = collect()
            assert any(shm_base(name) in p for p in removed)
            assert _objects(name) == []
        w = shmstore.create(name)  # reclaims (or finds the name free after gc)
        w.write_at(0, b"ok")
        assert shmstore.open(name).read(0, 2) == b"ok"
        w.unlink()
        w.close()


def test_gc_never_touches_a_live_or_committed_resource(name: str) -> None:
    live = shmstore.create(name + "-live")
    done = shmstore.create(name + "-done")
    try:
        live.write_at(0, b"still coming")
        done.write_at(0, b"finished")
        done.commit()
        done.close()
        before = _objects(name + "-live") + _objects(name + "-done")
        mine = (shm_base(name + "-live"), shm_base(name + "-done"))
        removed = collect(abandoned=True)
        assert not [p for p in removed if any(m in p for m in mine)]
        assert _objects(name + "-live") + _objects(name + "-done") == before
        assert shmstore.open(name + "-done").read(0, 8) == b"finished"
    finally:
        live.unlink()
        live.close()
        shmstore.open(name + "-done").unlink()


def test_gc_removes_abandoned_only_when_asked(name: str) -> None:
    w = shmstore.create(name)
    w.write_at(0, b"a download nobody resumes")
    w.close()
    try:
        assert not any(shm_base(name) in p for p in collect())
        assert _objects(name)
        removed = collect(abandoned=True)
        assert any(shm_base(name) in p for p in removed)
        assert _objects(name) == []
    finally:
        if _objects(name):
            shmstore.open(name).unlink()


def test_gc_removes_debris_without_a_control_block_and_stale_generations(name: str) -> None:
    w = shmstore.create(name)
    try:
        for i in range(3000):  # two journal compactions: generations 1, 2, 3
            w.write_at(2 * i, b"x")
        base = shm_base(name)
        # what a writer killed between publishing a journal and unlinking the old one leaves
        with open(os.path.join(SHM_DIR, f"{base}_j0_0001"), "wb") as f:
            f.write(b"\0" * 4096)
        # what an unlinker killed half-way leaves: objects of a name without a control block
        orphan = shm_base(name + "-orphan")
        with open(os.path.join(SHM_DIR, f"{orphan}_d0000"), "wb") as f:
            f.write(b"\0" * 4096)
        removed = collect()
        assert os.path.join(SHM_DIR, f"{base}_j0_0001") in removed
        assert os.path.join(SHM_DIR, f"{orphan}_d0000") in removed
        assert f"{base}_c" in _objects(name)
        w._check()  # the live resource is whole
        assert len(shmstore.open(name).ranges()) == 3000
    finally:
        w.unlink()
        w.close()


def test_gc_in_a_directory_mmap_sidecars_and_stale_temps(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    dead = tmp_path / "dead.bin"
    live = tmp_path / "live.bin"
    ready = ctx.Event()
    p = ctx.Process(target=iw.claim_and_die, args=(str(dead), ready))
    p.start()
    p.join(30)
    assert p.exitcode == -9
    ready2, done = ctx.Event(), ctx.Event()
    q = ctx.Process(target=iw.claim_and_hold, args=(str(live), ready2, done))
    q.start()
    try:
        assert ready2.wait(30)
        res = tmp_path / "abandoned.bin"
        w = shmstore.create(backend="mmap", path=res)
        w.write_at(0, b"half")
        w.close()
        assert [i.name for i in list_resources([tmp_path]) if i.backend == "mmap"] == [str(res)]
        removed = collect(dirs=[tmp_path])
        assert str(tmp_path / "dead.bin.tmp") in removed
        assert not (tmp_path / "dead.bin.tmp").exists()
        assert (tmp_path / "live.bin.tmp").exists()  # its writer holds the claim
        assert (tmp_path / "abandoned.bin.shmstore").exists()  # active: kept by default
        collect(dirs=[tmp_path], abandoned=True)
        assert not (tmp_path / "abandoned.bin.shmstore").exists()
    finally:
        done.set()
        q.join(30)
        for p_ in (res,):
            if p_.exists():
                p_.unlink()


def test_gc_command_line_dry_run_changes_nothing(name: str) -> None:
    w = shmstore.create(name)
    w.write_at(0, b"x")
    w.close()
    try:
        before = _objects(name)
        out = subprocess.run([sys.executable, "-m", "shmstore", "gc", "--dry-run",
                              "--abandoned"], capture_output=True, text=True, timeout=30,
                             check=True)
        assert shm_base(name) in out.stdout
        assert "would remove" in out.stdout
        assert _objects(name) == before
    finally:
        shmstore.open(name).unlink()
