"""Build a link and its bus settings from what a user typed (`--tcp HOST:PORT [--framing rtu]` or
`--serial PORT`) or a `[[bus]]` says."""

from __future__ import annotations

from gateway.device.bus import BusSettings
from gateway.device.rtu_tcp import RtuOverTcpLink
from gateway.device.transport import Link, SerialLink, TcpLink, parse_host_port
from gateway.errors import ConfigError
from gateway.protocol.modbus import char_time, silent_interval

FRAMINGS = ("tcp", "rtu")  # on a TCP endpoint: MBAP (Modbus TCP), or RTU frames (RTU over TCP)


def make_link(*, tcp: str | None = None, serial: str | None = None, baud: int = 9600,
              parity: str = "N", stopbits: int = 1, frame_gap: float | None = None,
              framing: str = "tcp") -> tuple[Link, BusSettings]:
    """`framing` applies to `tcp`: "tcp" for Modbus TCP (MBAP headers), "rtu" for RTU over TCP (a
    serial-to-Ethernet converter in transparent mode). A serial line always frames RTU."""
    if (tcp is None) == (serial is None):
        raise ConfigError("give exactly one of --tcp HOST:PORT or --serial PORT")
    if framing not in FRAMINGS:
        raise ConfigError(f"framing {framing!r} is not valid; use tcp (Modbus TCP) or rtu (RTU over "
                          "TCP)")
    if tcp is not None:
        host, port = parse_host_port(tcp)
        if framing == "rtu":
            # The converter times the serial line itself: no gap is needed between our frames
            # beyond waiting for each answer, unless the config asks for one.
            return RtuOverTcpLink(host, port), BusSettings(framing="rtu", frame_gap=frame_gap or 0.0)
        return TcpLink(host, port), BusSettings(framing="tcp", frame_gap=frame_gap or 0.0)
    assert serial is not None
    if parity not in ("N", "E", "O"):
        raise ConfigError(f"parity {parity!r} is not valid; use N, E or O")
    gap = silent_interval(baud, parity, stopbits) if frame_gap is None else frame_gap
    return (SerialLink(serial, baud=baud, parity=parity, stopbits=stopbits),
            BusSettings(framing="rtu", frame_gap=gap, char_time=char_time(baud, parity, stopbits)))
