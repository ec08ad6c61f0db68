"""The machinery every scenario shares.

* ``Config``: quick or full, the derived repeat counts, and the sizes asked for.
* ``parse_size`` / ``human``: ``64K`` <-> 65536.
* ``peer`` / ``peers``: which optional peers (faster-fifo, iceoryx2, ray, numpy,
  matplotlib) are installed; a missing one is skipped with a note, never faked.
* ``machine()``: what the figures were measured on.
* ``summarize`` / ``percentile``: medians and tails.
* ``run_children``: run functions in forked processes, collect their results, and kill and
  reap every child on any error or timeout (a benchmark never leaves a process behind).
* ``Names``: unique names ``bench-<pid>-<n>`` for shmstore resources, shared-memory logs and
  the baselines' POSIX semaphores and segments, and temporary directories on disk (with the
  on-disk logs inside them), released as soon as a measurement is done and verified gone at
  the end of the run.
* ``Table``: a printable, JSON-able result table.
* ``Progress``: a progress bar on stderr (redrawn in place on a terminal, one line per step
  otherwise); the tables go to stdout.

Clocks: ``time.perf_counter`` is ``CLOCK_MONOTONIC`` on Linux, one clock for every process,
so a start taken in a producer and an end taken in a consumer can be subtracted.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import multiprocessing
import multiprocessing.connection as mpc
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any, TextIO

import posix_ipc

import shmstore

CTX = multiprocessing.get_context("fork")
KiB = 1 << 10
MiB = 1 << 20
GB = 1e9  # throughput is reported in decimal GB/s, like SPEC.md's reference figures
PAGE = os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class Config:
    """``quick``: fewer repeats and smaller sizes. ``chunks``: the stream scenario's chunk
    sizes; ``size``: the bytes each streaming run moves (None: each scenario's default)."""

    quick: bool = False
    chunks: tuple[int, ...] | None = None
    size: int | None = None

    def reps(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def stream_size(self, full: int, quick: int) -> int:
        """The streaming size: ``--size`` when given, else ``full`` or ``quick``."""
        if self.size is not None:
            return self.size
        return quick if self.quick else full


_UNITS = {"": 1, "B": 1, "K": KiB, "KB": KiB, "KIB": KiB, "M": MiB, "MB": MiB, "MIB": MiB,
          "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30}


def parse_size(text: str) -> int:
    """``"64K"`` -> 65536, ``"1M"``/``"1MiB"`` -> 1048576, ``"4096"`` -> 4096 (binary units)."""
    t = text.strip().upper().replace("_", "")
    num = t.rstrip("KMGIB")
    unit = t[len(num):]
    if not num or unit not in _UNITS:
        raise ValueError(f"not a size: {text!r} (use e.g. 65536, 64K, 4M, 1G)")
    value = float(num) * _UNITS[unit]
    if value != int(value) or value <= 0:
        raise ValueError(f"not a positive whole number of bytes: {text!r}")
    return int(value)


def human(n: int) -> str:
    """65536 -> ``"64 KiB"``; sizes that are not whole KiB/MiB/GiB stay in bytes."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", KiB)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------------------------- peers
# import name -> (distribution name for the version, how to install it)
PEERS: dict[str, tuple[str, str]] = {
    "faster_fifo": ("faster-fifo", "pip install 'shmstore[bench]'"),
    "numpy": ("numpy", "pip install 'shmstore[bench]'"),
    "matplotlib": ("matplotlib", "pip install 'shmstore[bench]'"),
    "iceoryx2": ("iceoryx2", "pip install iceoryx2"),
    "ray": ("ray", "pip install ray"),
    "aiohttp": ("fsspec HTTP (aiohttp)", "pip install 'shmstore[bench]'"),
    "lmdb": ("lmdb", "pip install 'shmstore[bench]'"),
}


def peer(module: str) -> bool:
    """Is the optional peer ``module`` importable? (Looked up, not imported.)"""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def brief(exc: BaseException, limit: int = 160) -> str:
    """One line for a failed optional peer's row: the last line of a child's traceback
    (``ChildError``) or ``Type: message``."""
    text = str(exc).strip()
    if isinstance(exc, ChildError):
        # the exception's own lines: those after the traceback's last indented frame line
        lines = text.splitlines()
        last = max((i for i, ln in enumerate(lines) if ln.startswith("  ")), default=-1)
        text = " ".join(" ".join(lines[last + 1:]).split()) or type(exc).__name__
    else:
        text = f"{type(exc).__name__}: {' '.join(text.split())}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def skipped(module: str) -> str:
    """The note for a peer that is not installed."""
    dist, how = PEERS.get(module, (module, f"pip install {module}"))
    return f"{dist} is not installed: skipped, not measured ({how})"


# ---------------------------------------------------------------------------------- machine
def _first(path: str, key: str) -> str | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _first_line(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.readline().strip()
    except OSError:
        return None


def _version(module: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    """Ask git about the checkout the imported ``shmstore`` comes from."""
    where = Path(shmstore.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    mem = _first("/proc/meminfo", "MemTotal")
    st = os.statvfs("/dev/shm")
    head = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--", "shmstore")
    return {
        "cpu_model": _first("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "cpu_mhz": _first("/proc/cpuinfo", "cpu MHz"),
        "cores_online": os.cpu_count(),
        "cores_usable": sorted(os.sched_getaffinity(0)),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": platform.release(),
        "hostname": socket.gethostname(),
        "mem_total": mem,
        "dev_shm_free_gib": round(st.f_bavail * st.f_frsize / (1 << 30), 1),
        "page_size": PAGE,
        "packages": {p: _version(p) for p in
                     ("shmstore", "posix_ipc", "sortedcontainers", "numpy", "faster-fifo",
                      "iceoryx2", "ray", "matplotlib", "lmdb")},
        "loadavg_at_start": [round(x, 2) for x in load],
        "transparent_hugepage_shmem": _first_line(
            "/sys/kernel/mm/transparent_hugepage/shmem_enabled"),
        "shmstore_commit": None if head is None else head + ("+dirty" if dirty else ""),
        "shmstore_path": str(Path(shmstore.__file__).resolve().parent),
    }


def machine_lines(m: dict[str, Any]) -> list[str]:
    pk = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    return [
        f"cpu      {m['cpu_model']} ({m['cores_online']} cores online,"
        f" usable {m['cores_usable']})",
        f"python   {m['python']}    kernel {m['kernel']}    host {m['hostname']}",
        f"memory   {m['mem_total']}    /dev/shm free {m['dev_shm_free_gib']} GiB",
        f"packages {pk}",
        f"shmstore {m['shmstore_path']} commit {m['shmstore_commit']}"
        f"    load average {m['loadavg_at_start']}"
        f"    THP shmem {m['transparent_hugepage_shmem']}",
    ]


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def pin(cpu: int | None) -> None:
    """Pin the calling process to ``cpu`` (None: leave it alone)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


# ---------------------------------------------------------------------------------- stats
def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), ``q`` in [0, 100]."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "min": min(values) if values else math.nan,
        "max": max(values) if values else math.nan,
        "mean": sum(values) / len(values) if values else math.nan,
    }


def usage() -> tuple[float, int, int, int]:
    """This process's CPU seconds (user + system), voluntary and involuntary context
    switches, and minor page faults so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime, ru.ru_nvcsw, ru.ru_nivcsw, ru.ru_minflt


def usage_since(before: tuple[float, int, int, int]) -> dict[str, float]:
    cpu, vol, invol, flt = usage()
    return {"cpu_s": cpu - before[0], "nvcsw": vol - before[1], "nivcsw": invol - before[2],
            "minflt": flt - before[3]}


# ---------------------------------------------------------------------------------- children
class ChildError(RuntimeError):
    """A benchmark child process raised, died or timed out."""


def _child_entry(fn: Callable[..., Any], args: tuple[Any, ...], conn: Any) -> None:
    try:
        result = fn(*args)
    except BaseException:
        conn.send(("err", traceback.format_exc()))
    else:
        conn.send(("ok", result))
    finally:
        conn.close()


def run_children(specs: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]],
                 timeout: float = 120.0) -> list[Any]:
    """Run ``fn(*args)`` for each spec in its own forked process, concurrently; return the
    results in order. Raises ``ChildError`` if any child raises, dies or overruns
    ``timeout``; every child is killed and reaped before this returns or raises."""
    procs: list[Any] = []
    conns: list[Any] = []
    try:
        for fn, args in specs:
            rx, tx = CTX.Pipe(duplex=False)
            p = CTX.Process(target=_child_entry, args=(fn, args, tx), daemon=True)
            p.start()
            tx.close()
            procs.append(p)
            conns.append(rx)
        results: list[Any] = [None] * len(specs)
        pending = set(range(len(specs)))
        deadline = time.monotonic() + timeout
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildError(f"{len(pending)} child process(es) still running after"
                                 f" {timeout} s")
            waitables = [conns[i] for i in pending] + [procs[i].sentinel for i in pending]
            mpc.wait(waitables, timeout=left)
            for i in sorted(pending):
                ready = conns[i].poll()
                if not ready and not procs[i].is_alive():
                    procs[i].join()
                    # it may have reported and exited between the two checks above
                    ready = conns[i].poll()
                    if not ready:
                        raise ChildError(f"child {i} ({specs[i][0].__name__}) exited with"
                                         f" code {procs[i].exitcode} before reporting")
                if ready:
                    try:
                        status, value = conns[i].recv()
                    except EOFError:
                        status, value = "err", f"exited with code {procs[i].exitcode}"
                    if status != "ok":
                        raise ChildError(f"child {i} ({specs[i][0].__name__}) failed:\n{value}")
                    results[i] = value
                    pending.discard(i)
        for p in procs:
            p.join(timeout=30)
        return results
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(timeout=30)
        for c in conns:
            c.close()


# ---------------------------------------------------------------------------------- names
class Names:
    """Unique names for everything a run creates, and their cleanup.

    Resources are unlinked through the public API (``open(name).unlink()``), logs removed
    with ``shmstore.Log.remove`` (their files and their live indexes in shared memory); the
    baselines' semaphores and segments through posix_ipc; temporary directories with
    ``shutil.rmtree`` (after the logs registered inside them). ``release`` one name as soon
    as its measurement is over; ``cleanup`` (idempotent) releases whatever is left;
    ``leftovers`` lists names that still exist after it."""

    def __init__(self) -> None:
        self._n = 0
        self._resources: list[str] = []
        self._sems: list[str] = []
        self._segments: list[str] = []
        self._shms: dict[str, SharedMemory] = {}
        self._logs: list[str] = []  # shared-memory logs, by name
        self._log_dirs: list[str] = []  # logs on disk, by directory
        self._dirs: list[str] = []  # temporary directories

    def _next(self) -> str:
        self._n += 1
        return f"bench-{os.getpid()}-{self._n}"

    def resource(self) -> str:
        name = self._next()
        self._resources.append(name)
        return name

    def semaphore(self, initial: int = 0) -> str:
        """Create a POSIX semaphore (exclusively) and return its name."""
        name = "/" + self._next()
        self._sems.append(name)
        posix_ipc.Semaphore(name, posix_ipc.O_CREX, 0o600, initial).close()
        return name

    def segment(self, size: int) -> str:
        """Create a POSIX shared-memory segment of ``size`` bytes; return its name."""
        name = "/" + self._next()
        self._segments.append(name)
        shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, 0o600, size)
        shm.close_fd()
        return name

    def shared_memory(self, size: int) -> SharedMemory:
        """Create a ``multiprocessing.shared_memory`` segment of ``size`` bytes (its name:
        ``.name``); ``release(name)`` closes and unlinks it."""
        name = self._next()
        self._shms[name] = SharedMemory(name=name, create=True, size=size)
        return self._shms[name]

    def log(self) -> str:
        """A name for a shared-memory ``shmstore.Log`` (``Log.create(name)``); ``release``
        removes the log."""
        name = self._next()
        self._logs.append(name)
        return name

    def log_path(self, directory: str) -> str:
        """Register ``directory`` as an on-disk ``shmstore.Log`` (created later, by anyone);
        ``release(directory)`` removes it. Returns ``directory``."""
        self._log_dirs.append(directory)
        return directory

    def tempdir(self) -> str:
        """Create a temporary directory on disk (under ``$TMPDIR``); ``release`` deletes it
        with everything in it."""
        path = tempfile.mkdtemp(prefix=self._next() + "-")
        self._dirs.append(path)
        return path

    @staticmethod
    def _remove_log(name: str | None = None, path: str | None = None) -> bool:
        """Remove a log if it exists; True if nothing of it is left."""
        for _ in range(50):
            try:
                if path is not None:
                    shmstore.Log.remove(path=path)
                else:
                    shmstore.Log.remove(name)
            except shmstore.ResourceNotFound:
                return True
            except shmstore.WriterActive:
                time.sleep(0.02)  # a killed writer's lock goes with its last descriptor
                continue
            return True
        return False

    @staticmethod
    def _unlink_resource(name: str) -> bool:
        """Unlink the resource ``name`` if it exists; True if nothing of it is left."""
        for _ in range(50):
            try:
                r = shmstore.open(name)
            except shmstore.ResourceNotFound:
                return True
            except shmstore.CorruptResource:
                time.sleep(0.02)  # a creator killed mid-create; give it a moment, then retry
                continue
            try:
                r.unlink()
            finally:
                r.close()
            return True
        return False

    def release(self, name: str) -> None:
        if name in self._resources:
            if self._unlink_resource(name):
                self._resources.remove(name)
        elif name in self._sems:
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_semaphore(name)
            self._sems.remove(name)
        elif name in self._segments:
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_shared_memory(name)
            self._segments.remove(name)
        elif name in self._shms:
            shm = self._shms.pop(name)
            shm.close()
            with contextlib.suppress(FileNotFoundError):
                shm.unlink()  # also unregisters it from multiprocessing's resource tracker
        elif name in self._logs:
            if self._remove_log(name=name):
                self._logs.remove(name)
        elif name in self._log_dirs:
            if self._remove_log(path=name):
                self._log_dirs.remove(name)
        elif name in self._dirs:
            # the logs inside first: their live indexes are in shared memory, not in here
            for d in [d for d in self._log_dirs if d.startswith(name + os.sep)]:
                self.release(d)
            shutil.rmtree(name, ignore_errors=True)
            if not os.path.exists(name):
                self._dirs.remove(name)

    def release_all(self, names: Iterable[str]) -> None:
        for n in list(names):
            self.release(n)

    @contextlib.contextmanager
    def scope(self) -> Iterator[list[str]]:
        """Names appended to the yielded list are released on exit, even on error."""
        made: list[str] = []
        try:
            yield made
        finally:
            self.release_all(made)

    def cleanup(self) -> None:
        self.release_all(self._resources + self._sems + self._segments + list(self._shms)
                         + self._logs + self._log_dirs + self._dirs)

    def leftovers(self) -> list[str]:
        """Names this run created that still exist (should be empty after ``cleanup``)."""
        left = list(self._shms)
        for name in self._resources:
            try:
                shmstore.open(name).close()
            except shmstore.ResourceNotFound:
                continue
            except shmstore.StorageError:
                pass
            left.append(name)
        for name in self._logs:
            try:
                shmstore.Log.open(name).close()
            except shmstore.ResourceNotFound:
                continue
            except shmstore.StorageError:
                pass
            left.append(name)
        left += [d for d in self._log_dirs + self._dirs if os.path.lexists(d)]
        left += [n for n in self._sems if os.path.exists(f"/dev/shm/sem.{n[1:]}")]
        left += [n for n in self._segments if os.path.exists(f"/dev/shm/{n[1:]}")]
        return left

    @property
    def created(self) -> int:
        return self._n


def shm_entries() -> set[str]:
    """Entries of /dev/shm a run could leave: shmstore's and this suite's baselines'."""
    try:
        names = os.listdir("/dev/shm")
    except FileNotFoundError:
        return set()
    return {e for e in names if "shmstore" in e or e.startswith(("bench-", "sem.bench-"))}


# ---------------------------------------------------------------------------------- tables
def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.0f}"
        if a >= 10:
            return f"{v:.1f}"
        if a >= 0.1:
            return f"{v:.2f}"
        return f"{v:.3f}"
    return str(v)


@dataclass
class Table:
    """One result table: ``columns`` are (key, header) pairs; rows are dicts keyed by them
    (rows may carry more keys, which go to the JSON only)."""

    scenario: str
    title: str
    columns: list[tuple[str, str]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        heads = [h for _, h in self.columns]
        cells = [[fmt(r.get(k)) for k, _ in self.columns] for r in self.rows]
        widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
                  for i, h in enumerate(heads)]

        def line(vals: Sequence[str]) -> str:
            first = vals[0].ljust(widths[0])
            rest = [v.rjust(w) for v, w in zip(vals[1:], widths[1:], strict=True)]
            return "  ".join([first, *rest]).rstrip()

        out = [f"== {self.title}"]
        if self.params:
            out.append("   " + ", ".join(f"{k}={v}" for k, v in self.params.items()))
        out.append(line(heads))
        out.append(line(["-" * w for w in widths]))
        out += [line(c) for c in cells]
        out += [f"   note: {n}" for n in self.notes]
        return "\n".join(out)

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "title": self.title, "params": self.params,
                "columns": self.columns, "rows": self.rows, "notes": self.notes}


def log(msg: str) -> None:
    sys.stdout.flush()
    print(f"  .. {msg}", file=sys.stderr, flush=True)


class Progress:
    """A progress bar for one scenario on stderr: ``step(what)`` before each unit of work,
    ``close()`` (or the ``with`` block's end) after the last. On a terminal the bar is
    redrawn in place; otherwise (a log file, CI) each step is one line."""

    WIDTH = 24

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self.stream = sys.stderr if stream is None else stream
        self.tty = self.stream.isatty()
        self.t0 = time.perf_counter()
        self._what = ""
        self._closed = False

    def _bar(self) -> str:
        n = min(self.done, self.total)
        fill = n * self.WIDTH // self.total
        return (f"  {self.label} [{'#' * fill}{'.' * (self.WIDTH - fill)}]"
                f" {100 * n // self.total:3d}% {n}/{self.total}"
                f" {time.perf_counter() - self.t0:5.1f} s")

    def step(self, what: str) -> None:
        """The next unit of work (``what``) starts; the previous one is done."""
        if self._what:
            self.done += 1
        self._what = what
        sys.stdout.flush()
        if self.tty:
            line = f"{self._bar()}  {what}"
            cols = 200
            with contextlib.suppress(OSError):
                cols = os.get_terminal_size(self.stream.fileno()).columns
            self.stream.write("\r" + line[:max(cols - 1, 20)] + "\x1b[K")
        else:
            self.stream.write(f"  .. {self.label} [{self.done + 1}/{self.total}] {what}\n")
        self.stream.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._what:
            self.done += 1
        if self.tty:
            self.stream.write("\r" + self._bar() + "\x1b[K\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
