"""The ``shmstore`` fsspec protocol: remote files read through the machine-wide shared cache.

``fsspec.open("shmstore://https://host/file")`` (or ``shmstore://s3://bucket/key``, any URL
``shmstore.fetch`` takes) opens the object with ``shmstore.open_url``: one download per machine,
shared by every process that opens it, each read waiting only for the bytes it needs. Options
for the download and the source are the filesystem's (``storage_options={"chunk": ...,
"workers": ..., "endpoint_url": ...}``). The chained form ``shmstore::https://host/file`` works
too where fsspec can load the inner protocol's own filesystem (for HTTP that needs aiohttp).
Read-only: writing and deleting are not supported; listing shows the one file.
"""

from __future__ import annotations

from typing import Any

from fsspec.spec import AbstractFileSystem

from .sources import open_source
from .urlfile import open_url


class SharedCacheFileSystem(AbstractFileSystem):  # type: ignore[misc]
    protocol = "shmstore"
    root_marker = ""

    def __init__(self, target_protocol: str | None = None,
                 target_options: dict[str, Any] | None = None, fo: str | None = None,
                 **options: Any) -> None:
        super().__init__(**options)
        self._target_protocol = target_protocol
        self._options = {**(target_options or {}), **{
            k: v for k, v in options.items() if k not in ("skip_instance_cache",
                                                          "use_listings_cache",
                                                          "listings_expiry_time",
                                                          "max_paths", "asynchronous",
                                                          "loop")}}

    def _url(self, path: str) -> str:
        if "://" in path:
            return path.removeprefix("shmstore://")
        if self._target_protocol:
            return f"{self._target_protocol}://{path}"
        return path

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, str):
            return path.removeprefix("shmstore://")
        return path

    def _open(self, path: str, mode: str = "rb", block_size: Any = None,
              autocommit: bool = True, cache_options: Any = None, **kwargs: Any) -> Any:
        if mode != "rb":
            raise NotImplementedError("the shmstore filesystem is read-only")
        return open_url(self._url(path), **self._options)

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        src = open_source(self._url(path), **{k: v for k, v in self._options.items()
                                              if k not in ("name", "path", "chunk",
                                                           "workers")})
        try:
            return {"name": path, "size": src.size, "type": "file"}
        finally:
            src.close()

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        info = self.info(path)
        return [info] if detail else [info["name"]]
