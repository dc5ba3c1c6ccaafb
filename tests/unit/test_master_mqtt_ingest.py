"""The worker's own MQTT 5 ingest connection: packets written and parsed byte by byte.

Expected bytes are assembled by hand from the MQTT 5.0 OASIS Standard (7 March 2019): §2.1.4 the
variable byte integer, §3.1 CONNECT, §3.3 PUBLISH, §3.4 PUBACK, §3.8 SUBSCRIBE, §3.14 DISCONNECT."""

from __future__ import annotations

import asyncio

from gateway.master.mqtt_ingest import IngestProtocol, connect_packet, subscribe_packet


def test_connect_is_mqtt5_with_clean_start_receive_maximum_and_packet_size() -> None:
    expected = bytes.fromhex(
        "10 16"              # CONNECT, 22 bytes follow
        "0004 4d515454 05"   # "MQTT", protocol version 5
        "02 001e"            # flags: Clean Start; keep alive 30 s
        "08 210005 2701000000"  # properties: Receive Maximum 5, Maximum Packet Size 16 MiB
        "0001 77")           # client id "w"
    assert connect_packet("w", keepalive=30, receive_maximum=5) == expected


def test_connect_with_a_login_sets_both_flags_and_appends_both() -> None:
    packet = connect_packet("w", keepalive=30, receive_maximum=5, username="u", password="pw")
    assert packet[9] == 0xC2  # user name (0x80) + password (0x40) + Clean Start (0x02)
    assert packet.endswith(bytes.fromhex("0001 77 0001 75 0002 7077"))
    assert packet[1] == len(packet) - 2


def test_subscribe_asks_for_qos_1() -> None:
    assert subscribe_packet(1, "$share/g/x") == bytes.fromhex(
        "82 10 0001 00 000a 2473686172652f672f78 01")


def feed(chunks: list[bytes]) -> IngestProtocol:
    async def run() -> IngestProtocol:
        protocol = IngestProtocol()
        for chunk in chunks:
            protocol.data_received(chunk)
        return protocol
    return asyncio.run(run())


PUBLISH_QOS1 = bytes.fromhex("32 0a 0003 612f62 000a 00 6869")  # "a/b", id 10, no props, "hi"


def test_a_publish_split_anywhere_is_parsed_once_whole() -> None:
    protocol = feed([PUBLISH_QOS1[i:i + 1] for i in range(len(PUBLISH_QOS1))] + [PUBLISH_QOS1])
    assert list(protocol.messages) == [("a/b", b"hi", 10), ("a/b", b"hi", 10)]
    assert not protocol.closed.done()


def test_publish_properties_are_skipped_and_qos_0_has_no_packet_id() -> None:
    with_props = bytes.fromhex("32 0c 0003 612f62 000b 02 0101 6869")  # Payload Format Indicator
    qos0 = bytes.fromhex("30 08 0003 612f62 00 6869")
    assert list(feed([with_props, qos0]).messages) == [("a/b", b"hi", 11), ("a/b", b"hi", 0)]


def test_a_malformed_length_ends_the_connection_with_the_reason() -> None:
    protocol = feed([bytes.fromhex("30 ff ff ff ff 01")])  # a 5-byte remaining length
    assert "malformed packet from the broker" in protocol.closed.result()
    assert not protocol.messages


def test_a_disconnect_from_the_broker_names_its_reason_code() -> None:
    protocol = feed([bytes.fromhex("e0 01 8b")])  # Server shutting down (§3.14.2.1)
    assert protocol.closed.result() == "the broker sent DISCONNECT, reason code 0x8B"
