"""Remote objects as ordinary read-only files, through the machine-wide shared cache.

``shmstore.open_url(url)`` returns a binary file object (``read``, ``readinto``, ``seek``,
``tell``) over ``fetch(url, wait=False)``: reads block only until the bytes they need land,
and a seek moves the download to where it now reads (``fetch``'s readers-first order). Every
process that opens the same URL shares one download.

For libraries that take fsspec URLs (pandas, pyarrow, PyTorch data loaders), the ``shmstore``
fsspec protocol does the same: ``fsspec.open("shmstore://https://host/data.parquet")`` or
``pandas.read_parquet("shmstore://s3://bucket/key", storage_options={...})``. It
is registered when fsspec loads (the ``fsspec.specs`` entry point of this package).
"""

from __future__ import annotations

import io
import os
from typing import Any

from .core.lifecycle import WaitOutcome
from .errors import ResourceClosed
from .fetch import fetch
from .resource import Resource
from .sources import Source, open_source

__all__ = ["SharedFile", "open_url"]

BUFFER = 1 << 20


class SharedFile(io.RawIOBase):
    """A read-only, seekable file over a resource that is (or will be) ``size`` bytes long;
    reads wait (up to ``timeout`` seconds each) for the bytes they return."""

    def __init__(self, resource: Resource, size: int, *, name: str = "",
                 timeout: float | None = None) -> None:
        super().__init__()
        self._r = resource
        self.size = size
        self.name = name
        self._pos = 0
        self._timeout = timeout

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, b: Any) -> int:
        if self.closed:
            raise ResourceClosed(f"{self.name or 'shared file'} is closed")
        mv = memoryview(b).cast("B")
        want = min(len(mv), self.size - self._pos)
        if want <= 0:
            return 0
        if self._r.wait_range(self._pos, self._pos + want,
                              timeout=self._timeout) is WaitOutcome.EOF:
            return 0
        n = self._r.read_at(self._pos, mv[:want])
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            self._r.close()
        super().close()


def open_url(url: str | os.PathLike[str] | Source, *, buffering: int = BUFFER,
             timeout: float | None = None, **options: Any) -> io.BufferedReader | SharedFile:
    """Open ``url`` for reading through the shared cache (see the module documentation).
    ``options`` go to ``fetch`` (``name``, ``path``, ``chunk``, ``workers``) and to the
    source (``endpoint_url``, ``headers``, ...). ``buffering=0`` returns the raw file."""
    fetch_keys = {"name", "path", "chunk", "workers"}
    fetch_opts = {k: v for k, v in options.items() if k in fetch_keys}
    source_opts = {k: v for k, v in options.items() if k not in fetch_keys}
    source = url if isinstance(url, Source) else open_source(url, **source_opts)
    resource = fetch(source, wait=False, **fetch_opts)
    raw = SharedFile(resource, source.size, name=str(source.url), timeout=timeout)
    return raw if buffering == 0 else io.BufferedReader(raw, buffer_size=buffering)

