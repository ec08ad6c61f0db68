"""The ``shmstore`` command, run as a real process: ``cat`` streaming while a writer writes,
``inspect`` with its coverage map, exit codes and ``--help``."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

import shmstore

DATA = random.Random(7).randbytes(3 << 20)
CLI = [sys.executable, "-m", "shmstore"]


@pytest.mark.timeout(60)
def test_cat_streams_bytes_in_order_as_they_land_until_commit(name: str) -> None:
    w = shmstore.create(name, capacity=1 << 20)
    chunks = [(i, min(i + (256 << 10), len(DATA))) for i in range(0, len(DATA), 256 << 10)]
    random.Random(1).shuffle(chunks)
    cat = subprocess.Popen([*CLI, "cat", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for s, e in chunks:  # out of order; cat blocks on the first missing byte
            w.write_at(s, DATA[s:e])
        w.commit()
        out, err = cat.communicate(timeout=30)
        assert cat.returncode == 0, err
        assert out == DATA
    finally:
        if cat.poll() is None:
            cat.kill()
            cat.wait()
        w.unlink()
        w.close()


@pytest.mark.timeout(60)
def test_cat_of_a_failed_resource_exits_1_after_what_it_had(name: str) -> None:
    with shmstore.create(name, capacity=1 << 16) as w:
        w.write_at(0, DATA[:1000])
        cat = subprocess.Popen([*CLI, "cat", name], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
        first = cat.stdout.read(1000)  # type: ignore[union-attr]
        w.fail("the source went away")
        out, err = cat.communicate(timeout=30)
        assert first + out == DATA[:1000]
        assert cat.returncode == 1
        assert b"the source went away" in err
        w.unlink()


@pytest.mark.timeout(60)
def test_cat_into_a_closed_pipe_exits_quietly(name: str) -> None:
    with shmstore.create(name, capacity=4 << 20) as w:
        w.write_at(0, DATA)
        w.commit()
        cat = subprocess.Popen([*CLI, "cat", name], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
        assert cat.stdout.read(10) == DATA[:10]  # type: ignore[union-attr]
        cat.stdout.close()  # type: ignore[union-attr]
        err = cat.stderr.read()  # type: ignore[union-attr]
        cat.stderr.close()  # type: ignore[union-attr]
        assert cat.wait(30) == 0, err
        assert b"Traceback" not in err
        w.unlink()


@pytest.mark.timeout(60)
def test_inspect_shows_a_coverage_map_and_counts(name: str) -> None:
    with shmstore.create(name, capacity=1 << 16) as w:
        w.write_at(0, DATA[:32768])
        w.write_at(49152, DATA[49152:65536])
        out = subprocess.run([*CLI, "inspect", name, "--json"], capture_output=True,
                             text=True, timeout=30, check=True)
        info = json.loads(out.stdout)
        assert info["state"] == "active"
        assert info["length"] == 65536 and info["covered_bytes"] == 49152
        assert info["coverage_map"] == "#" * 32 + "." * 16 + "#" * 16
        assert info["writers"] == 1 and info["handles"] >= 1
        text = subprocess.run([*CLI, "inspect", name], capture_output=True, text=True,
                              timeout=30, check=True).stdout
        assert "75.0%" in text and "#" * 32 + "." * 16 in text
        w.unlink()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cmd", ["ls", "inspect", "cat", "gc", "bench", "demo"])
def test_every_command_has_help(cmd: str) -> None:
    out = subprocess.run([*CLI, cmd, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout


@pytest.mark.timeout(60)
def test_usage_errors_exit_2() -> None:
    for argv in (["cat"], ["inspect"], ["nosuch"], ["cat", "x", "--offset", "-1"]):
        out = subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=30)
        assert out.returncode == 2, (argv, out.stderr)
