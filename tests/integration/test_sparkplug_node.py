"""The Sparkplug B edge node on a real mosquitto, read by an independent host: a paho subscriber that
decodes with pysparkplug (not our codec). NBIRTH/DBIRTH/DDATA/NDEATH, bdSeq per CONNECT, seq 0..255
wrapping, a host's Rebirth command, and metric values/times equal to the records committed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from gateway.measurement.record import Measurement, ScaledReading
from gateway.network.link import MqttLink
from gateway.network.payloads import StatusInfo
from gateway.network.settings import LinkSettings
from gateway.network.sparkplug import PointType, SparkplugNode
from gateway.network.sparkplug_codec import DataType
from gateway.network.views import SparkplugSettings
from tests.mosquitto import Broker, broker_fixture
from tests.sparkplug_host import Host, decode_all
from tests.waits import until

pysparkplug = pytest.importorskip("pysparkplug")  # scripts/setup --test installs it (--no-deps)
broker = pytest.fixture(broker_fixture())

GW = "0x" + "5b" * 20
POINTS = {"main": [PointType("voltage_l1_v", DataType.DOUBLE), PointType("count", DataType.INT64),
                   PointType("later_w", DataType.DOUBLE)]}


def record(seq: int, *, volts: int, count: int, later: int | None = None) -> Measurement:
    readings = [ScaledReading("voltage_l1_v", volts, "V", 0), ScaledReading("count", count, "", 0)]
    if later is not None:
        readings.append(ScaledReading("later_w", later, "W", 0))
    return Measurement(gateway=GW, device="main", seq=seq, time_ms=1_700_000_000_000 + seq,
                       clock_synced=True, readings=tuple(readings), prev_hash=b"\0" * 32)


@pytest.fixture
def host(broker: Broker) -> Iterator[Host]:
    with Host(broker.port) as h:
        yield h


def node_and_link(broker: Broker) -> tuple[SparkplugNode, MqttLink]:
    node = SparkplugNode(settings=SparkplugSettings(group="site", edge_node="gw1"), edge_node="gw1",
                         points=POINTS)
    link = MqttLink(settings=LinkSettings.from_url(broker.url, client_id="gw1-spb"), gateway=GW,
                    presence=node, status=lambda: StatusInfo(version="v", config_hash="h"))
    return node, link


def test_births_data_seq_wrap_rebirth_and_clean_death(broker: Broker, host: Host) -> None:
    records = [record(1, volts=230100, count=7000)]
    records += [record(s, volts=230000 + s, count=1000 * s, later=500 * s) for s in range(2, 302)]

    async def main() -> None:
        node, link = node_and_link(broker)
        task = asyncio.create_task(link.run([node]))
        await until(lambda: "NBIRTH" in host.kinds(), what="NBIRTH")
        node.committed(records[:1])
        await until(lambda: "DBIRTH" in host.kinds(), what="DBIRTH")
        node.committed(records[1:])
        await until(lambda: host.kinds().count("DDATA") >= 299, what="299 DDATA and a re-DBIRTH",
                    detail=lambda: str(host.kinds()[-5:]))
        ncmd = pysparkplug.NCmd(timestamp=1, metrics=(pysparkplug.Metric(
            timestamp=1, name="Node Control/Rebirth", datatype=pysparkplug.DataType.BOOLEAN,
            value=True),))
        sender = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="spb-cmd")
        sender.connect("127.0.0.1", broker.port)
        sender.publish("spBv1.0/site/NCMD/gw1", ncmd.encode(include_dtypes=True), qos=1).wait_for_publish(5)
        sender.disconnect()
        await until(lambda: host.kinds().count("NBIRTH") == 2 and host.kinds()[-1] == "DBIRTH",
                    what="the rebirth: NBIRTH and DBIRTH again")
        link.stop()
        await asyncio.wait_for(task, 10)
        await until(lambda: host.kinds()[-1] == "NDEATH", what="NDEATH at a clean stop")

    asyncio.run(main())
    decoded = decode_all(host.messages())
    kinds = [k for k, _ in decoded]
    # The first DBIRTH carries record 1 with `later_w` null (not committed yet); record 2 brings no
    # new name, so all 300 others are DDATA (the profile listed later_w).
    assert kinds == ["NBIRTH", "DBIRTH", *["DDATA"] * 300, "NBIRTH", "DBIRTH", "NDEATH"]
    nbirth = decoded[0][1]
    assert nbirth.seq == 0
    bd = {m.name: m.value for m in nbirth.metrics}
    assert bd == {"bdSeq": 0, "Node Control/Rebirth": False}
    # seq: NBIRTH 0, then +1 per message, 255 -> 0 (Sparkplug 3.0 tck-id-payloads-sequence-num-*).
    seqs = [m.seq for k, m in decoded[:302]]
    assert seqs == [n % 256 for n in range(302)]
    assert decoded[302][1].seq == 0 and decoded[303][1].seq == 1
    dbirth = decoded[1][1]
    by_name = {m.name: m for m in dbirth.metrics}
    assert by_name["voltage_l1_v"].value == 230.1 and by_name["count"].value == 7
    assert by_name["voltage_l1_v"].datatype == pysparkplug.DataType.DOUBLE
    assert by_name["count"].datatype == pysparkplug.DataType.INT64
    assert by_name["later_w"].is_null and by_name["voltage_l1_v"].timestamp == 1_700_000_000_001
    for (_, msg), rec in zip(decoded[2:302], records[1:], strict=True):
        got = {m.name: (m.value, m.timestamp) for m in msg.metrics}
        # hand arithmetic: the fixed-point value / 1000; the record's own time
        assert got == {"voltage_l1_v": ((230000 + rec.seq) / 1000, rec.time_ms),
                       "count": (rec.seq, rec.time_ms), "later_w": (rec.seq / 2, rec.time_ms)}
    death = decoded[-1][1]
    assert death.bd_seq_metric.value == 0


def test_bdseq_rises_per_connect_and_each_death_matches_its_birth(broker: Broker,
                                                                  host: Host) -> None:
    async def main() -> None:
        node, _ = node_and_link(broker)
        for n in (1, 2):  # two sessions of one edge node: two CONNECTs
            link = MqttLink(settings=LinkSettings.from_url(broker.url, client_id="gw1-spb"),
                            gateway=GW, presence=node,
                            status=lambda: StatusInfo(version="v", config_hash="h"))
            task = asyncio.create_task(link.run([node]))
            await until(lambda n=n: host.kinds().count("NBIRTH") == n, what=f"NBIRTH {n}")
            link.stop()
            await asyncio.wait_for(task, 10)
            await until(lambda n=n: host.kinds().count("NDEATH") == n, what=f"NDEATH {n}")

    asyncio.run(main())
    decoded = decode_all(host.messages())
    assert [k for k, _ in decoded] == ["NBIRTH", "NDEATH", "NBIRTH", "NDEATH"]
    births = [{x.name: x.value for x in m.metrics}["bdSeq"]
              for k, m in decoded if k == "NBIRTH"]
    deaths = [m.bd_seq_metric.value for k, m in decoded if k == "NDEATH"]
    assert births == deaths == [0, 1]
