"""Regressions for what the soak (tests/soak) found under unlink/recreate churn and writes
racing commits. Each interleaving is forced, never slept into: the racing step runs inline
at the exact point of the library's code where the race window was (a one-shot wrapper
around a method of one handle), or the state a killed process leaves is made directly.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

import shmstore
from shmstore import resource as R
from shmstore.core import layout as L
from shmstore.ipc import locks
from shmstore.ipc.segments import DirNamespace

from . import _workers as W
from .conftest import Harness

KINDS = ["shm", "mmap"]
DATA = bytes(range(1, 251)) * 40  # 10,000 bytes, none zero


def _once(h: shmstore.Resource, method: str, before: Any) -> None:
    """Make ``h.<method>`` run ``before()`` first, once."""
    orig = getattr(h, method)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        setattr(h, method, orig)
        before()
        return orig(*args, **kwargs)

    setattr(h, method, wrapper)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_write_mapping_a_newer_generation_publishes_into_it(H: Harness, kind: str) -> None:
    """A write that maps its data while another writer commits and starts a rewrite must put
    its bytes and its coverage in the same generation. (Found by the soak: mapping read the
    newer lifecycle, the bytes went to the new generation's data and the coverage to the
    old one's slot, so the next commit lost them, or a rewrite carried coverage of bytes it
    never copied.)"""
    spec = H.spec(kind)
    w = H.create(spec)
    w.write_at(0, DATA[:100])
    c = H.open(spec, "r+")
    w.commit()
    w.reactivate()  # generation 1: w publishes into it, its mapping is still generation 0's

    def commit_and_rewrite() -> None:  # runs where w's write maps the data
        c.commit()
        c.reactivate()  # generation 2

    _once(w, "_ensure_wmap", lambda: commit_and_rewrite())
    w.write_at(1000, DATA[1000:2000])  # within the capacity: no growth, which would refuse
    c.commit()
    r = H.open(spec)
    assert r.status.length == 2000
    assert r.read(1000, 1000) == DATA[1000:2000]
    assert r.read(0, 100) == DATA[:100]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_open_finishing_an_unlink_never_removes_a_newer_resource(
        H: Harness, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """open() attaches to a control block that turns out to be unlinked, and finishes the
    unlink for an unlinker that died. By the time it looks, the name may hold a resource
    created since: it must leave that one alone. (Found by the soak: a late opener removed
    a new resource's journals and control block, and later its data file.)"""
    spec = H.spec(kind)
    old = H.create(spec)
    old.write_at(0, DATA[:10])
    opened, go = threading.Event(), threading.Event()
    attacher = threading.current_thread()
    real_lock = locks.lock
    errors: list[BaseException] = []

    def paused_lock(fd: int, byte: int) -> None:
        # the opening thread has opened the old control block by name: stop it there
        if threading.current_thread() is not attacher and not opened.is_set():
            opened.set()
            assert go.wait(30)
        real_lock(fd, byte)

    monkeypatch.setattr(locks, "lock", paused_lock)

    def late_open() -> None:
        try:
            W.open_spec(spec, "r").close()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=late_open)
    t.start()
    assert opened.wait(30)
    old.unlink()
    new = H.create(spec)
    new.write_at(0, DATA[:4096])
    go.set()
    t.join(30)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], shmstore.ResourceNotFound), errors
    # the new resource is whole: its names, its bytes, a new handle, a resume
    r = H.open(spec)
    assert r.read(0, 4096) == DATA[:4096]
    new.write_at(4096, DATA[4096:5000])
    new.commit()
    assert r.wait_range(0, 5000, timeout=10) is shmstore.WaitOutcome.READY
    assert H.open(spec).read(0, 5000) == DATA[:5000]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_a_stale_handle_finishing_its_unlink_leaves_a_newer_resource(
        H: Harness, kind: str) -> None:
    """Unlink is two phases: everything but the control block, then the control block only
    while it is still this resource's. A handle of the old resource whose unlinker died
    after the first phase (the flag says 2) must not touch the names a new resource took."""
    spec = H.spec(kind)
    old = H.create(spec)
    stale = H.open(spec)
    with old._meta() as w:  # the unlinker dies after phase 1 and after removing the block
        old._publish(w, unlinked=1)
        old._ns.unlink_contents()
        old._publish(w, unlinked=2)
        old._ns.unlink_control()
    new = H.create(spec)
    new.write_at(0, DATA[:100])
    stale.unlink()
    old.unlink()
    assert L.read_life(stale._words)[1].unlinked == 2
    assert H.open(spec).read(0, 100) == DATA[:100]
    new.unlink()
    with pytest.raises(shmstore.ResourceNotFound):
        W.open_spec(spec, "r")
    if kind == "mmap":
        assert not os.path.lexists(spec[1] + ".shmstore")


@pytest.mark.timeout(60)
def test_a_plain_file_is_never_a_resource_being_created(H: Harness) -> None:
    """open() of an mmap path without control state reads it as a plain committed file; a
    resource being created there (its control block exists, or its data file is already
    unlinked again) is not one, and the open goes the normal way instead."""
    spec = H.spec("mmap")
    path = spec[1]
    with open(path, "wb") as f:
        f.write(DATA[:100])
    ns = DirNamespace(path)
    fd = R._open_plain(ns)
    assert fd is not None
    os.close(fd)
    plain = H.open(spec)
    assert plain.status.length == 100
    os.unlink(path)
    res = H.create(spec)  # control block first, then the data file
    res.write_at(0, DATA[:10])
    assert R._open_plain(ns) is None
    r = H.open(spec)
    assert r.status == shmstore.ResourceStatus.Active()
    assert plain.read(0, 100) == DATA[:100]  # the plain handle keeps the file it mapped


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_reactivating_an_empty_commit_that_failed_starts_a_new_generation(
        H: Harness, kind: str) -> None:
    """A resource committed empty (``commit()`` of nothing written) and then failed is a
    committed one: reactivate must start a rewrite, not reactivate the committed generation
    in place as if it had never been committed. (Found by the soak: a pool writer's write
    that raced the empty commit published coverage past its length 0 into the committed
    generation; fail + reactivate made that generation active again, so readers took the
    raced coverage for readable bytes while the commit had set the data's capacity to 0
    (mmap: CorruptResource "data ... is N bytes, its control block promises M", and a
    trimmed file reads zeros).)"""
    spec = H.spec(kind)
    w = H.create(spec)  # nothing written yet
    c = H.open(spec, "r+")  # another writer of the pool, which commits
    orig = w._ensure_wmap

    def map_then_commit(end: int) -> Any:  # w's write has mapped its data: c commits
        w._ensure_wmap = orig  # type: ignore[method-assign]
        buf = orig(end)
        c.commit()  # extent 0: w has not published yet
        return buf

    w._ensure_wmap = map_then_commit  # type: ignore[method-assign]
    w.write_at(0, DATA[:5000])  # its coverage lands in the committed generation, past 0
    assert c.status.length == 0
    c.fail("refetch")
    c.reactivate()
    r = H.open(spec)
    # Readers keep seeing the committed generation: empty.
    assert r.ranges() == []
    assert r.read(0, 5000) == b""
    c.write_at(0, DATA[:100])
    c.commit()
    r2 = H.open(spec)
    for h in (r, r2):
        assert h.status.length == 100
        assert h.read(0, 5000) == DATA[:100]
    r2._check()


@pytest.mark.timeout(60)
def test_a_reader_mapping_while_a_commit_trims_the_file_retries(
        H: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader measures the mmap data file, then maps it; a commit (no other writer: it
    trims the file to the committed length) lands in between. The mapping of the old size
    fails ("mmap length is greater than file size"): the reader must read the lifecycle
    again and map the committed file, not fail. (Found by the soak in `make test`.)"""
    spec = H.spec("mmap")
    w = H.create(spec, capacity=1 << 16)
    w.write_at(0, DATA[:100])
    real = R.map_segment
    calls = {"data": 0}

    def commit_then_map(fd: int, size: int, *, writable: bool) -> Any:
        if size == 1 << 16 and not writable:  # the reader maps the data at its capacity
            calls["data"] += 1
            if calls["data"] == 1:
                w.commit()  # trims the file to 100 bytes under the reader's measurement
        return real(fd, size, writable=writable)

    monkeypatch.setattr(R, "map_segment", commit_then_map)
    r = H.open(spec)
    monkeypatch.setattr(R, "map_segment", real)
    assert calls["data"] == 1
    assert r.status.length == 100
    assert r.read(0, 1000) == DATA[:100]
