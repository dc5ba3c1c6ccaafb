"""Read planning: which Modbus requests read a set of points with the fewest bytes on the wire.

Points of one table are sorted by address and merged into one request while
- the request stays within the device's register limit (at most 125, Application Protocol 6.3),
- the registers read in between (the gap) cost fewer bytes than starting a new request would,
- the request does not span a barrier (a profile's own, or one learned at run time).
A device that answers "illegal data address" to a merged read gets a learned barrier, so the next
plan splits there (`ReadPlanner.split`). Each planned read carries its decoder, compiled as it is
planned (gateway.perception.decoders). Pure code: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gateway.perception.decoders import ReadDecoder, Span
from gateway.perception.profiles import MODBUS_MAX_BITS, Point
from gateway.protocol.modbus import (
    BIT_FUNCTIONS,
    READ_FUNCTION,
    RTU_READ_RESPONSE_OVERHEAD,
    RTU_REQUEST_BYTES,
)

# What a new request costs on an RTU line, in bytes-equivalents: its request frame, the response's
# fixed part and two 3.5-character silent intervals (Serial Line 2.5.1.1).
RTU_REQUEST_OVERHEAD = RTU_REQUEST_BYTES + RTU_READ_RESPONSE_OVERHEAD + 7
# On TCP the round trip dominates: a new request costs about as much as ~50 registers of payload.
TCP_REQUEST_OVERHEAD = 100


@dataclass(frozen=True, slots=True)
class PlannedRead:
    """One read request, the points it carries and the decoder of its response."""

    table: str
    address: int
    count: int
    points: tuple[Point, ...]
    # Compiled with the read (`planned_read`): plans are cached per point set, so one read and its
    # decoder serve every cycle. Derived from the fields above, so not part of the read's value.
    decoder: ReadDecoder = field(compare=False, repr=False)

    @property
    def function(self) -> int:
        return READ_FUNCTION[self.table]

    @property
    def end(self) -> int:
        return self.address + self.count

    def words_of(self, point: Point, values: Sequence[int]) -> Sequence[int]:
        """The slice of this request's response that holds `point`."""
        start = point.address - self.address
        return values[start : start + point.count]


def planned_read(*, table: str, address: int, count: int, points: Sequence[Point],
                 sf_names: frozenset[str] = frozenset()) -> PlannedRead:
    """A read and its compiled decoder; `sf_names` are the device's scale-factor registers."""
    span = Span(address=address, count=count, points=tuple(points))
    return PlannedRead(table=table, address=address, count=count, points=span.points,
                       decoder=ReadDecoder(span, sf_names))


@dataclass(frozen=True, slots=True)
class ReadPlan:
    reads: tuple[PlannedRead, ...]

    @property
    def request_count(self) -> int:
        return len(self.reads)

    @property
    def registers(self) -> int:
        return sum(r.count for r in self.reads if r.function not in BIT_FUNCTIONS)


def plan_reads(points: Iterable[Point], *, max_registers: int = 125,
               barriers: Iterable[tuple[str, int]] = (),
               overhead_bytes: int = RTU_REQUEST_OVERHEAD,
               sf_names: frozenset[str] = frozenset()) -> ReadPlan:
    """Merge points into requests. Overlapping or duplicate points share a request; `sf_names` (the
    device's scale-factor registers) are what each read's decoder is compiled for."""
    barrier_set = frozenset(barriers)
    reads: list[PlannedRead] = []
    by_table: dict[str, list[Point]] = {}
    for point in points:
        by_table.setdefault(point.table, []).append(point)
    for table in sorted(by_table):
        bits = READ_FUNCTION[table] in BIT_FUNCTIONS
        limit = MODBUS_MAX_BITS if bits else max_registers
        # A gap register costs 2 bytes of response; a gap bit costs 1/8 byte.
        gap_cost = 0.125 if bits else 2.0
        table_barriers = sorted(a for t, a in barrier_set if t == table)
        current: list[Point] = []
        start = end = 0
        for point in sorted(by_table[table], key=lambda p: (p.address, p.count)):
            if current:
                new_end = max(end, point.end)
                gap = max(0, point.address - end)
                crosses = any(start < b < new_end for b in table_barriers)
                if (new_end - start <= limit and not crosses
                        and gap * gap_cost < overhead_bytes):
                    current.append(point)
                    end = new_end
                    continue
                reads.append(planned_read(table=table, address=start, count=end - start,
                                          points=current, sf_names=sf_names))
            current = [point]
            start, end = point.address, point.end
        if current:
            reads.append(planned_read(table=table, address=start, count=end - start,
                                      points=current, sf_names=sf_names))
    return ReadPlan(reads=tuple(reads))


@dataclass
class ReadPlanner:
    """Plans reads for one device and learns from its answers.

    The only state is what the device taught us: addresses a read must not span (learned barriers)
    and points the device refuses to serve at all (unsupported).
    """

    max_registers: int = 125
    barriers: frozenset[tuple[str, int]] = frozenset()
    overhead_bytes: int = RTU_REQUEST_OVERHEAD
    sf_names: frozenset[str] = frozenset()  # the device's scale-factor registers, for the decoders
    learned: set[tuple[str, int]] = field(default_factory=set)
    unsupported: set[str] = field(default_factory=set)
    # Plans by the names of the points asked for (names are unique within a device's profile). A
    # device asks for the same few sets every cycle; only `split` changes what a plan should be.
    _plans: dict[tuple[str, ...], ReadPlan] = field(default_factory=dict, repr=False)

    def plan(self, points: Iterable[Point]) -> ReadPlan:
        points = list(points)
        key = tuple(p.name for p in points)
        cached = self._plans.get(key)
        if cached is None:
            usable = [p for p in points if p.name not in self.unsupported]
            cached = plan_reads(usable, max_registers=self.max_registers,
                                barriers=self.barriers | self.learned,
                                overhead_bytes=self.overhead_bytes, sf_names=self.sf_names)
            self._plans[key] = cached
        return cached

    def split(self, read: PlannedRead) -> list[str]:
        """The device answered "illegal data address" to `read`: learn where to split.

        A read with gaps is split at every gap (unmapped registers are the usual cause). A contiguous
        read of several points is halved. A read of one point marks that point unsupported; its name is
        returned so the caller can report it.
        """
        self._plans.clear()  # what we learn below changes every plan
        points = sorted(read.points, key=lambda p: p.address)
        starts = sorted({p.address for p in points})
        if len(starts) <= 1:
            self.unsupported.update(p.name for p in points)
            return [p.name for p in points]
        covered_to = points[0].end
        gap_starts = []
        for point in points[1:]:
            if point.address > covered_to:
                gap_starts.append(point.address)
            covered_to = max(covered_to, point.end)
        if gap_starts:
            self.learned.update((read.table, a) for a in gap_starts)
        else:
            self.learned.add((read.table, starts[len(starts) // 2]))
        return []
