"""A real HTTP/1.1 server on 127.0.0.1 for the remote-source tests: serves in-memory objects,
honours Range (206 + Content-Range), and has fault modes the tests switch on. It counts
every byte it sends per path, so a test can prove each byte was served once.

It runs in a thread of the test process (``ThreadingHTTPServer``: one thread per connection)
or, for benchmarks, in a process of its own (``serve_forever_in_process``).
"""

from __future__ import annotations

import email.utils
import http.server
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass
class Faults:
    """Switch on per test; counts go down as faults are served."""

    status_500: int = 0  # next N requests answer 500
    status_429: int = 0  # next N requests answer 429 with Retry-After: 0
    short_bodies: int = 0  # next N GET bodies stop half-way (the connection closes)
    no_length: bool = False  # HEAD has no Content-Length
    no_head: bool = False  # HEAD is 405
    ignore_range: bool = False  # GET answers 200 with the whole body
    change_after: int = -1  # after N more GETs the object changes (new bytes and ETag)
    trickle: float = 0.0  # seconds between 64 KiB pieces of a body
    wrong_range: int = 0  # next N ranged GETs answer a different range than asked
    gzip_head: bool = False  # HEAD claims Content-Encoding: gzip
    outage_after: int = -1  # after N more ranged GETs, an outage: `outage` requests get 503
    outage: int = 0


@dataclass
class Obj:
    data: bytes
    etag: str
    mtime: float


@dataclass
class State:
    objects: dict[str, Obj] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    served: dict[str, int] = field(default_factory=dict)  # body bytes sent per path
    ranges: list[tuple[str, int, int]] = field(default_factory=list)  # (path, start, end)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, Range)
    tags: list[str] = field(default_factory=list)  # each request's X-Test header ("" if none)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, path: str, data: bytes) -> None:
        with self.lock:
            n = len(self.objects)
            self.objects[path] = Obj(data, f'"v{n}-{len(data)}-{hash(data) & 0xFFFF:x}"',
                                     time.time() - 100 + n)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _fault_status(self) -> bool:
        st, f = self.server.state, self.server.state.faults
        with st.lock:
            if f.status_500:
                f.status_500 -= 1
                code = 500
            elif f.status_429:
                f.status_429 -= 1
                code = 429
            else:
                return False
        self.send_response(code)
        if code == 429:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    def _lookup(self) -> Obj | None:
        path = self.path.split("?")[0]
        if path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", "../" + path[len("/redirect/"):].lstrip("/"))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        obj = self.server.state.objects.get(path)
        if obj is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
        return obj

    def _validators(self, obj: Obj) -> None:
        self.send_header("ETag", obj.etag)
        self.send_header("Last-Modified", email.utils.formatdate(obj.mtime, usegmt=True))
        self.send_header("Accept-Ranges", "bytes")

    def do_HEAD(self) -> None:
        st = self.server.state
        with st.lock:
            st.requests.append(("HEAD", self.path, ""))
            st.tags.append(self.headers.get("X-Test", ""))
        if self._fault_status():
            return
        if st.faults.no_head:
            self.send_response(405)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        obj = self._lookup()
        if obj is None:
            return
        self.send_response(200)
        self._validators(obj)
        if st.faults.gzip_head:
            self.send_header("Content-Encoding", "gzip")
        if not st.faults.no_length:
            self.send_header("Content-Length", str(len(obj.data)))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def do_GET(self) -> None:
        st, f = self.server.state, self.server.state.faults
        rng = self.headers.get("Range", "")
        with st.lock:
            st.requests.append(("GET", self.path, rng))
            st.tags.append(self.headers.get("X-Test", ""))
        if self._fault_status():
            return
        path = self.path.split("?")[0]
        with st.lock:
            if rng and f.outage_after >= 0:
                if f.outage_after == 0 and f.outage > 0:
                    f.outage -= 1
                    out = True
                else:
                    f.outage_after = max(f.outage_after - 1, 0)
                    out = False
            else:
                out = False
        if out:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with st.lock:
            if f.change_after == 0 and path in st.objects:
                old = st.objects[path].data
                st.objects[path] = Obj(bytes(b ^ 0xFF for b in old[:4096]) + old[4096:],
                                       '"changed"', time.time())
            if f.change_after >= 0:
                f.change_after -= 1
        obj = self._lookup()
        if obj is None:
            return
        match = obj.etag if obj else None
        if_match = self.headers.get("If-Match")
        if if_match is not None and if_match != match:
            self.send_response(412)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = obj.data
        m = _RANGE.fullmatch(rng)
        if m and not f.ignore_range:
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            with st.lock:
                wrong = f.wrong_range > 0
                if wrong:
                    f.wrong_range -= 1
            if wrong:
                start, end = start + 1, end
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            body = memoryview(data)[start : end + 1]
        else:
            start = 0
            self.send_response(200)
            body = memoryview(data)
        self._validators(obj)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with st.lock:
            short = f.short_bodies > 0
            if short:
                f.short_bodies -= 1
        if short:
            body = body[: len(body) // 2]
            self.close_connection = True
        sent = 0
        try:
            step = 64 << 10
            for i in range(0, len(body), step):
                self.wfile.write(body[i : i + step])
                sent += len(body[i : i + step])
                if f.trickle:
                    self.wfile.flush()
                    time.sleep(f.trickle)  # the server being slow, not test synchronisation
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            with st.lock:
                st.served[path] = st.served.get(path, 0) + sent
                st.ranges.append((path, start, start + sent))


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: State | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.state = state or State()
        self.thread = threading.Thread(target=self.serve_forever, name="test-http",
                                       daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(10)
