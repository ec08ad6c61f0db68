"""Hostile shared objects: real shm resources whose segments in /dev/shm were damaged.

The contract (the project's issue): a corrupted, truncated, wrong-magic, wrong-version or
foreign control block or file raises ``CorruptResource`` (``ResourceNotFound`` where an object
is simply gone); never another exception, never a hang, never a crash.

Each scenario builds a real resource in this process (fragmented writes, so coverage lives in
a journal and a ring; for most scenarios also a commit, a reactivate and a second commit, so
there is a base coverage segment and generation 1), closes every handle, then runs a child
process that damages the segments (``os.open`` on ``/dev/shm/<prefix>_<suffix>``, writes at
chosen offsets, truncates, deletes) and calls ``open`` / ``read`` / ``wait_range(timeout=1)``
/ ``contains_range`` / ``ranges`` / ``write_at``, recording each outcome. The child is a
separate process so a SIGBUS or an abort shows as a negative return code (a failure here),
and a hang as the subprocess timeout.

"Hot" scenarios open a reader first and damage the control block under it, bumping
``LIFE_SEQ`` by two (same parity, so the damaged record stays the active one) as a
lifecycle change would: the live handle must re-read the record and refuse it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

import shmstore
from shmstore.core import layout as L
from shmstore.ipc.segments import shm_base

pytestmark = pytest.mark.timeout(60)

SHM = "/dev/shm"
U64 = (1 << 64) - 1
CHILD_TIMEOUT = 30

# The child: damages the segments, then calls the API and prints one JSON line per call.
CHILD = r"""
import glob, json, os, sys, traceback
import shmstore
from shmstore.core import layout as L
from shmstore.ipc.segments import shm_base

spec = json.loads(sys.stdin.read())
name = spec["name"]
pre = "/dev/shm/" + shm_base(name) + "_"
out = []


def path(suffix):
    if "*" in suffix:
        hits = sorted(glob.glob(pre + suffix))
        assert hits, f"no segment matches {suffix}"
        return hits[0]
    return pre + suffix


def pword(suffix, index, value):
    fd = os.open(path(suffix), os.O_RDWR)
    try:
        os.pwrite(fd, (value & (2**64 - 1)).to_bytes(8, "little"), index * 8)
    finally:
        os.close(fd)


def rword(suffix, index):
    fd = os.open(path(suffix), os.O_RDONLY)
    try:
        return int.from_bytes(os.pread(fd, 8, index * 8), "little")
    finally:
        os.close(fd)


def damage(ops):
    for op in ops:
        kind, args = op[0], op[1:]
        if kind == "word":  # (suffix, word index, value)
            pword(*args)
        elif kind == "life":  # (field, value): in the active life record
            seq = rword("c", L.W_LIFE_SEQ)
            pword("c", L.record_word(seq & 1, args[0]), args[1])
        elif kind == "life_or":  # (field, bits): OR into the active life record
            seq = rword("c", L.W_LIFE_SEQ)
            i = L.record_word(seq & 1, args[0])
            pword("c", i, rword("c", i) | args[1])
        elif kind == "slot":  # (slot, field, value)
            pword("c", L.slot_word(args[0], args[1]), args[2])
        elif kind == "bump_seq":  # a lifecycle change that keeps the active record
            pword("c", L.W_LIFE_SEQ, rword("c", L.W_LIFE_SEQ) + 2)
        elif kind == "bytes":  # (suffix, offset, hex)
            fd = os.open(path(args[0]), os.O_RDWR)
            try:
                os.pwrite(fd, bytes.fromhex(args[2]), args[1])
            finally:
                os.close(fd)
        elif kind == "truncate":  # (suffix, size)
            fd = os.open(path(args[0]), os.O_RDWR)
            try:
                os.ftruncate(fd, args[1])
            finally:
                os.close(fd)
        elif kind == "unlink":  # (suffix,)
            os.unlink(path(args[0]))
        elif kind == "file":  # (suffix, hex content): a foreign file at that name
            fd = os.open(pre + args[0], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, bytes.fromhex(args[1]))
            finally:
                os.close(fd)
        else:
            raise AssertionError(kind)


def record(call, fn):
    try:
        value = fn()
    except BaseException as exc:
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        out.append({"call": call, "type": type(exc).__name__,
                    "storage": isinstance(exc, shmstore.StorageError),
                    "timeout": isinstance(exc, TimeoutError),
                    "msg": str(exc)[:200],
                    "at": f"{os.path.relpath(tb.filename, os.getcwd())}:{tb.lineno}"})
        return None
    out.append({"call": call, "type": None, "value": repr(value)[:80]})
    return value


if spec.get("as_nobody") and os.geteuid() == 0:
    try:
        os.setgid(65534)
        os.setuid(65534)
    except OSError as exc:
        print(json.dumps({"skip": f"cannot drop privileges: {exc}"}))
        sys.exit(0)

r = None
if spec["hot"]:
    r = record("open", lambda: shmstore.open(name, mode=spec["mode"]))
    if r is None:
        raise SystemExit("the undamaged resource did not open: " + json.dumps(out))
damage(spec["ops"])
if spec.get("mode000"):
    os.chmod(path("c"), 0)
if r is None:
    r = record("open", lambda: shmstore.open(name, mode=spec["mode"]))
if r is not None:
    calls = {
        "read": lambda: r.read(0, 10),
        "read_far": lambda: r.read(8000, 100),
        "wait": lambda: r.wait_range(0, 10, timeout=1),
        "wait_far": lambda: r.wait_range(60000, 60010, timeout=1),
        "contains": lambda: r.contains_range(0, 10),
        "ranges": lambda: r.ranges(),
        "write": lambda: r.write_at(0, b"z"),
    }
    for c in spec["calls"]:
        record(c, calls[c])
    record("close", r.close)
print(json.dumps(out))
"""

READ_CALLS = ["read", "read_far", "wait", "wait_far", "contains", "ranges"]


# ------------------------------------------------------------------------------ resources
def _fragmented(w: shmstore.Resource, first: int, count: int) -> None:
    for i in range(first, first + count):
        w.write_at(i * 64, b"x" * 32)


def make_committed(name: str) -> None:
    """Generation 1, committed with commit(None): base b0001, journal j0_0002, data d0001."""
    w = shmstore.create(name, capacity=1 << 16)
    try:
        _fragmented(w, 0, 150)  # more than a ring's worth of ranges
        w.commit()
        w.reactivate()
        _fragmented(w, 150, 50)
        w.commit()
        r = shmstore.open(name)
        r.read(0, 10)
        r.close()
    finally:
        w.close()


def make_active(name: str) -> None:
    """Generation 0, active, its writer gone: journal j0_0001, data d0000, no base."""
    w = shmstore.create(name, capacity=1 << 16)
    try:
        _fragmented(w, 0, 150)
        r = shmstore.open(name)
        r.read(0, 10)
        r.close()
    finally:
        w.close()


def make_nothing(name: str) -> None:
    """No resource: the scenario puts a foreign file at the control block's name."""


SETUPS = {"committed": make_committed, "active": make_active, "nothing": make_nothing}


@dataclass
class Scenario:
    id: str
    ops: list[list[object]]
    expect: str  # "open" (open raises CorruptResource) | "corrupt" (some call does) |
    #              "each" (every call after the damage does) | "gone" | "any"
    setup: str = "committed"
    mode: str = "r"
    hot: bool = False
    calls: list[str] = field(default_factory=lambda: list(READ_CALLS))
    extra: dict[str, object] = field(default_factory=dict)


def life(f: int, v: int) -> list[object]:
    return ["life", f, v]


def garbage(n: int, seed: int = 7) -> str:
    import random

    return random.Random(seed).randbytes(n).hex()


SCENARIOS = [
    # ---------------------------------------------------------------- the static header
    Scenario("magic-garbage", [["word", "c", L.W_MAGIC, 0x4141_4141_4141_4141]], "open"),
    Scenario("magic-zero", [["word", "c", L.W_MAGIC, 0]], "open"),
    Scenario("version-3", [["word", "c", L.W_VERSION, 3]], "open"),
    Scenario("version-max", [["word", "c", L.W_VERSION, U64]], "open"),
    Scenario("check-word-flipped", [["bytes", "c", L.W_STATIC_CHECK * 8, "ff"]], "open"),
    Scenario("ctrl-size-word", [["word", "c", L.W_CTRL_SIZE, 4096]], "open"),
    Scenario("name-len-300", [["word", "c", L.W_NAME_LEN, 300]], "open"),
    # ---------------------------------------------------------------- the life record
    Scenario("status-7", [life(L.R_STATUS, 7)], "open"),
    Scenario("status-max", [life(L.R_STATUS, U64)], "open"),
    Scenario("data-gen-past-write-gen", [life(L.R_DATA_GEN, 5)], "open"),
    Scenario("write-gen-2-ahead", [life(L.R_WRITE_GEN, 3)], "open"),
    Scenario("final-len-2**63", [life(L.R_FINAL_LEN, 1 << 63)], "open"),
    Scenario("capacity-max", [life(L.R_CAPACITY, U64)], "open"),
    Scenario("data-capacity-2**63", [life(L.R_DATA_CAPACITY, 1 << 63)], "open"),
    Scenario("used-mask-past-table", [["life_or", L.R_USED_MASK, 1 << 40]], "open"),
    Scenario("life-seq-other-record", [["word", "c", L.W_LIFE_SEQ, 0]], "any"),
    Scenario("reason-len-max-failed", [life(L.R_STATUS, 2), life(L.R_REASON_LEN, U64)], "any"),
    Scenario("reason-len-max-failed-active", [life(L.R_STATUS, 2), life(L.R_REASON_LEN, U64)],
             "any", setup="active"),
    # ---------------------------------------------------------------- writer slots
    Scenario("used-mask-slot-without-journal",
             [["life_or", L.R_USED_MASK, 1 << 3], ["slot", 3, L.S_CGEN, 1],
              ["slot", 3, L.S_JGEN, 7], ["slot", 3, L.S_HEAD, 5]], "open"),
    Scenario("used-mask-slot-without-journal-r+",
             [life(L.R_USED_MASK, 1 << 3), ["slot", 3, L.S_CGEN, 1], ["slot", 3, L.S_JGEN, 7],
              ["slot", 3, L.S_HEAD, 5]], "open", mode="r+", calls=["write"]),
    Scenario("used-mask-empty-slot", [["life_or", L.R_USED_MASK, 1 << 3],
                                      ["slot", 3, L.S_CGEN, 1]], "any"),
    Scenario("slot-head-max", [["slot", 0, L.S_HEAD, U64]], "open"),
    Scenario("slot-head-max-r+", [["slot", 0, L.S_HEAD, U64]], "open", mode="r+",
             calls=["write"]),
    Scenario("free-slot-head-max-r+",
             [life(L.R_USED_MASK, 1 << 1), ["slot", 1, L.S_CGEN, 1], ["slot", 1, L.S_HEAD, U64]],
             "open", mode="r+", calls=["write"]),
    Scenario("slot-jgen-other", [["slot", 0, L.S_JGEN, 0x10002]], "open"),
    Scenario("ring-entries-garbage", [["bytes", "c", L.entry_word(0, 0) * 8, garbage(4096)]],
             "any", setup="active"),
    # ---------------------------------------------------------------- journals
    Scenario("journal-truncated-10", [["truncate", "j0_*", 10]], "open"),
    Scenario("journal-truncated-10-r+", [["truncate", "j0_*", 10]], "open", mode="r+",
             calls=["write"]),
    Scenario("journal-truncated-65", [["truncate", "j0_*", 65]], "open"),
    Scenario("journal-truncated-0-r+", [["truncate", "j0_*", 0]], "open", mode="r+",
             calls=["write"]),
    Scenario("journal-truncated-4096", [["truncate", "j0_*", 4096]], "open"),
    Scenario("journal-header-garbage", [["bytes", "j0_*", 0, garbage(64)]], "open"),
    Scenario("journal-header-garbage-r+", [["bytes", "j0_*", 0, garbage(64)]], "open",
             mode="r+", calls=["write"]),
    Scenario("journal-deleted", [["unlink", "j0_*"]], "gone"),
    Scenario("journal-entries-garbage", [["bytes", "j0_*", 64, garbage(2400)]], "any",
             setup="active"),
    # ---------------------------------------------------------------- data segments
    Scenario("data-truncated-4096", [["truncate", "d0001", 4096]], "corrupt"),
    Scenario("data-truncated-1001", [["truncate", "d0001", 1001]], "corrupt"),
    Scenario("data-truncated-0", [["truncate", "d0001", 0]], "corrupt"),
    Scenario("data-truncated-active", [["truncate", "d0000", 1001]], "corrupt", setup="active"),
    Scenario("data-deleted", [["unlink", "d0001"]], "gone"),
    # ---------------------------------------------------------------- base coverage segments
    Scenario("base-deleted", [["unlink", "b0001"]], "gone"),
    Scenario("base-truncated-10", [["truncate", "b0001", 10]], "open"),
    Scenario("base-truncated-0", [["truncate", "b0001", 0]], "open"),
    Scenario("base-truncated-32", [["truncate", "b0001", 32]], "open"),
    Scenario("base-header-garbage", [["bytes", "b0001", 0, garbage(64)]], "open"),
    # ---------------------------------------------------------------- foreign files
    Scenario("foreign-4096-random", [["file", "c", garbage(4096)]], "open", setup="nothing"),
    Scenario("foreign-empty", [["file", "c", ""]], "open", setup="nothing"),
    Scenario("foreign-ctrl-size-random", [["file", "c", garbage(L.CTRL_SIZE)]], "open",
             setup="nothing"),
    Scenario("foreign-ctrl-size-zeros", [["file", "c", "00" * L.CTRL_SIZE]], "open",
             setup="nothing"),
    # ---------------------------------------------------------------- a live reader, damaged
    Scenario("hot-status-7", [life(L.R_STATUS, 7), ["bump_seq"]], "each", hot=True),
    Scenario("hot-used-mask-past-table", [["life_or", L.R_USED_MASK, 1 << 40], ["bump_seq"]],
             "each", hot=True),
    Scenario("hot-write-gen-2-ahead", [life(L.R_WRITE_GEN, 3), ["bump_seq"]], "each",
             hot=True),
    Scenario("hot-final-len-2**63", [life(L.R_FINAL_LEN, 1 << 63), ["bump_seq"]], "each",
             hot=True),
    Scenario("hot-used-mask-past-table-active",
             [["life_or", L.R_USED_MASK, 1 << 40], ["bump_seq"]], "each", setup="active",
             hot=True),
    Scenario("hot-slot-without-journal-active",
             [["life_or", L.R_USED_MASK, 1 << 3], ["slot", 3, L.S_JGEN, 7],
              ["slot", 3, L.S_HEAD, 5], ["bump_seq"]], "corrupt", setup="active", hot=True),
    Scenario("hot-head-past-journal-active", [["slot", 0, L.S_HEAD, 1 << 40]], "corrupt",
             setup="active", hot=True),
    Scenario("hot-ring-garbage-active",
             [["slot", 0, L.S_HEAD, 160], ["bytes", "c", L.entry_word(0, 0) * 8, garbage(4096)]],
             "any", setup="active", hot=True),
]


# ------------------------------------------------------------------------------ plumbing
def _entries(base: str) -> list[str]:
    return [e for e in os.listdir(SHM)
            if e.startswith(base + "_") or e.startswith("sem." + base + "_")]


def _remove_all(name: str) -> None:
    for e in _entries(shm_base(name)):
        try:
            os.unlink(os.path.join(SHM, e))
        except FileNotFoundError:
            pass


@pytest.fixture
def fresh_name() -> Iterator[str]:
    """A fresh resource name; afterwards every object of its prefix is removed directly (a
    damaged resource may not open, so ``open(name).unlink()`` cannot be relied on)."""
    n = f"hostile-{uuid.uuid4().hex[:12]}"
    try:
        yield n
    finally:
        _remove_all(n)


def run_child(spec: dict[str, object]) -> list[dict[str, object]]:
    proc = subprocess.run([sys.executable, "-c", CHILD], input=json.dumps(spec),
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert proc.returncode == 0, (
        f"child died with return code {proc.returncode} (negative: killed by signal "
        f"{-proc.returncode})\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}")
    last = proc.stdout.strip().splitlines()[-1]
    got = json.loads(last)
    if isinstance(got, dict) and "skip" in got:
        pytest.skip(str(got["skip"]))
    assert isinstance(got, list)
    return got


def _show(results: list[dict[str, object]]) -> str:
    lines = []
    for r in results:
        if r["type"] is None:
            lines.append(f"  {r['call']}: ok {r['value']}")
        else:
            lines.append(f"  {r['call']}: {r['type']} at {r['at']}: {r['msg']}")
    return "\n".join(lines)


def check(sc: Scenario, results: list[dict[str, object]]) -> None:
    shown = f"scenario {sc.id} ({sc.mode}{', hot' if sc.hot else ''}):\n{_show(results)}"
    # Never another exception: every error is a StorageError (TimeoutError from a wait).
    foreign = [r for r in results if r["type"] is not None and not (r["storage"]
                                                                    or r["timeout"])]
    assert not foreign, f"non-shmstore exception\n{shown}"
    errors = [r["type"] for r in results if r["type"] is not None]
    after = results[1:] if sc.hot else results  # a hot open ran before the damage
    after = [r for r in after if r["call"] != "close"]
    if sc.expect == "open":
        assert results[0]["call"] == "open" and results[0]["type"] == "CorruptResource", (
            f"open must raise CorruptResource\n{shown}")
    elif sc.expect == "corrupt":
        assert "CorruptResource" in errors, f"no call raised CorruptResource\n{shown}"
    elif sc.expect == "each":
        bad = [r for r in after if r["type"] != "CorruptResource"]
        assert not bad, f"every call on the damaged block must raise CorruptResource\n{shown}"
    elif sc.expect == "gone":
        assert {"CorruptResource", "ResourceNotFound"} & set(errors), (
            f"a missing segment went unnoticed\n{shown}")
    else:
        assert sc.expect == "any"


# ------------------------------------------------------------------------------ the tests
@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_damaged_resource(sc: Scenario, fresh_name: str) -> None:
    SETUPS[sc.setup](fresh_name)
    spec = {"name": fresh_name, "mode": sc.mode, "hot": sc.hot, "ops": sc.ops,
            "calls": sc.calls, **sc.extra}
    check(sc, run_child(spec))


def test_unreadable_control_block_is_a_clear_storage_error(fresh_name: str) -> None:
    """A control block of the right name that this user may not open (mode 000, owned by
    the same user; as root the child drops to uid 65534 first, since root ignores modes):
    a StorageError saying so, not a raw PermissionError, and no hang."""
    spec = {"name": fresh_name, "mode": "r", "hot": False, "calls": [],
            "ops": [["file", "c", garbage(L.CTRL_SIZE)]], "mode000": True, "as_nobody": True}
    results = run_child(spec)
    (opened,) = [r for r in results if r["call"] == "open"]
    assert opened["type"] is not None and opened["storage"], _show(results)
    assert opened["type"] == "StorageError", _show(results)
    assert "permission denied" in str(opened["msg"]), _show(results)


def test_foreign_file_in_the_way_of_create(fresh_name: str) -> None:
    """A foreign file at the control block's name: create reports the name taken (and
    leaves the foreign file alone), open reports it corrupt."""
    path = os.path.join(SHM, shm_base(fresh_name) + "_c")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, os.urandom(4096))
    finally:
        os.close(fd)
    with pytest.raises(shmstore.ResourceExists):
        shmstore.create(fresh_name)
    assert os.path.getsize(path) == 4096
    with pytest.raises(shmstore.CorruptResource):
        shmstore.open(fresh_name)
