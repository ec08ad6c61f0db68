"""Fuzz the decoders of shared state with mutated *real* control blocks and journals.

The contract (the project's issue): a corrupted, truncated, wrong-magic, wrong-version or
foreign control block or journal raises ``CorruptResource``; no other exception, no crash, no
hang. The inputs are control blocks and journal segments produced by the real code (a ``mem``
resource taken through fragmented writes, a journal compaction, commit, reactivate and fail),
copied out byte for byte at several points of its history, then mutated: bits flipped, words
overwritten with random or extreme values, words nudged past their neighbours' values,
regions zeroed, the buffer truncated. Journal headers are sometimes re-signed after the
mutation (their check word recomputed), so the semantic checks behind the check word are
fuzzed too, not only the check word.

Decoders under test: ``layout.validate_block``, ``layout.read_life``,
``layout.unpack_journal_header``, ``SlotCursor.drain`` (ring and journal paths, fresh and
incremental) and ``SlotPublisher.__init__`` (a writer resuming a slot) followed by two
publishes. The journal callbacks are in-memory; they model the resource's ``_open_journal``
edge (a segment shorter than a header is "not published yet": None). Every loop in these
decoders is bounded on static memory; the test timeout turns a hang into a failure.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import shmstore
from shmstore.core import layout as L
from shmstore.core.ranges import RangeSet
from shmstore.core.ring import SlotCursor, SlotPublisher
from shmstore.errors import CorruptResource

pytestmark = pytest.mark.timeout(60)

U64 = (1 << 64) - 1
NWORDS = L.CTRL_SIZE // 8
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ------------------------------------------------------------------------------ real inputs
class Snapshot:
    """A copy of a real resource's shared state at one point of its history. (A plain class:
    a falsifying example prints its label, not 70 KiB of bytes.)"""

    def __init__(self, label: str, block: bytes, journals: dict[tuple[int, int], bytes],
                 bases: dict[int, bytes]) -> None:
        self.label = label
        self.block = block
        self.journals = journals  # (slot, gen & 0xFFFF) -> segment bytes
        self.bases = bases  # gen & 0xFFFF -> base coverage segment bytes

    def __repr__(self) -> str:
        return f"<snapshot {self.label!r}>"


def _segment_bytes(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0)


def _snapshot(r: shmstore.Resource, label: str) -> Snapshot:
    assert r._w is not None
    block = bytes(r._w.cast("B"))
    journals: dict[tuple[int, int], bytes] = {}
    bases: dict[int, bytes] = {}
    for suffix, fd in r._ns._fds.items():  # type: ignore[attr-defined]
        if suffix.startswith("j"):
            slot, gen = suffix[1:].split("_")
            journals[(int(slot, 16), int(gen, 16))] = _segment_bytes(fd)
        elif suffix.startswith("b"):
            bases[int(suffix[1:], 16)] = _segment_bytes(fd)
    return Snapshot(label, block, journals, bases)


def _fragmented(r: shmstore.Resource, first: int, count: int) -> None:
    """``count`` one-byte writes with gaps between them: as many ranges as writes."""
    for i in range(first, first + count):
        r.write_at((i * 7) % 60000, b"x")


def _history() -> list[Snapshot]:
    r = shmstore.create(backend="mem", capacity=1 << 16)
    snaps: list[Snapshot] = []
    try:
        _fragmented(r, 0, 100)
        snaps.append(_snapshot(r, "active, 100 ranges in the journal"))
        _fragmented(r, 100, 50)
        snaps.append(_snapshot(r, "active, +50 (a ring's worth)"))
        _fragmented(r, 150, 2000)
        snaps.append(_snapshot(r, "active, compacted journal"))
        _fragmented(r, 2150, 30)
        snaps.append(_snapshot(r, "active, compacted +30"))
        r.commit()
        snaps.append(_snapshot(r, "committed"))
        r.reactivate()
        _fragmented(r, 3000, 20)
        snaps.append(_snapshot(r, "rewrite in progress"))
        r.commit()
        snaps.append(_snapshot(r, "recommitted, generation 1"))
        r.reactivate()
        r.fail("disk on fire \u2713")
        snaps.append(_snapshot(r, "failed with a reason"))
    finally:
        r.close()
    return snaps


SNAPSHOTS = _history()
PAIRS = list(itertools.pairwise(SNAPSHOTS))


def test_snapshots_are_real_and_valid() -> None:
    """The unmutated inputs decode, and they cover the interesting shapes."""
    for snap in SNAPSHOTS:
        words = memoryview(bytearray(snap.block)).cast("Q")
        L.validate_block(words, len(snap.block))
        for j in snap.journals.values():
            L.unpack_journal_header(memoryview(j))
    lives = [L.read_life(memoryview(bytearray(s.block)).cast("Q"))[1] for s in SNAPSHOTS]
    assert any(life.write_gen == life.data_gen + 1 for life in lives)  # a rewrite
    assert any(life.reason for life in lives)
    assert any(L.unpack_journal_header(memoryview(j))[2] > 0  # a compacted prefix
               for s in SNAPSHOTS for j in s.journals.values())
    assert any(s.bases for s in SNAPSHOTS)


# ------------------------------------------------------------------------------ mutations
def _hot_words() -> list[int]:
    """Word indices worth hitting more often than a uniform draw would: the header and life
    records, writer slots 0 and 1 (headers and ring), the first waiter slots."""
    hot = list(range(L.HEADER_WORDS + 2 * L.R_WORDS))
    for slot in (0, 1):
        hot += range(L.slot_word(slot, 0), L.slot_word(slot, 0) + L.SLOT_HEADER // 8)
        hot += range(L.entry_word(slot, 0), L.entry_word(slot, 0) + L.RING_LEN * 4)
    hot += range(L.waiter_word(0, 0), L.waiter_word(2, 0))
    return hot


HOT_WORDS = _hot_words()
# Named fields: the static header, both life records, the headers of writer slots 0 and 1.
FIELD_WORDS = [*range(L.W_CREATED_NS + 1),
               *(L.record_word(c, f) for c in (0, 1) for f in range(L.R_FIELDS)),
               *(L.slot_word(s, f) for s in (0, 1) for f in range(L.S_PID + 1))]
EXTREMES = [0, 1, 2, 3, 4, 7, 15, 16, 64, 255, 4096, 1 << 16, (1 << 32) - 1, 1 << 62,
            (1 << 63) - 1, 1 << 63, (1 << 63) + 1, U64 - 1, U64]
values = st.one_of(st.sampled_from(EXTREMES), st.integers(0, U64))


Mutation = tuple[str, int, "int | bytes"]


def mutation(hot: list[int], nwords: int) -> st.SearchStrategy[Mutation]:
    index = st.one_of(st.sampled_from(hot), st.integers(0, nwords - 1))
    fields = [i for i in FIELD_WORDS if i < nwords] if nwords == NWORDS else hot[:8]
    return st.one_of(
        st.tuples(st.just("word"), st.sampled_from(fields), st.sampled_from(EXTREMES)),
        st.tuples(st.just("flip"), st.integers(0, nwords * 64 - 1), st.just(0)),
        st.tuples(st.just("word"), index, values),
        st.tuples(st.just("delta"), index,
                  st.sampled_from([-1, 1, -2, 2, -L.RING_LEN, L.RING_LEN + 1, 1 << 63])),
        st.tuples(st.just("zero"), st.integers(0, nwords * 8 - 1), st.integers(1, 4096)),
        st.tuples(st.just("bytes"), st.integers(0, nwords * 8 - 1),
                  st.binary(min_size=1, max_size=64)),
    )


def mutations(hot: list[int], nwords: int) -> st.SearchStrategy[list[Mutation]]:
    return st.lists(mutation(hot, nwords), min_size=1, max_size=8)


def apply(data: bytes, muts: list[Mutation], cut: int | None = None) -> bytearray:
    """``data`` with ``muts`` applied in order, then cut to ``cut`` bytes."""
    buf = bytearray(data)
    n = len(buf)
    words = memoryview(buf)[: n // 8 * 8].cast("Q")
    for kind, where, arg in muts:
        if kind == "flip":
            bit = where % (n * 8)
            buf[bit // 8] ^= 1 << (bit % 8)
        elif kind == "word":
            assert isinstance(arg, int)
            words[where % len(words)] = arg
        elif kind == "delta":
            assert isinstance(arg, int)
            i = where % len(words)
            words[i] = (words[i] + arg) & U64
        elif kind == "zero":
            assert isinstance(arg, int)
            pos = where % n
            end = min(n, pos + arg)
            buf[pos:end] = bytes(end - pos)
        else:  # "bytes"
            assert isinstance(arg, bytes)
            pos = where % n
            raw = arg[: n - pos]
            buf[pos : pos + len(raw)] = raw
    words.release()
    if cut is not None:
        del buf[cut:]
    return buf


def resign(journal: bytearray) -> None:
    """Recompute a journal header's magic and check word over its (mutated) fields, as a
    writer of another build, or one with a bug, would have written it."""
    if len(journal) >= L.JOURNAL_HEADER:
        hdr = memoryview(journal)[: L.JOURNAL_HEADER].cast("Q")
        fields = hdr[1:6].tolist()
        L.pack_journal_header(memoryview(journal), *fields)
        hdr.release()


def as_words(buf: bytearray) -> memoryview:
    return memoryview(buf)[: len(buf) // 8 * 8].cast("Q")


# The mutations a journal gets: its header words and the first entries are hot.
J_HOT = list(range(L.JOURNAL_HEADER // 8 + 64))


@st.composite
def journal_mutations(draw: st.DrawFn) -> tuple[list[Mutation], int | None, bool]:
    muts = draw(st.lists(mutation(J_HOT, 4096), max_size=6))
    cut = draw(st.one_of(st.none(), st.integers(0, 200), st.integers(0, 1 << 18)))
    return muts, cut, draw(st.booleans())


def mutate_journals(journals: dict[tuple[int, int], bytes],
                    how: tuple[list[Mutation], int | None, bool],
                    which: int) -> dict[tuple[int, int], bytearray]:
    """Every journal copied; the ``which``-th (modulo) mutated."""
    muts, cut, sign = how
    out = {k: bytearray(v) for k, v in journals.items()}
    if out:
        key = sorted(out)[which % len(out)]
        out[key] = apply(bytes(out[key]), muts, cut) if muts or cut is not None else out[key]
        if sign:
            resign(out[key])
    return out


def opener(journals: dict[tuple[int, int], bytearray]
           ) -> Callable[[int, int], memoryview | None]:
    """The reader's journal edge, as ``Resource._open_journal`` should behave: the name
    holds 16 bits of the generation; shorter than a header is "being created" (None); the
    mapping is a u64 view (of the whole words of the segment)."""
    cache: dict[tuple[int, int], memoryview] = {}

    def open_(slot: int, gen: int) -> memoryview | None:
        key = (slot, gen & 0xFFFF)
        if key in cache:
            return cache[key]
        data = journals.get(key)
        if data is None or len(data) < L.JOURNAL_HEADER:
            return None
        cache[key] = as_words(data)
        return cache[key]

    return open_


# ------------------------------------------------------------------------------ the block
@FUZZ
@given(snap=st.sampled_from(SNAPSHOTS), muts=mutations(HOT_WORDS, NWORDS),
       cut=st.one_of(st.none(), st.integers(0, L.CTRL_SIZE - 1),
                     st.sampled_from([0, 7, 8, 63, 64, 255, 256, 2047, 4096, L.CTRL_SIZE - 8])))
def test_validate_block_and_read_life_raise_only_corrupt(snap: Snapshot,
                                                          muts: list[Mutation],
                                                          cut: int | None) -> None:
    buf = apply(snap.block, muts, cut)
    words = as_words(buf)
    try:
        L.validate_block(words, len(buf))
    except CorruptResource:
        valid = False
    else:
        valid = True
    if len(buf) < L.CTRL_SIZE:
        assert not valid, "a truncated control block was accepted"
        return
    # read_life runs on the live block after validation (Resource._sync_life), so it must
    # decode any full-size block; on static memory its retry loop ends at once.
    seq, life = L.read_life(words)
    assert seq == words[L.W_LIFE_SEQ]
    assert isinstance(life.reason, str) and len(life.reason.encode()) <= 4 * L.REASON_MAX
    if valid:
        L.validate_life(life)  # what validate_block accepted stays accepted
        assert life.status <= 3 and life.used_mask < (1 << L.N_WRITERS)
    else:
        try:
            L.validate_life(life)
        except CorruptResource:
            pass


@FUZZ
@given(data=st.binary(min_size=0, max_size=L.CTRL_SIZE + 64))
def test_validate_block_on_foreign_bytes(data: bytes) -> None:
    """Random bytes (not a mutation of a block) at any size: never accepted."""
    buf = bytearray(data)
    if len(buf) >= L.CTRL_SIZE:
        buf[:8] = L.MAGIC.to_bytes(8, "little")  # get past the magic; the header check stays
        buf[8:16] = L.VERSION.to_bytes(8, "little")
    with pytest.raises(CorruptResource):
        L.validate_block(as_words(buf), len(buf))


# ------------------------------------------------------------------------------ journal headers
def _all_segments() -> list[bytes]:
    segs = []
    for s in SNAPSHOTS:
        segs += s.journals.values()
        segs += s.bases.values()
    return segs


SEGMENTS = _all_segments()


@FUZZ
@given(seg=st.sampled_from(SEGMENTS), how=journal_mutations())
def test_unpack_journal_header_raises_only_corrupt(
        seg: bytes, how: tuple[list[Mutation], int | None, bool]) -> None:
    muts, cut, sign = how
    buf = apply(seg, muts, cut)
    if sign:
        resign(buf)
    try:
        slot, gen, compacted, base_seq, capacity = L.unpack_journal_header(memoryview(buf))
    except CorruptResource:
        return
    # Accepted: every entry the header promises lies inside the segment.
    assert compacted <= capacity
    assert L.JOURNAL_HEADER + capacity * L.JOURNAL_ENTRY <= len(buf)
    assert all(0 <= x <= U64 for x in (slot, gen, compacted, base_seq, capacity))


# ------------------------------------------------------------------------------ SlotCursor
def drain_every_slot(words: memoryview, open_: Callable[[int, int], memoryview | None],
                     cursors: dict[int, SlotCursor], views: dict[int, RangeSet],
                     bulk: bool) -> None:
    """Drain every writer slot (the used mask may itself be corrupt, so all of them), with
    the same RangeSet callbacks Resource._refresh uses."""
    for slot in range(L.N_WRITERS):
        cur = cursors.setdefault(slot, SlotCursor(slot))
        view = views.setdefault(slot, RangeSet())
        cur.pending(words)
        cur.drain(words, view.add, open_, view.add_many if bulk else None)


@FUZZ
@given(snap=st.sampled_from(SNAPSHOTS), muts=mutations(HOT_WORDS, NWORDS),
       jhow=journal_mutations(), which=st.integers(0, 7), bulk=st.booleans())
def test_fresh_cursor_drain_raises_only_corrupt(
        snap: Snapshot, muts: list[Mutation],
        jhow: tuple[list[Mutation], int | None, bool], which: int,
        bulk: bool) -> None:
    """A late joiner (cursor 0, never synced) drains a mutated block and journal."""
    words = as_words(apply(snap.block, muts))
    open_ = opener(mutate_journals(snap.journals, jhow, which))
    try:
        drain_every_slot(words, open_, {}, {}, bulk)
    except CorruptResource:
        pass


@FUZZ
@given(pair=st.sampled_from(PAIRS), muts=mutations(HOT_WORDS, NWORDS),
       jhow=journal_mutations(), which=st.integers(0, 7), bulk=st.booleans())
def test_synced_cursor_drain_raises_only_corrupt(
        pair: tuple[Snapshot, Snapshot], muts: list[Mutation],
        jhow: tuple[list[Mutation], int | None, bool], which: int,
        bulk: bool) -> None:
    """A cursor synced on the real state at one point drains the mutated state of the next
    point: the ring path (a few new entries) and the incremental journal path."""
    before, after = pair
    cursors: dict[int, SlotCursor] = {}
    views: dict[int, RangeSet] = {}
    clean = {k: bytearray(v) for k, v in before.journals.items()}
    drain_every_slot(as_words(bytearray(before.block)), opener(clean), cursors, views, bulk)
    words = as_words(apply(after.block, muts))
    open_ = opener(mutate_journals(after.journals, jhow, which))
    try:
        drain_every_slot(words, open_, cursors, views, bulk)
        drain_every_slot(words, open_, cursors, views, bulk)  # and again: nothing new
    except CorruptResource:
        pass


# ------------------------------------------------------------------------------ SlotPublisher
class WriterJournals:
    """The writer's journal edge: create (truncating), open writable, drop."""

    def __init__(self, segs: dict[tuple[int, int], bytearray]) -> None:
        self.segs = segs

    def create(self, slot: int, gen: int, capacity: int) -> memoryview:
        buf = bytearray(L.journal_size(capacity))
        self.segs[(slot, gen & 0xFFFF)] = buf
        return memoryview(buf).cast("Q")

    def open(self, slot: int, gen: int) -> memoryview | None:
        buf = self.segs.get((slot, gen & 0xFFFF))
        if buf is None:
            return None
        return as_words(buf)

    def drop(self, slot: int, gen: int) -> None:
        self.segs.pop((slot, gen & 0xFFFF), None)


SLOT_VALUES = [0, 1, U64, U64 - 1, 1 << 63, (1 << 63) - 1, L.RING_LEN, 1 << 32]
slot_edits = st.lists(st.tuples(st.integers(0, L.S_PID), st.sampled_from(SLOT_VALUES)),
                      max_size=3)


@FUZZ
@given(snap=st.sampled_from(SNAPSHOTS), muts=st.lists(mutation(HOT_WORDS, NWORDS), max_size=6),
       edits=slot_edits, jhow=journal_mutations(), which=st.integers(0, 7),
       slot=st.sampled_from([0, 1]))
@example(snap=SNAPSHOTS[0], muts=[], edits=[(L.S_HEAD, U64)], jhow=([], None, False), which=0,
         slot=1).via("found by this test: a free slot whose head word is 2**64-1")
def test_slot_publisher_resume_raises_only_corrupt(
        snap: Snapshot, muts: list[Mutation], edits: list[tuple[int, int]],
        jhow: tuple[list[Mutation], int | None, bool], which: int, slot: int) -> None:
    """A writer resuming a slot of a mutated block (``open(name, mode="r+")`` constructs a
    publisher for the slot it claims, used or free): the resume either refuses with
    CorruptResource or leaves a publisher that can publish."""
    buf = apply(snap.block, muts)
    words = as_words(buf)
    for field, value in edits:  # the resumed slot's own header, edited directly
        words[L.slot_word(slot, field)] = value
    js = WriterJournals(mutate_journals(snap.journals, jhow, which))
    try:
        pub = SlotPublisher(words, slot, js.create, js.open, js.drop)
    except CorruptResource:
        return
    pub.publish(10, 20)
    pub.publish(30, 40)
    assert any(s <= 30 and e >= 40 for s, e in pub.ranges())
