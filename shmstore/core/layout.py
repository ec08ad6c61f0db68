"""The control block: one fixed-layout, versioned block per resource, shared by every process.

The byte map is documented in ``docs/format.md``; this module is its single source of truth.
Every field is a little-endian u64 at an 8-byte aligned offset, accessed through
``memoryview.cast("Q")``: an aligned 8-byte load or store is a single ``mov`` on x86-64, so a
reader never sees half of a field (see ``ring.py`` for what that buys and what it does not).

Layout (byte offsets)::

    0      header         32 words: static fields, the lifecycle sequence, masks
    256    life records   2 x 16 words: the lifecycle, double-buffered (see below)
    512    reasons        2 x 256 bytes: the fail reason of each life record
    1024   name           256 bytes, UTF-8
    2048   writer slots   N_WRITERS x (64-byte slot header + RING_LEN x 32-byte ring entries)
    ...    waiter slots   N_WAITERS x 64 bytes

The lifecycle (status, lengths, generations, capacities) changes only under the meta lock,
and atomically: the writer fills the *inactive* life record (and its reason), then stores
``LIFE_SEQ + 1``, whose parity selects the active record. That one store is the commit
point, so a writer killed half-way through a lifecycle change leaves the previous record in
force, whole. A reader loads ``LIFE_SEQ``, reads the record it selects, and loads
``LIFE_SEQ`` again; if it moved, the writer may be refilling that record and the reader
retries (it never waits on a writer: the record it reads is not the one being written
unless two changes happened during its read).

Locks are open-file-description byte-range locks on the control file at offsets that need no
backing bytes (a lock may lie past the end of a file): see ``LOCK_*``.
"""

from __future__ import annotations

import array
import struct
from dataclasses import dataclass

from ..errors import CorruptResource

__all__ = [
    "CTRL_SIZE",
    "JOURNAL_HEADER",
    "MAGIC",
    "VERSION",
    "Life",
]

MAGIC = int.from_bytes(b"SHMSTOR\x02", "little")
VERSION = 2

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
W_LIFE_SEQ = 8  # number of lifecycle changes; its parity selects the active life record
W_INTERRUPT_SEQ = 9  # bumped by interrupt(): every parked waiter returns INTERRUPTED
W_WAITERS_MASK = 10  # waiter slots in use
W_NAME_LEN = 11
W_CREATED_NS = 12  # informational
HEADER_WORDS = 32

# --- life records -------------------------------------------------------------------------
RECORDS_OFF = 256
R_WORDS = 16
R_STATUS = 0  # core.lifecycle.State
R_FINAL_LEN = 1  # readable length once committed
R_FINAL_GIVEN = 2  # 1 when commit() was given final_len
R_DATA_GEN = 3  # the generation readers read
R_WRITE_GEN = 4  # the generation writers write (== DATA_GEN unless a rewrite is running)
R_CAPACITY = 5  # reserved bytes of the WRITE_GEN data
R_DATA_CAPACITY = 6  # reserved bytes of the DATA_GEN data
R_FROZEN_LEN = 7  # during a rewrite: readable length of the DATA_GEN generation
R_USED_MASK = 8  # writer slots holding coverage of WRITE_GEN
R_UNLINKED = 9  # 1: unlink() is removing the names; 2: all but the control block's are gone
R_DATA_INO = 10  # mmap backend: inode the data file of DATA_GEN must have
R_REASON_LEN = 11  # bytes of this record's reason
R_FIELDS = 12

REASON_OFF = 512
REASON_MAX = 256
NAME_OFF = 1024
NAME_MAX = 256


@dataclass(frozen=True, slots=True)
class Life:
    """One life record, decoded."""

    status: int = 0
    final_len: int = 0
    final_given: int = 0
    data_gen: int = 0
    write_gen: int = 0
    capacity: int = 0
    data_capacity: int = 0
    frozen_len: int = 0
    used_mask: int = 0
    unlinked: int = 0
    data_ino: int = 0
    reason: str = ""


def record_word(copy: int, field: int) -> int:
    return RECORDS_OFF // 8 + copy * R_WORDS + field


def read_life(words: memoryview) -> tuple[int, Life]:
    """The lifecycle sequence and the life record it selects, read consistently."""
    while True:
        seq = words[W_LIFE_SEQ]
        base = record_word(seq & 1, 0)
        f = words[base : base + R_FIELDS].tolist()
        reason = ""
        if f[R_REASON_LEN]:
            off = REASON_OFF + (seq & 1) * REASON_MAX
            n = min(f[R_REASON_LEN], REASON_MAX)
            reason = bytes(words.cast("B")[off : off + n]).decode("utf-8", "replace")
        if words[W_LIFE_SEQ] == seq:
            return seq, Life(f[R_STATUS], f[R_FINAL_LEN], f[R_FINAL_GIVEN], f[R_DATA_GEN],
                             f[R_WRITE_GEN], f[R_CAPACITY], f[R_DATA_CAPACITY], f[R_FROZEN_LEN],
                             f[R_USED_MASK], f[R_UNLINKED], f[R_DATA_INO], reason)


def current_life(words: memoryview) -> Life:
    """The active life record (call with the meta lock held: nobody else changes it)."""
    return read_life(words)[1]


def publish_life(words: memoryview, life: Life) -> None:
    """Write ``life`` into the inactive record, then make it active with one store.
    Call with the meta lock held."""
    seq = words[W_LIFE_SEQ]
    nxt = (seq + 1) & 1
    raw = life.reason.encode()[:REASON_MAX]
    off = REASON_OFF + nxt * REASON_MAX
    words.cast("B")[off : off + len(raw)] = raw
    base = record_word(nxt, 0)
    words[base : base + R_FIELDS] = _pack_record(life, len(raw))
    words[W_LIFE_SEQ] = seq + 1  # the commit point


def _pack_record(life: Life, reason_len: int) -> memoryview:
    return memoryview(array.array("Q", [
        life.status, life.final_len, life.final_given, life.data_gen, life.write_gen,
        life.capacity, life.data_capacity, life.frozen_len, life.used_mask, life.unlinked,
        life.data_ino, reason_len]))


# --- writer slots -------------------------------------------------------------------------
WRITERS_OFF = 2048
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
LOCK_FETCHER = 8  # held by the process whose shmstore.fetch fills the resource
LOCK_WRITER_BASE = 16  # + slot: held exclusively by a writer for its whole life
LOCK_WAITER_BASE = 128  # + slot: held by a parked waiter
LOCK_HANDLE_BASE = 4096  # + k: one byte held exclusively by each open handle, k < N_HANDLES
N_HANDLES = 1024  # (so `shmstore ls` can count handles and `gc` can tell abandoned from used)

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


def init_block(words: memoryview, backend: str, name: str, created_ns: int, life: Life) -> None:
    """Fill a zeroed control block, except the magic word: the creator stores it last, once
    the resource is whole, so a block whose creator died half-way is never taken for a valid
    one (``open`` reports ``CorruptResource``)."""
    static = [MAGIC, VERSION, CTRL_SIZE, BACKEND_CODES[backend], N_WRITERS, N_WAITERS, RING_LEN]
    for i, v in enumerate(static[1:], start=1):
        words[i] = v
    words[W_STATIC_CHECK] = mix(*static)
    raw = name.encode()[:NAME_MAX]
    words.cast("B")[NAME_OFF : NAME_OFF + len(raw)] = raw
    words[W_NAME_LEN] = len(raw)
    words[W_CREATED_NS] = created_ns
    base = record_word(0, 0)
    words[base : base + R_FIELDS] = _pack_record(life, 0)
    words[W_LIFE_SEQ] = 0


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
    if words[W_NAME_LEN] > NAME_MAX:
        raise CorruptResource("name length out of range")
    validate_life(read_life(words)[1])


def validate_life(life: Life) -> None:
    if life.status > 3:
        raise CorruptResource(f"status word {life.status} is out of range")
    if life.write_gen < life.data_gen or life.write_gen > life.data_gen + 1:
        raise CorruptResource("data generations contradict each other")
    if max(life.final_len, life.capacity, life.data_capacity, life.frozen_len) >= MAX_OFFSET:
        raise CorruptResource("length field out of range")
    if life.used_mask >= (1 << N_WRITERS):
        raise CorruptResource("writer mask has bits past the table")
    if life.unlinked > 2:
        raise CorruptResource(f"unlink phase {life.unlinked} is out of range")


def check_block(words: memoryview, size: int) -> None:
    """Invariant checker for a quiescent control block: the validation above, plus the
    tables consistent with their masks."""
    validate_block(words, size)
    life = read_life(words)[1]
    assert words[W_WAITERS_MASK] < (1 << N_WAITERS), "waiter mask has bits past the table"
    if life.write_gen == life.data_gen:
        assert life.frozen_len == 0, "a frozen length outside a rewrite"
        assert life.capacity == life.data_capacity, "one generation, two capacities"
    for slot in range(N_WRITERS):
        if (life.used_mask >> slot) & 1:
            assert words[slot_word(slot, S_JGEN)] != 0, f"used writer slot {slot} has no journal"
            assert words[slot_word(slot, S_CGEN)] == life.write_gen, (
                f"used writer slot {slot} belongs to another generation")
    for slot in range(N_WAITERS):
        base = waiter_word(slot, 0)
        if (words[W_WAITERS_MASK] >> slot) & 1:
            assert words[base + T_START] <= words[base + T_END], f"waiter {slot}: reversed range"


def read_text(words: memoryview, off: int, length_word: int, limit: int) -> str:
    n = min(words[length_word], limit)
    return bytes(words.cast("B")[off : off + n]).decode("utf-8", "replace")


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
