"""Where users already are: ``open_url`` file objects, the ``shmstore`` fsspec protocol,
``shmstore fetch URL`` and ``shmstore cat URL``, all against the real local HTTP server."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

import shmstore

from .conftest import payload
from .server import Server

MiB = 1 << 20
CLI = [sys.executable, "-m", "shmstore"]


def _unlink_fetched(url: str) -> None:
    src = shmstore.sources.open_source(url)
    try:
        r = shmstore.fetch(src, wait=True)
        r.unlink()
        r.close()
    finally:
        src.close()


@pytest.mark.timeout(60)
def test_open_url_reads_seeks_and_shares_one_download(http: Server) -> None:
    data = payload(3 * MiB + 7, 11)
    http.state.put("/obj", data)
    url = http.base + "/obj"
    try:
        with shmstore.open_url(url, chunk=256 << 10) as f, \
                shmstore.open_url(url, chunk=256 << 10) as g:
            assert isinstance(f, io.BufferedReader)
            f.seek(2 * MiB)
            assert f.read(100) == data[2 * MiB : 2 * MiB + 100]
            assert f.seek(-7, io.SEEK_END) == len(data) - 7
            assert f.read() == data[-7:]
            assert f.read(10) == b""
            assert g.read() == data
        assert http.state.served["/obj"] == len(data) + 2  # once, plus the two probes
    finally:
        _unlink_fetched(url)


@pytest.mark.timeout(60)
def test_fsspec_protocol_opens_through_the_shared_cache(http: Server) -> None:
    fsspec = pytest.importorskip("fsspec")
    data = payload(MiB, 12)
    http.state.put("/table.bin", data)
    url = http.base + "/table.bin"
    try:
        with fsspec.open("shmstore://" + url, "rb") as f:
            f.seek(1000)
            assert f.read(24) == data[1000:1024]
        fs = fsspec.filesystem("shmstore")
        assert fs.info(url)["size"] == MiB
        with fs.open(url) as f:
            assert f.read() == data
        with pytest.raises(NotImplementedError):
            fs.open(url, "wb")
    finally:
        _unlink_fetched(url)


@pytest.mark.timeout(120)
def test_cli_fetch_and_cat_url(http: Server) -> None:
    data = payload(2 * MiB, 13)
    http.state.put("/obj", data)
    url = http.base + "/obj"
    try:
        out = subprocess.run([*CLI, "fetch", url, "--chunk", "256K"], capture_output=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        name = out.stdout.decode().strip()
        assert name.startswith("fetch-")
        assert b"100.0%" in out.stderr and b"committed" in out.stderr
        with shmstore.open(name) as r:
            assert r.read(0, len(data)) == data
        cat = subprocess.run([*CLI, "cat", url], capture_output=True, timeout=60)
        assert cat.returncode == 0, cat.stderr
        assert cat.stdout == data
        missing = subprocess.run([*CLI, "fetch", http.base + "/nothing"],
                                 capture_output=True, timeout=60)
        assert missing.returncode == 1
        assert b"SourceNotFound" in missing.stderr and b"404" in missing.stderr
    finally:
        _unlink_fetched(url)
