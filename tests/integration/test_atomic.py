"""Atomic and AtomicChunked on real files, with real processes where it matters: claims held
by live and killed writers, kills at every step of a commit, the flock-vs-unlink race."""

from __future__ import annotations

import errno
import gc
import multiprocessing as mp
import os
import signal
import stat
import threading
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import pytest

import shmstore
from shmstore import Atomic, AtomicChunked
from shmstore import atomic as atomic_mod

pytestmark = pytest.mark.timeout(60)

CTX = mp.get_context("fork")
STALE = 1 << 20  # the dead writer's tmp: 1 MiB, as in the kithara field incident


# --------------------------------------------------------------------------- harness


def _temps(d: Path) -> list[str]:
    return sorted(n for n in os.listdir(d) if n.endswith((".tmp", ".atomic")))


@pytest.fixture
def d(tmp_path: Path) -> Iterator[Path]:
    """A fresh directory; the test must leave no temp file in it."""
    root = tmp_path / "d"
    root.mkdir()
    yield root
    assert _temps(root) == [], "temp files left behind"


@pytest.fixture
def hook() -> Iterator[Callable[[Callable[[str], None] | None], None]]:
    """Install a step hook in this process; always removed afterwards."""
    def install(fn: Callable[[str], None] | None) -> None:
        atomic_mod._test_hook = fn

    try:
        yield install
    finally:
        atomic_mod._test_hook = None


class Child:
    """A forked child running ``fn(conn, *args)``; messages on a pipe; reaped in ``close``.
    A child that raises sends ``("error", traceback)``."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.conn, child_conn = CTX.Pipe()
        self.p = CTX.Process(target=_entry, args=(child_conn, fn, args), daemon=True)
        self.p.start()
        child_conn.close()

    def recv(self, timeout: float = 30.0) -> Any:
        """The child's next message; fails if the child ends first or stays silent."""
        ready = wait([self.conn, self.p.sentinel], timeout)
        if self.conn in ready:
            try:
                msg = self.conn.recv()
            except EOFError:
                msg = None
            if msg is not None:
                if isinstance(msg, tuple) and msg and msg[0] == "error":
                    raise AssertionError(f"child failed:\n{msg[1]}")
                return msg
        if not ready:
            raise AssertionError("child sent nothing in time (a hang)")
        self.p.join()
        raise AssertionError(f"child exited ({self.p.exitcode}) before sending")

    def send(self, msg: Any) -> None:
        self.conn.send(msg)

    def kill(self) -> None:
        if self.p.exitcode is None:
            os.kill(self.p.pid or 0, signal.SIGKILL)
        self.p.join()

    def join(self) -> int | None:
        self.p.join(30)
        return self.p.exitcode

    def close(self) -> None:
        try:
            self.kill()
        finally:
            self.conn.close()


@pytest.fixture
def children() -> Iterator[Callable[..., Child]]:
    made: list[Child] = []

    def start(fn: Callable[..., Any], *args: Any) -> Child:
        c = Child(fn, *args)
        made.append(c)
        return c

    try:
        yield start
    finally:
        for c in made:
            c.close()


def _entry(conn: Connection, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        fn(conn, *args)
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        raise


def _kill_self_at(point: str) -> Callable[[str], None]:
    def hook(step: str) -> None:
        if step == point:
            os.kill(os.getpid(), signal.SIGKILL)
    return hook


def version(k: int) -> bytes:
    """Version k of a file: one repeated byte, a length unique to k (a torn or mixed file
    can never pass for a whole version)."""
    return bytes([k]) * (1000 + 4093 * k)


def is_whole_version(data: bytes) -> bool:
    return bool(data) and data == version(data[0])


# --------------------------------------------------------------------------- child bodies


def _child_hold(conn: Connection, canonical: str, stale: int) -> None:
    """Claim, write ``stale`` bytes of 0xAA, report, then block until told (or killed)."""
    w = AtomicChunked.open(canonical)
    w.write_at(0, b"\xaa" * stale)
    conn.send(("holding", w.tmp_path, os.fstat(w._fd).st_ino))
    if conn.recv() == "commit":
        w.commit()
        conn.send("committed")


def _child_try_claim(conn: Connection, canonical: str) -> None:
    try:
        w = AtomicChunked.open(canonical)
    except shmstore.TmpClaimed as exc:
        conn.send(("TmpClaimed", exc.path))
        return
    w.close()
    conn.send(("claimed", None))


def _child_atomic_killed_at(conn: Connection, path: str, data: bytes, point: str) -> None:
    atomic_mod._test_hook = _kill_self_at(point)
    Atomic(path).write_all(data)
    os._exit(3)  # the hook never fired


def _child_atomic_pause_at(conn: Connection, path: str, data: bytes, point: str) -> None:
    def pause(step: str) -> None:
        if step == point:
            conn.send("paused")
            conn.recv()
    atomic_mod._test_hook = pause
    Atomic(path).write_all(data)
    conn.send("written")


def _child_chunked_killed_at(conn: Connection, canonical: str, data: bytes, point: str,
                             barrier: str) -> None:
    w = AtomicChunked.open(canonical, barrier=barrier, capacity_hint=len(data) * 2)  # type: ignore[arg-type]
    half = len(data) // 2
    w.write_at(half, data[half:])
    w.write_at(0, data[:half])
    atomic_mod._test_hook = _kill_self_at(point)
    w.commit()
    os._exit(3)


def _child_race_claimant(conn: Connection, canonical: str, data: bytes) -> None:
    """Open the tmp, then stop between open and flock until the parent says go."""
    seen = []

    def pause(step: str) -> None:
        if step == "claim:lock":
            seen.append(step)
            if len(seen) == 1:
                conn.send("opened")
                assert conn.recv() == "go"

    atomic_mod._test_hook = pause
    w = AtomicChunked.open(canonical)
    atomic_mod._test_hook = None
    w._check()
    conn.send(("claimed", os.fstat(w._fd).st_ino, len(seen)))
    w.write_at(0, data)
    conn.send("written")
    assert conn.recv() == "commit"
    w.commit()
    w._check()
    conn.send("committed")


def _child_reader(conn: Connection, path: str, stop: Any) -> None:
    """Read the canonical path in a tight loop until ``stop``; every observation must be
    'no file' or a whole version."""
    seen = absent = 0
    conn.send("ready")
    while not stop.is_set():
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            absent += 1
            continue
        if not is_whole_version(data):
            conn.send(("torn", len(data), data[:1]))
            return
        seen += 1
    conn.send(("ok", seen, absent))


def _child_inherits(conn: Connection, w: AtomicChunked) -> None:
    try:
        w.write_at(0, b"child")
    except shmstore.ResourceClosed as exc:
        conn.send(("closed", str(exc)))
    else:
        conn.send(("wrote", None))
    del w
    gc.collect()


# --------------------------------------------------------------------------- Atomic


@pytest.mark.timeout(30)
def test_atomic_round_trip(d: Path) -> None:
    p = d / "index.bin"
    a = Atomic(p)
    assert a.path == str(p)
    with pytest.raises(shmstore.ResourceNotFound):
        a.read()
    with pytest.raises(FileNotFoundError):  # a ResourceNotFound is one
        a.read()
    a.write_all(b"first")
    assert a.read() == b"first"
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    a.write_all(bytearray(b"second, longer"), durable=False)
    assert a.read() == b"second, longer"
    a.write_all(memoryview(b"x" * 100_000)[::2])  # a non-contiguous view
    assert a.read() == b"x" * 50_000
    a.write_all(b"")
    assert a.read() == b""
    assert os.listdir(d) == ["index.bin"]


@pytest.mark.timeout(30)
def test_atomic_missing_directory_and_failures_remove_the_temp(
        d: Path, hook: Callable[[Callable[[str], None] | None], None]) -> None:
    with pytest.raises(shmstore.ResourceNotFound):
        Atomic(d / "no-such-dir" / "f").write_all(b"x")
    a = Atomic(d / "f")
    a.write_all(b"old")
    for point in ("atomic:write", "atomic:fsync", "atomic:replace"):
        def boom(step: str, point: str = point) -> None:
            if step == point:
                raise OSError(errno.EIO, "injected")
        hook(boom)
        with pytest.raises(shmstore.StorageError, match="injected"):
            a.write_all(b"new")
        hook(None)
        assert a.read() == b"old"
        assert os.listdir(d) == ["f"], point


@pytest.mark.timeout(60)
@pytest.mark.parametrize("old", [None, b"old complete content"])
@pytest.mark.parametrize(("point", "published"), [
    ("atomic:write", False), ("atomic:fsync", False), ("atomic:replace", False),
    ("atomic:fsync-dir", True),
])
def test_atomic_writer_killed_leaves_old_or_new_never_partial(
        d: Path, children: Callable[..., Child], old: bytes | None, point: str,
        published: bool) -> None:
    """SIGKILL at each step of write_all: the canonical file is the old content (or absent)
    before the rename and the whole new content after it, never a prefix."""
    p = d / "f"
    if old is not None:
        Atomic(p).write_all(old)
    new = version(7)
    c = children(_child_atomic_killed_at, str(p), new, point)
    assert c.join() == -signal.SIGKILL
    if published:
        assert p.read_bytes() == new
    elif old is None:
        assert not p.exists()
    else:
        assert p.read_bytes() == old
    # The dead writer's temp (if it got that far) is an orphan: nothing holds its lock.
    orphans = [n for n in os.listdir(d) if n.endswith(".atomic")]
    assert len(orphans) == (0 if published else 1)
    assert Atomic(p).remove_stale_temps() == len(orphans)
    assert os.listdir(d) == (["f"] if published or old is not None else [])


@pytest.mark.timeout(30)
def test_atomic_sweep_spares_a_live_writer(d: Path, children: Callable[..., Child]) -> None:
    p = d / "f"
    c = children(_child_atomic_pause_at, str(p), b"live", "atomic:replace")
    assert c.recv() == "paused"
    assert len(_temps(d)) == 1
    assert Atomic(p).remove_stale_temps() == 0  # its lock is held: not stale
    assert len(_temps(d)) == 1
    c.send("go")
    assert c.recv() == "written"
    assert Atomic(p).read() == b"live"
    assert Atomic(p).remove_stale_temps() == 0


# --------------------------------------------------------------------------- AtomicChunked


@pytest.mark.timeout(30)
def test_chunked_round_trip_and_lifecycle(d: Path) -> None:
    canonical = d / "seg.bin"
    w = AtomicChunked.open(canonical)
    w._check()
    assert w.canonical_path == str(canonical)
    assert w.path == w.tmp_path == str(canonical) + ".tmp"
    assert w.status == shmstore.ResourceStatus.Active()
    w.write_at(10, b"0123456789")
    w._check()
    assert w.read(0, 20) == b""  # byte 0 was never written
    assert not w.contains_range(0, 20)
    assert w.contains_range(10, 20)
    assert w.contains_range(5, 5)
    w.write_at(0, b"abcdefghij")
    w._check()
    assert w.read(0, 100) == b"abcdefghij0123456789"  # short at the written extent
    buf = bytearray(8)
    assert w.read_at(16, buf) == 4 and bytes(buf[:4]) == b"6789"
    assert not canonical.exists()  # nothing published before commit
    with pytest.raises(shmstore.InvalidRange):
        w.write_at(-1, b"x")
    with pytest.raises(shmstore.InvalidRange):
        w.contains_range(5, 4)
    w.commit()
    w._check()
    assert canonical.read_bytes() == b"abcdefghij0123456789"
    assert not os.path.exists(w.tmp_path)
    assert w.path == str(canonical)
    assert w.status == shmstore.ResourceStatus.Committed(None, 20)
    assert w.read(5, 100) == b"fghij0123456789"
    assert w.contains_range(0, 20) and not w.contains_range(0, 21)
    assert stat.S_IMODE(os.stat(canonical).st_mode) == 0o600
    with pytest.raises(shmstore.ReadOnlyError):
        w.write_at(0, b"x")
    with pytest.raises(shmstore.ReadOnlyError):
        w.fail("too late")
    w.commit()  # a second commit of the same length: a no-op
    with pytest.raises(shmstore.ReadOnlyError):
        w.commit(3)
    w.close()
    w.close()  # idempotent
    w._check()
    with pytest.raises(shmstore.ResourceClosed):
        w.read(0, 1)
    with pytest.raises(shmstore.ResourceClosed):
        w.write_at(0, b"x")
    assert canonical.read_bytes() == b"abcdefghij0123456789"  # closing keeps the commit
    canonical.unlink()


@pytest.mark.timeout(30)
def test_chunked_commit_is_exactly_final_len(d: Path) -> None:
    """The canonical file holds exactly final_len bytes: the reservation of capacity_hint
    is trimmed, a shorter final_len cuts the written tail, a longer one zero-extends."""
    canonical = d / "seg.bin"
    for final_len, expect in ((None, b"x" * 300), (100, b"x" * 100),
                              (400, b"x" * 300 + bytes(100))):
        with AtomicChunked.open(canonical, capacity_hint=1 << 16) as w:
            assert os.path.getsize(w.tmp_path) == 1 << 16  # reserved on disk
            w.write_at(0, b"x" * 300)
            assert w.read(0, 1 << 16) == b"x" * 300  # the reservation is not readable
            assert not canonical.exists() or canonical.read_bytes() != expect
            w.commit(final_len)
            w._check()
            assert w.status == shmstore.ResourceStatus.Committed(final_len, len(expect))
        assert canonical.read_bytes() == expect
        assert os.path.getsize(canonical) == len(expect)
    canonical.unlink()


@pytest.mark.timeout(30)
def test_chunked_open_errors_leave_nothing(d: Path) -> None:
    """A missing directory is ResourceNotFound; a reservation that cannot fit is
    StorageFull, and the just-claimed tmp is removed and the claim released."""
    with pytest.raises(shmstore.ResourceNotFound):
        AtomicChunked.open(d / "no-such-dir" / "seg.bin")
    canonical = d / "seg.bin"
    with pytest.raises(shmstore.StorageFull):
        AtomicChunked.open(canonical, capacity_hint=1 << 60)
    assert _temps(d) == []
    with pytest.raises(shmstore.InvalidRange):
        AtomicChunked.open(canonical, capacity_hint=-1)
    with pytest.raises(ValueError, match="barrier"):
        AtomicChunked.open(canonical, barrier="sometimes")  # type: ignore[arg-type]
    AtomicChunked.open(canonical).close()


@pytest.mark.timeout(30)
def test_second_claimant_in_the_same_process_gets_tmp_claimed(d: Path) -> None:
    canonical = d / "seg.bin"
    first = AtomicChunked.open(canonical)
    with pytest.raises(shmstore.TmpClaimed) as info:
        AtomicChunked.open(canonical)
    assert info.value.path == first.tmp_path
    first.write_at(0, b"first")
    first._check()  # the loser touched nothing
    first.commit()
    first.close()
    second = AtomicChunked.open(canonical)  # free again, and empty
    assert second.read(0, 10) == b"" and os.path.getsize(second.tmp_path) == 0
    second.close()
    assert canonical.read_bytes() == b"first"
    canonical.unlink()


@pytest.mark.timeout(30)
def test_second_claimant_in_another_process_gets_tmp_claimed(
        d: Path, children: Callable[..., Child]) -> None:
    canonical = d / "seg.bin"
    w = AtomicChunked.open(canonical)
    try:
        c = children(_child_try_claim, str(canonical))
        assert c.recv() == ("TmpClaimed", w.tmp_path)
        assert c.join() == 0
        w._check()
    finally:
        w.close()
    c = children(_child_try_claim, str(canonical))
    assert c.recv() == ("claimed", None)
    assert c.join() == 0


@pytest.mark.timeout(60)
def test_killed_writer_tmp_is_reclaimed_and_truncated(
        d: Path, children: Callable[..., Child]) -> None:
    """A writer SIGKILLed mid-write: while it lives its claim holds (TmpClaimed, here too);
    once dead, the next open reclaims the tmp, truncates it (the dead writer's bytes are not
    readable, contained or committed), and commits only the successor's bytes."""
    canonical = d / "seg.bin"
    c = children(_child_hold, str(canonical), STALE)
    tag, tmp, ino = c.recv()
    assert tag == "holding"
    with pytest.raises(shmstore.TmpClaimed):
        AtomicChunked.open(canonical)
    c.kill()
    assert os.path.getsize(tmp) == STALE  # the orphan, full of 0xAA
    assert os.stat(tmp).st_ino == ino
    w = AtomicChunked.open(canonical)
    try:
        w._check()
        assert os.path.getsize(tmp) == 0
        assert not w.contains_range(0, 1)
        assert w.read(0, STALE) == b""
        assert w.read_at(0, bytearray(16)) == 0
        w.write_at(0, b"successor")
        assert w.read(0, STALE) == b"successor"
        assert not w.contains_range(0, 10)
        w.commit()
    finally:
        w.close()
    assert canonical.read_bytes() == b"successor"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("old", [None, b"previous version"])
@pytest.mark.parametrize(("point", "published"), [
    ("commit:trim", False), ("commit:fsync", False), ("commit:replace", False),
    ("commit:fsync-dir", True), ("commit:reopen", True), ("commit:unlock", True),
])
def test_chunked_writer_killed_during_commit(
        d: Path, children: Callable[..., Child], old: bytes | None, point: str,
        published: bool) -> None:
    """SIGKILL at each step of commit: the canonical path is absent (or the previous
    version) until the rename, then exactly the committed bytes; a leftover tmp is reclaimed
    empty by the next writer."""
    canonical = d / "seg.bin"
    if old is not None:
        Atomic(canonical).write_all(old)
    data = version(3)
    c = children(_child_chunked_killed_at, str(canonical), data, point, "inline")
    assert c.join() == -signal.SIGKILL
    if published:
        assert canonical.read_bytes() == data
    elif old is None:
        assert not canonical.exists()
    else:
        assert canonical.read_bytes() == old
    tmp = str(canonical) + ".tmp"
    assert os.path.exists(tmp) == (not published)
    w = AtomicChunked.open(canonical)
    assert os.path.getsize(tmp) == 0 and w.read(0, 10) == b""
    w.fail("cleanup")
    assert not os.path.exists(tmp)
    assert w.status == shmstore.ResourceStatus.Failed("cleanup")
    if canonical.exists():
        canonical.unlink()


@pytest.mark.timeout(60)
def test_claimant_that_locks_the_renamed_inode_retries(
        d: Path, children: Callable[..., Child]) -> None:
    """kithara hazard 2, after a commit: B opens the tmp (A's inode) and is held between its
    open and its flock; A commits (renames that inode to canonical, then unlocks); B's lock
    then succeeds on what is now the committed file. B must notice, retry, and claim a fresh
    tmp: A's committed bytes are never truncated or written by B."""
    canonical = d / "seg.bin"
    a = AtomicChunked.open(canonical)
    try:
        a.write_at(0, b"A" * 5000)
        c = children(_child_race_claimant, str(canonical), b"B" * 100)
        assert c.recv() == "opened"
        a_ino = os.fstat(a._fd).st_ino
        a.commit()
        assert os.stat(canonical).st_ino == a_ino
        c.send("go")
        tag, b_ino, attempts = c.recv()
        assert tag == "claimed" and attempts == 2
        assert b_ino != a_ino
        assert c.recv() == "written"
        # B's truncate and write went to its own fresh tmp, not to A's committed inode.
        assert canonical.read_bytes() == b"A" * 5000
        assert a.read(0, 5000) == b"A" * 5000
        assert os.stat(str(canonical) + ".tmp").st_ino == b_ino
        c.send("commit")
        assert c.recv() == "committed"
        assert canonical.read_bytes() == b"B" * 100
        assert a.read(0, 5000) == b"A" * 5000  # A's handle keeps its committed inode
        assert c.join() == 0
    finally:
        a.close()
    canonical.unlink()


@pytest.mark.timeout(30)
def test_claimant_that_locks_the_unlinked_inode_retries(
        d: Path, hook: Callable[[Callable[[str], None] | None], None]) -> None:
    """The same race after a fail (A unlinks its tmp, then unlocks), with B in a thread:
    B ends up with a fresh tmp at the path, never a lock on an unlinked inode."""
    canonical = d / "seg.bin"
    a = AtomicChunked.open(canonical)
    a.write_at(0, b"A" * 100)
    opened, go = threading.Event(), threading.Event()
    calls: list[str] = []
    out: list[Any] = []

    def pause(step: str) -> None:
        if step == "claim:lock" and threading.current_thread().name == "B":
            calls.append(step)
            if len(calls) == 1:
                opened.set()
                assert go.wait(20)

    def claimant() -> None:
        try:
            out.append(AtomicChunked.open(canonical))
        except BaseException as exc:
            out.append(exc)

    hook(pause)
    t = threading.Thread(target=claimant, name="B")
    t.start()
    try:
        assert opened.wait(20)
        a.fail("gave up")
        assert not os.path.exists(a.tmp_path)
    finally:
        go.set()
        t.join(20)
    hook(None)
    (b,) = out
    assert isinstance(b, AtomicChunked), b
    try:
        b._check()
        assert len(calls) == 2
        assert os.stat(b.tmp_path).st_ino == os.fstat(b._fd).st_ino
        b.write_at(0, b"B")
        b.commit()
    finally:
        b.close()
    assert canonical.read_bytes() == b"B"
    with pytest.raises(shmstore.ResourceFailed, match="gave up"):
        a.read(0, 1)
    canonical.unlink()


@pytest.mark.timeout(30)
def test_fail_close_exit_and_drop_remove_the_tmp(d: Path) -> None:
    canonical = d / "seg.bin"
    tmp = str(canonical) + ".tmp"

    w = AtomicChunked.open(canonical)
    w.write_at(0, b"doomed")
    w.fail("upstream 503")
    w._check()
    assert not os.path.exists(tmp)
    assert w.status == shmstore.ResourceStatus.Failed("upstream 503")
    w.fail("again")  # no-op; the first reason stays
    assert w.status == shmstore.ResourceStatus.Failed("upstream 503")
    with pytest.raises(shmstore.ResourceFailed, match="upstream 503"):
        w.write_at(0, b"x")
    with pytest.raises(shmstore.ResourceFailed):
        w.commit()
    w.close()

    w = AtomicChunked.open(canonical)
    w.write_at(0, b"doomed")
    w.close()
    assert not os.path.exists(tmp)
    assert w.status == shmstore.ResourceStatus.Failed("closed without commit")

    def produce() -> AtomicChunked:
        with AtomicChunked.open(canonical) as w:
            w.write_at(0, b"doomed")
            out.append(w)
            raise RuntimeError("producer crashed")

    out: list[AtomicChunked] = []
    with pytest.raises(RuntimeError):
        produce()
    (w,) = out
    assert not os.path.exists(tmp)
    assert w.status == shmstore.ResourceStatus.Failed("RuntimeError: producer crashed")

    w = AtomicChunked.open(canonical)
    w.write_at(0, b"doomed")
    del w
    gc.collect()
    assert not os.path.exists(tmp)

    AtomicChunked.open(canonical).close()  # the claim was released every time
    assert not canonical.exists()


@pytest.mark.timeout(30)
def test_commit_error_before_rename_fails_the_writer(
        d: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    canonical = d / "seg.bin"
    Atomic(canonical).write_all(b"old")
    w = AtomicChunked.open(canonical)
    w.write_at(0, b"new bytes")
    real_fsync = os.fsync

    def eio(fd: int) -> None:
        if os.fstat(fd).st_ino == os.fstat(w._fd).st_ino:
            raise OSError(errno.EIO, "injected EIO")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(shmstore.StorageError, match="injected EIO"):
        w.commit()
    monkeypatch.undo()
    assert isinstance(w.status, shmstore.ResourceStatus.Failed)
    assert not os.path.exists(w.tmp_path)
    assert canonical.read_bytes() == b"old"
    w.close()
    canonical.unlink()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("barrier", ["inline", "deferred"])
def test_barriers(d: Path, monkeypatch: pytest.MonkeyPatch, barrier: str) -> None:
    """Inline: commit fsyncs the file and then the directory; sync() is a no-op. Deferred:
    commit fsyncs nothing (the file is already visible, complete); sync() fsyncs the file
    and the directory once."""
    canonical = d / "seg.bin"
    synced: list[str] = []
    real_fsync = os.fsync

    def counting(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    w = AtomicChunked.open(canonical, barrier=barrier)  # type: ignore[arg-type]
    w.write_at(0, b"payload")
    monkeypatch.setattr(os, "fsync", counting)
    w.commit()
    assert canonical.read_bytes() == b"payload"
    assert synced == (["file", "dir"] if barrier == "inline" else [])
    synced.clear()
    w.sync()
    assert synced == ([] if barrier == "inline" else ["file", "dir"])
    synced.clear()
    w.sync()  # idempotent
    assert synced == []
    monkeypatch.undo()
    w.close()
    with pytest.raises(shmstore.ResourceClosed):
        w.sync()
    canonical.unlink()


@pytest.mark.timeout(30)
def test_symlink_at_tmp_is_refused_not_followed(d: Path) -> None:
    canonical = d / "seg.bin"
    tmp = Path(str(canonical) + ".tmp")
    victim = d / "victim"
    victim.write_bytes(b"precious")
    tmp.symlink_to(victim)
    with pytest.raises(shmstore.StorageError, match="symbolic link"):
        AtomicChunked.open(canonical)
    assert victim.read_bytes() == b"precious" and tmp.is_symlink()
    tmp.unlink()
    nowhere = d / "nowhere"
    tmp.symlink_to(nowhere)  # dangling: O_CREAT must not create the target either
    with pytest.raises(shmstore.StorageError, match="symbolic link"):
        AtomicChunked.open(canonical)
    assert not nowhere.exists()
    tmp.unlink()
    victim.unlink()


@pytest.mark.timeout(30)
def test_hard_link_fifo_or_directory_at_tmp_is_refused(d: Path) -> None:
    canonical = d / "seg.bin"
    tmp = Path(str(canonical) + ".tmp")
    victim = d / "victim"
    victim.write_bytes(b"precious")
    os.link(victim, tmp)
    with pytest.raises(shmstore.StorageError, match="hard links"):
        AtomicChunked.open(canonical)
    assert victim.read_bytes() == b"precious"
    tmp.unlink()
    victim.unlink()
    os.mkfifo(tmp)
    with pytest.raises(shmstore.StorageError, match="not a regular file"):
        AtomicChunked.open(canonical)
    tmp.unlink()
    tmp.mkdir()
    with pytest.raises(shmstore.StorageError):
        AtomicChunked.open(canonical)
    tmp.rmdir()


@pytest.mark.timeout(30)
def test_fork_child_cannot_use_or_release_the_parents_claim(
        d: Path, children: Callable[..., Child]) -> None:
    canonical = d / "seg.bin"
    w = AtomicChunked.open(canonical)
    try:
        w.write_at(0, b"parent")
        c = children(_child_inherits, w)
        tag, msg = c.recv()
        assert tag == "closed" and "fork" in msg
        assert c.join() == 0
        w._check()  # the tmp and the lock are still the parent's
        with pytest.raises(shmstore.TmpClaimed):
            AtomicChunked.open(canonical)
        w.commit()
    finally:
        w.close()
    assert canonical.read_bytes() == b"parent"
    canonical.unlink()


@pytest.mark.timeout(60)
def test_reader_sees_no_file_or_a_whole_version(
        d: Path, children: Callable[..., Child]) -> None:
    """A reader process reads the canonical path in a tight loop while versions of the file
    are committed through AtomicChunked (written in scattered chunks) and Atomic: it only
    ever sees no file or one whole version."""
    canonical = d / "seg.bin"
    stop = CTX.Event()
    c = children(_child_reader, str(canonical), stop)
    assert c.recv() == "ready"
    for k in range(1, 41):
        data = version(k)
        if k % 2:
            w = AtomicChunked.open(canonical, barrier="deferred")
            step = 997
            for off in reversed(range(0, len(data), step)):
                w.write_at(off, data[off : off + step])
            w.commit()
            w.close()
        else:
            Atomic(canonical).write_all(data, durable=False)
        assert is_whole_version(canonical.read_bytes())
    stop.set()
    result = c.recv()
    assert result[0] == "ok", result
    assert result[1] > 0
    assert c.join() == 0
    canonical.unlink()
