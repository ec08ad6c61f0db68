"""The append-only, hash-chained record log (``shmstore.Log``): theory of operation in
``log.log``, the byte format in ``log.format``."""

from .log import Cursor, Log, Record

__all__ = ["Cursor", "Log", "Record"]
