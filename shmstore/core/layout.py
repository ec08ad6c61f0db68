"""The control block: one fixed-layout, versioned block per resource, shared by every process.

The byte map is documented in ``docs/format.md``; this module is its single source of truth.
Every field is a little-endian u64 at an 8-byte aligned offset, accessed through
``memoryview.cast("Q")``: an aligned 8-byte load or store is a single ``mov`` on x86-64, so a
reader never sees half of a field (see ``ring.py`` for what that buys and what it does not).

Layout (byte offsets)::

    0      header      32 words (256 bytes) of fields, then the fail reason and the name
    256    reason      512 bytes, UTF-8, length in W_REASON_LEN
    768    name        256 bytes, UTF-8, length in W_NAME_LEN
    1024   writer slots   N_WRITERS x (64-byte slot header + RING_LEN x 32-byte ring entries)
    ...    waiter slots   N_WAITERS x 64 bytes

Locks are open-file-description byte-range locks on the control file at offsets that need no
backing bytes (a lock may lie past the end of a file): see ``LOCK_*``.
"""

from __future__ import annotations

import struct

from ..errors import CorruptResource

__all__ = [
    "CTRL_SIZE",
    "JOURNAL_HEADER",
    "MAGIC",
    "VERSION",
]

MAGIC = int.from_bytes(b"SHMSTOR\x01", "little")
VERSION = 1

N_WRITERS = 16  # writer processes (or handles) that can be attached at once
N_WAITERS = 64  # parked waiters at once, across all processes; a u64 mask tracks them
RING_LEN = 128  # coverage ring entries per writer slot

# --- header words (index into the u64 view) ---------------------------------------------
W_MAGIC = 0
W_VERSION = 1
W_CTRL_SIZE = 2
W_BACKEND = 3  # 1 shm, 2 mmap, 3 mem
W_N_WRITERS = 4
W_N_WAITERS = 5
W_RING_LEN = 6
W_STATIC_CHECK = 7  # check word over words 0..6: a foreign or damaged block fails it
W_LIFE_SEQ = 8  # seqlock over the lifecycle words below: odd while a writer updates them
W_STATUS = 9  # core.lifecycle.State
W_FINAL_LEN = 10  # readable length once committed
W_FINAL_GIVEN = 11  # 1 when commit() was given final_len
W_DATA_GEN = 12  # the generation readers read
W_WRITE_GEN = 13  # the generation writers write (== DATA_GEN unless a rewrite is running)
W_CAPACITY = 14  # reserved bytes of the WRITE_GEN data segment
W_DATA_CAPACITY = 15  # reserved bytes of the DATA_GEN data segment
W_FROZEN_LEN = 16  # during a rewrite: readable length of the DATA_GEN generation
W_INTERRUPT_SEQ = 17  # bumped by interrupt(): every parked waiter returns INTERRUPTED
W_USED_MASK = 18  # writer slots holding coverage of WRITE_GEN
W_WAITERS_MASK = 19  # waiter slots in use
W_REASON_LEN = 20
W_NAME_LEN = 21
W_DATA_INO = 22  # mmap backend: inode of the committed data file (detects a rename race)
W_CREATED_NS = 23  # informational
W_WRITES = 24  # reserved
W_FROZEN_EXACT = 25  # during a rewrite: 1 when the frozen coverage is exact (segment f<gen>)
W_UNLINKED = 26  # 1 once unlink() removed the resource's names
HEADER_WORDS = 32

REASON_OFF = 256
REASON_MAX = 512
NAME_OFF = 768
NAME_MAX = 256

# --- writer slots -------------------------------------------------------------------------
WRITERS_OFF = 1024
SLOT_HEADER = 64
ENTRY_SIZE = 32
SLOT_SIZE = SLOT_HEADER + RING_LEN * ENTRY_SIZE
# slot header words (relative to the slot's first word)
S_HEAD = 0  # seq of the last published ring entry (0: none)
S_JGEN = 1  # generation of the slot's journal segment (0: no journal yet)
S_CGEN = 2  # data generation the slot's coverage belongs to
S_EXTENT = 3  # highest end this slot has written in CGEN
S_PID = 4  # informational: pid of the last writer that held the slot

# --- waiter slots -------------------------------------------------------------------------
WAITERS_OFF = WRITERS_OFF + N_WRITERS * SLOT_SIZE
WAITER_SIZE = 64
T_TOKEN = 0  # bumped by the waiter before each sleep
T_POSTED = 1  # the token a writer last posted for
T_START = 2
T_END = 3
T_PID = 4

CTRL_SIZE_RAW = WAITERS_OFF + N_WAITERS * WAITER_SIZE
CTRL_SIZE = (CTRL_SIZE_RAW + 4095) // 4096 * 4096

# --- lock offsets (open-file-description byte-range locks on the control file) -----------
LOCK_META = 0  # exclusive, held for microseconds around lifecycle and table updates
LOCK_WRITER_BASE = 16  # + slot: held exclusively by a writer for its whole life
LOCK_WAITER_BASE = 128  # + slot: held by a parked waiter
LOCK_ATTACH = 512  # shared, held by every open handle (for gc: is anyone attached?)

# --- the journal: each writer slot's complete record of coverage ------------------------
JOURNAL_MAGIC = int.from_bytes(b"SHMJRNL\x01", "little")
JOURNAL_HEADER = 64
J_MAGIC = 0
J_SLOT = 1
J_GEN = 2
J_COMPACTED = 3  # entries [0, COMPACTED) are the merged coverage of every seq < BASE_SEQ
J_BASE_SEQ = 4  # entry COMPACTED + (seq - BASE_SEQ) holds ring seq `seq`
J_CAPACITY = 5  # entries the segment has room for
J_CHECK = 6
JOURNAL_ENTRY = 16

BACKEND_CODES = {"shm": 1, "mmap": 2, "mem": 3}

MAX_OFFSET = 1 << 63

_U64 = 0xFFFF_FFFF_FFFF_FFFF


def mix(*words: int) -> int:
    """A 64-bit check word over ``words`` (multiply-xorshift; not cryptographic)."""
    h = 0x9E37_79B9_7F4A_7C15
    for w in words:
        h = ((h ^ w) * 0xBF58_476D_1CE4_E5B9) & _U64
        h ^= h >> 31
    return h


def entry_check(seq: int, start: int, end: int) -> int:
    """The check word of a ring entry: a polynomial hash of its three fields, so an entry
    read while the writer overwrites it (some fields old, some new) fails the check."""
    return ((((seq * 0x9E3779B97F4A7C15) ^ start) * 0xBF58476D1CE4E5B9 ^ end)
            * 0x94D049BB133111EB) & 0xFFFF_FFFF_FFFF_FFFF


def slot_word(slot: int, field: int) -> int:
    """Index, in the control block's u64 view, of writer slot ``slot``'s header ``field``."""
    return (WRITERS_OFF + slot * SLOT_SIZE) // 8 + field


def entry_word(slot: int, index: int) -> int:
    """Index of the first word of ring entry ``index`` of writer slot ``slot``."""
    return (WRITERS_OFF + slot * SLOT_SIZE + SLOT_HEADER + index * ENTRY_SIZE) // 8


def waiter_word(slot: int, field: int) -> int:
    return (WAITERS_OFF + slot * WAITER_SIZE) // 8 + field


def init_block(words: memoryview, backend: str, name: str, created_ns: int) -> None:
    """Fill a zeroed control block. The magic word is stored last: a block whose creator died
    half-way has no magic and is reported as ``CorruptResource`` (issue of the creator, never
    misread as a valid block)."""
    static = [MAGIC, VERSION, CTRL_SIZE, BACKEND_CODES[backend], N_WRITERS, N_WAITERS, RING_LEN]
    for i, v in enumerate(static[1:], start=1):
        words[i] = v
    words[W_STATIC_CHECK] = mix(*static)
    raw = name.encode()[:NAME_MAX]
    mem = words.cast("B")
    mem[NAME_OFF : NAME_OFF + len(raw)] = raw
    words[W_NAME_LEN] = len(raw)
    words[W_CREATED_NS] = created_ns
    words[W_MAGIC] = MAGIC


def validate_block(words: memoryview, size: int) -> None:
    """Raise ``CorruptResource`` unless ``words`` is a control block this version can use."""
    if size < CTRL_SIZE:
        raise CorruptResource(f"control block is {size} bytes, expected {CTRL_SIZE}")
    if words[W_MAGIC] != MAGIC:
        raise CorruptResource("bad magic: not a shmstore control block (or its creator died)")
    if words[W_VERSION] != VERSION:
        raise CorruptResource(f"control block version {words[W_VERSION]}, this is {VERSION}")
    static = [words[i] for i in range(W_STATIC_CHECK)]
    if words[W_STATIC_CHECK] != mix(*static) or static[W_CTRL_SIZE] != CTRL_SIZE:
        raise CorruptResource("control block header check failed")
    if words[W_STATUS] > 3:
        raise CorruptResource(f"status word {words[W_STATUS]} is out of range")
    if words[W_REASON_LEN] > REASON_MAX or words[W_NAME_LEN] > NAME_MAX:
        raise CorruptResource("reason or name length out of range")
    if words[W_WRITE_GEN] < words[W_DATA_GEN] or words[W_WRITE_GEN] > words[W_DATA_GEN] + 1:
        raise CorruptResource("data generations contradict each other")
    if words[W_FINAL_LEN] >= MAX_OFFSET or words[W_CAPACITY] >= MAX_OFFSET:
        raise CorruptResource("length field out of range")


def check_block(words: memoryview, size: int) -> None:
    """Invariant checker for a quiescent control block (no update in progress): the
    validation above, plus the seqlock at rest and the tables consistent with their masks."""
    validate_block(words, size)
    assert words[W_LIFE_SEQ] % 2 == 0, "lifecycle seqlock left odd"
    assert words[W_USED_MASK] < (1 << N_WRITERS), "writer mask has bits past the table"
    assert words[W_WAITERS_MASK] < (1 << N_WAITERS), "waiter mask has bits past the table"
    if words[W_WRITE_GEN] == words[W_DATA_GEN]:
        assert words[W_FROZEN_LEN] == 0, "a frozen length outside a rewrite"
        assert words[W_CAPACITY] == words[W_DATA_CAPACITY], "one generation, two capacities"
    used = words[W_USED_MASK]
    for slot in range(N_WRITERS):
        if (used >> slot) & 1:
            assert words[slot_word(slot, S_JGEN)] != 0, f"used writer slot {slot} has no journal"
            assert words[slot_word(slot, S_CGEN)] == words[W_WRITE_GEN], (
                f"used writer slot {slot} belongs to another generation")
    for slot in range(N_WAITERS):
        base = waiter_word(slot, 0)
        if (words[W_WAITERS_MASK] >> slot) & 1:
            assert words[base + T_START] <= words[base + T_END], f"waiter {slot}: reversed range"


def read_text(words: memoryview, off: int, length_word: int, limit: int) -> str:
    n = min(words[length_word], limit)
    return bytes(words.cast("B")[off : off + n]).decode("utf-8", "replace")


def write_reason(words: memoryview, reason: str) -> None:
    raw = reason.encode()[:REASON_MAX]
    words.cast("B")[REASON_OFF : REASON_OFF + len(raw)] = raw
    words[W_REASON_LEN] = len(raw)


_JHDR = struct.Struct("<7Q")


def pack_journal_header(buf: memoryview, slot: int, gen: int, compacted: int, base_seq: int,
                        capacity: int) -> None:
    fields = (JOURNAL_MAGIC, slot, gen, compacted, base_seq, capacity)
    _JHDR.pack_into(buf, 0, *fields, mix(*fields))


def unpack_journal_header(buf: memoryview) -> tuple[int, int, int, int, int]:
    """(slot, gen, compacted, base_seq, capacity); ``CorruptResource`` on a bad header."""
    if buf.nbytes < JOURNAL_HEADER:
        raise CorruptResource("journal segment is truncated")
    magic, slot, gen, compacted, base_seq, capacity, check = _JHDR.unpack_from(buf, 0)
    if magic != JOURNAL_MAGIC or check != mix(magic, slot, gen, compacted, base_seq, capacity):
        raise CorruptResource("journal header check failed")
    if JOURNAL_HEADER + capacity * JOURNAL_ENTRY > buf.nbytes or compacted > capacity:
        raise CorruptResource("journal header does not fit its segment")
    return slot, gen, compacted, base_seq, capacity


def journal_size(capacity: int) -> int:
    return (JOURNAL_HEADER + capacity * JOURNAL_ENTRY + 4095) // 4096 * 4096
