"""The read planner: coverage, limits, barriers, gap merging and learning from refused reads."""

from __future__ import annotations

import itertools
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.perception.planner import RTU_REQUEST_OVERHEAD, ReadPlanner, plan_reads
from gateway.perception.profiles import Point

BASE = Point(name="x", table="input", address=0, printed_address=0, type="u16", count=1,
             byte_order="big", word_order="big", scale=1.0, offset=0.0, scale_factor=None,
             unit="", poll="fast", invalid=(), writable=False, min=None, max=None, values=None,
             default=None)


def pt(name: str, address: int, count: int = 2, table: str = "input") -> Point:
    return replace(BASE, name=name, address=address, count=count, table=table,
                   type={1: "u16", 2: "f32", 4: "f64"}[count])


points_strategy = st.lists(
    st.tuples(st.sampled_from(["input", "holding"]), st.integers(0, 400),
              st.sampled_from([1, 2, 4])),
    min_size=1, max_size=40,
).map(lambda rows: [pt(f"p{i}", a, c, t) for i, (t, a, c) in enumerate(rows)])


@settings(max_examples=300)
@given(points_strategy, st.integers(4, 125),
       st.lists(st.tuples(st.sampled_from(["input", "holding"]), st.integers(0, 400)), max_size=5))
def test_plan_covers_every_point_within_limits(points: list[Point], max_registers: int,
                                               barriers: list[tuple[str, int]]) -> None:
    plan = plan_reads(points, max_registers=max_registers, barriers=barriers)
    carried = [p for read in plan.reads for p in read.points]
    assert sorted(p.name for p in carried) == sorted(p.name for p in points)
    for read in plan.reads:
        assert read.count <= max_registers
        for p in read.points:
            assert p.table == read.table
            assert read.address <= p.address and p.end <= read.end
        for table, b in barriers:
            inside_one_point = any(p.address < b < p.end for p in read.points)
            assert inside_one_point or not (table == read.table and read.address < b < read.end)
    # Greedy and minimal: two neighbouring reads stay apart only for a reason.
    reads = sorted(plan.reads, key=lambda r: (r.table, r.address))
    for a, b in itertools.pairwise(reads):
        if a.table != b.table:
            continue
        gap = max(0, b.address - a.end)
        merged_end = max(a.end, b.end)
        crosses = any(t == a.table and a.address < x < merged_end for t, x in barriers)
        assert (merged_end - a.address > max_registers or crosses
                or gap * 2 >= RTU_REQUEST_OVERHEAD)


def test_merges_small_gaps_and_splits_large_ones() -> None:
    plan = plan_reads([pt("v", 0), pt("i", 6), pt("e", 342)])
    assert [(r.address, r.count) for r in plan.reads] == [(0, 8), (342, 2)]
    assert plan.request_count == 2


def test_tables_never_mix() -> None:
    plan = plan_reads([pt("a", 0), pt("b", 2, table="holding")])
    assert plan.request_count == 2


def test_split_learns_gap_barriers_then_halves_then_gives_up() -> None:
    planner = ReadPlanner()
    points = [pt("a", 0), pt("b", 4), pt("c", 6)]
    (read,) = planner.plan(points).reads
    assert (read.address, read.count) == (0, 8)
    assert planner.split(read) == []
    reads = planner.plan(points).reads
    assert [(r.address, r.count) for r in reads] == [(0, 2), (4, 4)]
    # The contiguous read b+c refused again: halve it.
    assert planner.split(reads[1]) == []
    reads = planner.plan(points).reads
    assert [(r.address, r.count) for r in reads] == [(0, 2), (4, 2), (6, 2)]
    # A single point refused: the device does not have it.
    assert planner.split(reads[2]) == ["c"]
    assert [p.name for r in planner.plan(points).reads for p in r.points] == ["a", "b"]


def test_bits_merge_cheaply() -> None:
    coils = [replace(pt(f"c{i}", i * 10, 1, "coil"), type="bool") for i in range(5)]
    assert plan_reads(coils).request_count == 1
