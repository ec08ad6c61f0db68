"""The coverage ring and journal: how written ranges reach every process without a lock.

Theory of operation
===================

Each writer process owns one *writer slot* in the control block (claimed under the meta lock,
held by a byte-range lock for the writer's life, see ``shmstore.ipc.locks``). A slot has

* a **ring** of ``RING_LEN`` entries ``(seq, start, end, check)`` in the control block, and
  ``head``, the seq of the last published entry;
* a **journal**: a segment of its own (``gen`` in the slot header) holding the slot's
  complete record. Entries ``[0, compacted)`` are the merged coverage of every seq below
  ``base_seq``; entry ``compacted + (seq - base_seq)`` is the range published as ``seq``.
  The header is immutable for a journal generation.

Only the slot's writer stores to its slot and journal (single producer), so no
compare-and-swap is needed: Python gives us aligned 8-byte loads and stores through
``memoryview.cast("Q")`` (one ``mov`` each on x86-64) and nothing more.

Publishing ``[start, end)`` as ``seq`` (writer)::

    1. the bytes                                  (memcpy into the data segment)
    2. journal entry  compacted + seq - base_seq  (start, end)
    3. ring entry seq % RING_LEN, in this order:  start, end,
                                                  check = entry_check(seq, start, end), seq
    4. extent = max(extent, end)                  (what commit(None) takes as the length)
    5. head = seq

x86-64 is TSO: stores become visible in program order and loads are not reordered with
other loads, so a reader that loads ``head >= seq`` and then the entry sees the entry's bytes,
and the journal entry. (On a weakly ordered CPU steps 1-5 need release/acquire fences; the
full barrier the writer already passes before reading the waiter table, see
``shmstore.resource``, is placed after step 5, so porting needs one more before it.)

Draining (reader): a cursor per slot holds the last seq consumed.

* ``head == cursor``: nothing new (one load; the fast path).
* ``head - cursor <= RING_LEN``: read entries ``cursor+1 .. head`` from the ring. Each entry
  is accepted only if its ``seq`` is the expected one and ``check == entry_check(seq, start, end)``:
  a slot the writer is overwriting (it lapped us while we read) fails the check, because the
  writer stores ``seq`` last and the check covers every field. A failed entry sends us to the
  journal; it is never half-applied.
* otherwise (a late joiner, a reader that fell more than a ring behind, or a failed check):
  read the journal. Load ``gen``, map that journal, load ``head``, read its entries up to
  ``head``, then load ``gen`` again; if it changed, a compaction raced us and we retry. If it
  did not, every entry up to ``head`` was written into that journal (the writer publishes a
  new ``gen`` before it writes any entry there).

Coverage within one data generation only grows, so re-adding ranges is idempotent and a
reader never has to remove anything: a full resync is a union.

Compaction (writer, when its journal is full): merge the journal's entries, write them into a
fresh journal of generation ``gen + 1`` sized for at least as many appends as it holds merged
ranges (so compaction costs O(1) amortized per write, however fragmented the coverage), set
``base_seq = head + 1``, publish ``gen``, then unlink the old journal. A reader that mapped
the old one keeps valid memory (an unlinked segment lives while mapped); one that looks it up
after the unlink retries with the new ``gen``.

Crash model: a writer killed between any two steps leaves published state consistent. Bytes
without a journal/ring entry are simply not covered; a ring entry without ``head`` is never
read; a new journal whose ``gen`` was never published is overwritten by the next compaction of
that slot (segments are created with truncation by the slot's owner) or removed by ``unlink``.
"""

from __future__ import annotations

import array
from collections.abc import Callable

from ..errors import CorruptResource
from .layout import (
    ENTRY_SIZE,
    J_BASE_SEQ,
    J_COMPACTED,
    JOURNAL_ENTRY,
    JOURNAL_HEADER,
    RING_LEN,
    S_EXTENT,
    S_HEAD,
    S_JGEN,
    entry_check,
    entry_word,
    pack_journal_header,
    slot_word,
    unpack_journal_header,
)
from .ranges import merge_ranges

__all__ = ["MIN_JOURNAL", "SlotCursor", "SlotPublisher", "check_slot"]

MIN_JOURNAL = 2048  # entries of a fresh journal
_MAX_SEQ = 1 << 62  # far past any real count of writes; a larger head is a damaged block
_JH = JOURNAL_HEADER // 8  # words before the first journal entry

# callbacks into the OS edge
CreateJournal = Callable[[int, int, int], memoryview]  # (slot, gen, capacity) -> u64 view
OpenJournal = Callable[[int, int], "memoryview | None"]  # (slot, gen) -> u64 view or None
DropJournal = Callable[[int, int], None]  # (slot, gen): unlink it


class SlotPublisher:
    """The writer's side of one slot. Not thread-safe: the owning handle serialises calls."""

    __slots__ = (
        "_base",
        "_cap",
        "_cc",
        "_create",
        "_drop",
        "_extent_w",
        "_gen",
        "_head_w",
        "_j",
        "_jgen_w",
        "_ring0",
        "extent",
        "seq",
        "slot",
        "words",
    )

    def __init__(self, words: memoryview, slot: int, create: CreateJournal,
                 open_: OpenJournal, drop: DropJournal) -> None:
        self.words = words
        self.slot = slot
        self._create = create
        self._drop = drop
        self._head_w = slot_word(slot, S_HEAD)
        self._jgen_w = slot_word(slot, S_JGEN)
        self._extent_w = slot_word(slot, S_EXTENT)
        self._ring0 = entry_word(slot, 0)
        self.seq = words[self._head_w]
        self.extent = words[self._extent_w]
        if self.seq >= _MAX_SEQ or self.extent >= _MAX_SEQ:
            raise CorruptResource(f"writer slot {slot}: head or extent out of range")
        gen = words[self._jgen_w]
        if gen == 0:
            self._start_journal([], 1)
            return
        j = open_(slot, gen)
        if j is None:
            raise CorruptResource(f"journal {gen} of writer slot {slot} is missing")
        jslot, jgen, cc, base, cap = unpack_journal_header(j.cast("B"))
        if jslot != slot or jgen != gen or self.seq + 1 < base or cc + self.seq + 1 - base > cap:
            raise CorruptResource(f"journal {gen} of writer slot {slot} contradicts its slot")
        self._j, self._gen, self._cc, self._base, self._cap = j, gen, cc, base, cap
        # A writer killed between storing head and extent (an older layout) or after a
        # partial compaction must not leave a resumed extent below the coverage.
        n = cc + self.seq + 1 - base
        ends = j[_JH + 1 : _JH + 2 * n : 2].tolist()
        if ends and max(ends) > self.extent:
            self.extent = max(ends)
            words[self._extent_w] = self.extent

    def _start_journal(self, merged: list[tuple[int, int]], gen: int) -> None:
        cap = max(MIN_JOURNAL, 4 * len(merged))
        j = self._create(self.slot, gen, cap)
        flat = [x for pair in merged for x in pair]
        j[_JH : _JH + len(flat)] = _as_words(flat)
        pack_journal_header(j.cast("B"), self.slot, gen, len(merged), self.seq + 1, cap)
        old = self.words[self._jgen_w]
        self._j, self._gen, self._cc, self._base, self._cap = j, gen, len(merged), self.seq + 1, cap
        self.words[self._jgen_w] = gen  # publish: entries from now on go to this journal
        if old:
            self._drop(self.slot, old)

    def reset(self, merged: list[tuple[int, int]]) -> None:
        """Start the slot over with ``merged`` as its whole coverage (a new data generation)."""
        self.extent = merged[-1][1] if merged else 0
        self.words[self._extent_w] = self.extent
        self._start_journal(merged, self._gen + 1)

    def compact(self) -> None:
        """Rewrite the journal as merged coverage, with room for at least as many appends."""
        n = self._cc + self.seq + 1 - self._base
        flat = self._j[_JH : _JH + 2 * n].tolist()
        merged = merge_ranges(zip(flat[0::2], flat[1::2], strict=True))
        self._start_journal(merged, self._gen + 1)

    def publish(self, start: int, end: int) -> int:
        """Publish ``[start, end)`` (whose bytes are already written); returns its seq."""
        seq = self.seq + 1
        idx = self._cc + seq - self._base
        if idx >= self._cap:
            self.compact()
            idx = self._cc + seq - self._base
        j = self._j
        j[_JH + 2 * idx] = start
        j[_JH + 2 * idx + 1] = end
        w = self.words
        e = self._ring0 + (seq % RING_LEN) * 4
        w[e + 1] = start
        w[e + 2] = end
        w[e + 3] = ((((seq * 0x9E3779B97F4A7C15) ^ start) * 0xBF58476D1CE4E5B9 ^ end)
                    * 0x94D049BB133111EB) & 0xFFFF_FFFF_FFFF_FFFF  # entry_check, inlined
        w[e] = seq
        if end > self.extent:  # before head: the extent never lags what is covered
            self.extent = end
            w[self._extent_w] = end
        w[self._head_w] = seq
        self.seq = seq
        return seq

    def ranges(self) -> list[tuple[int, int]]:
        """This slot's merged coverage (reads its own journal)."""
        n = self._cc + self.seq + 1 - self._base
        flat = self._j[_JH : _JH + 2 * n].tolist()
        return merge_ranges(zip(flat[0::2], flat[1::2], strict=True))


def check_slot(words: memoryview, slot: int, journal: memoryview) -> list[tuple[int, int]]:
    """Invariant checker for one writer slot at rest; returns the slot's merged coverage.

    The journal's header matches the slot, every published seq has its journal entry, and
    every ring entry still in the ring (the last RING_LEN seqs) passes its check and equals
    the journal entry of the same seq.
    """
    head = words[slot_word(slot, S_HEAD)]
    jslot, gen, cc, base, cap = unpack_journal_header(journal.cast("B"))
    assert jslot == slot, "journal of another slot"
    assert gen == words[slot_word(slot, S_JGEN)], "journal generation is not the published one"
    assert head + 1 >= base, "head is older than the journal"
    n = cc + head + 1 - base
    assert n <= cap, "head is past the journal"
    flat = journal[_JH : _JH + 2 * n].tolist()
    pairs = list(zip(flat[0::2], flat[1::2], strict=True))
    assert all(s <= e for s, e in pairs), "a reversed journal entry"
    # The oldest entry still in the ring shares its slot with seq head + 1, which a writer
    # that died mid-publish may have been overwriting (readers reject such an entry and
    # read the journal instead), so it is not checked.
    for seq in range(max(base, head - RING_LEN + 2, 1), head + 1):
        e = entry_word(slot, seq % RING_LEN)
        s, st, en, ck = words[e], words[e + 1], words[e + 2], words[e + 3]
        assert s == seq and ck == entry_check(seq, st, en), f"ring entry {seq} is torn"
        assert pairs[cc + seq - base] == (st, en), f"ring entry {seq} disagrees with the journal"
    merged = merge_ranges(pairs)
    if merged:
        assert words[slot_word(slot, S_EXTENT)] >= merged[-1][1], "extent below the coverage"
    return merged


def _as_words(flat: list[int]) -> memoryview:
    return memoryview(array.array("Q", flat))


class SlotCursor:
    """A reader's position in one writer slot."""

    __slots__ = ("_head_w", "_jgen_w", "cursor", "jgen", "slot")

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.cursor = 0
        self.jgen = 0  # journal generation the cursor was last synced against (0: never)
        self._head_w = slot_word(slot, S_HEAD)
        self._jgen_w = slot_word(slot, S_JGEN)

    def pending(self, words: memoryview) -> bool:
        return bool(words[self._head_w] != self.cursor or self.jgen == 0)

    def drain(self, words: memoryview, add: Callable[[int, int], None],
              open_: OpenJournal,
              add_many: Callable[[list[tuple[int, int]]], None] | None = None) -> None:
        """Feed every range published since the last drain to ``add`` (possibly again);
        a catch-up from the journal goes to ``add_many`` in one list when it is given."""
        h = words[self._head_w]
        cur = self.cursor
        if h == cur and self.jgen:
            return
        if self.jgen and h > cur and h - cur <= RING_LEN:
            got: list[tuple[int, int]] = []
            for seq in range(cur + 1, h + 1):
                e = entry_word(self.slot, seq % RING_LEN)
                s, st, en, ck = words[e], words[e + 1], words[e + 2], words[e + 3]
                if s != seq or ck != entry_check(seq, st, en):
                    break  # lapped (or a torn entry): fall back to the journal
                got.append((st, en))
            else:
                for st, en in got:
                    add(st, en)
                self.cursor = h
                return
            for st, en in got:
                add(st, en)
            self.cursor = cur + len(got)
        self._from_journal(words, add, open_, add_many)

    def _from_journal(self, words: memoryview, add: Callable[[int, int], None],
                      open_: OpenJournal,
                      add_many: Callable[[list[tuple[int, int]]], None] | None) -> None:
        for _ in range(1000):
            g1 = words[self._jgen_w]
            if g1 == 0:
                return
            j = open_(self.slot, g1)
            if j is None:
                continue  # compacted and unlinked under us: the new gen is published
            slot, gen, cc, base, cap = unpack_journal_header(j.cast("B"))
            if slot != self.slot or gen != g1:
                raise CorruptResource(f"journal {g1} of writer slot {self.slot} is foreign")
            h = words[self._head_w]
            if h + 1 < base:
                continue  # head of an older journal generation: reload
            if self.jgen == g1 and self.cursor + 1 >= base:
                lo = cc + self.cursor + 1 - base  # incremental: only what is new
            else:
                lo = 0  # full resync: the compacted prefix and every entry since
            hi = cc + h + 1 - base
            if hi > cap:
                if words[self._jgen_w] != g1:
                    continue  # compacted between our loads of gen and head: reload
                raise CorruptResource(f"writer slot {self.slot} head {h} is past its journal")
            flat = j[_JH + 2 * lo : _JH + 2 * hi].tolist()
            if words[self._jgen_w] != g1:
                continue  # a compaction raced the read: its entries may be in the new gen
            if add_many is not None:
                add_many(list(zip(flat[0::2], flat[1::2], strict=True)))
            else:
                for i in range(0, len(flat), 2):
                    add(flat[i], flat[i + 1])
            self.cursor = h
            self.jgen = g1
            return
        raise CorruptResource(f"writer slot {self.slot}: journal never settled")


# Sanity of the sizes this module assumes.
assert ENTRY_SIZE == 32 and JOURNAL_ENTRY == 16
assert J_COMPACTED == 3 and J_BASE_SEQ == 4
