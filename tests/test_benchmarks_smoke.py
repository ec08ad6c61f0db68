"""The benchmark harness still runs: ``python -m shmstore.bench --quick --only perop`` (what
``shmstore bench`` runs) exits 0, prints its table and writes its JSON; ``--only log`` does
too and leaves no store behind; the ``python -m benchmarks`` alias of a checkout still
parses its arguments. Timings are never asserted here (SPEC.md: performance is measured by
``shmstore bench``, not by timed unit tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(180)
def test_quick_perop_runs_and_prints_a_table(tmp_path: Path) -> None:
    out = tmp_path / "perop.json"
    proc = subprocess.run(
        [sys.executable, "-m", "shmstore.bench", "--quick", "--only", "perop",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=150, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "per-operation cost" in proc.stdout
    assert "write_at 4 KiB" in proc.stdout
    assert "left behind: none" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["mode"] == "quick"
    assert doc["errors"] == {}
    assert doc["left_behind"] == []
    assert doc["machine"]["cpu_model"]
    (table,) = doc["scenarios"]["perop"]
    ops = {row["op"] for row in table["rows"]}
    assert {"wait_range 4 KiB, covered", "contains_range 4 KiB, covered",
            "read_at 4 KiB"} <= ops


@pytest.mark.timeout(180)
def test_quick_log_runs_and_leaves_nothing(tmp_path: Path) -> None:
    """The log scenario in its quickest form: every table has rows, and nothing it made is
    left, on disk ($TMPDIR, where its stores go) or in /dev/shm (the autouse leak check)."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "log.json"
    proc = subprocess.run(
        [sys.executable, "-m", "shmstore.bench", "--quick", "--only", "log",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=150, check=False,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "log appends" in proc.stdout
    assert "log tail latency" in proc.stdout
    assert "left behind: none" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["errors"] == {}
    assert doc["left_behind"] == []
    if not os.environ.get("SHMSTORE_TEST_SHARED_MACHINE"):
        assert doc["other_new_dev_shm_entries"] == []
    appends, summary, tail = doc["scenarios"]["log"]
    measured = {(r["case"], r["store"]) for r in appends["rows"] if "rec_s" in r}
    for case in ("one by one, fsync off", "one by one, fsync on",
                 "batches of 100, fsync off", "batches of 100, fsync on"):
        for store in ("shmstore Log (disk)", "file + CRC32", "sqlite3 WAL"):
            assert (case, store) in measured
        # lmdb: measured where installed, a row saying it was skipped where not
        assert any(r["case"] == case and r["store"].startswith("lmdb")
                   for r in appends["rows"])
    assert all(r["rec_s"] > 0 for r in appends["rows"] if "rec_s" in r)
    assert len(summary["rows"]) == 4
    readers = {r["reader"] for r in tail["rows"] if "p50_us" in r}
    assert {"shmstore Log (disk): wait_for + read_from",
            "shmstore Log (shm): wait_for + read_from",
            "file + CRC32, posix_ipc semaphore"} <= readers
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("module", ["shmstore.bench", "benchmarks"])
def test_unknown_scenario_is_refused(module: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", module, "--only", "nosuch"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2
    assert "unknown scenario" in proc.stderr
