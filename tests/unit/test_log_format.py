"""The log's byte format, pure: frames, the chain, bounded decompression, index and
settings blocks. Every damaged frame is refused with a specific error."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shmstore.errors import ChainBroken, LogCorrupt, RecordCorrupt, TornRecord
from shmstore.log import format as F

MAX = 1 << 20


def _parse(frame: bytes | bytearray) -> F.Frame:
    return F.parse_frame(memoryview(bytes(frame)), 0, len(frame), MAX)


def test_frame_byte_layout() -> None:
    prev = bytes(range(32))
    frame, h = F.encode_record(7, prev, b"hello", compress=False)
    assert len(frame) == F.FRAME_OVERHEAD + 5 == 65
    assert frame[:4] == b"SLR1" and frame[4] == F.KIND_DATA and frame[5] == F.CODEC_NONE
    assert struct.unpack_from("<HIIQ", frame, 6) == (0, 5, 5, 7)
    assert frame[24:56] == prev and frame[56:61] == b"hello"
    assert struct.unpack_from("<I", frame, 61)[0] == zlib.crc32(frame[:61])
    assert h == F.chain(prev, F.KIND_DATA, b"hello")
    import hashlib
    assert h == hashlib.sha256(prev + b"\x00" + b"hello").digest()
    f = _parse(frame)
    assert (f.offset, f.prev, bytes(F.decode_payload(f)), f.end) == (7, prev, b"hello", 65)


def test_checkpoint_frame() -> None:
    head = b"\x07" * 32
    ck = F.encode_checkpoint(4096, head, 3)
    assert len(ck) == F.CHECKPOINT_FRAME == 108
    f = _parse(ck)
    assert (f.kind, f.offset, f.prev) == (F.KIND_CHECKPOINT, 4096, head)
    # a checkpoint whose payload disagrees with its header is refused
    bad = bytearray(ck)
    bad[F.HEADER.size] ^= 1
    struct.pack_into("<I", bad, 104, zlib.crc32(bad[:104]))
    with pytest.raises(ChainBroken):
        _parse(bad)


def test_compression_only_when_smaller_and_the_chain_ignores_it() -> None:
    text = b"abc" * 1000
    packed, h1 = F.encode_record(0, F.ZERO_HASH, text, compress=True)
    plain, h2 = F.encode_record(0, F.ZERO_HASH, text, compress=False)
    assert packed[5] == F.CODEC_ZLIB and len(packed) < len(plain) and h1 == h2
    assert bytes(F.decode_payload(_parse(packed))) == text
    noise = bytes(range(256)) * 4
    incompressible, _ = F.encode_record(0, F.ZERO_HASH, zlib.compress(noise), compress=True)
    assert incompressible[5] == F.CODEC_NONE


def _zlib_frame(stored: bytes, logical: int) -> bytes:
    frame = bytearray(F.FRAME_OVERHEAD + len(stored))
    F.HEADER.pack_into(frame, 0, b"SLR1", 0, F.CODEC_ZLIB, 0, len(stored), logical, 0,
                       F.ZERO_HASH)
    frame[56:56 + len(stored)] = stored
    struct.pack_into("<I", frame, 56 + len(stored), zlib.crc32(frame[:56 + len(stored)]))
    return bytes(frame)


def test_decompression_is_bounded_by_the_stated_size() -> None:
    bomb = zlib.compress(bytes(64 << 20), 9)  # 64 MiB of zeros in ~64 KiB
    f = _parse(_zlib_frame(bomb, 1000))  # claims 1000 bytes
    with pytest.raises(RecordCorrupt):
        F.decode_payload(f)  # stops after 1000 bytes, never inflates the rest
    with pytest.raises(RecordCorrupt):  # a claim over the log's limit is refused unread
        _parse(_zlib_frame(bomb, MAX + 1))
    with pytest.raises(RecordCorrupt):
        F.decode_payload(_parse(_zlib_frame(b"not zlib at all", 10)))
    short = zlib.compress(b"x" * 10)
    with pytest.raises(RecordCorrupt):
        F.decode_payload(_parse(_zlib_frame(short, 11)))


def test_torn_and_zeroed_frames_are_torn_not_corrupt() -> None:
    frame, _ = F.encode_record(0, F.ZERO_HASH, b"x" * 100, compress=False)
    for cut in (0, 10, 56, 100, len(frame) - 1):
        with pytest.raises(TornRecord):
            F.parse_frame(memoryview(bytes(frame)), 0, cut, MAX)
    with pytest.raises(TornRecord):
        F.parse_frame(memoryview(bytes(200)), 0, 200, MAX)


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=300), offset=st.integers(0, 2**63 - 1),
       prev=st.binary(min_size=32, max_size=32), data=st.data())
def test_any_single_bit_flip_is_refused(payload: bytes, offset: int, prev: bytes,
                                        data: st.DataObject) -> None:
    frame, _ = F.encode_record(offset, prev, payload, compress=False)
    f = _parse(frame)
    assert (f.offset, f.prev, bytes(F.decode_payload(f))) == (offset, prev, payload)
    bit = data.draw(st.integers(0, 8 * len(frame) - 1))
    bad = bytearray(frame)
    bad[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(LogCorrupt):
        _parse(bad)


def _idx(whole: bytes) -> None:
    F.unpack_idx_header(whole[:32])
    F.unpack_idx_trailer(whole)


def test_index_blocks_round_trip_and_refuse_damage() -> None:
    header = F.pack_idx_header(3, 12345)
    assert len(header) == F.IDX_HEADER.size == 32
    assert F.unpack_idx_header(header) == (3, 12345)
    entries = header + struct.pack("<3Q", 108, 300, 500)
    whole = entries + F.pack_idx_trailer(entries, 3, b"\x01" * 32)
    assert F.unpack_idx_trailer(whole) == (3, b"\x01" * 32)
    for i in range(len(whole)):
        bad = bytearray(whole)
        bad[i] ^= 0x20
        with pytest.raises(LogCorrupt):
            _idx(bytes(bad))
    with pytest.raises(LogCorrupt):
        F.unpack_idx_trailer(whole[:-8])


def test_settings_round_trip_and_refuse_damage() -> None:
    s = F.Settings(b"i" * 16, 1 << 20, 100, 1 << 16, True)
    raw = F.pack_settings(s)
    assert F.unpack_settings(raw) == s
    for i in range(len(raw)):
        bad = bytearray(raw)
        bad[i] ^= 1
        with pytest.raises(LogCorrupt):
            F.unpack_settings(bytes(bad))
