"""The shmstore error tree.

Every error a caller can meet derives from ``StorageError``:

    StorageError
    ├── InvalidRange            (also ValueError)   a bad offset, size or range; nothing was touched
    ├── InvalidName             (also ValueError)   a resource name shmstore cannot use
    ├── ResourceFailed          the resource failed; ``.reason`` says why, in every process
    │   └── WriterDied          the last writer exited or closed before commit
    ├── Cancelled               the resource, or this one wait, was cancelled
    ├── TmpClaimed              a live writer holds the temp file of a crash-safe resource
    ├── ReadOnlyError           a write or lifecycle change through a read-only handle,
    │                           or a write after commit
    ├── ResourceNotFound        (also FileNotFoundError)   no resource of that name
    ├── ResourceExists          (also FileExistsError)     a resource of that name already exists
    ├── CorruptResource         a control block, journal or file that is not a valid shmstore object
    │   └── LogCorrupt          a log file fails a check (settings, index, segment)
    │       ├── TornRecord      a record that was never completely written (where recovery cuts)
    │       ├── RecordCorrupt   a record whose bytes fail their CRC or structure (a flipped bit)
    │       ├── RecordMissing   a record is missing from the sequence
    │       ├── RecordOutOfOrder  a record stands in another record's place
    │       └── ChainBroken     a record's chain link disagrees with the records before it
    ├── WriterActive            another live process is the log's writer
    ├── StorageFull             no room in /dev/shm (or on disk) for the requested bytes
    ├── ResourceClosed          the handle was closed
    └── SourceError             a source (file, HTTP, S3, fsspec) could not deliver its bytes
        ├── ShortRead           fewer bytes than asked for arrived (after retries)
        ├── SourceChanged       the object changed since it was opened (never a mix of two)
        ├── SourceNotFound      (also FileNotFoundError)   no such object
        └── SourceDenied        (also PermissionError)     access to the object was refused

Timeouts raise the built-in ``TimeoutError``.

Errors cross processes (a worker's failure reaches its parent through ``pickle``), so each
keeps its data in ``args`` in constructor order: default exception pickling re-creates it.
Foreign errors (``OSError``, ``posix_ipc`` errors) are translated at the edge modules of
``shmstore.ipc``, ``from`` the original.
"""

from __future__ import annotations

__all__ = [
    "Cancelled",
    "ChainBroken",
    "CorruptResource",
    "InvalidName",
    "InvalidRange",
    "LogCorrupt",
    "ReadOnlyError",
    "RecordCorrupt",
    "RecordMissing",
    "RecordOutOfOrder",
    "ResourceClosed",
    "ResourceExists",
    "ResourceFailed",
    "ResourceNotFound",
    "ShortRead",
    "SourceChanged",
    "SourceDenied",
    "SourceError",
    "SourceNotFound",
    "StorageError",
    "StorageFull",
    "TmpClaimed",
    "TornRecord",
    "WriterActive",
    "WriterDied",
]


class StorageError(Exception):
    """Base of every shmstore error."""


class InvalidRange(StorageError, ValueError):
    """A range, offset or size that shmstore refuses: reversed, negative, or past 2**63.

    Raised before any memory is touched.
    """

    def __init__(self, start: int, end: int, why: str = "invalid range") -> None:
        super().__init__(start, end, why)
        self.start = start
        self.end = end
        self.why = why

    def __str__(self) -> str:
        return f"{self.why}: [{self.start}, {self.end})"


class InvalidName(StorageError, ValueError):
    """A resource name that is empty, too long (255 UTF-8 bytes at most) or contains NUL."""

    def __init__(self, name: object, why: str) -> None:
        super().__init__(name, why)
        self.name = name
        self.why = why

    def __str__(self) -> str:
        return f"invalid resource name {self.name!r}: {self.why}"


class ResourceFailed(StorageError):
    """The resource was failed by a writer; ``reason`` is the writer's message.

    Every wait and read on the resource raises it, in every process, until a writer
    reactivates the resource.
    """

    def __init__(self, reason: str, name: str = "") -> None:
        super().__init__(reason, name)
        self.reason = reason
        self.name = name

    def __str__(self) -> str:
        where = f"{self.name!r}: " if self.name else ""
        return f"{where}resource failed: {self.reason}"


class WriterDied(ResourceFailed):
    """No writer is left (killed, exited or closed) and the waited-for bytes are not there.

    The resource itself stays active: bytes already covered stay readable, and a new writer
    (``shmstore.open(name, mode="r+")``) can resume it.
    """


class Cancelled(StorageError):
    """The wait's own cancel token fired, or the resource was cancelled."""


class TmpClaimed(StorageError):
    """A live writer holds the claim on ``path`` (the temp file of a crash-safe resource)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path

    def __str__(self) -> str:
        return f"temp file is claimed by a live writer: {self.path}"


class ReadOnlyError(StorageError):
    """A write, commit, fail, cancel or reactivate through a read-only handle, or a write to a
    committed resource that was not reactivated."""


class ResourceNotFound(StorageError, FileNotFoundError):
    """No resource of that name (or path) exists."""


class ResourceExists(StorageError, FileExistsError):
    """A resource of that name (or path) already exists."""


class CorruptResource(StorageError):
    """A control block, journal or data file that is not a valid shmstore object: wrong magic,
    unknown version, truncated, or fields that contradict each other."""


class LogCorrupt(CorruptResource):
    """A file of a log fails a check: its settings, a segment index, or a record."""


class _RecordError(LogCorrupt):
    def __init__(self, where: int, why: str) -> None:
        super().__init__(where, why)
        self.where = where
        self.why = why

    def __str__(self) -> str:
        return f"{self.why} (at {self._what} {self.where})"

    _what = "offset"


class TornRecord(_RecordError):
    """A record that was never completely written: it runs past the written bytes or starts
    with zeros. Recovery cuts the log here; a read never serves it. ``where`` is a byte
    position in its segment."""

    _what = "byte"


class RecordCorrupt(_RecordError):
    """A complete record whose magic, fields or CRC are wrong (a flipped bit), or whose
    compressed payload does not decode to its stated size. ``where`` is a byte position in
    its segment."""

    _what = "byte"


class RecordMissing(_RecordError):
    """The record at ``where`` (an offset) is not in the log where it must be."""


class RecordOutOfOrder(_RecordError):
    """Another record stands where the record at ``where`` (an offset) must be, and that one
    comes later: records were reordered."""


class ChainBroken(_RecordError):
    """The record at ``where`` (an offset) does not link to the chain hash of the records
    before it: a record was replaced, or the chain was cut."""


class WriterActive(StorageError):
    """Another live process is the writer of this log (one writer per log at a time; the
    kernel frees the claim when that writer exits or dies)."""


class StorageFull(StorageError):
    """There is not enough room (``/dev/shm`` or the file system) for the requested bytes.

    Raised instead of letting the process die of SIGBUS on a later page fault.
    """


class ResourceClosed(StorageError):
    """The handle was closed; open the resource again to keep using it."""


class SourceError(StorageError):
    """A source could not deliver its bytes: ``.url`` names it; the message says why."""

    def __init__(self, url: str, why: str) -> None:
        super().__init__(url, why)
        self.url = url
        self.why = why

    def __str__(self) -> str:
        return f"{self.url}: {self.why}"


class ShortRead(SourceError):
    """A read returned fewer bytes than asked for, after every retry."""


class SourceChanged(SourceError):
    """The object changed (ETag, Last-Modified or length) since the source was opened."""


class SourceNotFound(SourceError, FileNotFoundError):
    """No such object (HTTP 404/410, S3 NoSuchKey or NoSuchBucket, a missing file)."""


class SourceDenied(SourceError, PermissionError):
    """Access refused (HTTP 401/403, S3 AccessDenied or bad credentials)."""
