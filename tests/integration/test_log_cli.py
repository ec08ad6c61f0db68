"""``shmstore log``: ``append``, ``tail`` (``-f`` too), ``verify`` and ``inspect``, each run
as a real process against logs that other processes write."""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

import shmstore

CLI = [sys.executable, "-m", "shmstore", "log"]
WAIT = 30.0  # seconds any one step may take before the test fails


def run(*argv: str | Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, *map(str, argv)], input=stdin, capture_output=True,
                          timeout=WAIT)


def ok(*argv: str | Path, stdin: bytes | None = None) -> str:
    out = run(*argv, stdin=stdin)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode()


def records(where: dict[str, str]) -> list[bytes]:
    with shmstore.Log.open(**where) as log:
        return [bytes(r.payload) for r in log.read_from(0, 1 << 30)]


@contextlib.contextmanager
def background(*argv: str | Path) -> Iterator[subprocess.Popen[bytes]]:
    """The CLI running in the background; killed and reaped at the end, whatever happens."""
    proc = subprocess.Popen([*CLI, *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


@pytest.fixture
def log_name(name: str) -> Iterator[str]:
    """A shared-memory log's name; the log is removed at the end, however the test ends."""
    try:
        yield name
    finally:
        with contextlib.suppress(shmstore.ResourceNotFound):
            shmstore.Log.remove(name)


@pytest.fixture
def log_dir(tmp_path: Path) -> Iterator[Path]:
    """A log on disk (its live indexes are in shared memory: removed too)."""
    path = tmp_path / "log"
    try:
        yield path
    finally:
        with contextlib.suppress(shmstore.ResourceNotFound):
            shmstore.Log.remove(path=path)


class Lines:
    """The stdout lines of a running process, each awaited with a time limit."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._q: queue.Queue[bytes] = queue.Queue()
        self._t = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._t.start()

    def _pump(self, stream: IO[bytes]) -> None:
        for line in stream:
            self._q.put(line)
        self._q.put(b"")  # EOF

    def take(self, n: int) -> list[str]:
        out = []
        for _ in range(n):
            line = self._q.get(timeout=WAIT)
            assert line, f"EOF after {out}"
            out.append(line.decode().rstrip("\n"))
        return out


@pytest.mark.timeout(60)
def test_append_from_arguments_and_stdin(log_name: str) -> None:
    nxt, head = ok("append", log_name, "--create", "a", "b", "c").split()
    assert nxt == "3"
    with shmstore.Log.open(log_name) as log:
        assert log.latest_chain_hash is not None and head == log.latest_chain_hash.hex()
    # one record per line, an empty line is an empty record, the last needs no newline
    assert ok("append", log_name, stdin=b"d\ne\n\nf").split()[0] == "7"
    out = json.loads(ok("append", log_name, "-0", "--json", stdin=b"g\0h\nstill h\0"))
    assert out["appended"] == 2 and out["next_offset"] == 9 and not out["created"]
    # options and records mix; "--" lets a record start with "-"
    assert ok("append", log_name, "i", "--no-fsync", "--", "-j").split()[0] == "11"
    assert records({"name": log_name}) == [b"a", b"b", b"c", b"d", b"e", b"", b"f", b"g",
                                           b"h\nstill h", b"i", b"-j"]
    with shmstore.Log.open(log_name) as log:
        count, chain = log.verify()
    assert count == 11 and chain is not None
    assert ok("verify", log_name).split()[-1] == chain.hex()
    # --create on an existing log appends; settings that disagree with it are refused
    assert ok("append", log_name, "--create", "k").split()[0] == "12"
    out2 = run("append", log_name, "--create", "--segment-size", "8K", "l")
    assert out2.returncode == 1 and b"segment_size is 67108864, not 8192" in out2.stderr
    assert len(records({"name": log_name})) == 12


@pytest.mark.timeout(60)
def test_append_many_lines_from_stdin_to_a_log_on_disk(log_dir: Path) -> None:
    lines = [f"line {i}".encode() for i in range(5000)]
    out = json.loads(ok("append", "--path", log_dir, "--create", "--segment-size", "4K",
                        "--checkpoint-every", "16", "--json", stdin=b"\n".join(lines) + b"\n"))
    assert out == {"appended": 5000, "next_offset": 5000, "chain_head": out["chain_head"],
                   "created": True}
    assert records({"path": str(log_dir)}) == lines
    info = json.loads(ok("inspect", "--path", log_dir, "--json"))
    assert info["segment_size"] == 4096 and info["checkpoint_every"] == 16
    # batches are cut to about a segment (the log rotates after a batch, not inside one)
    assert len(info["segments"]) > 50
    assert all(s["bytes"] < 3 * 4096 for s in info["segments"])
    assert ok("verify", "--path", log_dir).startswith("ok: 5,000 records")


@pytest.mark.timeout(60)
def test_tail_from_an_offset_the_last_n_and_in_every_format(log_name: str) -> None:
    with shmstore.Log.create(log_name) as w:
        w.append([f"rec {i}".encode() for i in range(20)])
        w.append([b"caf\xc3\xa9 \xff", b"two\nlines"])
    assert ok("tail", log_name, "--from", "15").splitlines()[:5] == [
        f"rec {i}" for i in range(15, 20)]
    assert ok("tail", log_name, "-n", "4").splitlines() == [
        "rec 18", "rec 19", "caf\u00e9 \ufffd", "two", "lines"]
    assert len(ok("tail", log_name).splitlines()) == 11  # the last 10 records, one has 2 lines
    assert ok("tail", log_name, "--from", "20", "--hex", "--offsets").splitlines() == [
        "20\t" + b"caf\xc3\xa9 \xff".hex(), "21\t" + b"two\nlines".hex()]
    raw = run("tail", log_name, "--from", "19", "--raw", "-0")
    assert raw.returncode == 0 and raw.stdout == b"rec 19\0caf\xc3\xa9 \xff\0two\nlines\0"
    assert ok("tail", log_name, "--from", "22") == ""  # at the end: nothing, exit 0
    assert ok("tail", log_name, "--from", "99") == ""


@pytest.mark.timeout(90)
def test_tail_f_gets_records_from_other_processes_and_exits_130_on_sigint(
        log_name: str) -> None:
    ok("append", log_name, "--create", "first")
    with background("tail", log_name, "-f", "--from", "0", "--offsets") as tail:
        lines = Lines(tail.stdout)  # type: ignore[arg-type]
        assert lines.take(1) == ["0\tfirst"]
        # each `append` is a writer process that exits: tail -f waits for the next one
        ok("append", log_name, "second", "third")
        assert lines.take(2) == ["1\tsecond", "2\tthird"]
        ok("append", log_name, stdin=b"".join(b"n%d\n" % i for i in range(100)))
        assert lines.take(100) == [f"{3 + i}\tn{i}" for i in range(100)]
        # a writer that stays: tail -f is parked on its live index, not polling
        with shmstore.Log.open(log_name, mode="a") as w:
            for i in range(5):
                w.append(b"live %d" % i)
                assert lines.take(1) == [f"{103 + i}\tlive {i}"]
        tail.send_signal(signal.SIGINT)
        assert tail.wait(WAIT) == 130
        err = tail.stderr.read()  # type: ignore[union-attr]
        assert err == b"", err  # quietly: no traceback


@pytest.mark.timeout(60)
def test_tail_f_follows_a_log_on_disk_across_segments_and_writers(log_dir: Path) -> None:
    ok("append", "--path", log_dir, "--create", "--segment-size", "4K", "start")
    with background("tail", "--path", log_dir, "-f", "--hex") as tail:
        lines = Lines(tail.stdout)  # type: ignore[arg-type]
        assert lines.take(1) == [b"start".hex()]  # tail -f runs, and no writer is left
        # a writer process comes, fills several segments and leaves, all while tail -f
        # waits for a writer: it still gets every record
        payloads = [bytes([65 + i % 26]) * 300 for i in range(60)]
        ok("append", "--path", log_dir, stdin=b"\n".join(payloads))
        assert lines.take(60) == [p.hex() for p in payloads]
        # a writer that stays and rotates while tail -f is parked on its live index
        with shmstore.Log.open(path=log_dir, mode="a") as w:
            w.append(b"parked")
            assert lines.take(1) == [b"parked".hex()]
            for p in payloads:
                w.append(p)
            assert lines.take(60) == [p.hex() for p in payloads]
        assert len(json.loads(ok("inspect", "--path", log_dir, "--json"))["segments"]) > 8
        tail.send_signal(signal.SIGINT)
        assert tail.wait(WAIT) == 130


@pytest.mark.timeout(60)
def test_tail_with_a_cursor_resumes_where_it_left_off(log_name: str) -> None:
    ok("append", log_name, "--create", *[f"r{i}" for i in range(5)])
    assert ok("tail", log_name, "--cursor", "c1").splitlines() == [f"r{i}" for i in range(5)]
    ok("append", log_name, "r5", "r6")
    assert ok("tail", log_name, "--cursor", "c1").splitlines() == ["r5", "r6"]
    assert ok("tail", log_name, "--cursor", "c1") == ""
    assert json.loads(ok("inspect", log_name, "--json"))["cursors"] == {"c1": 7}
    with shmstore.Log.open(log_name) as log:
        assert log.cursor("c1").offset == 7
    bad = run("tail", log_name, "--cursor", "no/slash")
    assert bad.returncode == 1 and b"InvalidName" in bad.stderr


@pytest.mark.timeout(60)
def test_tail_f_ends_without_a_writer_or_after_its_timeout(log_name: str) -> None:
    ok("append", log_name, "--create", "a", "b")
    # no writer: --exit-without-writer drains the log and exits 0
    assert ok("tail", log_name, "-f", "--from", "0",
              "--exit-without-writer").splitlines() == ["a", "b"]
    # --timeout: exit 1 when no record came for that long (a live writer that is idle)
    with shmstore.Log.open(log_name, mode="a"):
        out = run("tail", log_name, "-f", "--timeout", "0.3")
    assert out.returncode == 1 and out.stdout == b"a\nb\n"
    assert b"TimeoutError: no new record in 0.3 s" in out.stderr


@pytest.mark.timeout(60)
def test_tail_into_a_closed_pipe_exits_quietly(log_name: str) -> None:
    with shmstore.Log.create(log_name) as w:
        w.append([b"x" * 200] * 2000, fsync=False)  # far more than a pipe's buffer
    with background("tail", log_name, "--from", "0") as tail:
        assert tail.stdout.read(10) == b"x" * 10  # type: ignore[union-attr]
        tail.stdout.close()  # type: ignore[union-attr]
        err = tail.stderr.read()  # type: ignore[union-attr]
        assert tail.wait(WAIT) == 0, err
        assert b"Traceback" not in err


@pytest.mark.timeout(60)
def test_verify_passes_a_good_log_and_names_a_flipped_byte(log_dir: Path) -> None:
    lines = b"".join(b"record-%04d\n" % i for i in range(200))
    ok("append", "--path", log_dir, "--create", "--segment-size", "4K", stdin=lines)
    with shmstore.Log.open(path=log_dir) as log:
        _count, head = log.verify()
    assert head is not None
    assert ok("verify", "--path", log_dir) == f"ok: 200 records, chain head {head.hex()}\n"
    info = json.loads(ok("verify", "--path", log_dir, "--json"))
    assert info == {"ok": True, "records": 200, "chain_head": head.hex()}
    # one bit of record 10's payload, in segment 0 (sealed), flipped on disk
    seg = log_dir / "0000000000.seg"
    assert json.loads(ok("inspect", "--path", log_dir, "--json"))["segments"][0]["sealed"]
    data = bytearray(seg.read_bytes())
    data[data.index(b"record-0010") + 8] ^= 0x01
    seg.write_bytes(data)
    out = run("verify", "--path", log_dir)
    assert out.returncode == 1 and out.stdout == b""
    assert out.stderr.startswith(b"shmstore: RecordCorrupt: CRC mismatch"), out.stderr
    assert b"Traceback" not in out.stderr
    # tail prints the records before the damage, then fails the same way
    out = run("tail", "--path", log_dir, "--from", "0")
    assert out.returncode == 1 and b"RecordCorrupt" in out.stderr
    assert out.stdout.decode().splitlines() == [f"record-{i:04d}" for i in range(10)]


@pytest.mark.timeout(60)
def test_inspect_shows_segments_writer_and_cursors(log_name: str) -> None:
    with shmstore.Log.create(log_name, segment_size=4096, checkpoint_every=8) as w:
        w.append([b"y" * 100] * 50)  # rotates once
        w.append([b"z"] * 3)
        w.append([b"z"] * 3)
        with shmstore.Log.open(log_name) as r:
            r.cursor("reader-1").commit(40)
        info = json.loads(ok("inspect", log_name, "--json"))
        text = ok("inspect", log_name)
    assert info["name"] == log_name and info["backend"] == "shm"
    assert info["records"] == 56 and info["writer_alive"] is True
    assert info["segment_size"] == 4096 and info["checkpoint_every"] == 8
    assert info["compress"] is False and info["cursors"] == {"reader-1": 40}
    segs = info["segments"]
    assert [(s["segment"], s["first"], s["records"], s["sealed"]) for s in segs] == [
        (0, 0, 50, True), (1, 50, 6, False)]
    assert all(s["bytes"] > 0 for s in segs)
    assert len(info["chain_head"]) == 64
    assert "writer alive: True" in text and "reader-1=40" in text and info["chain_head"] in text
    assert json.loads(ok("inspect", log_name, "--json"))["writer_alive"] is False


@pytest.mark.timeout(60)
def test_a_second_writer_exits_1_with_writer_active(log_name: str, log_dir: Path) -> None:
    ok("append", log_name, "--create", "a")
    with shmstore.Log.open(log_name, mode="a"):
        out = run("append", log_name, "b")
        assert out.returncode == 1
        assert out.stderr.startswith(b"shmstore: WriterActive: ") and b"writer" in out.stderr
    with shmstore.Log.create(path=log_dir):
        out = run("append", "--path", log_dir, "--create", "b")
        assert out.returncode == 1 and b"WriterActive" in out.stderr
    assert records({"name": log_name}) == [b"a"]
    assert records({"path": str(log_dir)}) == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cmd", [["append", "x"], ["tail"], ["verify"], ["inspect"],
                                 ["tail", "-f"]])
def test_a_missing_log_exits_1(cmd: list[str], name: str, tmp_path: Path) -> None:
    out = run(cmd[0], name, *cmd[1:])
    assert out.returncode == 1
    assert out.stderr.startswith(b"shmstore: ResourceNotFound: no log named"), out.stderr
    out = run(cmd[0], "--path", tmp_path / "nolog", *cmd[1:])
    assert out.returncode == 1 and b"ResourceNotFound" in out.stderr
    assert not (tmp_path / "nolog").exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cmd", [[], ["append"], ["tail"], ["verify"], ["inspect"]])
def test_every_log_command_has_help(cmd: list[str]) -> None:
    out = run(*cmd, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(b"usage: shmstore log")


@pytest.mark.timeout(60)
def test_log_usage_errors_exit_2(name: str) -> None:
    for argv in ([], ["nosuch"], ["tail"], ["verify", name, "--path", "d"],
                 ["append", name, "--segment-size", "4K", "a"],
                 ["append", name, "--create", "--segment-size", "lots"],
                 ["tail", name, "--from", "-1"], ["tail", name, "--from", "1", "-n", "2"],
                 ["tail", name, "--hex", "--raw"], ["inspect", name, "--bogus"]):
        out = run(*argv)
        assert out.returncode == 2, (argv, out.stderr)
        assert b"usage:" in out.stderr
