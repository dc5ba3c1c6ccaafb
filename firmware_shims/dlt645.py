"""Simulated DL/T 645-2007 meters on a simulated RS-485 line (a PtyWire), answering as real ones do.

`Dlt645Bus` holds the device end of a `PtyWire`, parses what arrives with the gateway's own codec
(gateway.protocol.dlt645, which is pure) and answers for every meter on the line:

- read data (11H) to a meter's address (AAH in an address byte is a wildcard, clause 7): the value
  of that data identifier, or of a data block (DI1 = FFH), from the same `SimulatedDevice` model
  the Modbus shims use; an item the meter does not have gets the abnormal reply D1H with error
  word 02H "no requested data" (a single-phase meter has no phase B voltage);
- read address (13H) to AA..AA: every meter answers with its address, so two meters on one line
  collide; the shim then sends the bitwise OR of their frames, as garbled as on a real line;
- broadcast time (08H) to 99..99: no answer, as for every broadcast.

The firmware describes itself in `FIRMWARE_ITEMS`: what quantity of the model each data identifier
carries and in which of the standard's units. It encodes every item in the standard's format
(`STANDARD_ITEMS`), not the profile's, so a test that reads a profile through this shim checks that
the profile's identifiers, formats and scales agree with the meter (docs/dlt645.md).

Faults (firmware_shims.faults): no_reply and reboot keep the meter silent, `exception` answers that
error word, bad_crc sends a wrong checksum byte, delay_s holds the answer back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping, Sequence

from firmware_shims.device import SimulatedDevice
from firmware_shims.registers import Value
from firmware_shims.wire import LineSettings, PtyWire
from gateway.errors import ConfigError
from gateway.perception.dlt645_values import BLOCKS, STANDARD_ITEMS
from gateway.protocol import dlt645


def _firmware_items() -> dict[int, tuple[str, float]]:
    """Data identifier -> (model quantity, factor from the model's unit to the standard's)."""
    items: dict[int, tuple[str, float]] = {
        0x00000000: ("energy_total_wh", 1e-3), 0x00010000: ("energy_import_total_wh", 1e-3),
        0x00020000: ("energy_export_total_wh", 1e-3), 0x02800001: ("current_n_a", 1.0),
        0x02800002: ("frequency_hz", 1.0),
    }
    for n in (1, 2, 3):
        items[0x02010000 | n << 8] = (f"voltage_l{n}_v", 1.0)
        items[0x02020000 | n << 8] = (f"current_l{n}_a", 1.0)
    for base, quantity, factor in ((0x02030000, "power_active", 1e-3),
                                   (0x02040000, "power_reactive", 1e-3),
                                   (0x02050000, "power_apparent", 1e-3),
                                   (0x02060000, "power_factor", 1.0)):
        suffix = {"power_active": "_w", "power_reactive": "_var", "power_apparent": "_va",
                  "power_factor": ""}[quantity]
        items[base] = (f"{quantity}_total{suffix}", factor)
        for n in (1, 2, 3):
            items[base | n << 8] = (f"{quantity}_l{n}{suffix}", factor)
    return items


FIRMWARE_ITEMS: Mapping[int, tuple[str, float]] = _firmware_items()
REPLY_PREAMBLE = 4  # some meters precede answers with FE bytes too; the gateway must skip them


def address_matches(request: str, meter: str) -> bool:
    """Does a request to `request` reach `meter`? An AA byte matches any two digits."""
    pairs = range(0, 12, 2)
    return all(request[i:i + 2] in (meter[i:i + 2], "AA") for i in pairs)


class SimulatedMeter:
    """One meter on the line: a SimulatedDevice and its DL/T 645 address. Pure: no I/O."""

    def __init__(self, device: SimulatedDevice, address: str) -> None:
        self.device = device
        self.address = dlt645.check_address(address)

    def item(self, di: int, values: Mapping[str, Value]) -> bytes | None:
        """The value bytes of one data item or block, None when this meter does not have it."""
        members = BLOCKS.get(di, (di,))
        parts = []
        for member in members:
            meaning, standard = FIRMWARE_ITEMS.get(member), STANDARD_ITEMS.get(member)
            if meaning is None or standard is None or meaning[0] not in values:
                return None
            fmt = standard.format
            number = _number(values[meaning[0]]) * meaning[1]
            top = fmt.largest  # a counter past its digits saturates, as registers.py does
            parts.append(fmt.encode(max(-top if fmt.signed else 0.0, min(top, number))))
        return b"".join(parts)

    def answer(self, frame: dlt645.Frame) -> bytes | None:
        """The reply bytes to a request addressed to this meter (None: stay silent)."""
        faults = self.device.faults
        if faults.exception is not None:
            self.device.count("exceptions")
            return dlt645.error_reply(self.address, frame.function, faults.exception,
                                      preamble=REPLY_PREAMBLE)
        if frame.function == dlt645.READ_ADDRESS:
            return dlt645.address_reply(self.address, preamble=REPLY_PREAMBLE)
        if frame.function != dlt645.READ_DATA or frame.di is None:
            self.device.count("exceptions")
            return dlt645.error_reply(self.address, frame.function, 0x01, preamble=REPLY_PREAMBLE)
        value = self.item(frame.di, self.device.values())
        if value is None:
            self.device.count("exceptions")
            return dlt645.error_reply(self.address, frame.function, dlt645.NO_REQUESTED_DATA,
                                      preamble=REPLY_PREAMBLE)
        return dlt645.read_reply(self.address, frame.di, value, preamble=REPLY_PREAMBLE)


def _number(value: Value) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0


def collide(replies: Sequence[bytes]) -> bytes:
    """What a master hears when several meters answer at once: the bits of all of them."""
    out = bytearray(max(len(r) for r in replies))
    for reply in replies:
        for i, byte in enumerate(reply):
            out[i] |= byte
    return bytes(out)


class Dlt645Bus:
    """A simulated DL/T 645 line: a pty wire and the meters answering on it."""

    def __init__(self, name: str, line: LineSettings, meters: Sequence[SimulatedMeter], *,
                 wire_timing: bool = False) -> None:
        self.name = name
        self.line = line
        self.meters = tuple(meters)
        self.wire = PtyWire(line, timed=wire_timing)
        self._parser = dlt645.Dlt645Parser()
        self._requests: asyncio.Queue[dlt645.Frame] = asyncio.Queue()
        self._fd = -1
        self._task: asyncio.Task[None] | None = None
        self.frames_ignored = 0  # broadcasts, frames for nobody here, our own echoes

    @property
    def client_path(self) -> str:
        """The serial port a client (the gateway) opens to reach this line."""
        return self.wire.client_path

    async def start(self) -> None:
        await self.wire.start()
        try:
            self._fd = os.open(self.wire.server_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            await self.wire.stop()
            raise ConfigError(f"bus {self.name}: cannot open the simulated line "
                              f"{self.wire.server_path}: {exc.strerror}") from exc
        asyncio.get_running_loop().add_reader(self._fd, self._on_readable)
        self._task = asyncio.create_task(self._serve(), name=f"dlt645:{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._fd >= 0:
            asyncio.get_running_loop().remove_reader(self._fd)
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        await self.wire.stop()

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO while the gateway's end is closed: nothing to hear
            return
        self._parser.feed(data)
        while True:
            event = self._parser.next_event()
            if isinstance(event, dlt645.Frame):
                self._requests.put_nowait(event)
            elif event is dlt645.NEED_DATA:
                return  # Discarded noise: a real meter ignores it too

    async def _serve(self) -> None:
        """Answer requests one at a time, in order: the line is half duplex."""
        loop = asyncio.get_running_loop()
        while True:
            frame = await self._requests.get()
            if frame.from_meter or frame.address == dlt645.BROADCAST:
                self.frames_ignored += 1
                continue
            replies = []
            for meter in self.meters:
                if address_matches(frame.address, meter.address):
                    reply = await self._gated(meter, frame, now=loop.time())
                    if reply is not None:
                        replies.append(reply)
            if not replies:
                self.frames_ignored += 1
                continue
            with contextlib.suppress(BlockingIOError, OSError):  # no reader: the bytes are lost
                os.write(self._fd, replies[0] if len(replies) == 1 else collide(replies))

    async def _gated(self, meter: SimulatedMeter, frame: dlt645.Frame, *, now: float) -> bytes | None:
        """Apply the meter's faults around its answer, and count what it did."""
        device, faults = meter.device, meter.device.faults
        device.count("requests")
        if faults.reboot_until is not None:
            if now < faults.reboot_until:
                device.count("silent")
                return None
            device.reboot_done()
        if faults.no_reply:
            device.count("silent")
            return None
        if faults.delay_s > 0:
            await asyncio.sleep(faults.delay_s)
        reply = meter.answer(frame)
        if reply is not None and faults.bad_crc:
            reply = reply[:-2] + bytes([reply[-2] ^ 0xFF, reply[-1]])  # the checksum byte
        if reply is not None:
            device.count("bytes_sent", len(reply))
        return reply
