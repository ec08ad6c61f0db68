"""Run the benchmark suite: ``shmstore bench`` (also ``python -m shmstore.bench`` and, from a
checkout, ``python -m benchmarks``).

Prints the machine, the peers found, one table per scenario (progress on stderr), and a
summary of the SPEC.md performance targets; ``--json`` also writes everything (machine,
parameters, rows, raw samples) to a file and ``--plot`` draws the main figures (matplotlib).
Exit status: 0 when every selected scenario ran and nothing the run created is left
behind; 1 otherwise (the tables of the scenarios that ran are still printed); 2 for a usage
error.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from multiprocessing import resource_tracker
from pathlib import Path
from types import FrameType
from typing import Any

from .harness import (
    PEERS,
    Config,
    MiB,
    Names,
    Table,
    human,
    machine,
    machine_lines,
    parse_size,
    peer,
    shm_entries,
    skipped,
)
from .stream import CHUNKS, QUICK_CHUNKS, QUICK_SIZE, SIZE

SCENARIOS: dict[str, str] = {
    "stream": "shmstore.bench.stream",
    "numpy": "shmstore.bench.numpy_consumer",
    "latency": "shmstore.bench.latency",
    "perop": "shmstore.bench.perop",
    "frag": "shmstore.bench.fragmentation",
    "fanout": "shmstore.bench.fanout",
    "pool": "shmstore.bench.pool",
    "firstbyte": "shmstore.bench.firstbyte",
    "death": "shmstore.bench.death",
    "remote": "shmstore.bench.remote",
    "log": "shmstore.bench.logbench",
}
NEEDS: dict[str, str] = {"numpy": "numpy"}  # scenario -> optional package it cannot run without
# optional peers each scenario compares with (missing ones are skipped inside the scenario)
OPTIONAL: dict[str, tuple[str, ...]] = {"stream": ("faster_fifo", "iceoryx2"),
                                        "latency": ("iceoryx2",), "firstbyte": ("ray",),
                                        "remote": ("aiohttp",), "log": ("lmdb",)}
MIN_CHUNK, MAX_CHUNK, MIN_SIZE = 4 << 10, 256 * MiB, 4 * MiB
PLOTTED = ("stream", "latency", "fanout", "pool", "firstbyte")  # the scenarios --plot draws


def _rows(tables: dict[str, list[Table]], scenario: str) -> list[dict[str, Any]]:
    return [r for t in tables.get(scenario, []) for r in t.rows]


def targets(tables: dict[str, list[Table]]) -> Table:
    """The SPEC.md performance targets, judged on this run's figures."""
    rows: list[dict[str, Any]] = []

    def add(target: str, measured: str, ok: bool | None) -> None:
        rows.append({"target": target, "measured": measured, "met": ok})

    st = {(r["variant"], r["chunk"]): r for r in _rows(tables, "stream") if "gbps" in r}
    for chunk in sorted({c for _, c in st}):
        shm = st.get(("shmstore read_at", chunk))
        if not shm:
            continue
        for base in ("shm ring, 2 posix_ipc sems", "faster-fifo"):
            b = st.get((base, chunk))
            label = f"stream read_at >= {base} ({human(chunk)} chunks)"
            if b:
                ratio = shm["gbps"] / b["gbps"]
                add(label, f"{shm['gbps']:.2f} vs {b['gbps']:.2f} GB/s = {ratio:.2f}x",
                    ratio >= 1.0)
            else:
                add(label, "baseline not measured (not installed)", None)
    for r in _rows(tables, "numpy"):
        if r["variant"] == "shmstore view, streaming":
            add(f"numpy {r['kernel']}, streaming view >= 0.8x in-process",
                f"{r['vs_inproc']:.2f}x bytearray, {r['vs_numpy']:.2f}x numpy array"
                f" ({r['gbps']:.2f} GB/s)", r["vs_inproc"] >= 0.8)
    for r in _rows(tables, "latency"):
        if r["mechanism"].startswith("shmstore") and "p50_vs_sem" in r:
            add(f"wake latency {r['placement']} <= 1.5x semaphore",
                f"p50 {r['p50_us']:.1f} us = {r['p50_vs_sem']:.2f}x"
                f" (p99 {r['p99_vs_sem']:.2f}x)", r["p50_vs_sem"] <= 1.5)
    for r in _rows(tables, "perop"):
        if r.get("target_ns") is not None:
            add(f"{r['op']} < {r['target_ns'] / 1000:g} us",
                f"{r['median_ns']:.0f} ns (p99 {r['p99_ns']:.0f})", r["meets"])
    fr = _rows(tables, "frag")
    if fr:
        last = fr[-1]
        for key, label in (("wait", "wait_range"), ("contains", "contains_range"),
                           ("write", "write_at 4 KiB")):
            g = last[f"{key}_growth"]
            add(f"{label} flat to {last['ranges']:,} ranges (<= 1.5x of {fr[0]['ranges']})",
                f"{fr[0][f'{key}_ns']:.0f} -> {last[f'{key}_ns']:.0f} ns = {g:.2f}x", g <= 1.5)
    for r in _rows(tables, "death"):
        add("writer death seen by waiters < 1 s",
            f"median {r['median']:.0f} ms, max {r['max']:.0f} ms", r["max"] < 1000)
    fo = {r["readers"]: r for r in _rows(tables, "fanout")}
    if 8 in fo and 1 in fo:
        r8 = fo[8]
        add("fan-out 8 readers: <= 1.5 wakes per reader per chunk",
            f"{r8['wakes_per_chunk']:.2f} wakes/chunk", r8["wakes_per_chunk"] <= 1.5)
        add("fan-out 8 readers: reader CPU per MiB <= 1.5x of 1 reader",
            f"{r8['reader_cpu_us_per_mib']:.0f} vs {fo[1]['reader_cpu_us_per_mib']:.0f} us/MiB"
            f" = {r8['cpu_per_mib_vs_1']:.2f}x", r8["cpu_per_mib_vs_1"] <= 1.5)
    return Table("targets", "SPEC.md performance targets, judged on this run",
                 [("target", "target"), ("measured", "measured"), ("met", "met")], rows,
                 notes=["flatness and fan-out thresholds (1.5x) are this suite's reading of"
                        " 'flat' and 'no thundering herd'"])


class _Terminated(BaseException):
    """SIGTERM: unwinds through every finally, so the names get released."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise _Terminated(signum)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        out = tuple(parse_size(t) for t in text.split(",") if t.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not out:
        raise argparse.ArgumentTypeError("no chunk size given")
    for c in out:
        if not MIN_CHUNK <= c <= MAX_CHUNK:
            raise argparse.ArgumentTypeError(
                f"chunk size {human(c)} outside {human(MIN_CHUNK)} .. {human(MAX_CHUNK)}")
    return tuple(sorted(set(out)))


def _size(text: str) -> int:
    try:
        n = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if n < MIN_SIZE:
        raise argparse.ArgumentTypeError(f"--size must be at least {human(MIN_SIZE)}")
    return n


def build_parser(prog: str = "shmstore bench") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=prog,
        description="Measure shmstore against the alternatives on this machine, side by side"
                    " in one process tree, and print the ratios.",
        epilog="Optional peers (faster-fifo, numpy, matplotlib, lmdb: pip install"
               " 'shmstore[bench]'; iceoryx2, ray) are measured where installed and skipped,"
               " never faked, where not. Do not run the benchmarks and the test suite at the"
               " same time.")
    ap.add_argument("--quick", action="store_true",
                    help="fewer repeats, smaller sizes (64 MiB streams, a 256 MiB first-byte"
                         " object, fragmentation up to 10**5): well under a minute")
    ap.add_argument("--only", metavar="NAMES", action="append",
                    help=f"run only these scenarios (comma separated or repeated):"
                         f" {', '.join(SCENARIOS)}")
    ap.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    ap.add_argument("--plot", metavar="FILE.png",
                    help="also draw the main figures into FILE.png (needs matplotlib)")
    ap.add_argument("--chunks", metavar="SIZES", type=_sizes,
                    help="chunk sizes of the stream scenario, e.g. 64K,1M,4M (default"
                         f" {','.join(map(human, CHUNKS))}; --quick"
                         f" {','.join(map(human, QUICK_CHUNKS))})".replace(" KiB", "K")
                         .replace(" MiB", "M"))
    ap.add_argument("--size", metavar="SIZE", type=_size,
                    help="bytes each streaming run moves in the stream, numpy, fanout and"
                         " pool scenarios, e.g. 512M (default 256M, fanout 128M; --quick"
                         " 64M); a multiple of every chunk size")
    return ap


def run_cli(argv: list[str], *, prog: str = "shmstore bench") -> int:
    """Parse ``argv`` (the arguments after ``shmstore bench``), run the selected scenarios
    and return the exit status: 0 ok, 1 a scenario failed or something was left behind,
    2 usage error (130 / 143 when interrupted by SIGINT / SIGTERM)."""
    ap = build_parser(prog)
    try:
        args = ap.parse_args(argv)
        selected = list(SCENARIOS)
        if args.only:
            selected = [n.strip() for o in args.only for n in o.split(",") if n.strip()]
            unknown = [n for n in selected if n not in SCENARIOS]
            if unknown:
                ap.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
            selected = list(dict.fromkeys(selected))
        chunks = args.chunks or (QUICK_CHUNKS if args.quick else CHUNKS)
        size = args.size or (QUICK_SIZE if args.quick else SIZE)
        bad = [c for c in chunks if size % c]
        if bad:
            what = "--size" if args.size else "the stream size"
            ap.error(f"{what} {human(size)} is not a multiple of the chunk size(s)"
                     f" {', '.join(map(human, bad))} (set --size)")
        if args.plot and not set(selected) & set(PLOTTED):
            ap.error(f"--plot draws {', '.join(PLOTTED)}: --only selects none of them")
    except SystemExit as exc:  # --help, or a usage error argparse has already printed
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    if args.plot and not peer("matplotlib"):
        print(f"{prog}: --plot needs matplotlib, which is not installed"
              " (pip install 'shmstore[bench]' or pip install matplotlib)", file=sys.stderr)
        return 1
    cfg = Config(quick=args.quick, chunks=args.chunks, size=args.size)
    in_main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _terminate) if in_main else None
    # multiprocessing.shared_memory starts a resource tracker process on first use: stop it
    # at the end if this run started it (reaped here, not left to whoever adopts orphans)
    tracker: Any = getattr(resource_tracker, "_resource_tracker", None)
    tracker_was_running = getattr(tracker, "_pid", None) is not None
    try:
        return _run(args, cfg, selected)
    except KeyboardInterrupt:
        return 130
    except _Terminated as exc:
        return 128 + int(exc.args[0])
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, old)
        if not tracker_was_running and getattr(tracker, "_pid", None) is not None:
            with contextlib.suppress(Exception):
                tracker._stop()


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _peer_lines() -> list[str]:
    """What the run can compare with: always the standard library and posix_ipc; the
    optional peers where installed."""
    have = [f"{dist} {_version(dist)}" for mod, (dist, _) in PEERS.items() if peer(mod)]
    missing = [dist for mod, (dist, _) in PEERS.items() if not peer(mod)]
    lines = ["peers    multiprocessing (Pipe, Queue, shared_memory + Event), posix_ipc"
             + "".join(f", {h}" for h in have)]
    if missing:
        lines.append(f"missing  {', '.join(missing)}: skipped, not measured")
    return lines


def _run(args: argparse.Namespace, cfg: Config, selected: list[str]) -> int:
    started = datetime.datetime.now(datetime.UTC)
    m = machine()
    mode = "quick" if cfg.quick else "full"
    print(f"shmstore bench ({mode}), {started:%Y-%m-%d %H:%M} UTC")
    print("\n".join(machine_lines(m)))
    print("\n".join(_peer_lines()))
    if m["loadavg_at_start"][0] > 0.5:
        print(f"warning: the machine is busy (load average {m['loadavg_at_start']}): figures"
              " will be noisy. Do not run the test suite at the same time: its leak check"
              " removes every new shmstore segment, including this run's.")
    print(flush=True)
    shm_before = shm_entries()

    names = Names()
    tables: dict[str, list[Table]] = {}
    errors: dict[str, str] = {}
    not_run: dict[str, str] = {}
    durations: dict[str, float] = {}
    t_run = time.perf_counter()
    try:
        for scenario in selected:
            need = NEEDS.get(scenario)
            if need is not None and not peer(need):
                not_run[scenario] = skipped(need)
                print(f"== {scenario}: {not_run[scenario]}\n", flush=True)
                continue
            t0 = time.perf_counter()
            try:
                module = importlib.import_module(SCENARIOS[scenario])
                tables[scenario] = module.run(cfg, names)
            except Exception:
                errors[scenario] = traceback.format_exc()
                print(f"== {scenario}: FAILED\n{errors[scenario]}", flush=True)
            finally:
                names.cleanup()
                durations[scenario] = time.perf_counter() - t0
            for t in tables.get(scenario, []):
                print(t.render())
                print()
            if scenario in tables:
                print(f"   ({scenario}: {durations[scenario]:.1f} s)\n", flush=True)
    except BaseException:
        names.cleanup()
        left = names.leftovers()
        print(f"\ninterrupted; released what this run created; left behind:"
              f" {', '.join(left) if left else 'none'}", file=sys.stderr)
        raise
    finally:
        names.cleanup()
    left = names.leftovers()
    new_entries = sorted(shm_entries() - shm_before)
    left += [e for e in new_entries if e.startswith(("bench-", "sem.bench-"))]
    others = [e for e in new_entries if not e.startswith(("bench-", "sem.bench-"))]
    total = time.perf_counter() - t_run
    load_end = [round(x, 2) for x in os.getloadavg()]

    summary = targets(tables)
    if summary.rows:
        print(summary.render())
        print()
    failed_peers = sorted({PEERS[r["peer"]][0] for t in tables.values() for tb in t
                           for r in tb.rows if r.get("failed") and r.get("peer") in PEERS})
    measured_peers = sorted({PEERS[mod][0] for s in tables for mod in OPTIONAL.get(s, ())
                             if peer(mod)} - set(failed_peers))
    skipped_peers = sorted({PEERS[mod][0] for s in selected for mod in OPTIONAL.get(s, ())
                            if not peer(mod)} | {PEERS[NEEDS[s]][0] for s in not_run})
    if measured_peers:
        print(f"optional peers measured: {', '.join(measured_peers)}")
    if failed_peers:
        print(f"optional peers that failed (their rows say why): {', '.join(failed_peers)}")
    if skipped_peers:
        print(f"optional peers skipped (not installed): {', '.join(skipped_peers)}")
    print(f"created {names.created} named objects (bench-<pid>-<n>); left behind:"
          f" {', '.join(left) if left else 'none'}")
    if others:
        print(f"note: new shmstore entries in /dev/shm since the start, not attributable"
              f" through the public API (another process's, or debris of this run's if"
              f" something else removed their control blocks): {', '.join(others)}")
    print(f"total {total:.1f} s; load average at the end {load_end}")

    failed_output = False
    if args.json:
        doc = {
            "started_utc": started.isoformat(timespec="seconds"),
            "mode": mode,
            "argv": sys.argv,
            "config": {"chunks": list(cfg.chunks) if cfg.chunks else None, "size": cfg.size,
                       "only": selected},
            "pid": os.getpid(),
            "names": f"bench-{os.getpid()}-<n>",
            "machine": m,
            "loadavg_at_end": load_end,
            "duration_s": {"total": total, **durations},
            "scenarios": {k: [t.to_json() for t in v] for k, v in tables.items()},
            "targets": summary.to_json(),
            "errors": errors,
            "not_run": not_run,
            "peers": {"measured": measured_peers, "failed": failed_peers,
                      "skipped": skipped_peers},
            "left_behind": left,
            "other_new_dev_shm_entries": others,
        }
        path = Path(args.json)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
            print(f"wrote {path}")
        except OSError as exc:
            print(f"could not write {path}: {exc}", file=sys.stderr)
            failed_output = True
    if args.plot:
        from .plot import plot

        try:
            drawn = plot(tables, args.plot,
                         f"shmstore bench ({mode}), {started:%Y-%m-%d %H:%M} UTC,"
                         f" {m['cpu_model']}, {m['cores_online']} cores")
            print(f"wrote {args.plot} ({', '.join(drawn)})")
        except Exception as exc:
            print(f"could not plot to {args.plot}: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            failed_output = True
    if errors:
        print(f"FAILED scenarios: {', '.join(errors)}", file=sys.stderr)
    return 1 if errors or left or failed_output else 0
