"""RTU over TCP: Modbus RTU frames (unit id, PDU, CRC; no MBAP header) through a TCP socket, asyncio.

Serial-to-Ethernet converters in their transparent mode pass the bytes of a TCP connection to the
RS-485 line and back as they are, so the client frames RTU itself (Modbus over Serial Line V1.02,
2.5.1) and the converter's timer cuts the line into frames; mbmd and evcc call this mode "RTU over
TCP". The link only moves bytes, as `TcpLink` does (the bus owner frames with
gateway.protocol.modbus.RtuClientConnection). RTU has no transaction id, so a late answer to a
request given up on would pass for the next one: `discard_input` drops what has arrived, which the
bus owner does after a timeout, as on a serial line.
"""

from __future__ import annotations

from gateway.device.transport import TcpLink


class RtuOverTcpLink(TcpLink):
    """A TCP connection to a serial-to-Ethernet converter in transparent (RTU over TCP) mode,
    reopened on demand after a failure; received in place as `TcpLink` is (gateway.device.inbox)."""

    scheme = "rtu-over-tcp"
    peer = "converter"
    connect_hint = ("is the converter powered, the address right and its port in RTU over TCP "
                    "(transparent) mode?")

    def discard_input(self) -> None:
        self._inbox.discard()  # the end-of-connection mark stays for read()
