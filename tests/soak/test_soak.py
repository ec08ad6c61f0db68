"""A bounded soak: K worker processes do seeded random operations on R resources (shm and
mmap) for ``SHMSTORE_SOAK_SECONDS`` (default 40 s) and check that what a long-running
process holds stays flat: open descriptors, mappings, RSS, and the objects in ``/dev/shm``.

Every worker (spawned) opens and closes handles again and again, writes random ranges with
a verifiable pattern, waits with short timeouts, reads (``read``, ``read_at``, ``view``) and
verifies, commits, reactivates and rewrites, fails and reactivates, interrupts, cancels (rarely),
opens late joiners that verify everything already there, pickles a handle to a forkserver
child that re-attaches, verifies and (through a writer) writes, and unlinks a resource (from
any handle it holds, possibly one of an older incarnation) and creates it again.

Every byte ever written at offset ``o`` is ``PATTERN[o]`` (random, never zero), so any byte a
wait reported READY, or that ``ranges()`` lists, is checked: a zero (unwritten) or misplaced
byte fails.

Figures: after a warm-up (every kind of operation done at least once, then random operations
for ~15% of the run) and at the end, each worker closes all its handles, drops its views
and samples itself at that quiet point: ``num_fds()``, ``len(memory_maps())``, RSS and
RssAnon, and the descriptors and mappings that still refer to a shmstore object (must be 0).
Quiet points in between give a series. The live figures (handles open) are sampled just
before. The parent samples ``/dev/shm`` while it waits for the reports.

The workers report through a queue when their time is up; nothing sleeps to synchronise.
Expected errors (counted per operation, not failures): ``TimeoutError``; ``ResourceFailed``
and ``WriterDied`` (a resource failed, or no writer is attached); ``ResourceNotFound`` (a
racing unlink: from a handle, only if its control block says it was unlinked);
``Cancelled``; ``ReadOnlyError`` (a write lost to a commit); and in the create of a
recreate, ``ResourceExists`` (another worker recreated it first). Anything else, a
verification mismatch, or a worker that dies or never reports fails the test.

Environment: ``SHMSTORE_SOAK_SECONDS`` (default 40; ``make test`` runs it),
``SHMSTORE_SOAK_WORKERS`` (6),
``SHMSTORE_SOAK_SEED`` (fixed default: a run is repeatable up to scheduling),
``SHMSTORE_SOAK_REPORT`` (a path: the figures, error kinds and first tracebacks are also
written there as JSON). To narrow a failure down: ``SHMSTORE_SOAK_WEIGHTS`` (e.g.
``unlink=0,cancel=0``; a weight of 0 also drops the operation from the warm-up),
``SHMSTORE_SOAK_KINDS`` (the backends of the resources, default ``shm,mmap,shm,mmap``),
``SHMSTORE_SOAK_UNLINK=fresh`` (unlink only through a handle opened just before).
"""

from __future__ import annotations

import collections
import faulthandler
import gc
import json
import multiprocessing as mp
import os
import pickle
import queue
import random
import re
import signal
import threading
import time
import traceback
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest

import shmstore
from shmstore import WaitOutcome
from shmstore import resource as R
from shmstore.core import layout as L

from ..crash._workers import Spec, create_spec, open_spec
from ..crash._workers import shm_base as shm_base_of

SECONDS = float(os.environ.get("SHMSTORE_SOAK_SECONDS", "40"))
WORKERS = int(os.environ.get("SHMSTORE_SOAK_WORKERS", "6"))
SEED = int(os.environ.get("SHMSTORE_SOAK_SEED", "20240611"))
REPORT = os.environ.get("SHMSTORE_SOAK_REPORT")
KINDS = tuple(os.environ.get("SHMSTORE_SOAK_KINDS", "shm,mmap,shm,mmap").split(","))  # R = 4
# "any": unlink through any handle held, possibly one of an older incarnation (the default);
# "fresh": only through a handle opened just before (narrows a failure down).
UNLINK_VIA = os.environ.get("SHMSTORE_SOAK_UNLINK", "any")

SPAN = 1 << 20  # every offset written or waited on is below this
MAX_IO = 16 << 10  # the longest write or wait
MAX_READ = 64 << 10
READERS_MAX = 3  # read-only handles a worker keeps per resource (plus at most one writer)
VIEWS_MAX = 8  # views a worker keeps alive across later operations
WAIT_TIMEOUTS = (0.0, 0.001, 0.01, 0.05)

# A quiet point compared with the one after warm-up: what may differ by chance, not by the
# number of operations (Python's allocator maps and unmaps arenas; no descriptor may differ).
FD_SLACK = 2
MAP_SLACK = 16
RSS_SLACK = 20 << 20

# Weights of the random operations.
OPS: dict[str, float] = {
    "open_reader": 6, "open_writer": 3, "close": 6, "write": 24, "wait": 14, "read": 12,
    "view": 5, "join": 2, "commit": 3, "reactivate": 3, "fail": 1, "interrupt": 2,
    "cancel": 0.05, "unlink": 0.15, "pickle": 0.1,
}
# SHMSTORE_SOAK_WEIGHTS="unlink=0,cancel=0": change weights (to narrow a failure down).
for _item in filter(None, os.environ.get("SHMSTORE_SOAK_WEIGHTS", "").split(",")):
    _k, _v = _item.split("=")
    OPS[_k.strip()] = float(_v)
_NAMES = list(OPS)
_WEIGHTS = list(OPS.values())

EXPECTED: tuple[type[BaseException], ...] = (
    TimeoutError, shmstore.ResourceFailed, shmstore.ResourceNotFound, shmstore.Cancelled,
    shmstore.ReadOnlyError,
)

# The bytes at every offset: random, never zero, the same in every process.
PATTERN = random.Random(0x50A4).randbytes(SPAN + MAX_READ).translate(
    bytes([1]) + bytes(range(1, 256)))

# ------------------------------------------------------------------------------- helpers

def verify(data: Any, off: int, what: str) -> int:
    """``data`` must be exactly the pattern at ``off``; returns its length."""
    buf = bytes(data)
    want = PATTERN[off : off + len(buf)]
    if buf != want:
        i = next(i for i in range(len(buf)) if buf[i] != want[i])
        raise AssertionError(f"{what}: byte {off + i} is {buf[i]}, want {want[i]}"
                             f" (buffer [{off}, {off + len(buf)}))")
    return len(buf)


def _shape(msg: str) -> str:
    """An error message with its numbers and names blanked: errors group by kind."""
    return re.sub(r"\d+", "N", re.sub(r"'[^']*'", "'...'", msg))[:120]


def unlinked(h: shmstore.Resource) -> bool:
    """Was ``h``'s resource unlinked (its control block says so), or is ``h`` closed?"""
    w = h._w
    return w is None or bool(L.current_life(w).unlinked)


def figures(tmp: str) -> dict[str, int]:
    """This process's descriptors, mappings and memory, and how many of its descriptors and
    mappings refer to a shmstore object (a segment, a semaphore, a data file or sidecar)."""
    p = psutil.Process()
    maps = p.memory_maps(grouped=False)
    store_fds = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        store_fds += "shmstore" in target or tmp in target
    anon = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                anon = int(line.split()[1]) * 1024
    return {
        "fds": p.num_fds(),
        "maps": len(maps),
        "rss": p.memory_info().rss,
        "rss_anon": anon,
        "store_fds": store_fds,
        "store_maps": sum(1 for m in maps if "shmstore" in m.path or tmp in m.path),
    }


def shm_counts(bases: list[str]) -> tuple[int, int]:
    """(entries of our resources, every entry containing "shmstore") in /dev/shm."""
    try:
        entries = os.listdir("/dev/shm")
    except FileNotFoundError:
        return 0, 0
    ours = sum(1 for e in entries
               if any(e.startswith(b + "_") or e.startswith("sem." + b + "_") for b in bases))
    return ours, sum(1 for e in entries if "shmstore" in e)


def sidecar_count(specs: list[Spec]) -> int:
    """Files of the mmap resources: data files and their sidecars' entries."""
    n = 0
    for kind, key in specs:
        if kind != "mmap":
            continue
        n += os.path.lexists(key)
        try:
            n += len(os.listdir(key + ".shmstore"))
        except FileNotFoundError:
            pass
    return n


# ----------------------------------------------------------------------- the pickled child
def pickled_child(blob: bytes, conn: Any, seed: int) -> None:
    """A forkserver child: re-attach a pickled handle, verify what it covers, write a range
    through a writer, wait briefly, close. Reports a dict through ``conn``."""
    faulthandler.enable()
    out: dict[str, Any] = {"outcomes": {}, "errors": [], "verified": 0}
    rng = random.Random(seed)
    h = None
    try:
        try:
            h = pickle.loads(blob)
            covered = h.ranges()
            for s, e in rng.sample(covered, min(3, len(covered))):
                a = rng.randrange(s, e)
                n = min(e - a, MAX_READ)
                data = h.read(a, n)
                if len(data) != n:
                    raise AssertionError(f"child: read({a}, {n}) of a covered range gave"
                                         f" {len(data)} bytes")
                out["verified"] += verify(data, a, "pickled child read")
            if h.writable:
                n = rng.randint(1, MAX_IO)
                a = rng.randrange(0, SPAN - n)
                h.write_at(a, memoryview(PATTERN)[a : a + n])
            n = rng.randint(1, MAX_IO)
            a = rng.randrange(0, SPAN - n)
            if h.wait_range(a, a + n, timeout=0.01) is WaitOutcome.READY:
                data = h.read(a, n)
                out["verified"] += verify(data, a, "pickled child wait")
            key = "ok"
        except EXPECTED as exc:
            key = type(exc).__name__
        out["outcomes"][key] = 1
    except Exception:
        out["errors"].append("pickled child: " + traceback.format_exc())
    finally:
        if h is not None:
            h.close()
        conn.send(out)
        conn.close()


# -------------------------------------------------------------------------------- workers
class Worker:
    def __init__(self, wid: int, seed: int, specs: list[Spec], tmp: str) -> None:
        self.wid = wid
        self.seed = seed
        self.rng = random.Random(seed)
        self.specs = specs
        self.tmp = tmp
        self.readers: list[list[shmstore.Resource]] = [[] for _ in specs]
        self.writers: list[shmstore.Resource | None] = [None for _ in specs]
        self.views: collections.deque[tuple[int, memoryview]] = collections.deque()
        self.ops: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.errors: list[str] = []  # the first tracebacks
        self.error_kinds: Counter[str] = Counter()  # every error, by operation and message
        self.verified = 0
        self.samples: list[dict[str, Any]] = []
        self.cur: shmstore.Resource | None = None  # the handle the current operation uses
        self.fs_ctx: Any = None
        self.children = 0
        self.t0 = time.monotonic()
        self.first_error: float | None = None  # seconds into the run

    # ------------------------------------------------------------------- handles
    def handles(self, i: int) -> list[shmstore.Resource]:
        w = self.writers[i]
        return [*self.readers[i], *([w] if w is not None else [])]

    def drop(self, h: shmstore.Resource) -> None:
        for i in range(len(self.specs)):
            if h in self.readers[i]:
                self.readers[i].remove(h)
            if self.writers[i] is h:
                self.writers[i] = None
        h.close()

    def open_reader(self, i: int) -> shmstore.Resource:
        if len(self.readers[i]) >= READERS_MAX:
            self.readers[i].pop(0).close()
        r = self.cur = open_spec(self.specs[i])
        self.readers[i].append(r)
        return r

    def open_writer(self, i: int) -> shmstore.Resource:
        old = self.writers[i]
        if old is not None:
            self.writers[i] = None
            old.close()
        try:
            w = open_spec(self.specs[i], "r+")
        except shmstore.ResourceNotFound:
            return self.recreate(i)
        self.writers[i] = self.cur = w
        return w

    def writer(self, i: int) -> shmstore.Resource:
        w = self.writers[i]
        if w is None:
            w = self.open_writer(i)
        self.cur = w
        return w

    def any_handle(self, i: int) -> shmstore.Resource:
        hs = self.handles(i)
        h = self.rng.choice(hs) if hs else self.open_reader(i)
        self.cur = h
        return h

    def recreate(self, i: int) -> shmstore.Resource:
        """Create resource ``i`` again (after an unlink); if another worker was first, open
        theirs. Raises ResourceNotFound when an unlink races the create."""
        self.ops["recreate"] += 1
        try:
            w = create_spec(self.specs[i], capacity=self.rng.choice((4096, 64 << 10, 256 << 10)))
            self.outcomes["recreate:ok"] += 1
        except shmstore.ResourceExists:
            self.outcomes["recreate:ResourceExists"] += 1
            w = open_spec(self.specs[i], "r+")
        old = self.writers[i]
        if old is not None:
            old.close()
        self.writers[i] = self.cur = w
        return w

    # ------------------------------------------------------------------- ranges
    def rand_range(self, cap: int = MAX_IO) -> tuple[int, int]:
        n = self.rng.randint(1, cap)
        if self.rng.random() < 0.5:
            n = max(4096, n // 4096 * 4096)
            a = self.rng.randrange(0, SPAN - n + 1, 4096)
        else:
            a = self.rng.randrange(0, SPAN - n + 1)
        return a, n

    def gap_range(self, h: shmstore.Resource) -> tuple[int, int]:
        """The start of the first gap (where a streaming writer goes next), else random."""
        g = h.next_gap(0, SPAN)
        if g is None:
            return self.rand_range()
        return g[0], min(g[1] - g[0], self.rng.randint(1, MAX_IO))

    def write(self, w: shmstore.Resource) -> None:
        a, n = self.gap_range(w) if self.rng.random() < 0.4 else self.rand_range()
        w.write_at(a, memoryview(PATTERN)[a : a + n])
        self.outcomes["bytes_written"] += n

    # ------------------------------------------------------------------- operations
    def op_open_reader(self, i: int) -> None:
        self.open_reader(i)

    def op_open_writer(self, i: int) -> None:
        self.open_writer(i)

    def op_close(self, i: int) -> None:
        hs = self.handles(i)
        if hs:
            self.drop(self.rng.choice(hs))

    def op_write(self, i: int) -> None:
        self.write(self.writer(i))

    def op_wait(self, i: int) -> str:
        h = self.any_handle(i)
        a, n = self.gap_range(h) if self.rng.random() < 0.5 else self.rand_range()
        got = h.wait_range(a, a + n, timeout=self.rng.choice(WAIT_TIMEOUTS))
        if got is WaitOutcome.READY:
            data = h.read(a, n)
            if not data:
                raise AssertionError(f"wait_range({a}, {a + n}) READY but read gave nothing"
                                     f" ({h.status})")
            self.verified += verify(data, a, f"read after wait on {h!r}")
        return got.name

    def pick_covered(self, h: shmstore.Resource) -> tuple[int, int] | None:
        rs = h.ranges()
        if not rs:
            return None
        s, e = self.rng.choice(rs)
        a = self.rng.randrange(s, e)
        return a, min(e - a, self.rng.randint(1, MAX_READ))

    def op_read(self, i: int) -> str:
        h = self.any_handle(i)
        got = self.pick_covered(h)
        if got is None:
            return "empty"
        a, n = got
        if self.rng.random() < 0.5:
            data: Any = h.read(a, n)
        else:
            data = bytearray(n)
            k = h.read_at(a, data)
            data = data[:k]
        if len(data) != n:
            raise AssertionError(f"read of covered [{a}, {a + n}) gave {len(data)} bytes"
                                 f" ({h.status})")
        self.verified += verify(data, a, f"read of a covered range on {h!r}")
        return "ok"

    def op_view(self, i: int) -> str:
        h = self.any_handle(i)
        got = self.pick_covered(h)
        if got is None:
            return "empty"
        a, n = got
        v = h.view(a, n)
        if len(v) != n:
            raise AssertionError(f"view of covered [{a}, {a + n}) has {len(v)} bytes")
        self.verified += verify(v, a, f"view of a covered range on {h!r}")
        if self.rng.random() < 0.5:  # keep it alive across later operations (and closes)
            self.views.append((a, v))
            if len(self.views) > VIEWS_MAX:
                self.check_view(*self.views.popleft())
        else:
            v.release()
        return "ok"

    def check_view(self, a: int, v: memoryview) -> None:
        self.verified += verify(v, a, "a view kept across later operations")
        v.release()

    def op_join(self, i: int) -> str:
        """A late joiner: a new reader verifies (a sample of) everything already there."""
        r = self.open_reader(i)
        covered = r.ranges()
        for s, e in self.rng.sample(covered, min(4, len(covered))):
            a = self.rng.randrange(s, e)
            n = min(e - a, MAX_READ)
            data = r.read(a, n)
            if len(data) != n:
                raise AssertionError(f"late joiner: read of covered [{a}, {a + n}) gave"
                                     f" {len(data)} bytes")
            self.verified += verify(data, a, "late joiner")
        return "ok"

    def op_commit(self, i: int) -> None:
        self.writer(i).commit()

    def op_reactivate(self, i: int) -> None:
        w = self.writer(i)
        w.reactivate()
        for _ in range(self.rng.randint(1, 3)):  # the rewrite
            self.write(w)

    def op_fail(self, i: int) -> None:
        self.writer(i).fail(f"soak: worker {self.wid} failed it")

    def op_interrupt(self, i: int) -> None:
        self.any_handle(i).interrupt()

    def op_cancel(self, i: int) -> None:
        self.writer(i).cancel()

    def op_unlink(self, i: int) -> None:
        """Unlink through any handle (maybe one of an older incarnation), create it again."""
        if UNLINK_VIA == "fresh":
            h = self.cur = open_spec(self.specs[i])
            try:
                h.unlink()
            finally:
                h.close()
        else:
            self.any_handle(i).unlink()
        if self.rng.random() < 0.5:
            for old in self.handles(i):
                self.drop(old)
        self.recreate(i)

    def op_pickle(self, i: int) -> str:
        w = self.writers[i]
        h = w if w is not None and self.rng.random() < 0.5 else self.any_handle(i)
        self.cur = h
        blob = pickle.dumps(h)
        if self.fs_ctx is None:
            self.fs_ctx = mp.get_context("forkserver")
            self.fs_ctx.set_forkserver_preload(["shmstore", __name__])
        ctx = self.fs_ctx
        r_end, w_end = ctx.Pipe(duplex=False)
        p = ctx.Process(target=pickled_child, args=(blob, w_end, self.rng.getrandbits(32)))
        p.start()
        self.children += 1
        w_end.close()
        try:
            if not r_end.poll(60):
                raise AssertionError("a pickled-handle child never reported")
            res = r_end.recv()
        finally:
            r_end.close()
            p.join(60)
            if p.exitcode is None:
                p.kill()
                p.join()
            code = p.exitcode
            p.close()
        if code != 0:
            raise AssertionError(f"a pickled-handle child exited with {code}")
        for e in res["errors"]:
            self.count_error(f"pickle: child: {_shape(e.strip().splitlines()[-1])}")
            if len(self.errors) < 20:
                self.errors.append(e)
        self.verified += res["verified"]
        (key,) = res["outcomes"] or {"error": 1}
        return f"child {key}"

    # ------------------------------------------------------------------- driver
    def run_op(self, kind: str, i: int) -> None:
        self.ops[kind] += 1
        self.cur = None
        try:
            res = getattr(self, "op_" + kind)(i) or "ok"
        except EXPECTED as exc:
            res = type(exc).__name__
            h = self.cur
            if isinstance(exc, shmstore.ResourceNotFound) and h is not None:
                if not unlinked(h):
                    res = "ERROR"
                    self.error(kind, i, "ResourceNotFound from a handle whose resource was"
                               f" not unlinked: {_shape(str(exc))}")
                self.drop(h)  # of an unlinked incarnation: let it go
            elif isinstance(exc, shmstore.Cancelled) and self.rng.random() < 0.3:
                self.run_op("unlink", i)  # cancelled is terminal: make it anew
        except Exception as exc:
            res = "ERROR"
            self.error(kind, i, f"{type(exc).__name__}: {_shape(str(exc))}")
        self.outcomes[f"{kind}:{res}"] += 1

    def count_error(self, key: str) -> None:
        self.error_kinds[key] += 1
        if self.first_error is None:
            self.first_error = round(time.monotonic() - self.t0, 2)

    def error(self, kind: str, i: int, what: str) -> None:
        """Count an unexpected error (call inside its ``except``: keeps its traceback)."""
        self.count_error(f"{kind}: {what}")
        if len(self.errors) < 20:
            self.errors.append(f"worker {self.wid} seed {self.seed}: {kind} on"
                               f" {self.specs[i]}: {what}\n{traceback.format_exc()}")

    def random_op(self) -> None:
        kind = self.rng.choices(_NAMES, _WEIGHTS)[0]
        self.run_op(kind, self.rng.randrange(len(self.specs)))

    def quiet_point(self, label: str, t0: float) -> None:
        """Sample the live figures, then close everything and sample the quiet ones."""
        live = figures(self.tmp)
        for a, v in self.views:
            try:
                self.check_view(a, v)
            except AssertionError as exc:
                self.count_error(f"held view: {_shape(str(exc))}")
                if len(self.errors) < 20:
                    self.errors.append(f"worker {self.wid}: {traceback.format_exc()}")
                v.release()
        self.views.clear()
        for i in range(len(self.specs)):
            for h in self.handles(i):
                h.close()
            self.readers[i] = []
            self.writers[i] = None
        self.cur = None
        gc.collect()
        self.samples.append({"label": label, "t": round(time.monotonic() - t0, 2),
                             "ops": sum(self.ops.values()),
                             "errors": sum(self.error_kinds.values()), "live": live,
                             "quiet": figures(self.tmp)})

    def run(self, seconds: float) -> dict[str, Any]:
        t0 = self.t0 = time.monotonic()
        warm = min(max(3.0, 0.15 * seconds), 30.0)
        # Warm-up: every kind of operation at least once, on every resource (the forkserver
        # starts here, so the baseline includes its pipe), then random ones.
        for i in range(len(self.specs)):
            for kind in ("open_reader", "open_writer", "write", "write", "wait", "read",
                         "view", "join", "interrupt", "commit", "reactivate", "fail",
                         "reactivate", "write", "commit", "close"):
                if OPS[kind] > 0:
                    self.run_op(kind, i)
        if OPS["pickle"] > 0:
            self.run_op("pickle", self.rng.randrange(len(self.specs)))
        while time.monotonic() - t0 < warm:
            self.random_op()
        self.quiet_point("warm", t0)
        end = t0 + seconds
        step = max(5.0, (seconds - warm) / 6)
        next_q = time.monotonic() + step
        while (now := time.monotonic()) < end:
            self.random_op()
            if now >= next_q and end - now > step / 2:
                self.quiet_point("mid", t0)
                next_q = now + step
        self.quiet_point("end", t0)
        return {
            "wid": self.wid, "pid": os.getpid(), "seed": self.seed,
            "seconds": round(time.monotonic() - t0, 2), "warm": warm,
            "ops": dict(self.ops), "outcomes": dict(self.outcomes), "errors": self.errors,
            "error_kinds": dict(self.error_kinds), "first_error": self.first_error,
            "verified": self.verified, "samples": self.samples, "children": self.children,
        }


def worker_main(q: Any, wid: int, seed: int, specs: list[Spec], tmp: str,
                seconds: float) -> None:
    faulthandler.enable()  # a crash (SIGBUS, SIGSEGV) prints where, in the captured stderr
    try:
        res = Worker(wid, seed, specs, tmp).run(seconds)
    except BaseException:
        q.put((wid, "err", traceback.format_exc()))
    else:
        q.put((wid, "ok", res))
    q.close()
    # Flush the report; if the driver died meanwhile nobody reads it: exit anyway.
    flushing = threading.Thread(target=q.join_thread, daemon=True)
    flushing.start()
    driver = mp.parent_process()
    while flushing.is_alive():
        flushing.join(1.0)
        if driver is not None and not driver.is_alive():
            q.cancel_join_thread()
            break


# --------------------------------------------------------------------------------- report
def summarize(results: list[dict[str, Any]], shm: dict[str, Any]) -> dict[str, Any]:
    ops: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    error_kinds: Counter[str] = Counter()
    for r in results:
        ops.update(r["ops"])
        outcomes.update(r["outcomes"])
        error_kinds.update(r["error_kinds"])

    def span(label: str, phase: str, key: str) -> list[int]:
        vals = [next(s for s in r["samples"] if s["label"] == label)[phase][key]
                for r in results]
        return [min(vals), max(vals)]

    per_worker = []
    for r in results:
        warm = next(s for s in r["samples"] if s["label"] == "warm")
        end = next(s for s in r["samples"] if s["label"] == "end")
        per_worker.append({
            "wid": r["wid"], "ops": sum(r["ops"].values()), "seconds": r["seconds"],
            "fds": [warm["quiet"]["fds"], end["quiet"]["fds"]],
            "maps": [warm["quiet"]["maps"], end["quiet"]["maps"]],
            "rss_mib": [round(warm["quiet"]["rss"] / 2**20, 1),
                        round(end["quiet"]["rss"] / 2**20, 1)],
            "rss_anon_mib": [round(warm["quiet"]["rss_anon"] / 2**20, 1),
                             round(end["quiet"]["rss_anon"] / 2**20, 1)],
            "series_fds": [s["quiet"]["fds"] for s in r["samples"]],
            "series_maps": [s["quiet"]["maps"] for s in r["samples"]],
            "series_errors": [(s["t"], s["errors"]) for s in r["samples"]],
            "first_error_s": r["first_error"],
            "live_fds_max": max(s["live"]["fds"] for s in r["samples"]),
            "live_maps_max": max(s["live"]["maps"] for s in r["samples"]),
        })
    return {
        "seconds": SECONDS, "workers": WORKERS, "workers_reported": len(results),
        "resources": list(KINDS), "seed": SEED, "weights": OPS, "unlink_via": UNLINK_VIA,
        "ops_total": sum(ops.values()), "ops": dict(sorted(ops.items())),
        "outcomes": dict(sorted(outcomes.items())),
        "error_kinds": dict(error_kinds.most_common()),
        "verified_mib": round(sum(r["verified"] for r in results) / 2**20, 1),
        "children": sum(r["children"] for r in results),
        "quiet": {f"{label}_{key}": span(label, "quiet", key)
                  for label in ("warm", "end")
                  for key in ("fds", "maps", "rss", "rss_anon", "store_fds", "store_maps")},
        "per_worker": per_worker, "shm": shm,
    }


# ----------------------------------------------------------------------------------- test
class Terminated(BaseException):
    pass


def _terminated(signum: int, frame: Any) -> None:
    raise Terminated(f"signal {signum}")


@pytest.mark.timeout(SECONDS + 180)
def test_soak(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    specs: list[Spec] = [
        (kind, str(tmp_path / f"soak-{tag}-{i}.bin") if kind == "mmap" else f"soak-{tag}-{i}")
        for i, kind in enumerate(KINDS)
    ]
    bases = [shm_base_of(s) for s in specs]
    writers_max = min(L.N_WRITERS, 2 * WORKERS)  # a worker's writer and its child's
    waiters_max = min(L.N_WAITERS, WORKERS * (READERS_MAX + 2) + WORKERS)
    # control block, two data generations, two bases, a journal per writer slot (two while
    # one is replaced), a semaphore per waiter slot ever claimed at once
    per_shm = 1 + 2 + 2 + 2 * writers_max + waiters_max
    shm_bound = sum(per_shm if kind == "shm" else waiters_max for kind in KINDS)
    sidecar_bound = sum(1 + 1 + 2 + 2 + 2 * writers_max for kind in KINDS if kind == "mmap")

    ours0, total0 = shm_counts(bases)
    assert ours0 == 0
    for spec in specs:
        create_spec(spec, 64 << 10).close()

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    # A SIGTERM (a shared machine's cleanup) must still run the cleanup below.
    sigterm = signal.signal(signal.SIGTERM, _terminated)
    procs = [ctx.Process(target=worker_main,
                         args=(q, k, SEED + k, specs, str(tmp_path), SECONDS))
             for k in range(WORKERS)]
    results: dict[int, dict[str, Any]] = {}
    failures: list[str] = []
    peak_ours = peak_total = peak_sidecar = 0
    series: list[tuple[float, int, int]] = []
    try:
        for p in procs:
            p.start()
        t0 = time.monotonic()
        deadline = t0 + SECONDS + 120
        last = -1.0
        gone: set[int] = set()  # reported, or died without a report
        while len(gone) < WORKERS:
            ours, total = shm_counts(bases)
            peak_ours, peak_total = max(peak_ours, ours), max(peak_total, total)
            peak_sidecar = max(peak_sidecar, sidecar_count(specs))
            now = time.monotonic()
            if now - last >= 1.0:
                series.append((round(now - t0, 1), ours, total))
                last = now
            if now > deadline:
                failures.append(f"workers {sorted(set(range(WORKERS)) - gone)}"
                                " never reported (a hang)")
                break
            dead = [k for k, p in enumerate(procs) if p.exitcode not in (None, 0)]
            try:
                wid, status, value = q.get(timeout=0.25)
            except queue.Empty:
                for k in dead:  # died without a report (a crash: SIGBUS, SIGSEGV, ...)
                    if k not in gone:
                        gone.add(k)
                        failures.append(f"worker {k} died with exit code {procs[k].exitcode}"
                                        f" (seen {now - t0:.0f} s into the run)")
                continue
            gone.add(wid)
            if status == "ok":
                results[wid] = value
            else:
                failures.append(f"worker {wid} crashed:\n{value}")
        for p in procs:
            p.join(30)
            if p.exitcode is None:
                failures.append(f"worker pid {p.pid} did not exit after reporting")
                p.kill()
                p.join()
        ours_run_end, _ = shm_counts(bases)
        sidecar_run_end = sidecar_count(specs)
        # Cleanup through the API: unlink every resource from a fresh handle (after a
        # check of what the workers left: every resource must still open and verify).
        for spec in specs:
            try:
                h = open_spec(spec)
            except shmstore.ResourceNotFound:
                continue
            except Exception:
                failures.append(f"{spec} does not open after the run:\n"
                                + traceback.format_exc())
                R._namespace(spec[0], spec[1] if spec[0] == "shm" else None,
                             spec[1] if spec[0] == "mmap" else None, 0o600).unlink_all()
                continue
            try:
                h._check()
            except Exception:
                failures.append(f"{spec} after the run:\n" + traceback.format_exc())
            finally:
                h.unlink()
                h.close()
        ours_final, total_final = shm_counts(bases)
        left = sorted(e for e in os.listdir("/dev/shm")
                      if any(e.startswith(b + "_") or e.startswith("sem." + b + "_")
                             for b in bases))
        sidecar_final = sidecar_count(specs)
    finally:
        signal.signal(signal.SIGTERM, sigterm)
        for p in procs:
            if p.exitcode is None:
                p.kill()
                p.join()
        q.close()
        q.join_thread()
        for spec in specs:  # whatever the test left, by name
            kind, key = spec
            R._namespace(kind, key if kind == "shm" else None, key if kind == "mmap" else None,
                         0o600).unlink_all()

    shm = {"baseline_ours": ours0, "baseline_total": total0, "peak_ours": peak_ours,
           "peak_total": peak_total, "bound_ours": shm_bound, "at_run_end_ours": ours_run_end,
           "final_ours": ours_final, "final_total": total_final, "left": left,
           "peak_sidecar": peak_sidecar, "sidecar_bound": sidecar_bound,
           "sidecar_at_run_end": sidecar_run_end, "sidecar_final": sidecar_final,
           "series": series}
    done = [results[k] for k in sorted(results)]
    summary = summarize(done, shm) if done else {"shm": shm}
    if REPORT:
        Path(REPORT).write_text(json.dumps({"summary": summary, "failures": failures,
                                            "errors": [e for r in done for e in r["errors"]]},
                                           indent=1))
    brief = json.dumps({k: v for k, v in summary.items()
                        if k not in ("per_worker", "outcomes", "error_kinds")}, indent=None)

    errors = [e for r in done for e in r["errors"]]
    kinds = summary.get("error_kinds", {})
    assert not failures and not errors, (
        "\n".join(failures) + f"\n{sum(kinds.values())} unexpected errors in the workers"
        + "".join(f"\n  {n:6} x {k}" for k, n in list(kinds.items())[:15])
        + "\nthe first:\n" + "\n".join(errors[:3]) + f"\n{brief}")
    ok_kinds = {k.split(":")[0] for k, n in summary["outcomes"].items()
                if n and (k.endswith(":ok") or k.endswith(":READY")
                          or k.endswith(":child ok"))}
    # (cancel is rare enough to miss in a short run)
    missing = {k for k, w in OPS.items() if w > 0} - ok_kinds - {"cancel"}
    assert not missing, f"operations that never succeeded: {sorted(missing)}\n{brief}"
    for r in done:
        warm = next(s for s in r["samples"] if s["label"] == "warm")["quiet"]
        for s in r["samples"]:
            q_ = s["quiet"]
            where = f"worker {r['wid']} (seed {r['seed']}) at {s['label']} t={s['t']} s"
            assert q_["store_fds"] == 0, f"{where}: descriptors of shmstore objects left: {q_}"
            assert q_["store_maps"] == 0, f"{where}: mappings of shmstore objects left: {q_}"
            assert q_["fds"] <= warm["fds"] + FD_SLACK, f"{where}: fds grew: {warm} -> {q_}"
            assert q_["maps"] <= warm["maps"] + MAP_SLACK, f"{where}: maps grew: {warm} -> {q_}"
            assert q_["rss"] <= warm["rss"] + RSS_SLACK, f"{where}: RSS grew: {warm} -> {q_}"
    assert peak_ours <= shm_bound, f"/dev/shm: {peak_ours} entries > bound {shm_bound}\n{brief}"
    assert peak_sidecar <= sidecar_bound, f"sidecars: {peak_sidecar} > {sidecar_bound}\n{brief}"
    assert ours_final == 0, f"/dev/shm entries left after unlinking every resource: {left}"
    assert sidecar_final == 0, f"mmap files left after unlinking every resource: {brief}"
    if not os.environ.get("SHMSTORE_TEST_SHARED_MACHINE"):
        assert total_final == total0, f"/dev/shm did not return to its baseline: {brief}"
