"""shmstore: share bytes between processes while they are still being produced.

A producer writes byte ranges of a named resource at any offset; consumers in other processes
attach by name, block in ``wait_range(start, end)`` until those bytes land, and read them
without copying::

    import shmstore
    w = shmstore.create("job-42", capacity=1 << 30)
    w.write_at(0, b"hello")
    r = shmstore.open("job-42")                 # in any process
    r.wait_range(0, 5)                          # -> WaitOutcome.READY
    r.read(0, 5)                                # -> b"hello"

For files on disk, ``Atomic`` (whole-file rewrites) and ``AtomicChunked`` (streamed writes to a
claimed ``<path>.tmp``, published by ``commit``) give readers no file or the complete bytes.
"""

from .atomic import Atomic, AtomicChunked
from .core.lifecycle import ResourceStatus, WaitOutcome
from .errors import (
    Cancelled,
    ChainBroken,
    CorruptResource,
    InvalidName,
    InvalidRange,
    LogCorrupt,
    ReadOnlyError,
    RecordCorrupt,
    RecordMissing,
    RecordOutOfOrder,
    ResourceClosed,
    ResourceExists,
    ResourceFailed,
    ResourceNotFound,
    ShortRead,
    SourceChanged,
    SourceDenied,
    SourceError,
    SourceNotFound,
    StorageError,
    StorageFull,
    TmpClaimed,
    TornRecord,
    WriterActive,
    WriterDied,
)
from .fetch import fetch
from .log import Cursor, Log, Record
from .resource import CancelToken, Resource, create, open
from .urlfile import open_url

__all__ = [
    "Atomic",
    "AtomicChunked",
    "CancelToken",
    "Cancelled",
    "ChainBroken",
    "CorruptResource",
    "Cursor",
    "InvalidName",
    "InvalidRange",
    "Log",
    "LogCorrupt",
    "ReadOnlyError",
    "Record",
    "RecordCorrupt",
    "RecordMissing",
    "RecordOutOfOrder",
    "Resource",
    "ResourceClosed",
    "ResourceExists",
    "ResourceFailed",
    "ResourceNotFound",
    "ResourceStatus",
    "ShortRead",
    "SourceChanged",
    "SourceDenied",
    "SourceError",
    "SourceNotFound",
    "StorageError",
    "StorageFull",
    "TmpClaimed",
    "TornRecord",
    "WaitOutcome",
    "WriterActive",
    "WriterDied",
    "create",
    "fetch",
    "open",
    "open_url",
]

__version__ = "0.1.0"
