"""Builds the opt-in views of the committed measurements ([mqtt.plain], [mqtt.sparkplug]) for the
composition root (gateway.agent.wiring): the plain stream rides the agent's own MQTT session, the
Sparkplug B edge node has a session of its own (its NDEATH is that session's will)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway import __version__
from gateway.config.gateway import GatewayConfig
from gateway.measurement.identity import GatewayKey
from gateway.network import topics
from gateway.network.payloads import StatusInfo
from gateway.network.settings import LinkSettings
from gateway.network.views import CommittedView, ViewFeed

if TYPE_CHECKING:
    from gateway.network.plain import PlainStream
    from gateway.network.sparkplug import SparkplugEdge


@dataclass(frozen=True, slots=True)
class Streams:
    plain: PlainStream | None  # a SessionWorker of the agent's link
    sparkplug: SparkplugEdge | None  # a part of its own (its own link)
    feed: CommittedView | None  # what the pipeline calls after each commit


def build_streams(config: GatewayConfig, *, key: GatewayKey) -> Streams:
    m = config.mqtt
    plain = sparkplug = None
    if m.plain is not None:
        from gateway.network.plain import PlainStream

        plain = PlainStream(settings=m.plain, gw=key.address)
    if m.sparkplug is not None:
        sparkplug = sparkplug_edge(config, key=key)
    views: list[CommittedView] = []
    if plain is not None:
        views.append(plain)
    if sparkplug is not None:
        views.append(sparkplug.node)
    return Streams(plain=plain, sparkplug=sparkplug, feed=ViewFeed(views) if views else None)


def sparkplug_edge(config: GatewayConfig, *, key: GatewayKey) -> SparkplugEdge:
    """The edge node on the [mqtt] broker, with the [mqtt] login and TLS files, as client
    `<client id>-spb` (a second client of the same gateway: MQTT allows one will per client)."""
    from gateway.network.link import MqttLink
    from gateway.network.sparkplug import PointType, SparkplugEdge, SparkplugNode, point_type

    m, gw = config.mqtt, topics.gw_id(key.address)
    assert m.sparkplug is not None
    client_id = m.client_id or f"drgw-{gw[2:14]}"
    settings = LinkSettings.from_url(m.broker, client_id=f"{client_id}-spb", ca=m.ca, cert=m.cert,
                                     key=m.key, keepalive_s=m.keepalive, username=m.username,
                                     password=m.password)
    points: dict[str, list[PointType]] = {}
    for device in config.devices.devices:
        typed = (point_type(p) for p in device.profile.points)
        points[device.name] = [t for t in typed if t is not None]
    node = SparkplugNode(settings=m.sparkplug, edge_node=m.sparkplug.edge_node or f"drgw-{gw[2:14]}",
                         points=points)
    link = MqttLink(settings=settings, gateway=key.address, presence=node,
                    status=lambda: StatusInfo(version=__version__, config_hash=config.config_hash))
    return SparkplugEdge(node=node, link=link)
