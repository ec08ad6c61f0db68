"""The control-block codec and the journal header, on plain bytearrays."""

from __future__ import annotations

import dataclasses

import pytest

from shmstore.core import layout as L
from shmstore.errors import CorruptResource

pytestmark = pytest.mark.timeout(30)


def fresh_block(backend: str = "shm", name: str = "job-42", created_ns: int = 1234,
                life: L.Life | None = None) -> tuple[bytearray, memoryview]:
    raw = bytearray(L.CTRL_SIZE)
    words = memoryview(raw).cast("Q")
    L.init_block(words, backend, name, created_ns, life or L.Life(capacity=4096,
                                                                  data_capacity=4096))
    words[L.W_MAGIC] = L.MAGIC
    return raw, words


def test_sizes_and_offsets_are_consistent() -> None:
    assert L.CTRL_SIZE % 4096 == 0
    assert L.CTRL_SIZE >= L.CTRL_SIZE_RAW
    assert L.HEADER_WORDS * 8 == L.RECORDS_OFF
    assert L.RECORDS_OFF + 2 * L.R_WORDS * 8 == L.REASON_OFF
    assert L.R_FIELDS <= L.R_WORDS
    assert L.REASON_OFF + 2 * L.REASON_MAX == L.NAME_OFF
    assert L.NAME_OFF + L.NAME_MAX <= L.WRITERS_OFF
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
    assert L.MAGIC.to_bytes(8, "little") == b"SHMSTOR\x02"


def test_init_and_validate_round_trip() -> None:
    raw, w = fresh_block("mmap", "job-42", 987654321)
    L.validate_block(w, len(raw))
    assert w[L.W_VERSION] == L.VERSION
    assert w[L.W_CTRL_SIZE] == L.CTRL_SIZE
    assert w[L.W_BACKEND] == L.BACKEND_CODES["mmap"] == 2
    assert w[L.W_N_WRITERS] == L.N_WRITERS
    assert w[L.W_N_WAITERS] == L.N_WAITERS
    assert w[L.W_RING_LEN] == L.RING_LEN
    assert w[L.W_CREATED_NS] == 987654321
    assert L.read_life(w) == (0, L.Life(capacity=4096, data_capacity=4096))
    assert L.read_text(w, L.NAME_OFF, L.W_NAME_LEN, L.NAME_MAX) == "job-42"


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
    assert w[L.slot_word(0, 0)] == 0  # the name never spills into the writer slots


# ------------------------------------------------------------------------------ life records
def test_publish_alternates_records_and_round_trips() -> None:
    _raw, w = fresh_block()
    lives = [L.Life(status=2, reason="disk on fire"), L.Life(status=1, final_len=10,
                                                             final_given=1),
             L.Life(status=0, data_gen=3, write_gen=4, frozen_len=7, used_mask=5,
                    unlinked=1, data_ino=99, capacity=8192, data_capacity=4096)]
    for i, life in enumerate(lives, start=1):
        L.publish_life(w, life)
        assert L.read_life(w) == (i, life)


def test_reason_is_cut_to_its_field_and_kept_per_record() -> None:
    _raw, w = fresh_block()
    L.publish_life(w, L.Life(status=2, reason="r" * 1000))
    assert L.current_life(w).reason == "r" * L.REASON_MAX
    L.publish_life(w, L.Life(status=2, reason="short"))
    assert L.current_life(w).reason == "short"
    assert L.read_text(w, L.NAME_OFF, L.W_NAME_LEN, L.NAME_MAX) == "job-42"


def test_a_publish_cut_short_leaves_the_previous_record_whole() -> None:
    """A writer killed while filling the inactive record, before the flip: readers keep the
    previous lifecycle, whole (the crash model of lifecycle changes)."""
    _raw, w = fresh_block()
    before = L.Life(status=1, final_len=100, final_given=1, capacity=4096, data_capacity=4096)
    L.publish_life(w, before)
    seq = w[L.W_LIFE_SEQ]
    inactive = L.record_word((seq + 1) & 1, 0)
    for field, value in ((L.R_STATUS, 2), (L.R_FINAL_LEN, 0), (L.R_DATA_GEN, 9)):
        w[inactive + field] = value  # the half-written next record
        assert L.read_life(w) == (seq, before)


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


# (word, value, message fragment): each corrupts one static field of a valid block.
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
    pytest.param(L.W_NAME_LEN, L.NAME_MAX + 1, "length", id="name-len"),
]


@pytest.mark.parametrize(("word", "value", "fragment"), CORRUPTIONS)
def test_each_corrupted_field_is_rejected(word: int, value: int, fragment: str) -> None:
    raw, w = fresh_block()
    L.validate_block(w, len(raw))
    w[word] = value
    with pytest.raises(CorruptResource, match=fragment):
        L.validate_block(w, len(raw))


# (life record change, message fragment): each corrupts the active life record.
LIFE_CORRUPTIONS = [
    pytest.param({"status": 4}, "status", id="status-4"),
    pytest.param({"status": 2**64 - 1}, "status", id="status-max"),
    pytest.param({"final_len": 2**63}, "length", id="final-len"),
    pytest.param({"capacity": 2**63}, "length", id="capacity"),
    pytest.param({"frozen_len": 2**63}, "length", id="frozen-len"),
    pytest.param({"used_mask": 1 << L.N_WRITERS}, "mask", id="used-mask"),
    pytest.param({"data_gen": 5, "write_gen": 4}, "generations", id="writers-behind"),
    pytest.param({"data_gen": 5, "write_gen": 7}, "generations", id="two-rewrites"),
]


@pytest.mark.parametrize(("change", "fragment"), LIFE_CORRUPTIONS)
def test_each_corrupted_life_field_is_rejected(change: dict[str, int], fragment: str) -> None:
    raw, w = fresh_block()
    L.publish_life(w, dataclasses.replace(L.current_life(w), **change))
    with pytest.raises(CorruptResource, match=fragment):
        L.validate_block(w, len(raw))


@pytest.mark.parametrize(("data_gen", "write_gen"), [(0, 0), (0, 1), (5, 5), (5, 6)])
def test_agreeing_generations_validate(data_gen: int, write_gen: int) -> None:
    raw, w = fresh_block()
    L.publish_life(w, L.Life(data_gen=data_gen, write_gen=write_gen))
    L.validate_block(w, len(raw))


def test_boundary_lengths_are_valid() -> None:
    raw, w = fresh_block()
    L.publish_life(w, L.Life(status=3, final_len=2**63 - 1, capacity=2**63 - 1,
                             reason="x" * L.REASON_MAX))
    w[L.W_NAME_LEN] = L.NAME_MAX
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
