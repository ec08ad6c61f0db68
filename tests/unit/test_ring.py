"""The coverage ring and journal (SlotPublisher / SlotCursor) on bytearrays.

The journal callbacks keep segments in a dict; a "dropped" journal stays readable through any
view a cursor already holds, like an unlinked but still mapped segment.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shmstore.core import layout as L
from shmstore.core.ranges import RangeSet, merge_ranges
from shmstore.core.ring import MIN_JOURNAL, SlotCursor, SlotPublisher
from shmstore.errors import CorruptResource

pytestmark = pytest.mark.timeout(60)

RING = L.RING_LEN
# The ring entry's check word, as the ring computes it (entry_check; mix in older versions).
CHECK = getattr(L, "entry_check", None) or L.mix


class Journals:
    """In-memory journal segments keyed by (slot, gen)."""

    def __init__(self) -> None:
        self.segs: dict[tuple[int, int], memoryview] = {}
        self.created: list[tuple[int, int, int]] = []
        self.dropped: list[tuple[int, int]] = []
        self.opens = 0

    def create(self, slot: int, gen: int, capacity: int) -> memoryview:
        view = memoryview(bytearray(L.journal_size(capacity))).cast("Q")
        self.segs[(slot, gen)] = view
        self.created.append((slot, gen, capacity))
        return view

    def open(self, slot: int, gen: int) -> memoryview | None:
        self.opens += 1
        return self.segs.get((slot, gen))

    def drop(self, slot: int, gen: int) -> None:
        del self.segs[(slot, gen)]
        self.dropped.append((slot, gen))


def no_journal(slot: int, gen: int) -> memoryview | None:
    raise AssertionError(f"the ring should have served this drain (slot {slot}, gen {gen})")


def block() -> memoryview:
    return memoryview(bytearray(L.CTRL_SIZE)).cast("Q")


class View:
    """A reader's local coverage, fed by a cursor, with the raw calls recorded."""

    def __init__(self, slot: int = 0) -> None:
        self.cursor = SlotCursor(slot)
        self.cov = RangeSet()
        self.calls: list[tuple[int, int]] = []

    def add(self, s: int, e: int) -> None:
        self.calls.append((s, e))
        self.cov.add(s, e)
        self.cov._check()

    def drain(self, words: memoryview, open_: object) -> None:
        self.calls.clear()
        self.cursor.drain(words, self.add, open_)  # type: ignore[arg-type]


def publisher(words: memoryview, j: Journals, slot: int = 0) -> SlotPublisher:
    return SlotPublisher(words, slot, j.create, j.open, j.drop)


# ------------------------------------------------------------------------------ basics
def test_fresh_publisher_publishes_an_empty_journal() -> None:
    w, j = block(), Journals()
    pub = publisher(w, j)
    assert j.created == [(0, 1, MIN_JOURNAL)]
    assert w[L.slot_word(0, L.S_JGEN)] == 1
    assert w[L.slot_word(0, L.S_HEAD)] == 0
    assert pub.seq == 0
    assert pub.ranges() == []
    hdr = L.unpack_journal_header(j.segs[(0, 1)].cast("B"))
    assert hdr == (0, 1, 0, 1, MIN_JOURNAL)


def test_publish_then_drain_exact() -> None:
    w, j = block(), Journals()
    pub = publisher(w, j)
    v = View()
    assert v.cursor.pending(w)  # never synced
    v.drain(w, j.open)  # first drain: from the (empty) journal
    assert list(v.cov) == []
    assert not v.cursor.pending(w)
    assert pub.publish(0, 10) == 1
    assert pub.publish(20, 30) == 2
    assert pub.publish(5, 25) == 3
    assert w[L.slot_word(0, L.S_HEAD)] == 3
    assert w[L.slot_word(0, L.S_EXTENT)] == 30
    assert pub.extent == 30
    assert v.cursor.pending(w)
    v.drain(w, no_journal)  # three new entries: the ring serves them, in order
    assert v.calls == [(0, 10), (20, 30), (5, 25)]
    assert list(v.cov) == [(0, 30)]
    assert v.cursor.cursor == 3
    assert not v.cursor.pending(w)
    v.drain(w, no_journal)  # nothing new: no calls
    assert v.calls == []
    # the ring entries hold exactly what was published
    for seq, (s, e) in zip((1, 2, 3), [(0, 10), (20, 30), (5, 25)], strict=True):
        base = L.entry_word(0, seq % RING)
        assert (w[base], w[base + 1], w[base + 2], w[base + 3]) == (seq, s, e, CHECK(seq, s, e))
    assert pub.ranges() == [(0, 30)]


def test_late_cursor_reads_everything_from_the_journal() -> None:
    w, j = block(), Journals()
    pub = publisher(w, j)
    pubs = [(i * 10, i * 10 + 3) for i in range(50)]
    for s, e in pubs:
        pub.publish(s, e)
    v = View()
    v.drain(w, j.open)
    assert list(v.cov) == pubs
    assert v.cursor.cursor == 50
    assert v.cursor.jgen == 1


def test_cursor_exactly_one_ring_behind_uses_the_ring() -> None:
    w, j = block(), Journals()
    pub = publisher(w, j)
    v = View()
    v.drain(w, j.open)
    pubs = [(i * 4, i * 4 + 1) for i in range(RING)]
    for s, e in pubs:
        pub.publish(s, e)
    v.drain(w, no_journal)
    assert v.calls == pubs
    assert list(v.cov) == pubs


def test_lapped_cursor_resyncs_from_the_journal() -> None:
    w, j = block(), Journals()
    pub = publisher(w, j)
    v = View()
    pub.publish(0, 1)
    v.drain(w, j.open)
    assert list(v.cov) == [(0, 1)]
    pubs = [(i * 4, i * 4 + 2) for i in range(1, RING + 6)]  # lapped by RING + 5
    for s, e in pubs:
        pub.publish(s, e)
    before = j.opens
    v.drain(w, j.open)
    assert j.opens > before  # the ring could not serve it
    assert list(v.cov) == [(0, 1), *pubs]
    assert v.cursor.cursor == RING + 6
    # the journal read was incremental: only entries after the cursor were re-added
    assert v.calls == pubs


def test_compaction_keeps_exact_coverage() -> None:
    w, j = block(), Journals()
    pub = publisher(w, j)
    early, late = View(), View()
    early.drain(w, j.open)
    oracle: set[int] = set()
    # fragmented coverage: every other byte, then fill some of the holes
    n = MIN_JOURNAL + 100
    for i in range(n):
        s = 2 * i if i < MIN_JOURNAL else 2 * (i - MIN_JOURNAL) + 1
        pub.publish(s, s + 1)
        oracle.add(s)
        if i % 500 == 0:
            early.drain(w, j.open)
            assert early.cov.total() == len(oracle)
    assert j.dropped == [(0, 1)]  # the full journal was replaced and removed
    assert w[L.slot_word(0, L.S_JGEN)] == 2
    slot, gen, compacted, base, cap = L.unpack_journal_header(j.segs[(0, 2)].cast("B"))
    assert (slot, gen, base) == (0, 2, MIN_JOURNAL + 1)
    assert compacted == MIN_JOURNAL  # merged coverage of the first MIN_JOURNAL publishes
    assert cap >= 2 * compacted  # room for at least as many appends as it holds ranges
    # the compacted prefix is exactly the merged coverage of everything before base
    jw = j.segs[(0, 2)]
    prefix = [(jw[8 + 2 * k], jw[8 + 2 * k + 1]) for k in range(compacted)]
    assert prefix == merge_ranges((2 * i, 2 * i + 1) for i in range(MIN_JOURNAL))
    want = RangeSet((p, p + 1) for p in oracle)
    assert pub.ranges() == list(want)
    early.drain(w, j.open)
    late.drain(w, j.open)
    assert list(early.cov) == list(want)
    assert list(late.cov) == list(want)
    assert early.cursor.cursor == late.cursor.cursor == n


def test_compaction_of_contiguous_writes_stays_small() -> None:
    w, j = block(), Journals()
    pub = publisher(w, j)
    v = View()
    for i in range(3 * MIN_JOURNAL + 7):
        pub.publish(i, i + 1)
        if i % 1000 == 999:
            v.drain(w, j.open)
    assert [c[2] for c in j.created] == [MIN_JOURNAL] * 4  # merged to one range each time
    assert j.dropped == [(0, 1), (0, 2), (0, 3)]
    v.drain(w, j.open)
    assert list(v.cov) == [(0, 3 * MIN_JOURNAL + 7)]
    fresh = View()
    fresh.drain(w, j.open)
    assert list(fresh.cov) == [(0, 3 * MIN_JOURNAL + 7)]


def test_cursor_holding_a_dropped_journal_still_resyncs() -> None:
    w, j = block(), Journals()
    pub = publisher(w, j)
    v = View()
    v.drain(w, j.open)
    for i in range(MIN_JOURNAL + RING + 10):  # compaction and a lapped cursor at once
        pub.publish(3 * i, 3 * i + 1)
    v.drain(w, j.open)
    assert list(v.cov) == [(3 * i, 3 * i + 1) for i in range(MIN_JOURNAL + RING + 10)]
    assert v.cursor.jgen == 2


# ------------------------------------------------------------------------------ torn entries
def test_torn_ring_entry_is_rejected() -> None:
    w, j = block(), Journals()
    pub = publisher(w, j)
    v = View()
    v.drain(w, j.open)
    pub.publish(0, 10)
    pub.publish(100, 110)
    pub.publish(200, 210)
    # entry 2 torn: its start was overwritten but the check word is stale
    e = L.entry_word(0, 2 % RING)
    w[e + 1] = 5000
    v.drain(w, j.open)
    assert list(v.cov) == [(0, 10), (100, 110), (200, 210)]
    assert all(s != 5000 for s, _ in v.calls)
    assert v.cursor.cursor == 3


def test_overwritten_ring_entry_is_rejected() -> None:
    w, j = block(), Journals()
    pub = publisher(w, j)
    v = View()
    v.drain(w, j.open)
    pub.publish(0, 10)
    pub.publish(100, 110)
    # the slot of seq 2 now holds a later, fully written entry (a lap under us)
    e = L.entry_word(0, 2 % RING)
    later = 2 + RING
    w[e + 1], w[e + 2], w[e + 3] = 7000, 7100, CHECK(later, 7000, 7100)
    w[e] = later
    v.drain(w, j.open)
    assert list(v.cov) == [(0, 10), (100, 110)]
    assert (7000, 7100) not in v.calls


@pytest.mark.parametrize("field", [0, 1, 2, 3])
def test_any_torn_field_sends_the_reader_to_the_journal(field: int) -> None:
    w, j = block(), Journals()
    pub = publisher(w, j)
    v = View()
    v.drain(w, j.open)
    pub.publish(40, 50)
    e = L.entry_word(0, 1)
    w[e + field] ^= 1 << 40
    opens = j.opens
    v.drain(w, j.open)
    assert j.opens == opens + 1
    assert list(v.cov) == [(40, 50)]
    assert v.calls == [(40, 50)]


def test_half_published_entry_without_head_is_not_read() -> None:
    w, j = block(), Journals()
    pub = publisher(w, j)
    v = View()
    pub.publish(0, 5)
    v.drain(w, j.open)
    # a writer died after writing the ring entry of seq 2 but before storing head
    e = L.entry_word(0, 2)
    w[e + 1], w[e + 2], w[e + 3] = 10, 20, CHECK(2, 10, 20)
    w[e] = 2
    assert not v.cursor.pending(w)
    v.drain(w, no_journal)
    assert list(v.cov) == [(0, 5)]


# ------------------------------------------------------------------------------ resume, reset
def test_publisher_resumes_an_existing_slot() -> None:
    w, j = block(), Journals()
    pub = publisher(w, j)
    for i in range(10):
        pub.publish(10 * i, 10 * i + 5)
    again = publisher(w, j)  # a new writer process taking over the slot
    assert again.seq == 10
    assert again.extent == 95
    assert again.ranges() == [(10 * i, 10 * i + 5) for i in range(10)]
    assert j.created == [(0, 1, MIN_JOURNAL)]  # continued, not restarted
    assert again.publish(200, 210) == 11
    v = View()
    v.drain(w, j.open)
    assert list(v.cov) == [*((10 * i, 10 * i + 5) for i in range(10)), (200, 210)]


def test_resume_with_missing_journal_is_corrupt() -> None:
    w, j = block(), Journals()
    pub = publisher(w, j)
    pub.publish(0, 1)
    del j.segs[(0, 1)]
    with pytest.raises(CorruptResource, match="missing"):
        publisher(w, j)


def test_resume_with_contradicting_journal_is_corrupt() -> None:
    w, j = block(), Journals()
    pub = publisher(w, j)
    pub.publish(0, 1)
    w[L.slot_word(0, L.S_HEAD)] = MIN_JOURNAL + 50  # head past what the journal can hold
    with pytest.raises(CorruptResource, match="contradicts"):
        publisher(w, j)


def test_reset_starts_the_slot_over() -> None:
    w, j = block(), Journals()
    pub = publisher(w, j)
    pub.publish(0, 100)
    pub.publish(500, 600)
    pub.reset([(0, 40)])
    assert w[L.slot_word(0, L.S_JGEN)] == 2
    assert w[L.slot_word(0, L.S_EXTENT)] == 40
    assert pub.ranges() == [(0, 40)]
    pub.publish(60, 70)
    fresh = View()
    fresh.drain(w, j.open)
    assert list(fresh.cov) == [(0, 40), (60, 70)]
    pub.reset([])
    assert w[L.slot_word(0, L.S_EXTENT)] == 0
    assert pub.ranges() == []
    empty = View()
    empty.drain(w, j.open)
    assert list(empty.cov) == []


def test_slots_are_independent() -> None:
    w, j = block(), Journals()
    a = publisher(w, j, 0)
    b = publisher(w, j, 5)
    a.publish(0, 10)
    b.publish(100, 110)
    b.publish(200, 210)
    va, vb = View(0), View(5)
    va.drain(w, j.open)
    vb.drain(w, j.open)
    assert list(va.cov) == [(0, 10)]
    assert list(vb.cov) == [(100, 110), (200, 210)]
    assert w[L.slot_word(0, L.S_HEAD)] == 1
    assert w[L.slot_word(5, L.S_HEAD)] == 2


def test_journal_unlinked_under_the_cursor_is_retried() -> None:
    w, j = block(), Journals()
    pub = publisher(w, j)
    pub.publish(3, 9)
    misses = [2]

    def flaky_open(slot: int, gen: int) -> memoryview | None:
        if misses[0]:
            misses[0] -= 1
            return None
        return j.open(slot, gen)

    v = View()
    v.drain(w, flaky_open)
    assert list(v.cov) == [(3, 9)]


def test_journal_that_never_appears_is_corrupt() -> None:
    w, j = block(), Journals()
    publisher(w, j).publish(3, 9)
    v = View()
    with pytest.raises(CorruptResource):
        v.drain(w, lambda slot, gen: None)


def test_foreign_journal_is_corrupt() -> None:
    w, j = block(), Journals()
    publisher(w, j).publish(3, 9)
    other = Journals()
    publisher(block(), other, 1)  # a journal of slot 1, served for slot 0
    v = View()
    with pytest.raises(CorruptResource, match="foreign"):
        v.drain(w, lambda slot, gen: other.segs[(1, 1)])


# ------------------------------------------------------------------------------ property
ops = st.lists(
    st.one_of(
        st.tuples(st.just("pub"), st.integers(0, 300), st.integers(1, 20)),
        st.tuples(st.just("burst"), st.integers(1, 2 * RING + 3), st.integers(0, 300)),
        st.tuples(st.just("drain"), st.integers(0, 2), st.just(0)),
        st.tuples(st.just("compact"), st.just(0), st.just(0)),
        st.tuples(st.just("tear"), st.integers(0, RING - 1), st.integers(0, 3)),
    ),
    max_size=40,
)


@settings(max_examples=120, deadline=None)
@given(script=ops)
def test_cursors_match_the_oracle(script: list[tuple[str, int, int]]) -> None:
    w, j = block(), Journals()
    pub = publisher(w, j)
    views = [View(), View(), View()]
    oracle: set[int] = set()
    for op, a, b in script:
        if op == "pub":
            pub.publish(a, a + b)
            oracle.update(range(a, a + b))
        elif op == "burst":  # a many-entry burst: laps any cursor when a > RING
            for k in range(a):
                s = (b + 7 * k) % 400
                pub.publish(s, s + 1 + k % 3)
                oracle.update(range(s, s + 1 + k % 3))
        elif op == "drain":
            views[a].drain(w, j.open)
            assert views[a].cov.total() == len(oracle)
            assert list(views[a].cov) == list(RangeSet((p, p + 1) for p in oracle))
            assert views[a].cursor.cursor == pub.seq
        elif op == "compact":
            pub.compact()
        else:  # a torn entry (any field) among those a lagging reader may still read
            w[L.entry_word(0, a) + b] ^= 1 << 33
        assert pub.ranges() == list(RangeSet((p, p + 1) for p in oracle))
    late = View()
    late.drain(w, j.open)
    assert list(late.cov) == list(RangeSet((p, p + 1) for p in oracle))
    for v in views:
        v.drain(w, j.open)
        assert list(v.cov) == list(late.cov)
