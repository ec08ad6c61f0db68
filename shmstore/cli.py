"""The ``shmstore`` command (also ``python -m shmstore``): ``ls``, ``inspect``, ``cat``,
``fetch``, ``gc``, ``bench`` and ``demo``; ``shmstore COMMAND --help`` describes each.

Exit status: 0 on success, 1 when shmstore reported an error (the message is on stderr),
2 for a usage error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from typing import Any

from . import open as open_resource
from .core.lifecycle import ResourceStatus, WaitOutcome
from .errors import StorageError
from .fetch import fetch
from .inventory import collect, list_resources
from .resource import Resource

MiB = 1 << 20
MAP_CELLS = 64  # characters of the coverage map
CAT_CHUNK = 1 << 20


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


def _open_arg(args: argparse.Namespace) -> Resource:
    if args.path:
        return open_resource(path=args.path, backend="mmap")
    return open_resource(args.name)


def coverage_map(ranges: list[tuple[int, int]], length: int, cells: int = MAP_CELLS) -> str:
    """One character per ``length / cells`` bytes: ``#`` all covered, ``+`` part, ``.`` none."""
    if length <= 0:
        return ""
    out = []
    i = 0
    for c in range(cells):
        a, b = c * length // cells, (c + 1) * length // cells
        if b <= a:
            continue
        got = 0
        while i < len(ranges) and ranges[i][1] <= a:
            i += 1
        j = i
        while j < len(ranges) and ranges[j][0] < b:
            got += min(b, ranges[j][1]) - max(a, ranges[j][0])
            j += 1
        out.append("#" if got == b - a else "+" if got else ".")
    return "".join(out)


def _inspect(args: argparse.Namespace) -> int:
    with _open_arg(args) as r:
        status = r.status
        ranges = r.ranges()
        covered = sum(e - s for s, e in ranges)
        length = getattr(status, "length", None) or (ranges[-1][1] if ranges else 0)
        label = r.name if r.name is not None else r.path
        counts = next((i for i in list_resources([r.path] if r.path else [])
                       if i.name in (r.name, r.path)), None)
        info = {
            "name": r.name,
            "path": r.path,
            "backend": r.backend,
            "state": type(status).__name__.lstrip("_").lower(),
            "status": repr(status),
            "length": length,
            "capacity": r.capacity,
            "covered_bytes": covered,
            "coverage": covered / length if length else None,
            "ranges": len(ranges),
            "first_ranges": ranges[:100],
            "coverage_map": coverage_map(ranges, length),
            "writers_alive": r.writers_alive(),
            "writers": counts.writers if counts else None,
            "handles": counts.handles if counts else None,
            "waiters": counts.waiters if counts else None,
        }
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"{label} ({info['backend']})")
    for k in ("status", "length", "capacity", "covered_bytes", "ranges",
              "writers_alive", "writers", "handles", "waiters"):
        v = info[k]
        print(f"  {k.replace('_', ' '):>14}: {v:,}" if isinstance(v, int) and not
              isinstance(v, bool) else f"  {k.replace('_', ' '):>14}: {v}")
    if info["coverage"] is not None:
        print(f"  {'coverage':>14}: {100 * info['coverage']:.1f}%")
        print(f"  {'map':>14}: [{info['coverage_map']}]")
    return 0


def _cat(args: argparse.Namespace) -> int:
    """Stream the bytes to stdout in order as they land, until the commit (like
    ``tail -f`` of a file that is still being written)."""
    out = sys.stdout.buffer
    r = _cat_url(args) if args.name and "://" in args.name else _open_arg(args)
    with r:
        pos = args.offset
        while True:
            if isinstance(r.status, ResourceStatus.Committed):
                # every byte below the length reads now (holes of commit(None) as zeros)
                while data := r.read(pos, CAT_CHUNK):
                    out.write(data)
                    pos += len(data)
                out.flush()
                return 0
            gap = r.next_gap(pos, pos + CAT_CHUNK)
            upto = pos + CAT_CHUNK if gap is None else gap[0]
            if upto > pos:
                data = r.read(pos, upto - pos)
                if data:
                    out.write(data)
                    pos += len(data)
                    continue
            # nothing available at pos: wait for its first byte, or the end
            if r.wait_range(pos, pos + 1, timeout=args.timeout) is WaitOutcome.EOF:
                out.flush()
                return 0
            out.flush()


def _size(text: str) -> int:
    from .bench.harness import parse_size  # the bench's parser: 64K, 4M, 1GiB, 65536

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Progress:
    """One line on stderr, redrawn in place on a terminal (a line per 10% otherwise)."""

    def __init__(self, label: str, quiet: bool) -> None:
        self.label, self.quiet = label, quiet
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()
        self.shown = -1

    def __call__(self, done: int, size: int) -> None:
        if self.quiet:
            return
        frac = done / size if size else 1.0
        step = int(frac * 100) if self.tty else int(frac * 10)
        if step == self.shown:
            return
        self.shown = step
        rate = done / max(time.monotonic() - self.t0, 1e-9) / 1e6
        bar = "#" * int(frac * 30)
        line = (f"{self.label} [{bar:<30}] {100 * frac:5.1f}% {done / MiB:,.1f}/"
                f"{size / MiB:,.1f} MiB {rate:,.0f} MB/s")
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n",
              file=sys.stderr, flush=True)

    def end(self) -> None:
        if self.tty and not self.quiet and self.shown >= 0:
            print(file=sys.stderr)


def _fetch_opts(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {"chunk": args.chunk, "workers": args.workers}
    if args.endpoint_url:
        opts["endpoint_url"] = args.endpoint_url
    return opts


def _fetch(args: argparse.Namespace) -> int:
    where: dict[str, Any] = {"name": args.name} if args.name else {}
    if args.path:
        where = {"path": args.path}
    bar = _Progress("fetch", args.quiet)
    t0 = time.monotonic()
    try:
        r = fetch(args.url, progress=bar, **where, **_fetch_opts(args))
    finally:
        bar.end()
    with r:
        length = getattr(r.status, "length", 0)
        label = r.path if r.path else r.name
    if not args.quiet:
        dt = time.monotonic() - t0
        print(f"{label}: {length:,} bytes committed in {dt:.2f} s", file=sys.stderr)
    print(label)
    return 0


def _cat_url(args: argparse.Namespace) -> Resource:
    opts = _fetch_opts(args)
    return fetch(args.name, wait=False, **opts)


def _bench(args: argparse.Namespace) -> int:
    try:
        from .bench import run_cli
    except ImportError as exc:
        print(f"shmstore: the benchmarks are not available: {exc}", file=sys.stderr)
        return 1
    return int(run_cli(args.rest))


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
    p = sub.add_parser("inspect", help="status, size, coverage map, writers and waiters"
                                          " of one resource")
    p.add_argument("name", nargs="?", help="resource name (shm backend)")
    p.add_argument("--path", help="data file of an mmap resource")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(fn=_inspect)
    p = sub.add_parser("cat", help="stream a resource (or a URL, through the shared"
                                   " cache) to stdout as it lands, until commit")
    p.add_argument("name", nargs="?", help="resource name (shm backend), or a URL"
                                           " (http(s)://, s3://, any fsspec URL)")
    p.add_argument("--chunk", type=_size, default="4M", help="URL: piece size (default 4M)")
    p.add_argument("--workers", type=int, default=4, help="URL: parallel reads (default 4)")
    p.add_argument("--endpoint-url", help="URL: an S3-compatible endpoint")
    p.add_argument("--path", help="data file of an mmap resource")
    p.add_argument("--offset", type=int, default=0, help="start at this byte (default 0)")
    p.add_argument("--timeout", type=float, default=None,
                   help="give up after this many seconds without new bytes (default: never)")
    p.set_defaults(fn=_cat)
    p = sub.add_parser("fetch", help="download a URL once into a shared resource (joins a"
                                     " download already running; resumes a broken one)")
    p.add_argument("url", help="http(s)://, s3://, a local path or any fsspec URL")
    p.add_argument("--name", help="resource name (default: derived from the URL and version)")
    p.add_argument("--path", help="file-backed resource at this path (resumes after restarts)")
    p.add_argument("--chunk", type=_size, default="4M", help="piece size (default 4M)")
    p.add_argument("--workers", type=int, default=4, help="parallel reads (default 4)")
    p.add_argument("--endpoint-url", help="an S3-compatible endpoint (path-style)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=_fetch)
    p = sub.add_parser("bench", help="measure shmstore against the alternatives on this"
                                     " machine (shmstore bench --help)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(fn=_bench)
    p = sub.add_parser("demo", help="run the producer/consumers demo")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(fn=_demo)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # its own parser, --help included
        return _bench(argparse.Namespace(rest=argv[1:]))
    args = ap.parse_args(argv)
    if args.cmd in ("fetch", "cat") and args.workers <= 0:
        ap.error("--workers must be positive")
    if args.cmd in ("inspect", "cat") and not (args.name or args.path):
        ap.error(f"{args.cmd} needs a NAME or --path")
    if args.cmd == "cat" and args.offset < 0:
        ap.error("--offset must not be negative")
    try:
        return int(args.fn(args))
    except (StorageError, TimeoutError) as exc:
        print(f"shmstore: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `shmstore cat x | head`: the reader left
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (no flush error at exit)
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
