"""DL/T 645-2007 values: the BCD formats and data identifiers of the standard's appendix A.

Pure code. `BcdFormat` turns value bytes (BCD digits, low byte first) into numbers and back;
`STANDARD_ITEMS` holds the rows of tables A.1 (energy) and A.3 (variables) the gateway knows, with
their formats; `BLOCKS` the data blocks (DI1 = FFH) whose members one request returns in order;
`plan_reads` turns the identifiers a poll cycle wants into requests. Framing is in
gateway.protocol.dlt645. Sign rules follow the notes of tables A.1 and A.3: combined energies, currents,
powers and power factors carry their sign in the top bit of the most significant byte.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from gateway.protocol.dlt645 import LocalProtocolError, RemoteProtocolError, di_text
from gateway.schema import Fields


@dataclass(frozen=True, slots=True)
class BcdFormat:
    """A value format of appendix A such as XXX.XXX: BCD digits sent low byte first.

    Signed formats carry the sign in the top bit of the most significant byte (the last one on the
    wire), 0 positive, 1 negative (notes of tables A.1 and A.3), so their top digit is 0..7.
    """

    text: str
    signed: bool = False

    def __post_init__(self) -> None:
        body = self.text.replace(".", "", 1)
        if not body or set(body) != {"X"} or len(body) % 2 or len(body) > 16:
            raise LocalProtocolError(f"format {self.text!r}: write an even number (2..16) of X with "
                                     "at most one '.', e.g. XXX.XXX")

    @property
    def digits(self) -> int:
        return len(self.text.replace(".", ""))

    @property
    def decimals(self) -> int:
        return len(self.text.partition(".")[2])

    @property
    def size(self) -> int:
        return self.digits // 2

    @property
    def type_name(self) -> str:
        """How a profile point names this format: the text, '-' in front when signed."""
        return ("-" if self.signed else "") + self.text

    @classmethod
    def from_type_name(cls, name: str) -> BcdFormat:
        return cls(name.removeprefix("-"), signed=name.startswith("-"))

    def decode(self, raw: bytes) -> float:
        """Value bytes -> number; raises RemoteProtocolError when they are not BCD of this size."""
        if len(raw) != self.size:
            raise RemoteProtocolError(f"{self.text} needs {self.size} bytes, got {len(raw)}")
        data = bytearray(raw)
        negative = self.signed and bool(data[-1] & 0x80)
        if self.signed:
            data[-1] &= 0x7F
        text = bytes(data[::-1]).hex()
        if not text.isdigit():
            raise RemoteProtocolError(f"{bytes(raw).hex(' ')} is not BCD (format {self.text})")
        value = int(text) / float(10**self.decimals)
        return -value if negative else value

    def encode(self, value: float) -> bytes:
        """Number -> value bytes; raises LocalProtocolError when it does not fit the format."""
        scaled = round(abs(value) * 10**self.decimals)
        limit = (8 if self.signed else 10) * 10 ** (self.digits - 1)
        if scaled >= limit or (value < 0 and not self.signed):
            raise LocalProtocolError(f"{value!r} does not fit format {self.type_name}")
        data = bytearray(bytes.fromhex(f"{scaled:0{self.digits}d}")[::-1])
        if value < 0 and scaled:
            data[-1] |= 0x80
        return bytes(data)

    @property
    def largest(self) -> float:
        return float((8 if self.signed else 10) * 10 ** (self.digits - 1) - 1) / float(10**self.decimals)


@dataclass(frozen=True, slots=True)
class DataItem:
    """One row of appendix A: identifier, format and the unit the standard gives."""

    di: int
    format: BcdFormat
    unit: str
    title: str


def _items() -> dict[int, DataItem]:
    energy, energy_signed = BcdFormat("XXXXXX.XX"), BcdFormat("XXXXXX.XX", signed=True)
    volts, amps = BcdFormat("XXX.X"), BcdFormat("XXX.XXX", signed=True)
    power, pf = BcdFormat("XX.XXXX", signed=True), BcdFormat("X.XXX", signed=True)
    items = [
        # Table A.1 (energy): combined energies carry a sign bit (note to A.1), the others do not.
        DataItem(0x00000000, energy_signed, "kWh", "combined active energy, total"),
        DataItem(0x00010000, energy, "kWh", "forward active energy, total"),
        DataItem(0x00020000, energy, "kWh", "reverse active energy, total"),
        DataItem(0x00030000, energy_signed, "kvarh", "combined reactive energy 1, total"),
        DataItem(0x00040000, energy_signed, "kvarh", "combined reactive energy 2, total"),
        # Table A.3 (variables): current, power and power factor carry a direction bit (notes).
        DataItem(0x02800001, amps, "A", "neutral current"),
        DataItem(0x02800002, BcdFormat("XX.XX"), "Hz", "grid frequency"),
    ]
    for phase, label in ((1, "A"), (2, "B"), (3, "C")):
        items += [DataItem(0x02010000 | phase << 8, volts, "V", f"phase {label} voltage"),
                  DataItem(0x02020000 | phase << 8, amps, "A", f"phase {label} current")]
    for base, unit, what, fmt in ((0x02030000, "kW", "active power", power),
                                  (0x02040000, "kvar", "reactive power", power),
                                  (0x02050000, "kVA", "apparent power", power),
                                  (0x02060000, "", "power factor", pf)):
        for phase, label in enumerate(("total", "phase A", "phase B", "phase C")):
            items.append(DataItem(base | phase << 8, fmt, unit, f"instantaneous {what}, {label}"))
    return {item.di: item for item in items}


STANDARD_ITEMS: Final[Mapping[int, DataItem]] = _items()

# Data blocks (DI1 = FFH) of table A.3: one request returns the members in DI1 order.
BLOCKS: Final[Mapping[int, tuple[int, ...]]] = {
    0x0201FF00: (0x02010100, 0x02010200, 0x02010300),
    0x0202FF00: (0x02020100, 0x02020200, 0x02020300),
    **{base | 0xFF00: tuple(base | phase << 8 for phase in range(4))
       for base in (0x02030000, 0x02040000, 0x02050000, 0x02060000)},
}


def plan_reads(dis: Sequence[int], *, refused: frozenset[int] | set[int] = frozenset()
               ) -> list[tuple[int, tuple[int, ...]]]:
    """Requests for these data identifiers: (DI to send, the DIs its answer holds), in order.

    Two or more wanted members of a block are read with one block request unless the meter
    `refused` that block before; everything else is read one identifier per request.
    """
    wanted = list(dict.fromkeys(dis))
    plan: list[tuple[int, tuple[int, ...]]] = []
    done: set[int] = set()
    for di in wanted:
        if di in done:
            continue
        block = next((b for b, members in BLOCKS.items() if di in members and b not in refused), None)
        members = BLOCKS.get(block, ()) if block is not None else ()
        if block is not None and sum(m in wanted for m in members) >= 2:
            plan.append((block, members))
            done.update(members)
        else:
            plan.append((di, (di,)))
            done.add(di)
    return plan


def split_block(members: Sequence[int], data: bytes, formats: Mapping[int, BcdFormat]) -> dict[int, bytes]:
    """The value bytes of each member of a block answer; RemoteProtocolError on a wrong length."""
    sizes = [formats[m].size for m in members]
    if len(data) != sum(sizes):
        raise RemoteProtocolError(f"a block of {len(members)} items should be {sum(sizes)} bytes, "
                                  f"got {len(data)}")
    out: dict[int, bytes] = {}
    offset = 0
    for member, size in zip(members, sizes, strict=True):
        out[member] = data[offset:offset + size]
        offset += size
    return out


def profile_item(f: Fields) -> tuple[int, BcdFormat]:
    """Read `di`, `format` and `signed` of a profile point; the format defaults to the standard's."""
    if "di" not in f:
        f.fail("di", "a DL/T 645 point needs its data identifier, e.g. di: \"02 01 01 00\"")
    raw = f.peek("di")
    if isinstance(raw, str) and len(raw.replace(" ", "")) == 8 and _is_hex(raw.replace(" ", "")):
        raw = int(raw.replace(" ", ""), 16)
    if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw <= 0xFFFF_FFFF:
        f.fail("di", f"{raw!r} is not a data identifier; write DI3..DI0 as in the standard's "
               "tables, e.g. \"02 01 01 00\" or 0x02010100")
    if raw in BLOCKS or (raw >> 8) & 0xFF == 0xFF:
        f.fail("di", f"{di_text(raw)} is a data block; a point reads one item (the gateway "
               "merges items into block reads itself)")
    item = STANDARD_ITEMS.get(raw)
    text = f.optional_str("format") or (item.format.text if item else None)
    if text is None:
        f.fail("format", f"{di_text(raw)} is not in the gateway's table of standard items; give its "
               "format from the meter's manual, e.g. format: XXX.XXX")
    signed = f.optional_bool("signed")
    try:
        fmt = BcdFormat(text, signed=item.format.signed if signed is None and item else bool(signed))
    except LocalProtocolError as exc:
        f.fail("format", str(exc))
    return raw, fmt


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)
