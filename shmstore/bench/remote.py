"""Scenario ``remote``: eight processes read one object (1 GiB; 128 MiB with ``--quick``) from a
local HTTP server: what the server serves, and when each reader holds its first MiB and its
last byte.

The server is a process of its own (``ThreadingHTTPServer`` honouring ``Range``, ``ETag``,
``Last-Modified``; the object is generated in memory) that counts every body byte it sends.
All readers are released by one barrier; each measures from the barrier on the machine-wide
monotonic clock.

* ``shmstore.fetch (one download)``: every reader calls ``fetch(url, wait=False)``; one of
  them downloads (4 workers, 8 MiB pieces), the others join; each reads the whole object
  through ``wait_range`` + ``read_at`` in 8 MiB steps.
* ``each process alone``: every reader downloads the whole object itself with shmstore's own
  HTTP source (the same client, 8 MiB ranged GETs in order), the design without a shared
  cache.
* ``fsspec HTTP, block cache``: every reader opens the URL with fsspec's HTTP filesystem and
  its per-process block cache (``cache_type="blockcache"``, 8 MiB blocks) and reads it in
  order. Needs ``aiohttp``; skipped, never faked, when it is missing.

Ratios are against ``each process alone``, measured in the same run.
"""

from __future__ import annotations

import email.utils
import http.server
import importlib
import re
import threading
import time
from typing import Any

import shmstore

from .harness import CTX, Config, MiB, Names, Progress, Table, human, peer, run_children, skipped

SIZE = 1 << 30
QUICK_SIZE = 128 * MiB
READERS = 8
STEP = 8 * MiB  # what each reader reads at a time
PIECE = 8 * MiB  # what fetch downloads at a time (a piece lands whole, in one write)
TIMEOUT = 600.0
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def _block() -> bytes:
    import random

    return random.Random(2024).randbytes(MiB)


def expected(offset: int, n: int, block: bytes) -> bytes:
    """The object's bytes: a 1 MiB random block, repeated."""
    out = bytearray()
    while n:
        k = min(n, MiB - offset % MiB)
        out += block[offset % MiB : offset % MiB + k]
        offset += k
        n -= k
    return bytes(out)


# ------------------------------------------------------------------------------ the server
def serve(size: int, port: Any, served: Any, stop: Any) -> None:
    block = _block()
    whole = memoryview(block * (size // MiB) + block[: size % MiB])
    mtime = email.utils.formatdate(time.time() - 60, usegmt=True)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _head(self, code: int, length: int, extra: dict[str, str]) -> None:
            self.send_response(code)
            self.send_header("ETag", '"bench-object"')
            self.send_header("Last-Modified", mtime)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(length))
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()

        def do_HEAD(self) -> None:
            self._head(200, size, {})

        def do_GET(self) -> None:
            m = _RANGE.fullmatch(self.headers.get("Range", ""))
            if m:
                a = int(m.group(1))
                b = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
                body = whole[a : b + 1]
                self._head(206, len(body), {"Content-Range": f"bytes {a}-{b}/{size}"})
            else:
                body = whole
                self._head(200, size, {})
            try:
                for i in range(0, len(body), MiB):
                    self.wfile.write(body[i : i + MiB])
                    with served.get_lock():
                        served.value += len(body[i : i + MiB])
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass

    srv = Server(("127.0.0.1", 0), Handler)
    port.value = srv.server_address[1]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    stop.wait(TIMEOUT * 2)
    srv.shutdown()
    srv.server_close()


# ------------------------------------------------------------------------------ readers
def _check(offset: int, data: bytes | bytearray | memoryview, block: bytes) -> None:
    if bytes(data[:64]) != expected(offset, min(64, len(data)), block):
        raise AssertionError(f"wrong bytes at {offset}")


def read_shmstore(url: str, name: str, size: int, go: Any) -> dict[str, float]:
    block = _block()
    buf = bytearray(STEP)
    go.wait(TIMEOUT)
    t0 = time.perf_counter()
    r = shmstore.fetch(url, name=name, wait=False, chunk=PIECE, workers=4)
    first = 0.0
    try:
        pos = 0
        while pos < size:
            n = min(STEP, size - pos)
            r.wait_range(pos, pos + n, timeout=TIMEOUT)
            got = r.read_at(pos, memoryview(buf)[:n])
            _check(pos, memoryview(buf)[:got], block)
            pos += got
            if not first:
                first = time.perf_counter()
        return {"first_s": first - t0, "last_s": time.perf_counter() - t0}
    finally:
        r.close()


def read_alone(url: str, name: str, size: int, go: Any) -> dict[str, float]:
    from shmstore.sources import HttpSource

    block = _block()
    go.wait(TIMEOUT)
    t0 = time.perf_counter()
    first = 0.0
    with HttpSource(url) as src:
        pos = 0
        while pos < size:
            data = src.read_exact(pos, min(STEP, size - pos))
            _check(pos, data, block)
            pos += len(data)
            if not first:
                first = time.perf_counter()
    return {"first_s": first - t0, "last_s": time.perf_counter() - t0}


def read_fsspec(url: str, name: str, size: int, go: Any) -> dict[str, float]:
    fsspec: Any = importlib.import_module("fsspec")
    block = _block()
    go.wait(TIMEOUT)
    t0 = time.perf_counter()
    first = 0.0
    with fsspec.open(url, "rb", block_size=STEP, cache_type="blockcache") as f:
        pos = 0
        while pos < size:
            data = f.read(min(STEP, size - pos))
            if not data:
                raise AssertionError(f"fsspec stopped at {pos}")
            _check(pos, data, block)
            pos += len(data)
            if not first:
                first = time.perf_counter()
    return {"first_s": first - t0, "last_s": time.perf_counter() - t0}


SHM = "shmstore.fetch (one download)"
ALONE = "each process alone"
FSSPEC = "fsspec HTTP, block cache"


def _round(fn: Any, size: int, names: Names) -> dict[str, Any]:
    port, served, stop = CTX.Value("i", 0), CTX.Value("q", 0), CTX.Event()
    server = CTX.Process(target=serve, args=(size, port, served, stop), daemon=True)
    server.start()
    try:
        deadline = time.monotonic() + 30
        while not port.value:  # the server process binds its port
            if time.monotonic() > deadline or not server.is_alive():
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.01)
        url = f"http://127.0.0.1:{port.value}/object"
        go = CTX.Barrier(READERS)
        with names.scope() as made:
            name = names.resource()
            made.append(name)
            t0 = time.perf_counter()
            res = run_children([(fn, (url, name, size, go))] * READERS, timeout=TIMEOUT)
            wall = time.perf_counter() - t0
        return {"readers": res, "served": served.value, "wall_s": wall}
    finally:
        stop.set()
        server.join(30)
        if server.is_alive():
            server.kill()
            server.join()


def run(cfg: Config, names: Names) -> list[Table]:
    size = QUICK_SIZE if cfg.quick else SIZE
    variants = [(SHM, read_shmstore), (ALONE, read_alone)]
    have_fsspec = peer("fsspec") and peer("aiohttp")
    if have_fsspec:
        variants.append((FSSPEC, read_fsspec))
    got: dict[str, dict[str, Any]] = {}
    with Progress("remote", len(variants)) as bar:
        for label, fn in variants:
            bar.step(f"{READERS} readers x {human(size)}: {label}")
            got[label] = _round(fn, size, names)
    base = got[ALONE]
    base_last = max(r["last_s"] for r in base["readers"])
    rows: list[dict[str, Any]] = []
    for label, _fn in variants:
        g = got[label]
        firsts = sorted(r["first_s"] for r in g["readers"])
        lasts = sorted(r["last_s"] for r in g["readers"])
        rows.append({
            "variant": label,
            "served_mib": g["served"] / MiB,
            "served_x": g["served"] / size,
            "first_med_ms": firsts[len(firsts) // 2] * 1e3,
            "first_max_ms": firsts[-1] * 1e3,
            "last_med_s": lasts[len(lasts) // 2],
            "last_max_s": lasts[-1],
            "vs_alone": lasts[-1] / base_last,
            "samples": g["readers"],
        })
    if not have_fsspec:
        rows.append({"variant": f"{FSSPEC}: aiohttp or fsspec not installed, skipped",
                     "skipped": True})
    notes = [f"served x object: body bytes the server sent over the object's size ({human(size)})",
             "x alone: the last reader's time to its last byte over that of 'each process"
             " alone' (measured in this run); below 1 is faster"]
    if not have_fsspec:
        notes.append(skipped("aiohttp"))
    return [Table(
        "remote",
        f"one download, many readers: {READERS} processes read a {human(size)} object from a"
        " local HTTP server",
        [("variant", "variant"), ("served_mib", "served MiB"), ("served_x", "x object"),
         ("first_med_ms", "1st MiB ms (median)"), ("first_max_ms", "max"),
         ("last_med_s", "last byte s (median)"), ("last_max_s", "max"),
         ("vs_alone", "x alone")],
        rows,
        {"size": human(size), "readers": READERS, "step": human(STEP)},
        notes,
    )]
