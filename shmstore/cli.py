"""The ``shmstore`` command (also ``python -m shmstore``).

This is the first slice of the CLI: ``inspect`` and ``demo``. ``ls``, ``cat``, ``gc`` and
``bench`` are planned (issues #3 and #4) and say so instead of pretending.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import open as open_resource
from .errors import StorageError


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
