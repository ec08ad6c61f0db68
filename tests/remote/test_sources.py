"""Sources against real servers: the HTTP server of ``server.py`` with its fault modes, a
moto S3 server process, real files, and fsspec's local and memory filesystems."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

import shmstore
from shmstore.sources import (
    FileSource,
    FsspecSource,
    HttpSource,
    MmapSource,
    S3Source,
    open_source,
)

from .conftest import BUCKET, payload
from .server import Server

DATA = payload(1 << 20, 1)
FAST = {"retries": 3}


def _served(http: Server, path: str = "/obj") -> list[tuple[int, int]]:
    return sorted((a, b) for p, a, b in http.state.ranges if p == path)


@pytest.mark.timeout(60)
def test_http_reads_exact_ranges_and_pins_the_version(http: Server) -> None:
    http.state.put("/obj", DATA)
    with HttpSource(http.base + "/obj", **FAST) as src:
        assert src.size == len(DATA) and src.ranges is True
        assert src.etag and src.last_modified and src.etag in src.identity
        assert src.read_exact(0, 10) == DATA[:10]
        assert src.read_exact(12345, 100_000) == DATA[12345:112345]
        assert src.read_exact(len(DATA) - 1, 1) == DATA[-1:]
        assert src.read_exact(500, 0) == b""
        with pytest.raises(shmstore.InvalidRange):
            src.read_exact(len(DATA) - 5, 10)
        gets = [r for m, _p, r in http.state.requests if m == "GET"]
        assert "bytes=12345-112344" in gets


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", ["no_length", "no_head", "gzip_head"])
def test_http_length_falls_back_to_a_one_byte_range(http: Server, fault: str) -> None:
    http.state.put("/obj", DATA)
    setattr(http.state.faults, fault, True)
    with HttpSource(http.base + "/obj", **FAST) as src:
        assert src.size == len(DATA)
        assert src.read_exact(100, 50) == DATA[100:150]
    assert ("GET", "/obj", "bytes=0-0") in http.state.requests


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", ["status_500", "status_429", "short_bodies"])
def test_http_retries_5xx_429_and_bodies_cut_short(http: Server, fault: str) -> None:
    http.state.put("/obj", DATA)
    with HttpSource(http.base + "/obj", **FAST) as src:
        setattr(http.state.faults, fault, 2)
        assert src.read_exact(1000, 200_000) == DATA[1000:201000]
        assert getattr(http.state.faults, fault) == 0  # both faults were met and retried


@pytest.mark.timeout(60)
def test_http_gives_up_after_its_retries_with_a_clear_error(http: Server) -> None:
    http.state.put("/obj", DATA)
    with HttpSource(http.base + "/obj", retries=2) as src:
        http.state.faults.status_500 = 10
        with pytest.raises(shmstore.SourceError, match="HTTP 500"):
            src.read_exact(0, 100)
        http.state.faults.status_500 = 0
        http.state.faults.short_bodies = 10
        with pytest.raises(shmstore.ShortRead):
            src.read_exact(0, 100_000)


@pytest.mark.timeout(60)
def test_http_server_ignoring_range(http: Server) -> None:
    http.state.put("/obj", DATA)
    http.state.faults.ignore_range = True
    with HttpSource(http.base + "/obj", **FAST) as src:
        assert src.ranges is False
        assert src.read_exact(5000, 10) == DATA[5000:5010]
        http.state.ranges.clear()
        got = b"".join(src.stream(0, 64 << 10))
        assert got == DATA
        assert _served(http) == [(0, len(DATA))]  # one download, not one per piece


@pytest.mark.timeout(60)
def test_http_redirects_resend_range(http: Server) -> None:
    http.state.put("/obj", DATA)
    with HttpSource(http.base + "/redirect/obj", **FAST) as src:
        assert src.size == len(DATA)
        assert src.read_exact(777, 1000) == DATA[777:1777]
    assert ("GET", "/obj", "bytes=777-1776") in http.state.requests


@pytest.mark.timeout(60)
def test_http_object_changing_mid_fetch_is_an_error_never_a_mix(http: Server) -> None:
    http.state.put("/obj", DATA)
    with HttpSource(http.base + "/obj", **FAST) as src:
        assert src.read_exact(0, 4096) == DATA[:4096]
        http.state.faults.change_after = 0  # the next GET sees a new version
        with pytest.raises(shmstore.SourceChanged):
            src.read_exact(0, 4096)


@pytest.mark.timeout(60)
def test_http_wrong_content_range_is_refused(http: Server) -> None:
    http.state.put("/obj", DATA)
    with HttpSource(http.base + "/obj", **FAST) as src:
        http.state.faults.wrong_range = 1
        with pytest.raises(shmstore.SourceError, match="asked for bytes"):
            src.read_exact(10, 100)


@pytest.mark.timeout(60)
def test_http_missing_object_and_slow_trickle(http: Server) -> None:
    with pytest.raises(shmstore.SourceNotFound):
        HttpSource(http.base + "/nothing", **FAST)
    http.state.put("/obj", DATA[:300_000])
    http.state.faults.trickle = 0.002
    with HttpSource(http.base + "/obj", **FAST) as src:
        assert src.read_exact(0, 300_000) == DATA[:300_000]
    http.state.faults.trickle = 0.5  # slower than the read timeout: retried, then an error
    with HttpSource(http.base + "/obj", retries=1, read_timeout=0.1) as src, \
            pytest.raises(shmstore.SourceError):
        src.read_exact(0, 300_000)


@pytest.mark.timeout(60)
def test_http_is_thread_safe(http: Server) -> None:
    http.state.put("/obj", DATA)
    errors: list[BaseException] = []
    with HttpSource(http.base + "/obj", **FAST) as src:
        def reader(k: int) -> None:
            try:
                for i in range(20):
                    a = (k * 7919 + i * 104729) % (len(DATA) - 5000)
                    assert src.read_exact(a, 5000) == DATA[a : a + 5000]
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert not errors


@pytest.mark.timeout(60)
def test_file_and_mmap_sources(tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(DATA)
    with FileSource(p) as f, MmapSource(p) as m:
        assert f.size == m.size == len(DATA)
        assert f.read_exact(10, 20) == DATA[10:30]
        v = m.read_exact(10, 20)
        assert isinstance(v, memoryview) and bytes(v) == DATA[10:30]
        v.release()
        with pytest.raises(shmstore.InvalidRange):
            f.read_exact(len(DATA), 1)
    with FileSource(p) as f:
        with open(p, "r+b") as fh:
            fh.truncate(1000)
        with pytest.raises((shmstore.SourceChanged, shmstore.ShortRead)):
            f.read_exact(0, 2000)
    with pytest.raises(shmstore.SourceNotFound):
        FileSource(tmp_path / "missing")
    assert isinstance(open_source(str(p)), FileSource)
    assert isinstance(open_source("file://" + str(p)), FileSource)


@pytest.mark.timeout(60)
def test_fsspec_source(tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    fs.pipe("/shmstore-test/obj", DATA[:100_000])
    try:
        with FsspecSource("memory://shmstore-test/obj") as src:
            assert src.size == 100_000
            assert src.read_exact(500, 1000) == DATA[500:1500]
        with pytest.raises(shmstore.SourceNotFound):
            FsspecSource("memory://shmstore-test/none")
        assert isinstance(open_source("memory://shmstore-test/obj"), FsspecSource)
    finally:
        fs.rm("/shmstore-test", recursive=True)


@pytest.mark.timeout(120)
def test_s3_against_a_real_s3_server(s3: dict[str, Any], monkeypatch: pytest.MonkeyPatch
                                     ) -> None:
    for k, v in s3["creds"].items():
        monkeypatch.setenv(k, v)  # the standard credential chain: the environment
    url = f"s3://{BUCKET}/obj"
    with S3Source(url, endpoint_url=s3["endpoint"]) as src:
        assert src.size == len(s3["data"])
        assert src.read_exact(1000, 50_000) == s3["data"][1000:51000]
        assert src.etag in src.identity
    with pytest.raises(shmstore.SourceNotFound):
        S3Source(f"s3://{BUCKET}/missing", endpoint_url=s3["endpoint"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOTAREALKEY00000")
    with pytest.raises(shmstore.SourceDenied):
        S3Source(url, endpoint_url=s3["endpoint"])
    with pytest.raises(shmstore.SourceError, match="s3://bucket/key"):
        S3Source("s3://just-a-bucket", endpoint_url=s3["endpoint"])
    assert os.environ["AWS_ACCESS_KEY_ID"] == "AKIANOTAREALKEY00000"
