"""The ``shmstore`` command (also ``python -m shmstore``): ``ls``, ``inspect``, ``gc`` and
``demo``. (``cat`` and ``bench`` are still to come: issue #4.)

Exit status: 0 on success, 1 when shmstore reported an error, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from . import open as open_resource
from .errors import StorageError
from .inventory import collect, list_resources


def _ls(args: argparse.Namespace) -> int:
    infos = list_resources(args.dir)
    if args.json:
        rows = []
        for i in infos:
            row = dataclasses.asdict(i)
            row["objects"] = list(i.objects)
            row["coverage"] = i.coverage
            rows.append(row)
        print(json.dumps(rows))
        return 0
    head = ("name", "backend", "status", "size", "coverage", "writers", "handles", "waiters")
    table = [head]
    for i in infos:
        cov = "-" if i.coverage is None else f"{100 * i.coverage:.1f}%"
        table.append((i.name, i.backend, i.status + (f" ({i.problem})" if i.problem else ""),
                      f"{i.length:,}", cov, str(i.writers), str(i.handles), str(i.waiters)))
    widths = [max(len(r[c]) for r in table) for c in range(len(head))]
    for r in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    if not infos:
        print("(no shmstore resources)")
    return 0


def _gc(args: argparse.Namespace) -> int:
    removed = collect(dry_run=args.dry_run, abandoned=args.abandoned, corrupt=args.corrupt,
                      dirs=args.dir)
    verb = "would remove" if args.dry_run else "removed"
    for path in removed:
        print(f"{verb} {path}")
    print(f"{verb} {len(removed)} object(s)")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    if args.path:
        r = open_resource(path=args.path, backend="mmap")
    else:
        r = open_resource(args.name)
    with r:
        ranges = r.ranges()
        covered = sum(e - s for s, e in ranges)
        info = {
            "name": r.name,
            "path": r.path,
            "backend": r.backend,
            "status": repr(r.status),
            "capacity": r.capacity,
            "covered_bytes": covered,
            "ranges": len(ranges),
            "extent": ranges[-1][1] if ranges else 0,
            "writers_alive": r.writers_alive(),
        }
    if args.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            print(f"{k:>14}: {v}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return demo_main(args.rest)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="shmstore", description="Inspect shmstore resources.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ls", help="every resource on this machine, with its status")
    p.add_argument("--dir", action="append", default=[],
                   help="also list mmap resources in this directory (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON array")
    p.set_defaults(fn=_ls)
    p = sub.add_parser("gc", help="remove what no live process can use any more")
    p.add_argument("--dry-run", action="store_true", help="only print what would go")
    p.add_argument("--abandoned", action="store_true",
                   help="also remove active resources with no writer and no open handle")
    p.add_argument("--corrupt", action="store_true",
                   help="also remove invalid control blocks (damaged, other format version)"
                        " that no process holds")
    p.add_argument("--dir", action="append", default=[],
                   help="also collect mmap sidecars and stale temps in this directory")
    p.set_defaults(fn=_gc)
    p = sub.add_parser("inspect", help="status, size and coverage of one resource")
    p.add_argument("name", nargs="?", help="resource name (shm backend)")
    p.add_argument("--path", help="data file of an mmap resource")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(fn=_inspect)
    p = sub.add_parser("demo", help="run the producer/consumers demo")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(fn=_demo)
    args = ap.parse_args(argv)
    if args.cmd == "inspect" and not (args.name or args.path):
        ap.error("inspect needs a NAME or --path")
    try:
        return int(args.fn(args))
    except StorageError as exc:
        print(f"shmstore: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
