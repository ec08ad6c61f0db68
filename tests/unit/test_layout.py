"""The control-block codec and the journal header, on plain bytearrays."""

from __future__ import annotations

import pytest

from shmstore.core import layout as L
from shmstore.errors import CorruptResource

pytestmark = pytest.mark.timeout(30)


def fresh_block(backend: str = "shm", name: str = "job-42",
                created_ns: int = 1234) -> tuple[bytearray, memoryview]:
    raw = bytearray(L.CTRL_SIZE)
    words = memoryview(raw).cast("Q")
    L.init_block(words, backend, name, created_ns)
    return raw, words


def test_sizes_and_offsets_are_consistent() -> None:
    assert L.CTRL_SIZE % 4096 == 0
    assert L.CTRL_SIZE >= L.CTRL_SIZE_RAW
    assert L.HEADER_WORDS * 8 == L.REASON_OFF
    assert L.REASON_OFF + L.REASON_MAX == L.NAME_OFF
    assert L.NAME_OFF + L.NAME_MAX == L.WRITERS_OFF
    assert L.SLOT_SIZE == L.SLOT_HEADER + L.RING_LEN * L.ENTRY_SIZE
    assert L.WAITERS_OFF == L.WRITERS_OFF + L.N_WRITERS * L.SLOT_SIZE
    assert L.slot_word(0, L.S_HEAD) == L.WRITERS_OFF // 8
    assert L.slot_word(1, 0) - L.slot_word(0, 0) == L.SLOT_SIZE // 8
    assert L.entry_word(0, 0) == (L.WRITERS_OFF + L.SLOT_HEADER) // 8
    assert L.entry_word(0, 1) - L.entry_word(0, 0) == L.ENTRY_SIZE // 8
    assert L.entry_word(0, L.RING_LEN) == L.slot_word(1, 0)
    assert L.waiter_word(0, 0) == L.WAITERS_OFF // 8
    assert (L.waiter_word(L.N_WAITERS - 1, 0) * 8 + L.WAITER_SIZE) == L.CTRL_SIZE_RAW
    assert L.N_WAITERS <= 64  # a u64 mask tracks them
    assert L.MAGIC.to_bytes(8, "little") == b"SHMSTOR\x01"


def test_init_and_validate_round_trip() -> None:
    raw, w = fresh_block("mmap", "job-42", 987654321)
    L.validate_block(w, len(raw))
    assert w[L.W_MAGIC] == L.MAGIC
    assert w[L.W_VERSION] == L.VERSION
    assert w[L.W_CTRL_SIZE] == L.CTRL_SIZE
    assert w[L.W_BACKEND] == L.BACKEND_CODES["mmap"] == 2
    assert w[L.W_N_WRITERS] == L.N_WRITERS
    assert w[L.W_N_WAITERS] == L.N_WAITERS
    assert w[L.W_RING_LEN] == L.RING_LEN
    assert w[L.W_CREATED_NS] == 987654321
    assert w[L.W_STATUS] == 0
    assert L.read_text(w, L.NAME_OFF, L.W_NAME_LEN, L.NAME_MAX) == "job-42"
    assert bytes(raw[L.NAME_OFF : L.NAME_OFF + 6]) == b"job-42"


@pytest.mark.parametrize("backend", ["shm", "mmap", "mem"])
def test_every_backend_code_validates(backend: str) -> None:
    raw, w = fresh_block(backend)
    L.validate_block(w, len(raw))
    assert w[L.W_BACKEND] == L.BACKEND_CODES[backend]


def test_long_name_is_cut_to_its_field() -> None:
    raw, w = fresh_block(name="n" * 400)
    L.validate_block(w, len(raw))
    assert w[L.W_NAME_LEN] == L.NAME_MAX
    assert L.read_text(w, L.NAME_OFF, L.W_NAME_LEN, L.NAME_MAX) == "n" * L.NAME_MAX
    # the name never spills into the writer slots
    assert w[L.slot_word(0, 0)] == 0


def test_reason_round_trip_and_cut() -> None:
    raw, w = fresh_block()
    L.write_reason(w, "disk on fire")
    assert L.read_text(w, L.REASON_OFF, L.W_REASON_LEN, L.REASON_MAX) == "disk on fire"
    L.write_reason(w, "r" * 1000)
    assert w[L.W_REASON_LEN] == L.REASON_MAX
    assert L.read_text(w, L.REASON_OFF, L.W_REASON_LEN, L.REASON_MAX) == "r" * L.REASON_MAX
    assert L.read_text(w, L.NAME_OFF, L.W_NAME_LEN, L.NAME_MAX) == "job-42"
    L.validate_block(w, len(raw))


def test_mix_is_order_sensitive_and_stable() -> None:
    assert L.mix(1, 2, 3) == L.mix(1, 2, 3)
    assert L.mix(1, 2, 3) != L.mix(3, 2, 1)
    assert L.mix(1, 2, 3) != L.mix(1, 2, 4)
    assert 0 <= L.mix(2**64 - 1, 2**64 - 1) < 2**64


def test_uninitialised_block_is_corrupt() -> None:
    raw = bytearray(L.CTRL_SIZE)
    with pytest.raises(CorruptResource):
        L.validate_block(memoryview(raw).cast("Q"), len(raw))


def test_truncated_block_is_corrupt() -> None:
    _raw, w = fresh_block()
    with pytest.raises(CorruptResource, match="bytes"):
        L.validate_block(w, L.CTRL_SIZE - 8)


# (word, value, message fragment): each corrupts one field of a valid block.
CORRUPTIONS = [
    pytest.param(L.W_MAGIC, 0, "magic", id="magic-zero"),
    pytest.param(L.W_MAGIC, L.MAGIC ^ 1, "magic", id="magic-flipped"),
    pytest.param(L.W_VERSION, L.VERSION + 1, "version", id="version"),
    pytest.param(L.W_CTRL_SIZE, L.CTRL_SIZE + 4096, "check", id="ctrl-size"),
    pytest.param(L.W_BACKEND, 9, "check", id="backend"),
    pytest.param(L.W_N_WRITERS, L.N_WRITERS + 1, "check", id="n-writers"),
    pytest.param(L.W_N_WAITERS, 1, "check", id="n-waiters"),
    pytest.param(L.W_RING_LEN, 64, "check", id="ring-len"),
    pytest.param(L.W_STATIC_CHECK, 12345, "check", id="static-check"),
    pytest.param(L.W_STATUS, 4, "status", id="status-4"),
    pytest.param(L.W_STATUS, 2**64 - 1, "status", id="status-max"),
    pytest.param(L.W_REASON_LEN, L.REASON_MAX + 1, "length", id="reason-len"),
    pytest.param(L.W_NAME_LEN, L.NAME_MAX + 1, "length", id="name-len"),
    pytest.param(L.W_FINAL_LEN, 2**63, "length", id="final-len"),
    pytest.param(L.W_CAPACITY, 2**63, "length", id="capacity"),
]


@pytest.mark.parametrize(("word", "value", "fragment"), CORRUPTIONS)
def test_each_corrupted_field_is_rejected(word: int, value: int, fragment: str) -> None:
    raw, w = fresh_block()
    L.validate_block(w, len(raw))
    w[word] = value
    with pytest.raises(CorruptResource, match=fragment):
        L.validate_block(w, len(raw))


@pytest.mark.parametrize(("data_gen", "write_gen", "ok"), [
    (0, 0, True),
    (0, 1, True),
    (5, 5, True),
    (5, 6, True),
    (5, 4, False),   # writers behind readers
    (5, 7, False),   # more than one rewrite in flight
    (0, 2**64 - 1, False),
])
def test_generations_must_agree(data_gen: int, write_gen: int, ok: bool) -> None:
    raw, w = fresh_block()
    w[L.W_DATA_GEN] = data_gen
    w[L.W_WRITE_GEN] = write_gen
    if ok:
        L.validate_block(w, len(raw))
    else:
        with pytest.raises(CorruptResource, match="generations"):
            L.validate_block(w, len(raw))


def test_boundary_lengths_are_valid() -> None:
    raw, w = fresh_block()
    w[L.W_FINAL_LEN] = 2**63 - 1
    w[L.W_CAPACITY] = 2**63 - 1
    w[L.W_REASON_LEN] = L.REASON_MAX
    w[L.W_NAME_LEN] = L.NAME_MAX
    w[L.W_STATUS] = 3
    L.validate_block(w, len(raw))


def test_other_backends_block_is_still_valid_but_foreign_one_is_not() -> None:
    # A block whose static words were rewritten consistently (check recomputed) validates:
    # the check word detects damage, not intent.
    raw, w = fresh_block()
    w[L.W_BACKEND] = L.BACKEND_CODES["mem"]
    w[L.W_STATIC_CHECK] = L.mix(*[w[i] for i in range(L.W_STATIC_CHECK)])
    L.validate_block(w, len(raw))


# ------------------------------------------------------------------------------ journal header
def journal(capacity: int) -> tuple[bytearray, memoryview]:
    raw = bytearray(L.journal_size(capacity))
    return raw, memoryview(raw)


def test_journal_size_is_page_rounded_and_fits() -> None:
    for cap in (0, 1, 100, 2048, 5000):
        size = L.journal_size(cap)
        assert size % 4096 == 0
        assert size >= L.JOURNAL_HEADER + cap * L.JOURNAL_ENTRY
        assert size - 4096 < L.JOURNAL_HEADER + cap * L.JOURNAL_ENTRY


def test_journal_header_round_trip() -> None:
    _raw, buf = journal(2048)
    L.pack_journal_header(buf, 3, 7, 11, 42, 2048)
    assert L.unpack_journal_header(buf) == (3, 7, 11, 42, 2048)
    words = buf.cast("Q")
    assert words[L.J_MAGIC] == L.JOURNAL_MAGIC
    assert words[L.J_SLOT] == 3
    assert words[L.J_GEN] == 7
    assert words[L.J_COMPACTED] == 11
    assert words[L.J_BASE_SEQ] == 42
    assert words[L.J_CAPACITY] == 2048
    assert words[L.J_CHECK] == L.mix(L.JOURNAL_MAGIC, 3, 7, 11, 42, 2048)


@pytest.mark.parametrize("word", [L.J_MAGIC, L.J_SLOT, L.J_GEN, L.J_COMPACTED, L.J_BASE_SEQ,
                                  L.J_CAPACITY, L.J_CHECK])
def test_journal_header_corruption_is_detected(word: int) -> None:
    _raw, buf = journal(2048)
    L.pack_journal_header(buf, 1, 2, 3, 4, 2048)
    words = buf.cast("Q")
    words[word] ^= 1 << 5
    with pytest.raises(CorruptResource, match="check"):
        L.unpack_journal_header(buf)


def test_zeroed_journal_is_corrupt() -> None:
    _raw, buf = journal(16)
    with pytest.raises(CorruptResource):
        L.unpack_journal_header(buf)


def test_truncated_journal_is_corrupt() -> None:
    raw = bytearray(L.JOURNAL_HEADER - 8)
    with pytest.raises(CorruptResource, match="truncated"):
        L.unpack_journal_header(memoryview(raw))


def test_journal_capacity_larger_than_its_segment_is_corrupt() -> None:
    raw, buf = journal(100)
    too_many = (len(raw) - L.JOURNAL_HEADER) // L.JOURNAL_ENTRY + 1
    L.pack_journal_header(buf, 0, 1, 0, 1, too_many)
    with pytest.raises(CorruptResource, match="fit"):
        L.unpack_journal_header(buf)
    L.pack_journal_header(buf, 0, 1, 0, 1, too_many - 1)
    assert L.unpack_journal_header(buf)[4] == too_many - 1


def test_journal_compacted_past_capacity_is_corrupt() -> None:
    _raw, buf = journal(100)
    L.pack_journal_header(buf, 0, 1, 101, 1, 100)
    with pytest.raises(CorruptResource, match="fit"):
        L.unpack_journal_header(buf)
    L.pack_journal_header(buf, 0, 1, 100, 1, 100)
    assert L.unpack_journal_header(buf) == (0, 1, 100, 1, 100)
