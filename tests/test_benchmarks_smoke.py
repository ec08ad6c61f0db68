"""The benchmark harness still runs: ``python -m shmstore.bench --quick --only perop`` (what
``shmstore bench`` runs) exits 0, prints its table and writes its JSON; the
``python -m benchmarks`` alias of a checkout still parses its arguments. Timings are never
asserted here (SPEC.md: performance is measured by ``shmstore bench``, not by timed unit
tests)."""

from __future__ import annotations

import json
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


@pytest.mark.parametrize("module", ["shmstore.bench", "benchmarks"])
def test_unknown_scenario_is_refused(module: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", module, "--only", "nosuch"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2
    assert "unknown scenario" in proc.stderr
