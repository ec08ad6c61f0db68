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
