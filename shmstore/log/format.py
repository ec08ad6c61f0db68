"""The log's on-disk format: record frames, the hash chain, checkpoints, segment indexes and
the settings file. Pure: bytes in, bytes out; no file, mmap or clock (``docs/format.md`` has
the byte maps, and says why each field is there).

Record frame (little-endian), ``FRAME_OVERHEAD`` = 60 bytes around the stored payload::

    0   4   magic        b"SLR1"
    4   1   kind         0 data, 1 checkpoint
    5   1   codec        0 none, 1 zlib
    6   2   reserved     0
    8   4   stored_len   payload bytes as stored
    12  4   logical_len  payload bytes after decoding (== stored_len for codec 0)
    16  8   offset       the record's offset in the log
    24  32  prev         chain hash before this record (zeros at genesis)
    56  L   payload      as stored
    56+L 4  crc32        zlib.crc32 of bytes [0, 56+L): the header and the stored payload

Chain: ``h(n) = SHA-256(h(n-1) || kind || logical payload)``, ``h(-1)`` = 32 zero bytes. Only
data records are chained, so the chain is a function of the appended payloads alone: two
logs with different segment sizes, checkpoint spacing, compression or backend agree on it.

A checkpoint frame sits right before the data record it anchors (the first record of every
segment and every ``checkpoint_every``-th one after it). It takes no offset of its own: its
``offset`` field is the offset of the record it anchors, its ``prev`` the chain hash before
that record, and its payload repeats both with the segment number (``CHECKPOINT``).
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass
from typing import Final

from ..errors import (
    ChainBroken,
    LogCorrupt,
    RecordCorrupt,
    TornRecord,
)

__all__ = [
    "CHECKPOINT",
    "CHECKPOINT_FRAME",
    "CODEC_NONE",
    "CODEC_ZLIB",
    "FRAME_OVERHEAD",
    "HEADER",
    "IDX_HEADER",
    "IDX_TRAILER",
    "KIND_CHECKPOINT",
    "KIND_DATA",
    "SETTINGS",
    "ZERO_HASH",
    "Frame",
    "Settings",
    "chain",
    "decode_payload",
    "encode_checkpoint",
    "encode_record",
    "idx_entries",
    "pack_idx_header",
    "pack_idx_trailer",
    "pack_settings",
    "parse_frame",
    "unpack_idx_header",
    "unpack_idx_trailer",
    "unpack_settings",
]

MAGIC: Final = b"SLR1"
KIND_DATA: Final = 0
KIND_CHECKPOINT: Final = 1
CODEC_NONE: Final = 0
CODEC_ZLIB: Final = 1
ZERO_HASH: Final = bytes(32)

HEADER: Final = struct.Struct("<4sBBHIIQ32s")  # 56 bytes
_CRC: Final = struct.Struct("<I")
FRAME_OVERHEAD: Final = HEADER.size + _CRC.size  # 60
CHECKPOINT: Final = struct.Struct("<32sQII")  # chain hash, offset, segment, reserved: 48 bytes
CHECKPOINT_FRAME: Final = FRAME_OVERHEAD + CHECKPOINT.size  # 108
# Compression is tried only from this size up: below it zlib's own framing eats the gain.
MIN_COMPRESS: Final = 64

_sha256 = hashlib.sha256
_crc32 = zlib.crc32
_pack_header = HEADER.pack_into
_unpack_header = HEADER.unpack_from


def chain(prev: bytes, kind: int, payload: bytes | memoryview) -> bytes:
    """The chain hash after a record: SHA-256(prev || kind || logical payload)."""
    h = _sha256(prev)
    h.update(bytes((kind,)))
    h.update(payload)
    return h.digest()


def encode_record(offset: int, prev: bytes, payload: bytes | memoryview, *,
                  compress: bool) -> tuple[bytearray, bytes]:
    """One data frame and the chain hash after it. The payload is stored zlib-compressed
    only when ``compress`` and the compressed form is smaller."""
    logical = len(payload)
    stored: bytes | memoryview = payload
    codec = CODEC_NONE
    if compress and logical >= MIN_COMPRESS:
        packed = zlib.compress(payload, 1)
        if len(packed) < logical:
            stored, codec = packed, CODEC_ZLIB
    n = len(stored)
    frame = bytearray(FRAME_OVERHEAD + n)
    _pack_header(frame, 0, MAGIC, KIND_DATA, codec, 0, n, logical, offset, prev)
    frame[HEADER.size:HEADER.size + n] = stored
    _CRC.pack_into(frame, HEADER.size + n, _crc32(memoryview(frame)[:HEADER.size + n]))
    return frame, chain(prev, KIND_DATA, payload)


def encode_checkpoint(offset: int, head: bytes, segment: int) -> bytearray:
    """The checkpoint frame anchoring the record at ``offset`` (chain hash ``head`` before
    it) in segment ``segment``."""
    frame = bytearray(CHECKPOINT_FRAME)
    _pack_header(frame, 0, MAGIC, KIND_CHECKPOINT, CODEC_NONE, 0, CHECKPOINT.size,
                 CHECKPOINT.size, offset, head)
    CHECKPOINT.pack_into(frame, HEADER.size, head, offset, segment, 0)
    end = HEADER.size + CHECKPOINT.size
    _CRC.pack_into(frame, end, _crc32(memoryview(frame)[:end]))
    return frame


@dataclass(frozen=True, slots=True)
class Frame:
    """A frame that passed its structural and CRC checks (``parse_frame``)."""

    pos: int
    end: int
    kind: int
    codec: int
    logical_len: int
    offset: int
    prev: bytes
    stored: memoryview


def parse_frame(buf: memoryview, pos: int, limit: int, max_record: int) -> Frame:
    """Parse the frame at ``buf[pos:]`` whose bytes end at or before ``limit``.

    Raises:
        TornRecord: the frame runs past ``limit`` or starts with zeros: a write that did
            not finish (what recovery truncates).
        RecordCorrupt: a complete frame whose magic, fields or CRC are wrong.
    """
    if pos + FRAME_OVERHEAD > limit:
        raise TornRecord(pos, "header past the end of the written bytes")
    magic, kind, codec, reserved, n, logical, offset, prev = _unpack_header(buf, pos)
    if magic != MAGIC:
        if magic == b"\0\0\0\0":
            raise TornRecord(pos, "zeros where a record should start")
        raise RecordCorrupt(pos, f"bad magic {bytes(magic)!r}")
    if kind > KIND_CHECKPOINT or codec > CODEC_ZLIB or reserved:
        raise RecordCorrupt(pos, f"bad kind {kind}, codec {codec} or reserved {reserved}")
    if n > max_record + (max_record >> 3) + 64 or logical > max_record:
        raise RecordCorrupt(pos, f"length {n}/{logical} over the log's limit {max_record}")
    if codec == CODEC_NONE and n != logical:
        raise RecordCorrupt(pos, f"stored {n} != logical {logical} without compression")
    end = pos + FRAME_OVERHEAD + n
    if end > limit:
        raise TornRecord(pos, f"record of {n} bytes runs past the written bytes")
    body = HEADER.size + n
    (crc,) = _CRC.unpack_from(buf, pos + body)
    if _crc32(buf[pos:pos + body]) != crc:
        raise RecordCorrupt(pos, "CRC mismatch")
    stored = buf[pos + HEADER.size:pos + body]
    if kind == KIND_CHECKPOINT:
        if n != CHECKPOINT.size:
            raise RecordCorrupt(pos, f"checkpoint of {n} bytes")
        head, c_off, _seg, _r = CHECKPOINT.unpack_from(stored)
        if head != prev or c_off != offset:
            raise ChainBroken(offset, "a checkpoint whose payload disagrees with its header")
    return Frame(pos, end, kind, codec, logical, offset, bytes(prev), stored)


def decode_payload(f: Frame) -> memoryview | bytes:
    """The logical payload: a view of the stored bytes, or the decompressed bytes (at most
    ``logical_len``, which ``parse_frame`` bounded by the log's record limit)."""
    if f.codec == CODEC_NONE:
        return f.stored
    d = zlib.decompressobj()
    try:
        out = d.decompress(f.stored, f.logical_len)
    except zlib.error as exc:
        raise RecordCorrupt(f.pos, f"zlib: {exc}") from exc
    if len(out) != f.logical_len or not d.eof or d.unconsumed_tail or d.unused_data:
        raise RecordCorrupt(f.pos, f"decompresses to other than its {f.logical_len} bytes")
    return out


# ------------------------------------------------------------------ segment index (.idx)
# Header, then one u64 per data record: the byte position of its frame in the segment.
# A completed (sealed) segment's index ends with a trailer: its record count, the chain
# hash after its last record, and a CRC over everything before the CRC.
IDX_HEADER: Final = struct.Struct("<4sHHIIQI4x")  # magic, version, 0, segment, 0, first, crc
IDX_TRAILER: Final = struct.Struct("<4s4xQ32sI4x")  # magic, count, head, crc
IDX_MAGIC: Final = b"SLIX"
IDX_END: Final = b"SLIE"
ENTRY: Final = struct.Struct("<Q")


def pack_idx_header(segment: int, first: int) -> bytes:
    raw = IDX_HEADER.pack(IDX_MAGIC, 1, 0, segment, 0, first, 0)
    return IDX_HEADER.pack(IDX_MAGIC, 1, 0, segment, 0, first, _crc32(raw[:24]))


def unpack_idx_header(raw: bytes | memoryview) -> tuple[int, int]:
    """(segment, first offset) of an index header, or ``LogCorrupt``."""
    if len(raw) < IDX_HEADER.size:
        raise LogCorrupt("index header cut short")
    magic, version, _z, segment, _z2, first, crc = IDX_HEADER.unpack_from(raw)
    if (magic != IDX_MAGIC or version != 1 or _crc32(bytes(raw[:24])) != crc
            or bytes(raw[28:32]) != b"\0\0\0\0"):
        raise LogCorrupt("not a shmstore log index header")
    return segment, first


def idx_entries(raw: bytes, count: int | None = None) -> memoryview:
    """The u64 positions of an index file's bytes: ``count`` of them, or every whole one
    after the header."""
    if count is None:
        count = max(0, (len(raw) - IDX_HEADER.size) // 8)
    return memoryview(raw)[IDX_HEADER.size:IDX_HEADER.size + 8 * count].cast("Q")


def pack_idx_trailer(entries_and_header: bytes | memoryview, count: int, head: bytes) -> bytes:
    part = struct.pack("<4s4xQ32s", IDX_END, count, head)
    crc = _crc32(part, _crc32(entries_and_header))
    return IDX_TRAILER.pack(IDX_END, count, head, crc)


def unpack_idx_trailer(whole: bytes | memoryview) -> tuple[int, bytes]:
    """(count, head) of a sealed index file's bytes, or ``LogCorrupt``."""
    if len(whole) < IDX_HEADER.size + IDX_TRAILER.size:
        raise LogCorrupt("sealed index cut short")
    t = len(whole) - IDX_TRAILER.size
    magic, count, head, crc = IDX_TRAILER.unpack_from(whole, t)
    if (magic != IDX_END or _crc32(bytes(whole[:t + 48])) != crc
            or bytes(whole[t + 52:t + 56]) != b"\0\0\0\0"):
        raise LogCorrupt("sealed index trailer fails its check")
    if IDX_HEADER.size + 8 * count != t:
        raise LogCorrupt(f"sealed index holds {(t - IDX_HEADER.size) / 8} entries, says {count}")
    return count, bytes(head)


# ------------------------------------------------------------------ settings (LOG file)
SETTINGS: Final = struct.Struct("<4sHH16sQIIBB6xI")
_SETTINGS_MAGIC: Final = b"SLOG"


@dataclass(frozen=True, slots=True)
class Settings:
    """What a log is created with; fixed for its life."""

    instance: bytes  # 16 random bytes: names the log's live objects in shared memory
    segment_size: int
    checkpoint_every: int
    max_record: int
    compress: bool


def pack_settings(s: Settings) -> bytes:
    fields = (_SETTINGS_MAGIC, 1, 0, s.instance, s.segment_size, s.checkpoint_every,
              s.max_record, CODEC_ZLIB if s.compress else CODEC_NONE, 0)
    raw = SETTINGS.pack(*fields, 0)
    return SETTINGS.pack(*fields, _crc32(raw[:-4]))


def unpack_settings(raw: bytes) -> Settings:
    if len(raw) != SETTINGS.size:
        raise LogCorrupt(f"settings file of {len(raw)} bytes, expected {SETTINGS.size}")
    magic, version, _z, inst, seg, ckpt, maxrec, codec, _r, crc = SETTINGS.unpack(raw)
    if magic != _SETTINGS_MAGIC or version != 1 or _z or _r:
        raise LogCorrupt("not a shmstore log (bad settings magic or version)")
    if _crc32(raw[:-4]) != crc:
        raise LogCorrupt("settings file fails its CRC")
    if seg <= 0 or ckpt <= 0 or maxrec <= 0 or codec > CODEC_ZLIB:
        raise LogCorrupt("settings out of range")
    return Settings(inst, seg, ckpt, maxrec, codec == CODEC_ZLIB)
