"""The ``shmstore`` command (also ``python -m shmstore``): ``ls``, ``inspect``, ``cat``,
``fetch``, ``gc``, ``bench``, ``demo`` and ``log`` (``append``, ``tail``, ``verify``,
``inspect`` of a ``shmstore.Log``); ``shmstore COMMAND --help`` describes each.

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
from collections.abc import Iterator
from typing import Any

from . import open as open_resource
from .core.lifecycle import ResourceStatus, WaitOutcome
from .errors import InvalidRange, LogCorrupt, ResourceNotFound, StorageError, WriterDied
from .fetch import fetch
from .inventory import collect, list_resources
from .log import Log
from .log import format as log_format
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


# ------------------------------------------------------------------------------ shmstore log
LOG_READ = 1 << 20  # payload bytes per read_from (and per stdin read of `log append`)
LOG_REWAIT = 0.2  # `log tail -f` with no writer: seconds between looks for a new one


def _log_where(args: argparse.Namespace) -> dict[str, Any]:
    return {"path": args.path} if args.path else {"name": args.name}


def _log_label(args: argparse.Namespace) -> str:
    return str(args.path) if args.path else repr(args.name)


def _log_open(args: argparse.Namespace, mode: str = "r") -> Log:
    try:
        return Log.open(**_log_where(args), mode=mode)
    except ResourceNotFound as exc:
        if args.path:
            raise
        raise ResourceNotFound(f"no log named {args.name!r} in shared memory ({exc})"
                               ) from None


_LOG_CREATE_OPTS = ("segment_size", "checkpoint_every", "max_record", "compress")


def _stdin_batches(sep: bytes, max_record: int) -> Iterator[list[bytes]]:
    """Lists of records from stdin, split at ``sep``: each list is what one read brought
    (so a slow producer's records are appended as they come, a fast one's in big batches).
    A last record without its separator counts too."""
    fd = sys.stdin.buffer.fileno()
    partial = bytearray()
    while chunk := os.read(fd, LOG_READ):
        cut = chunk.rfind(sep)
        if cut < 0:
            partial += chunk
        else:
            recs = (bytes(partial) + chunk[:cut]).split(sep)
            partial = bytearray(chunk[cut + 1:])
            yield recs
        if len(partial) > max_record:
            raise InvalidRange(0, len(partial), f"a record of stdin runs past the log's "
                               f"max_record {max_record} without a separator")
    if partial:
        yield [bytes(partial)]


def _segment_batches(records: list[bytes], segment_size: int) -> Iterator[list[bytes]]:
    """``records`` cut into batches of about a segment's bytes at most (the log rotates
    after a batch, so one big batch would make one big segment)."""
    batch: list[bytes] = []
    size = 0
    for r in records:
        size += len(r) + log_format.FRAME_OVERHEAD
        batch.append(r)
        if size >= segment_size:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _log_append(args: argparse.Namespace) -> int:
    asked = {k: getattr(args, k) for k in _LOG_CREATE_OPTS if getattr(args, k) is not None}
    created = False
    try:
        w = _log_open(args, "a")
    except ResourceNotFound:
        if not args.create:
            raise
        try:
            w = Log.create(**_log_where(args), **asked)
            created = True
        except FileExistsError:  # created by another process meanwhile
            w = _log_open(args, "a")
    with w:
        settings = w.settings
        if not created:
            differ = [f"{k} is {getattr(settings, k)}, not {v}" for k, v in asked.items()
                      if getattr(settings, k) != v]
            if differ:
                print(f"shmstore: log {_log_label(args)} exists: {'; '.join(differ)}",
                      file=sys.stderr)
                return 1
        fsync = not args.no_fsync
        appended = 0
        sep = b"\0" if args.null else b"\n"
        reads = ([[os.fsencode(r) for r in args.records]] if args.records else
                 _stdin_batches(sep, settings.max_record))
        for records in reads:
            for batch in _segment_batches(records, settings.segment_size):
                w.append(batch, fsync=fsync)
                appended += len(batch)
        nxt = w.next_offset
        chain = w.latest_chain_hash
    head_hex = chain.hex() if chain else None
    if args.json:
        print(json.dumps({"appended": appended, "next_offset": nxt, "chain_head": head_hex,
                          "created": created}))
    else:
        print(f"{nxt} {head_hex or '-'}")
    return 0


def _log_tail(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    sep = b"\0" if args.null else b"\n"
    log = _log_open(args)
    try:
        cursor = log.cursor(args.cursor) if args.cursor else None
        if cursor is not None:
            off = cursor.offset
        elif args.start is not None:
            off = args.start
        else:
            off = max(0, log.next_offset - args.lines)
        last = time.monotonic()  # when the last record came (for --timeout)
        batch = LOG_READ
        while True:
            try:
                recs = log.read_from(off, batch, verify=not args.no_verify)
            except LogCorrupt:
                if not batch:
                    raise
                batch = 0  # one record per read from here: print up to the damage, then fail
                continue
            if recs:
                for rec in recs:
                    if args.offsets:
                        out.write(b"%d\t" % rec.offset)
                    p = rec.payload
                    if args.hex:
                        out.write(p.hex().encode())
                    elif args.raw:
                        out.write(p)
                    else:
                        out.write(bytes(p).decode("utf-8", "replace").encode())
                    out.write(sep)
                out.flush()
                off = recs[-1].offset + 1
                if cursor is not None:
                    cursor.commit(off)  # after the records reached stdout
                last = time.monotonic()
                continue
            if not args.follow:
                return 0
            remaining = None
            if args.timeout is not None:
                remaining = args.timeout - (time.monotonic() - last)
                if remaining <= 0:
                    raise TimeoutError(f"no new record in {args.timeout:g} s")
            try:
                log.wait_for(off, timeout=remaining)
            except TimeoutError:
                raise TimeoutError(f"no new record in {args.timeout:g} s") from None
            except WriterDied:
                # No writer. A handle can miss segments that a writer made and left while
                # it was not looking (it would stop at the end of the last one it knew):
                # look again through a new handle.
                log.close()
                log = _log_open(args)
                if cursor is not None:
                    cursor = log.cursor(args.cursor)
                if log.next_offset > off:
                    continue
                if args.exit_without_writer:
                    return 0
                # wait for a new writer to take the log over: nothing signals that across
                # processes, so look again every LOG_REWAIT s
                time.sleep(LOG_REWAIT if remaining is None else min(LOG_REWAIT, remaining))
    finally:
        log.close()


def _log_verify(args: argparse.Namespace) -> int:
    with _log_open(args) as log:
        count, head = log.verify()
    if args.json:
        print(json.dumps({"ok": True, "records": count,
                          "chain_head": head.hex() if head else None}))
    else:
        print(f"ok: {count:,} records, chain head {head.hex() if head else '-'}")
    return 0


def _log_inspect(args: argparse.Namespace) -> int:
    with _log_open(args) as log:
        info = {"name": log.name, **log.inspect()}
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"{_log_label(args)} ({info['backend']} log at {info['path']})")
    rows = [("records", f"{info['records']:,}"),
            ("chain head", info["chain_head"] or "-"),
            ("writer alive", str(info["writer_alive"])),
            ("segment size", f"{info['segment_size']:,}"),
            ("checkpoint every", f"{info['checkpoint_every']:,}"),
            ("max record", f"{info['max_record']:,}"),
            ("compress", str(info["compress"])),
            ("segments", str(len(info["segments"])))]
    for k, v in rows:
        print(f"  {k:>16}: {v}")
    table = [("segment", "first", "records", "sealed", "bytes")]
    table += [(str(s["segment"]), f"{s['first']:,}", f"{s['records']:,}",
               "yes" if s["sealed"] else "no", f"{s['bytes']:,}") for s in info["segments"]]
    widths = [max(len(r[c]) for r in table) for c in range(5)]
    for r in table:
        print("    " + "  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)))
    cursors = info["cursors"]
    print(f"  {'cursors':>16}: " + (", ".join(f"{k}={v:,}" for k, v in cursors.items())
                                     if cursors else "(none)"))
    return 0


def _log(args: argparse.Namespace) -> int:
    try:
        return int(args.log_fn(args))
    except OSError as exc:  # a directory that cannot be made or read, a full disk...
        if isinstance(exc, (StorageError, BrokenPipeError, TimeoutError)):
            raise  # main's
        print(f"shmstore: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _log_parsers(sub: Any) -> argparse.ArgumentParser:
    """Add ``shmstore log`` and its commands; returns the parser of ``log append`` (which
    main runs with ``parse_intermixed_args``: records may follow options)."""
    p = sub.add_parser(
        "log", help="append to, tail, verify or inspect a shmstore.Log",
        description="A log is addressed by NAME (in shared memory) or --path DIR (a"
                    " directory on disk). shmstore log COMMAND --help describes each.")
    lsub = p.add_subparsers(dest="log_cmd", required=True, metavar="COMMAND")

    def common(q: argparse.ArgumentParser, name: bool = True) -> None:
        if name:
            q.add_argument("name", nargs="?", help="log name (shared memory)")
        q.add_argument("--path", metavar="DIR", help="the log's directory (a log on disk)")

    q: argparse.ArgumentParser = lsub.add_parser(
        "append", help="append records from the arguments or stdin",
        usage="shmstore log append [-h] (NAME | --path DIR) [options] [RECORD ...]",
        description="Append the RECORD arguments as one batch or, with none, one record per"
                    " line of stdin (the newline is not part of it; -0: NUL-separated),"
                    " appended as it arrives, a batch per read. Prints the next offset"
                    " and the chain head (hex) afterwards. One writer per log: a second"
                    " live one fails (exit 1, WriterActive). Put -- before records that"
                    " start with '-'.",
        epilog="example: printf 'a\\nb\\n' | shmstore log append events --create")
    q.add_argument("args", nargs="*", metavar="NAME / RECORD",
                   help="the log's NAME (unless --path), then the records")
    common(q, name=False)
    q.add_argument("--create", action="store_true",
                   help="create the log if it does not exist (with the settings below)")
    q.add_argument("--segment-size", dest="segment_size", type=_size, default=None,
                   help="with --create: rotate segments at this size (default 64M)")
    q.add_argument("--checkpoint-every", dest="checkpoint_every", type=int, default=None,
                   help="with --create: a checkpoint every N records (default 1024)")
    q.add_argument("--max-record", dest="max_record", type=_size, default=None,
                   help="with --create: the largest record (default 64M)")
    q.add_argument("--compress", action="store_true", default=None,
                   help="with --create: store records zlib-compressed when that is smaller")
    q.add_argument("--no-fsync", action="store_true",
                   help="do not fsync each batch (appends then survive a process crash, not"
                        " a machine crash)")
    q.add_argument("-0", "--null", action="store_true",
                   help="stdin records are separated by NUL bytes, not newlines")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(fn=_log, log_fn=_log_append, parser=q)
    append = q

    q = lsub.add_parser(
        "tail", help="print records; -f follows the log as it grows",
        description="Print records, one per line: as text (invalid UTF-8 replaced; a record"
                    " holding newlines spans lines), --hex, or --raw bytes. Starts at the"
                    " last N records (default 10), at --from OFFSET, or at a --cursor's"
                    " offset. Every record is checked (CRC, offset, chain link) unless"
                    " --no-verify; on damage it prints the records before it and exits 1"
                    " naming the error. With -f it then waits for new records (parked on the"
                    " log's live index: no polling while a writer is there) until Ctrl-C"
                    " (exit 130). When no writer is left it keeps waiting for a new writer"
                    f" to take the log over, looking again every {LOG_REWAIT:g} s; with"
                    " --exit-without-writer it exits 0 instead.")
    common(q)
    start = q.add_mutually_exclusive_group()
    start.add_argument("--from", dest="start", type=int, metavar="OFFSET",
                       help="start at this record offset")
    start.add_argument("-n", "--lines", type=int, default=10, metavar="N",
                       help="start N records before the end (default 10)")
    start.add_argument("--cursor", metavar="NAME",
                       help="start at this consumer cursor's offset and commit the cursor"
                            " after each batch printed")
    q.add_argument("-f", "--follow", action="store_true",
                   help="keep waiting for new records")
    fmt = q.add_mutually_exclusive_group()
    fmt.add_argument("--hex", action="store_true", help="print each payload in hex")
    fmt.add_argument("--raw", action="store_true", help="print each payload's bytes as they are")
    q.add_argument("-0", "--null", action="store_true",
                   help="end each record with NUL, not a newline (with --raw: the input of"
                        " `log append -0`)")
    q.add_argument("--offsets", action="store_true",
                   help="print each record's offset and a tab before it")
    q.add_argument("--no-verify", action="store_true",
                   help="skip the chain-link check (CRCs are still checked)")
    q.add_argument("--timeout", type=float, default=None,
                   help="-f: exit 1 after this many seconds without a new record")
    q.add_argument("--exit-without-writer", action="store_true",
                   help="-f: exit 0 once the log is read to its end and no writer is left")
    q.set_defaults(fn=_log, log_fn=_log_tail, parser=q)

    q = lsub.add_parser(
        "verify", help="check the whole log: CRCs, offsets, chain, checkpoints, indexes",
        description="Check every record of the log from the first: its CRC, offset and chain"
                    " link, every checkpoint and every segment index. Prints the record count"
                    " and the chain head; on damage exits 1 naming the error (RecordCorrupt,"
                    " RecordMissing, RecordOutOfOrder, ChainBroken, LogCorrupt) and where.")
    common(q)
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(fn=_log, log_fn=_log_verify, parser=q)

    q = lsub.add_parser(
        "inspect", help="settings, segments, records, chain head, writer and cursors",
        description="Show a log's settings, its segments (number, first offset, records,"
                    " sealed, bytes), its record count and chain head, whether a writer is"
                    " alive, and its consumer cursors.")
    common(q)
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(fn=_log, log_fn=_log_inspect, parser=q)
    return append


def _log_check(args: argparse.Namespace) -> None:
    """Usage errors of ``shmstore log``: exit 2 with the subcommand's usage."""
    q: argparse.ArgumentParser = args.parser
    if args.log_cmd == "append":
        pos = list(args.args)
        if args.path:
            args.name, args.records = None, pos
        elif pos:
            args.name, args.records = pos[0], pos[1:]
        else:
            args.name, args.records = None, []
        if not args.create:
            given = [k for k in _LOG_CREATE_OPTS if getattr(args, k) is not None]
            if given:
                q.error(f"--{given[0].replace('_', '-')} only goes with --create")
        if args.checkpoint_every is not None and args.checkpoint_every <= 0:
            q.error("--checkpoint-every must be positive")
    if not (args.name or args.path):
        q.error("needs a log NAME or --path DIR")
    if args.name and args.path:
        q.error("takes a log NAME or --path DIR, not both")
    if args.log_cmd == "tail":
        if args.start is not None and args.start < 0:
            q.error("--from must not be negative")
        if args.lines < 0:
            q.error("-n must not be negative")
        if args.timeout is not None and args.timeout <= 0:
            q.error("--timeout must be positive")


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
    log_append = _log_parsers(sub)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # its own parser, --help included
        return _bench(argparse.Namespace(rest=argv[1:]))
    if argv[:2] == ["log", "append"]:  # NAME --create REC...: positionals after options
        args = log_append.parse_intermixed_args(argv[2:], argparse.Namespace(cmd="log",
                                                                             log_cmd="append"))
    else:
        args = ap.parse_args(argv)
    if args.cmd in ("fetch", "cat") and args.workers <= 0:
        ap.error("--workers must be positive")
    if args.cmd in ("inspect", "cat") and not (args.name or args.path):
        ap.error(f"{args.cmd} needs a NAME or --path")
    if args.cmd == "cat" and args.offset < 0:
        ap.error("--offset must not be negative")
    if args.cmd == "log":
        _log_check(args)
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
