"""Run the benchmark suite: ``python -m benchmarks [--quick] [--json FILE] [--only NAME]``.

Prints the machine, one table per scenario, and a summary of the SPEC.md performance
targets; ``--json`` also writes everything (machine, parameters, rows, raw samples) to a
file. Exit status: 0 when every selected scenario ran and nothing the run created is left
behind; 1 otherwise (the tables of the scenarios that ran are still printed).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from .harness import Config, Names, Table, machine, machine_lines, shm_entries

SCENARIOS: dict[str, str] = {
    "stream": "benchmarks.stream",
    "numpy": "benchmarks.numpy_consumer",
    "latency": "benchmarks.latency",
    "perop": "benchmarks.perop",
    "frag": "benchmarks.fragmentation",
    "fanout": "benchmarks.fanout",
    "death": "benchmarks.death",
}


def _rows(tables: dict[str, list[Table]], scenario: str) -> list[dict[str, Any]]:
    return [r for t in tables.get(scenario, []) for r in t.rows]


def targets(tables: dict[str, list[Table]]) -> Table:
    """The SPEC.md performance targets, judged on this run's figures."""
    rows: list[dict[str, Any]] = []

    def add(target: str, measured: str, ok: bool | None) -> None:
        rows.append({"target": target, "measured": measured, "met": ok})

    st = {r["variant"]: r for r in _rows(tables, "stream") if "gbps" in r}
    shm = st.get("shmstore read_at")
    if shm:
        for base in ("shm ring, 2 posix_ipc sems", "faster-fifo"):
            b = st.get(base)
            if b:
                ratio = shm["gbps"] / b["gbps"]
                add(f"stream read_at >= {base}",
                    f"{shm['gbps']:.2f} vs {b['gbps']:.2f} GB/s = {ratio:.2f}x", ratio >= 1.0)
            else:
                add(f"stream read_at >= {base}", "baseline not measured (not installed)", None)
    for r in _rows(tables, "numpy"):
        if r["variant"] == "shmstore view, streaming":
            add(f"numpy {r['kernel']}, streaming view >= 0.8x in-process",
                f"{r['vs_inproc']:.2f}x bytearray, {r['vs_numpy']:.2f}x numpy array"
                f" ({r['gbps']:.2f} GB/s)", r["vs_inproc"] >= 0.8)
    for r in _rows(tables, "latency"):
        if r["mechanism"].startswith("shmstore"):
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


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally: names get released


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer repeats and rounds, fragmentation up to 10**5 (~1 minute)")
    ap.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    ap.add_argument("--only", metavar="NAME", action="append",
                    help=f"run only these scenarios (repeatable or comma separated):"
                         f" {', '.join(SCENARIOS)}")
    args = ap.parse_args(argv)
    selected = list(SCENARIOS)
    if args.only:
        selected = [n.strip() for o in args.only for n in o.split(",") if n.strip()]
        unknown = [n for n in selected if n not in SCENARIOS]
        if unknown:
            ap.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    cfg = Config(quick=args.quick)
    signal.signal(signal.SIGTERM, _terminate)

    started = datetime.datetime.now(datetime.UTC)
    m = machine()
    mode = "quick" if cfg.quick else "full"
    print(f"shmstore benchmarks ({mode}), {started:%Y-%m-%d %H:%M} UTC")
    print("\n".join(machine_lines(m)))
    if m["loadavg_at_start"][0] > 0.5:
        print(f"warning: the machine is busy (load average {m['loadavg_at_start']}): figures"
              " will be noisy. Do not run the test suite at the same time: its leak check"
              " removes every new shmstore segment, including this run's.")
    print(flush=True)
    shm_before = shm_entries()

    names = Names()
    tables: dict[str, list[Table]] = {}
    errors: dict[str, str] = {}
    durations: dict[str, float] = {}
    t_run = time.perf_counter()
    try:
        for scenario in selected:
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
                print(f"   ({durations[scenario]:.1f} s)\n", flush=True)
    except BaseException:
        names.cleanup()
        left = names.leftovers()
        print(f"interrupted; released what this run created; left behind:"
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
    print(f"created {names.created} named objects (bench-<pid>-<n>); left behind:"
          f" {', '.join(left) if left else 'none'}")
    if others:
        print(f"note: new shmstore entries in /dev/shm since the start, not attributable"
              f" through the public API (another process's, or debris of this run's if"
              f" something else removed their control blocks): {', '.join(others)}")
    print(f"total {total:.1f} s; load average at the end {load_end}")

    if args.json:
        doc = {
            "started_utc": started.isoformat(timespec="seconds"),
            "mode": mode,
            "argv": sys.argv,
            "pid": os.getpid(),
            "names": f"bench-{os.getpid()}-<n>",
            "machine": m,
            "loadavg_at_end": load_end,
            "duration_s": {"total": total, **durations},
            "scenarios": {k: [t.to_json() for t in v] for k, v in tables.items()},
            "targets": summary.to_json(),
            "errors": errors,
            "left_behind": left,
            "other_new_dev_shm_entries": others,
        }
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        print(f"wrote {path}")
    if errors:
        print(f"FAILED scenarios: {', '.join(errors)}", file=sys.stderr)
    return 1 if errors or left else 0


if __name__ == "__main__":
    sys.exit(main())
