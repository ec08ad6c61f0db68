"""Read-side sources: where ``shmstore.fetch`` gets the bytes of a remote (or local) object.

The contract is small, and every implementation keeps it exactly:

* ``size`` is known when the source opens and never changes;
* ``read_exact(offset, size)`` returns exactly ``size`` bytes at ``offset`` or raises
  (``ShortRead`` when fewer arrived after every retry, ``SourceChanged`` when the object is no
  longer the one opened); ``read_exact(offset, 0)`` is ``b""``; a range past ``size`` is
  ``InvalidRange``;
* it is safe to call from many threads at once (fetch reads ranges in parallel);
* ``identity`` names the exact version of the object (URL plus the ETag, Last-Modified or
  file identity pinned at open): fetch keys its resource on it, so two versions never mix;
* ``close()`` releases connections and descriptors.

HTTP takes the length from ``HEAD``'s ``Content-Length`` (falling back to ``GET`` with
``Range: bytes=0-0`` and its ``Content-Range``), sends ``Accept-Encoding: identity`` (a
compressed body would make every offset wrong), requires ``206`` with a ``Content-Range`` that
matches the request (a server that ignores ``Range`` is detected at open: ``ranges`` is then
False and reads slice a full-body stream), retries with backoff on connection errors, 5xx,
429 (honouring ``Retry-After``) and bodies cut short, re-sends ``Range`` on redirects, and pins
the ``ETag``/``Last-Modified`` seen at open: every response must carry the same ones (a strong
ETag is also sent as ``If-Match``), or the read raises ``SourceChanged``.

Clients: ``urllib3`` (a thread-safe connection pool, redirects that keep our headers), ``boto3``
for S3 (the standard credential chain, custom endpoints with path-style addressing), ``fsspec``
for every other filesystem. boto3 and fsspec are optional (``pip install shmstore[remote]``).
"""

from __future__ import annotations

import mmap
import os
import random
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar, runtime_checkable

from .errors import (
    InvalidRange,
    ShortRead,
    SourceChanged,
    SourceDenied,
    SourceError,
    SourceNotFound,
)

__all__ = [
    "FileSource",
    "FsspecSource",
    "HttpSource",
    "MmapSource",
    "S3Source",
    "Source",
    "open_source",
]

T = TypeVar("T")

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
RETRIES = 5  # attempts after the first, per request
BACKOFF = 0.1  # seconds before the first retry; doubles, with jitter, up to BACKOFF_MAX
BACKOFF_MAX = 5.0
RETRY_AFTER_MAX = 30.0


@runtime_checkable
class Source(Protocol):
    """What ``fetch`` reads from (see the module documentation for the contract)."""

    url: str
    size: int
    identity: str

    def read_exact(self, offset: int, size: int) -> bytes | bytearray | memoryview: ...

    def close(self) -> None: ...


def _check(src: Source, offset: int, size: int) -> bool:
    """Validate a request; True when it is empty."""
    if offset < 0 or size < 0 or offset + size > src.size:
        raise InvalidRange(offset, offset + size, f"outside the source's {src.size} bytes")
    return size == 0


# ----------------------------------------------------------------------------- local
class FileSource:
    """A local file read with ``os.pread`` (no cursor: threads read concurrently)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.url = os.fspath(path)
        try:
            self._fd = os.open(self.url, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise SourceNotFound(self.url, "no such file") from exc
        except PermissionError as exc:
            raise SourceDenied(self.url, "permission denied") from exc
        except OSError as exc:
            raise SourceError(self.url, str(exc)) from exc
        st = os.fstat(self._fd)
        self.size = st.st_size
        self._stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        self.identity = f"file:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
        self.ranges = True

    def read_exact(self, offset: int, size: int) -> bytes:
        if _check(self, offset, size):
            return b""
        parts = []
        pos, end = offset, offset + size
        while pos < end:
            chunk = os.pread(self._fd, end - pos, pos)
            if not chunk:
                break
            parts.append(chunk)
            pos += len(chunk)
        st = os.fstat(self._fd)
        if (st.st_ino, st.st_size, st.st_mtime_ns) != self._stamp:
            raise SourceChanged(self.url, "the file changed since it was opened")
        if pos < end:
            raise ShortRead(self.url, f"{pos - offset} of {size} bytes at {offset}")
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MmapSource:
    """A local file mapped read-only: ``read_exact`` returns zero-copy ``memoryview``s.

    The file must not shrink while mapped (a read of a cut page is SIGBUS): use it for files
    nobody rewrites in place."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        inner = FileSource(path)
        self.url, self.size, self.identity, self.ranges = (
            inner.url, inner.size, inner.identity, True)
        try:
            self._map = (mmap.mmap(inner._fd, self.size, prot=mmap.PROT_READ)
                         if self.size else None)
        finally:
            inner.close()
        self._view = memoryview(self._map) if self._map is not None else memoryview(b"")

    def read_exact(self, offset: int, size: int) -> memoryview:
        if _check(self, offset, size):
            return memoryview(b"")
        return self._view[offset : offset + size]

    def close(self) -> None:
        self._view.release()
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                pass  # views handed out keep it mapped until they go

    def __enter__(self) -> MmapSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- retries
class _Retryable(Exception):
    """A failure worth another attempt; ``after`` is the server's Retry-After, if any."""

    def __init__(self, why: str, after: float | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.after = after


def _with_retries(url: str, retries: int, fn: Callable[[], T]) -> T:
    delay = BACKOFF
    for attempt in range(retries + 1):
        try:
            return fn()
        except _Retryable as exc:
            if attempt == retries:
                if exc.why.startswith("short body"):
                    raise ShortRead(url, f"{exc.why} (after {retries} retries)") from None
                raise SourceError(url, f"{exc.why} (after {retries} retries)") from None
            pause = exc.after if exc.after is not None else delay * (0.5 + random.random())
            time.sleep(min(pause, RETRY_AFTER_MAX))
            delay = min(delay * 2, BACKOFF_MAX)
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------- HTTP
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class HttpSource:
    """An HTTP(S) object read with ranged GETs (see the module documentation)."""

    def __init__(self, url: str, *, headers: dict[str, str] | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT,
                 retries: int = RETRIES, pool_size: int = 16) -> None:
        import urllib3

        self.url = url
        self._u3 = urllib3
        self._retries = retries
        self._headers = {"Accept-Encoding": "identity", **(headers or {})}
        self._timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        # urllib3 follows redirects (re-sending our headers, resolving relative Locations);
        # every other retry is ours, so that a body cut short is retried too.
        self._http = urllib3.PoolManager(
            num_pools=4, maxsize=pool_size, block=False,
            retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0,
                                  redirect=10, raise_on_redirect=True),
        )
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.ranges = True
        self.size = _with_retries(url, retries, self._discover)
        self.identity = f"{url}|{self.etag or ''}|{self.last_modified or ''}|{self.size}"

    # -- open
    def _request(self, method: str, headers: dict[str, str]) -> Any:
        u3 = self._u3
        try:
            return self._http.request(method, self.url, headers={**self._headers, **headers},
                                      timeout=self._timeout, preload_content=False,
                                      redirect=True)
        except u3.exceptions.MaxRetryError as exc:
            reason = exc.reason
            if isinstance(reason, u3.exceptions.ResponseError) or "redirect" in str(reason):
                raise SourceError(self.url, "too many redirects") from exc
            raise _Retryable(f"connection failed: {reason}") from exc
        except (u3.exceptions.HTTPError, OSError) as exc:
            raise _Retryable(f"connection failed: {exc}") from exc

    def _status_error(self, resp: Any) -> None:
        """Raise for a status that is not a success; retryable ones as _Retryable."""
        status = resp.status
        resp.drain_conn()
        if status in (404, 410):
            raise SourceNotFound(self.url, f"HTTP {status}")
        if status in (401, 403):
            raise SourceDenied(self.url, f"HTTP {status}")
        if status == 412:
            raise SourceChanged(self.url, "the object changed (HTTP 412 on If-Match)")
        if status == 416:
            raise SourceChanged(self.url, "the object is shorter than when opened (HTTP 416)")
        if status == 429 or status >= 500:
            after = resp.headers.get("Retry-After")
            raise _Retryable(f"HTTP {status}", float(after) if after and after.isdigit()
                             else None)
        raise SourceError(self.url, f"HTTP {status}")

    def _pin(self, resp: Any) -> None:
        self.etag = resp.headers.get("ETag")
        self.last_modified = resp.headers.get("Last-Modified")

    def _discover(self) -> int:
        resp = self._request("HEAD", {})
        if 200 <= resp.status < 300:
            resp.drain_conn()
            length = resp.headers.get("Content-Length")
            encoded = resp.headers.get("Content-Encoding", "identity") not in ("identity", "")
            if length is not None and length.isdigit() and not encoded:
                self._pin(resp)
                size = int(length)
                self._probe_ranges(size)
                return size
        elif resp.status not in (405, 501):  # HEAD not allowed: try the range probe
            self._status_error(resp)
        else:
            resp.drain_conn()
        # No usable HEAD: ask for one byte; Content-Range says the total.
        resp = self._request("GET", {"Range": "bytes=0-0"})
        try:
            if resp.status == 206:
                m = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", ""))
                if not m or m.group(3) == "*":
                    raise SourceError(self.url, "206 without a usable Content-Range")
                self._pin(resp)
                return int(m.group(3))
            if resp.status == 200:  # Range ignored: the length is the whole body's
                self._pin(resp)
                self.ranges = False
                resp.close()  # do not read the body
                length = resp.headers.get("Content-Length")
                if length is not None and length.isdigit():
                    return int(length)
                raise SourceError(self.url, "no length: neither Content-Length nor Range")
            if resp.status == 416:  # an empty object
                m = _CONTENT_RANGE.fullmatch(
                    resp.headers.get("Content-Range", "").replace("bytes */", "bytes 0-0/"))
                if m and m.group(3) == "0":
                    self._pin(resp)
                    return 0
            self._status_error(resp)
            raise AssertionError("unreachable")
        finally:
            resp.drain_conn()
            resp.release_conn()

    def _probe_ranges(self, size: int) -> None:
        """Does the server honour Range? (Some answer 200 with the whole body.)"""
        if size == 0:
            return
        resp = self._request("GET", {"Range": "bytes=0-0"})
        try:
            if resp.status == 200:
                self.ranges = False
                resp.close()  # the whole body is coming: drop the connection, not read it
                return
            if resp.status != 206:
                self._status_error(resp)
            self._check_version(resp)
        finally:
            resp.drain_conn()
            resp.release_conn()

    # -- reads
    def _check_version(self, resp: Any) -> None:
        etag, lm = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
        if (self.etag and etag and etag != self.etag) or (
                self.last_modified and lm and lm != self.last_modified):
            raise SourceChanged(self.url, f"the object changed (ETag {self.etag} -> {etag},"
                                          f" Last-Modified {self.last_modified} -> {lm})")

    def _conditional(self) -> dict[str, str]:
        if self.etag and not self.etag.startswith("W/"):
            return {"If-Match": self.etag}
        if self.last_modified:
            return {"If-Unmodified-Since": self.last_modified}
        return {}

    def read_exact(self, offset: int, size: int) -> bytes | bytearray:
        if _check(self, offset, size):
            return b""
        return _with_retries(self.url, self._retries, lambda: self._read_once(offset, size))

    def _read_once(self, offset: int, size: int) -> bytearray:
        end = offset + size - 1
        resp = self._request("GET", {"Range": f"bytes={offset}-{end}", **self._conditional()})
        try:
            if resp.status == 206:
                self._check_version(resp)
                m = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", ""))
                if not m:
                    raise SourceError(self.url, "206 without a Content-Range")
                a, b, total = int(m.group(1)), int(m.group(2)), m.group(3)
                if total != "*" and int(total) != self.size:
                    raise SourceChanged(self.url, f"length {self.size} -> {total}")
                if (a, b) != (offset, end):
                    raise SourceError(self.url, f"asked for bytes {offset}-{end},"
                                                f" got {a}-{b}")
                return self._body(resp, size, 0)
            if resp.status == 200:  # Range ignored: skip to offset in the whole body
                self._check_version(resp)
                self.ranges = False
                return self._body(resp, size, offset)
            self._status_error(resp)
            raise AssertionError("unreachable")
        finally:
            resp.drain_conn()
            resp.release_conn()

    def _body(self, resp: Any, size: int, skip: int) -> bytearray:
        """``size`` bytes of the body after skipping ``skip``, read straight into one buffer
        (no intermediate pieces: a fetch moves every byte through here once)."""
        u3 = self._u3
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        try:
            while skip:
                piece = resp.read(min(skip, 1 << 20))
                if not piece:
                    raise _Retryable(f"short body: ended {skip} bytes before the range")
                skip -= len(piece)
            while got < size:
                n = resp.readinto(view[got:])
                if not n:
                    break
                got += n
        except (u3.exceptions.ProtocolError, u3.exceptions.ReadTimeoutError,
                u3.exceptions.HTTPError, OSError) as exc:
            raise _Retryable(f"short body: {exc}") from exc
        finally:
            view.release()
        if got < size:
            raise _Retryable(f"short body: {got} of {size} bytes")
        return buf

    def stream(self, offset: int = 0, chunk: int = 1 << 20) -> Iterator[bytes | bytearray]:
        """The bytes from ``offset`` to the end, in order, in pieces of at most ``chunk``.
        From a server that ignores Range this is one download (resumed after a break by
        skipping what arrived), where ``read_exact`` would fetch the prefix every time."""
        pos = offset
        if self.ranges:
            while pos < self.size:
                n = min(chunk, self.size - pos)
                yield self.read_exact(pos, n)
                pos += n
            return
        u3 = self._u3
        failures = 0
        while pos < self.size:
            def open_body(start: int = pos) -> Any:
                resp = self._request("GET", self._conditional())
                if resp.status != 200:
                    self._status_error(resp)
                self._check_version(resp)
                try:
                    self._body(resp, 0, start)  # skip what we have
                except BaseException:
                    resp.drain_conn()
                    resp.release_conn()
                    raise
                return resp

            resp = _with_retries(self.url, self._retries, open_body)
            try:
                while pos < self.size:
                    data = resp.read(min(chunk, self.size - pos))
                    if not data:
                        raise _Retryable(f"short body: ended at {pos} of {self.size}")
                    yield data
                    pos += len(data)
            except (_Retryable, u3.exceptions.HTTPError, OSError) as exc:
                failures += 1
                if failures > self._retries:
                    raise ShortRead(self.url, f"body cut short at {pos}: {exc}") from None
                time.sleep(min(BACKOFF * 2 ** failures, BACKOFF_MAX))
            finally:
                resp.drain_conn()
                resp.release_conn()

    def close(self) -> None:
        self._http.clear()

    def __enter__(self) -> HttpSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- S3
class S3Source:
    """An S3 object (``s3://bucket/key``): HEAD for the size and ETag, ranged GETs with
    ``IfMatch``. Credentials come from boto3's standard chain (environment, shared files,
    instance roles); ``endpoint_url`` selects an S3-compatible server, addressed path-style."""

    def __init__(self, url: str, *, endpoint_url: str | None = None, region: str | None = None,
                 retries: int = RETRIES, client: Any = None, pool_size: int = 16) -> None:
        import boto3
        import botocore.config
        import botocore.exceptions

        self.url = url
        self._bce = botocore.exceptions
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
            raise SourceError(url, "expected s3://bucket/key")
        self.bucket, self.key = parsed.netloc, parsed.path.lstrip("/")
        self._retries = retries
        if client is None:
            cfg = botocore.config.Config(
                connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
                retries={"max_attempts": retries + 1, "mode": "standard"},
                max_pool_connections=pool_size,
                s3={"addressing_style": "path"} if endpoint_url else {},
            )
            client = boto3.session.Session().client(
                "s3", endpoint_url=endpoint_url, region_name=region, config=cfg)
        self._s3 = client
        head = self._call(lambda: self._s3.head_object(Bucket=self.bucket, Key=self.key))
        self.size = int(head["ContentLength"])
        self.etag = str(head.get("ETag", ""))
        self.ranges = True
        self.identity = f"{url}|{endpoint_url or ''}|{self.etag}|{self.size}"

    def _call(self, fn: Callable[[], T]) -> T:
        bce = self._bce
        try:
            return fn()
        except bce.ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound") or status == 404:
                raise SourceNotFound(self.url, f"no such object ({code or status})") from exc
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                        "AllAccessDisabled") or status == 403:
                raise SourceDenied(self.url, f"access denied ({code or status})") from exc
            if code in ("412", "PreconditionFailed") or status == 412:
                raise SourceChanged(self.url, "the object changed (ETag)") from exc
            raise SourceError(self.url, f"{code or status}: {err.get('Message', '')}") from exc
        except bce.NoCredentialsError as exc:
            raise SourceDenied(self.url, "no credentials found") from exc
        except (bce.BotoCoreError, OSError) as exc:
            raise SourceError(self.url, str(exc)) from exc

    def read_exact(self, offset: int, size: int) -> bytes:
        if _check(self, offset, size):
            return b""
        return _with_retries(self.url, self._retries, lambda: self._read_once(offset, size))

    def _read_once(self, offset: int, size: int) -> bytes:
        resp = self._call(lambda: self._s3.get_object(
            Bucket=self.bucket, Key=self.key, Range=f"bytes={offset}-{offset + size - 1}",
            IfMatch=self.etag))
        if str(resp.get("ETag", self.etag)) != self.etag:
            raise SourceChanged(self.url, "the object changed (ETag)")
        try:
            data: bytes = resp["Body"].read()
        except (self._bce.BotoCoreError, OSError) as exc:
            raise _Retryable(f"short body: {exc}") from exc
        finally:
            resp["Body"].close()
        if len(data) != size:
            raise _Retryable(f"short body: {len(data)} of {size} bytes")
        return data

    def close(self) -> None:
        pass  # boto3 clients close their pools when collected

    def __enter__(self) -> S3Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- fsspec
class FsspecSource:
    """Any fsspec filesystem (``gcs://``, ``abfs://``, ``sftp://``, ...): ``fs.info`` for the
    size and version, ``fs.cat_file(path, start, end)`` for reads."""

    def __init__(self, url: str, *, retries: int = RETRIES, **storage_options: Any) -> None:
        import fsspec

        self.url = url
        self._retries = retries
        self._fs, self._path = fsspec.core.url_to_fs(url, **storage_options)
        try:
            info = self._fs.info(self._path)
        except FileNotFoundError as exc:
            raise SourceNotFound(url, "no such object") from exc
        except PermissionError as exc:
            raise SourceDenied(url, "permission denied") from exc
        if info.get("type", "file") != "file" or info.get("size") is None:
            raise SourceError(url, "not a file of known size")
        self.size = int(info["size"])
        self._version = {k: str(info[k]) for k in ("ETag", "etag", "mtime", "LastModified",
                                                    "created", "generation") if k in info}
        self.ranges = True
        self.identity = f"{url}|{sorted(self._version.items())}|{self.size}"

    def read_exact(self, offset: int, size: int) -> bytes:
        if _check(self, offset, size):
            return b""

        def once() -> bytes:
            try:
                data = self._fs.cat_file(self._path, start=offset, end=offset + size)
            except FileNotFoundError as exc:
                raise SourceNotFound(self.url, "the object went away") from exc
            except PermissionError as exc:
                raise SourceDenied(self.url, "permission denied") from exc
            except OSError as exc:
                raise _Retryable(f"read failed: {exc}") from exc
            if len(data) != size:
                raise _Retryable(f"short body: {len(data)} of {size} bytes")
            return bytes(data)

        return _with_retries(self.url, self._retries, once)

    def close(self) -> None:
        pass

    def __enter__(self) -> FsspecSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- dispatch
def open_source(url: str | os.PathLike[str], **options: Any) -> Source:
    """The source for ``url``: a local path or ``file://`` (``FileSource``), ``http(s)://``
    (``HttpSource``), ``s3://`` (``S3Source``), anything else fsspec knows (``FsspecSource``).
    ``options`` go to the source's constructor."""
    if not isinstance(url, str):
        return FileSource(url, **options)
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme in ("", "file"):
        return FileSource(url[7:] if scheme == "file" else url, **options)
    if scheme in ("http", "https"):
        return HttpSource(url, **options)
    if scheme == "s3":
        return S3Source(url, **options)
    return FsspecSource(url, **options)
