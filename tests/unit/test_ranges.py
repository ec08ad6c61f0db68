"""RangeSet and merge_ranges against a plain set-of-ints oracle."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shmstore.core.ranges import RangeSet, merge_ranges

pytestmark = pytest.mark.timeout(60)

LIMIT = 200
offsets = st.integers(min_value=0, max_value=LIMIT)
pairs = st.tuples(offsets, offsets)
pair_lists = st.lists(pairs, max_size=30)


def to_set(ranges: list[tuple[int, int]]) -> set[int]:
    out: set[int] = set()
    for s, e in ranges:
        out.update(range(s, e))
    return out


def runs(points: set[int]) -> list[tuple[int, int]]:
    """The maximal runs of ``points``: the canonical merged form."""
    out: list[tuple[int, int]] = []
    for p in sorted(points):
        if out and out[-1][1] == p:
            out[-1] = (out[-1][0], p + 1)
        else:
            out.append((p, p + 1))
    return out


def oracle_first_gap(points: set[int], start: int, limit: int) -> tuple[int, int] | None:
    p = start
    while p < limit and p in points:
        p += 1
    if p >= limit:
        return None
    q = p
    while q < limit and q not in points:
        q += 1
    return (p, q)


def oracle_covered_prefix(points: set[int], start: int) -> int:
    p = start
    while p in points:
        p += 1
    return p


def assert_matches(rs: RangeSet, points: set[int]) -> None:
    rs._check()
    assert list(rs) == runs(points)
    assert len(rs) == len(runs(points))
    assert rs.total() == len(points)
    assert rs.extent() == (max(points) + 1 if points else 0)


# ------------------------------------------------------------------------------ examples
def test_empty_set() -> None:
    rs = RangeSet()
    rs._check()
    assert list(rs) == []
    assert len(rs) == 0
    assert rs.total() == 0
    assert rs.extent() == 0
    assert rs.covers(3, 3) is True
    assert rs.covers(0, 1) is False
    assert rs.first_gap(0, 10) == (0, 10)
    assert rs.first_gap(5, 5) is None
    assert rs.covered_prefix(7) == 7


def test_adjacent_ranges_merge() -> None:
    rs = RangeSet()
    rs.add(0, 5)
    rs._check()
    rs.add(5, 10)
    rs._check()
    assert list(rs) == [(0, 10)]


def test_bridging_add_absorbs_every_range_inside() -> None:
    rs = RangeSet([(0, 2), (4, 6), (8, 10), (12, 14)])
    rs._check()
    assert list(rs) == [(0, 2), (4, 6), (8, 10), (12, 14)]
    rs.add(1, 12)
    rs._check()
    assert list(rs) == [(0, 14)]
    assert rs.total() == 14


def test_empty_and_reversed_adds_are_noops() -> None:
    rs = RangeSet([(3, 6)])
    rs.add(4, 4)
    rs._check()
    rs.add(9, 2)
    rs._check()
    assert list(rs) == [(3, 6)]


def test_queries_on_fragmented_set() -> None:
    rs = RangeSet([(10, 20), (30, 40)])
    assert rs.covers(10, 20) is True
    assert rs.covers(10, 21) is False
    assert rs.covers(15, 35) is False
    assert rs.first_gap(0, 100) == (0, 10)
    assert rs.first_gap(10, 100) == (20, 30)
    assert rs.first_gap(12, 25) == (20, 25)
    assert rs.first_gap(30, 40) is None
    assert rs.first_gap(35, 50) == (40, 50)
    assert rs.covered_prefix(12) == 20
    assert rs.covered_prefix(20) == 20
    assert rs.covered_prefix(5) == 5
    assert rs.extent() == 40
    assert rs.total() == 20


def test_check_detects_broken_invariants() -> None:
    rs = RangeSet([(0, 5)])
    rs._d[5] = 8  # adjacent: should have been merged
    with pytest.raises(AssertionError):
        rs._check()
    rs = RangeSet()
    rs._d[4] = 4  # empty range
    with pytest.raises(AssertionError):
        rs._check()


def test_merge_ranges_examples() -> None:
    assert merge_ranges([]) == []
    assert merge_ranges([(5, 5), (7, 3)]) == []
    assert merge_ranges([(8, 10), (0, 2), (2, 4), (3, 6)]) == [(0, 6), (8, 10)]
    assert merge_ranges([(0, 10), (2, 3)]) == [(0, 10)]


# ------------------------------------------------------------------------------ properties
@settings(max_examples=300, deadline=None)
@given(ops=pair_lists)
def test_add_sequence_matches_oracle(ops: list[tuple[int, int]]) -> None:
    rs = RangeSet()
    points: set[int] = set()
    for s, e in ops:
        rs.add(s, e)
        points.update(range(s, e))
        assert_matches(rs, points)


@settings(max_examples=300, deadline=None)
@given(initial=pair_lists, ops=pair_lists, queries=st.lists(pairs, max_size=20))
def test_queries_match_oracle(initial: list[tuple[int, int]], ops: list[tuple[int, int]],
                              queries: list[tuple[int, int]]) -> None:
    rs = RangeSet(initial)
    points = to_set(initial)
    assert_matches(rs, points)
    for s, e in ops:
        rs.add(s, e)
        rs._check()
        points.update(range(s, e))
    assert_matches(rs, points)
    for a, b in queries:
        want_cover = all(p in points for p in range(a, b))
        assert rs.covers(a, b) is want_cover, (a, b)
        assert rs.first_gap(a, b) == oracle_first_gap(points, a, b), (a, b)
        assert rs.covered_prefix(a) == oracle_covered_prefix(points, a), a


@settings(max_examples=300, deadline=None)
@given(ps=st.lists(st.tuples(st.integers(-5, LIMIT), st.integers(-5, LIMIT)), max_size=40))
def test_merge_ranges_matches_oracle(ps: list[tuple[int, int]]) -> None:
    got = merge_ranges(ps)
    want_points = {p for s, e in ps for p in range(s, e)}
    assert got == runs(want_points)
    # disjoint, sorted, non-adjacent
    for (s0, e0), (s1, e1) in itertools.pairwise(got):
        assert s0 < e0 < s1 < e1


@settings(max_examples=200, deadline=None)
@given(ps=pair_lists)
def test_constructor_equals_incremental_adds(ps: list[tuple[int, int]]) -> None:
    a = RangeSet(ps)
    a._check()
    b = RangeSet()
    for s, e in ps:
        b.add(s, e)
        b._check()
    assert list(a) == list(b)
    a.clear()
    a._check()
    assert list(a) == []
    assert a.extent() == 0


def test_lookups_across_many_blocks_match_an_oracle() -> None:
    """covers/first_gap/covered_prefix bisect sortedcontainers' blocks directly; with a tiny
    block size every query crosses block boundaries (and add_many rebuilds the set)."""
    import random

    rng = random.Random(7)
    for _ in range(50):
        rs = RangeSet()
        rs._d._list._reset(4)
        points: set[int] = set()
        for _ in range(60):
            if rng.random() < 0.2:
                pairs = [(a, a + rng.randrange(1, 9)) for a in rng.sample(range(300), 40)]
                rs.add_many(pairs)
                rs._d._list._reset(4)
                for a, b in pairs:
                    points.update(range(a, b))
            else:
                s = rng.randrange(0, 300)
                e = s + rng.randrange(0, 20)
                rs.add(s, e)
                points.update(range(s, e))
            rs._check()
            a = rng.randrange(0, 330)
            b = a + rng.randrange(0, 20)
            assert rs.covers(a, b) == all(x in points for x in range(a, b))
            x = a
            while x in points:
                x += 1
            assert rs.covered_prefix(a) == x
            gap = next(((g, g) for g in range(a, b) if g not in points), None)
            if gap is None:
                assert rs.first_gap(a, b) is None
            else:
                g = gap[0]
                e = g
                while e < b and e not in points:
                    e += 1
                assert rs.first_gap(a, b) == (g, e)
