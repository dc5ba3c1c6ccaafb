"""The agent's composition root: builds every part from the config and hands each what it needs.

Nothing here runs: `build` returns the parts (store, measurement pipeline, device layer, MQTT link and
its session workers, command dispatcher, DR loop, watchdog), each given its collaborators through
its constructor. An embedding program (the demo) chooses the DR loop's market, chain thread, poll
interval and an extra reader of its events through `LoopOptions`, never by patching a built part.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway import __version__
from gateway.agent import bidding
from gateway.agent.control import Control
from gateway.agent.lifetime import StopRequest, Work
from gateway.agent.pipeline import (
    Housekeeping,
    MeasurementPipeline,
    SampleObserver,
    SampleQueue,
    commit_timing,
)
from gateway.agent.readout import Readout, status_info
from gateway.agent.streams import Streams, build_streams
from gateway.config.gateway import GatewayConfig
from gateway.device.layer import DeviceLayer
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import measurement_domain
from gateway.measurement.store.database import Store
from gateway.network import topics
from gateway.network.command import CommandPolicy
from gateway.network.dispatcher import CommandDispatcher
from gateway.network.link import MqttLink, SessionWorker
from gateway.network.nonces import NonceCache
from gateway.network.publisher import EventPublisher, HealthPublisher, Publisher, PublishLimits
from gateway.network.settings import LinkSettings
from gateway.ops import sdnotify
from gateway.perception.readings import Quality

if TYPE_CHECKING:
    from gateway.agent.web import LiveState, WebPage
    from gateway.chain.market_types import BiddingPort, MarketPort
    from gateway.chain.relay_port import ChainRelayQueue
    from gateway.chain.settings import ChainConfig
    from gateway.loop.bidder import Bidder
    from gateway.loop.runner import DrLoop
    from gateway.network.openadr.ven import Ven
    from gateway.network.sparkplug import SparkplugEdge

log = logging.getLogger(__name__)

EventBody = Mapping[str, Any]
DEFAULT_MARKET_POLL_S = 15.0  # without a [chain] section (an injected market)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopOptions:
    """What an embedding program may choose for the DR loop instead of the config's defaults."""

    market: MarketPort | None = None  # default: the [chain] section's market, built lazily
    executor: Executor | None = None  # the thread that owns the chain (default: the loop's own)
    poll_interval_s: float | None = None  # market polls (default: [chain] poll_interval)
    on_event: Callable[[EventBody], None] | None = None  # sees each event body after MQTT does
    bidding: BiddingPort | None = None  # [market] bids (default: the market port, when it can bid)


@dataclass(frozen=True, slots=True, kw_only=True)
class Parts:
    """Everything `drgw run` runs, built and connected."""

    config: GatewayConfig
    store: Store
    layer: DeviceLayer
    pipeline: MeasurementPipeline
    housekeeping: Housekeeping
    link: MqttLink
    publisher: Publisher
    workers: tuple[SessionWorker, ...]  # what runs while the broker session is up
    readout: Readout
    control: Control
    dr: DrLoop | None
    bidder: Bidder | None  # [market]: the household's automatic bids (docs/bidding.md)
    watchdog: sdnotify.Watchdog
    metrics: Callable[[], Work] | None  # the Prometheus endpoint, when [metrics] asks for one
    web: WebPage | None = None  # the local page, when [web] asks for one (gateway/agent/web)
    ven: Ven | None = None  # [openadr]: the OpenADR VEN (docs/openadr.md)
    sparkplug: SparkplugEdge | None = None  # [mqtt.sparkplug]: the edge node's own session


class LayerPoints:
    """The DR loop's view of the devices (gateway.loop.runner.PointIO): write a point, read it now."""

    def __init__(self, layer: DeviceLayer) -> None:
        self.layer = layer

    async def write(self, device: str, name: str, value: float) -> None:
        await self.layer.write(device, name, value)

    async def read(self, device: str, name: str) -> float | None:
        for reading in await self.layer.read_now(device, [name]):
            if reading.name == name and reading.quality is Quality.OK \
                    and isinstance(reading.value, int | float):
                return float(reading.value)
        return None


def build(config: GatewayConfig, *, key: GatewayKey, stop: StopRequest, loop: LoopOptions) -> Parts:
    started = time.monotonic()
    store = open_store(config)
    samples = SampleQueue()  # bounded: drops (and counts) the oldest while the store refuses commits
    wake = asyncio.Event()  # new outbox rows: the publisher looks again
    layer = DeviceLayer(config.devices, sink=samples.put_nowait)
    events = EventPublisher(gw=key.address, dr_state=config.mqtt.ha_discovery and config.dr is not None)
    relay = chain_relay(config, key=key)
    live = live_state(config)  # the local page's view of samples and DR messages ([web])
    publish = tee(events.publish_event, None if live is None else live.on_event)
    dr = None if config.dr is None else dr_loop(  # its Report reads what the pipeline committed
        config, key=key, layer=layer, store=store, publish=publish, options=loop, relay=relay,
        leaves=lambda start_ms, end_ms: pipeline.committed_leaves(start_ms, end_ms))
    bidder = bidding.bidder(config, dr=dr, publish=tee(publish, loop.on_event),
                            bidding=loop.bidding)
    observers = [o for o in (dr, None if bidder is None else bidder.recorder, live) if o is not None]
    streams = build_streams(config, key=key)  # [mqtt.plain], [mqtt.sparkplug]: committed views
    pipeline = measurement_pipeline(config, key=key, store=store, samples=samples, wake=wake,
                                    observers=observers, events=events, streams=streams)
    link = mqtt_link(config, key=key, pipeline=pipeline)
    m = config.mqtt
    publisher = Publisher(store=store, wake=wake, limits=PublishLimits(
        messages_per_s=m.rate_messages, bytes_per_s=m.rate_bytes, window=m.inflight))
    readout = Readout(store=store, layer=layer, pipeline=pipeline, publisher=publisher, link=link)
    control = Control(config=config, store=store, layer=layer, pipeline=pipeline, readout=readout,
                      dr=dr, started=started, stop=stop,
                      market=None if bidder is None else bidder.status)
    dispatcher = command_dispatcher(config, key=key, control=control)
    health = HealthPublisher(link=link, counters=readout, store=store, interval_s=m.health_interval,
                             detail=readout.detail, extra=dispatcher.counters if bidder is None
                            else (lambda: {**dispatcher.counters(), **bidder.counters()}))
    # systemd: READY=1 once running, WATCHDOG=1 only while measurements reach the store (or the
    # disk is full, which a restart cannot mend: pipeline.stalled says why).
    watchdog = sdnotify.Watchdog.from_environment(health=pipeline.stalled,
                                                  status_line=readout.status_line)
    return Parts(
        config=config, store=store, layer=layer, pipeline=pipeline, link=link, publisher=publisher,
        housekeeping=Housekeeping(config=config, store=store, pipeline=pipeline,
                                  connected=link.connected, started=started, stop=stop),
        workers=session_workers(config, key=key, ha=(events, bidder),
                                parts=(publisher, health, events, dispatcher,
                                       *(() if relay is None else (relay,)),
                                       *(() if streams.plain is None else (streams.plain,)))),
        readout=readout, control=control, dr=dr, bidder=bidder, watchdog=watchdog,
        metrics=metrics_server(config, key=key, readout=readout, started=started,
                               commands=dispatcher.counters),
        web=None if live is None else web_page(config, key=key, live=live, readout=readout, dr=dr,
                                               bidder=bidder),
        ven=openadr_ven(config, dr=dr, store=store), sparkplug=streams.sparkplug)


def measurement_pipeline(config: GatewayConfig, *, key: GatewayKey, store: Store, samples: SampleQueue,
                         wake: asyncio.Event, observers: Sequence[SampleObserver], events: EventPublisher,
                         streams: Streams) -> MeasurementPipeline:
    """Signs and group-commits the samples (one commit per poll cycle, at most one a second), then
    hands what it committed to the observers (DR loop, bidder, local page), HA states and views."""
    progress = sdnotify.PipelineProgress(limits=sdnotify.StallLimits.for_devices(
        ({d.intervals[p.poll] for p in d.profile.points}, d.timeout) for d in config.devices.devices),
        now=time.monotonic())
    commit_s, gather_s = commit_timing(config)
    return MeasurementPipeline(
        key=key, domain=measurement_domain(config.chain_id), store=store, samples=samples, wake=wake,
        topic=topics.topic(topics.gw_id(key.address), topics.Kind.MEAS), progress=progress,
        observer=(observers[0] if len(observers) == 1 else
                  bidding.SampleTee(observers) if observers else None),
        states=events if config.mqtt.ha_discovery else None, views=streams.feed,
        commit_interval_s=commit_s, gather_s=gather_s)


def open_store(config: GatewayConfig) -> Store:
    s = config.store
    return Store(s.path, batch_size=config.mqtt.batch_max, outbox_max_rows=s.outbox_max_rows,
                 outbox_max_bytes=s.outbox_max_bytes, outbox_max_age_ms=int(s.outbox_max_age_s * 1000),
                 measurements_max_rows=s.measurements_max_rows)


def mqtt_link(config: GatewayConfig, *, key: GatewayKey, pipeline: MeasurementPipeline) -> MqttLink:
    m, gw = config.mqtt, topics.gw_id(key.address)
    settings = LinkSettings.from_url(m.broker, client_id=m.client_id or f"drgw-{gw[2:14]}", ca=m.ca,
                                     cert=m.cert, key=m.key, keepalive_s=m.keepalive,
                                     username=m.username, password=m.password)
    return MqttLink(settings=settings, gateway=key.address,
                    status=functools.partial(status_info, config, pipeline))


def command_dispatcher(config: GatewayConfig, *, key: GatewayKey, control: Control) -> CommandDispatcher:
    path = config.store.path
    return CommandDispatcher(
        policy=CommandPolicy.build(gw=key.address, operators=config.operators), agent=control,
        nonces=NonceCache(path.with_name(path.name + ".nonces")), sign_digest=key.sign_digest)


def session_workers(config: GatewayConfig, *, key: GatewayKey, parts: tuple[SessionWorker, ...],
                    ha: tuple[EventPublisher, Bidder | None]) -> tuple[SessionWorker, ...]:
    """The link's workers, and Home Assistant discovery when the config asks for it: the meters,
    the DR sensors with [dr], the earnings (from the bidder's status) with [market]."""
    if not config.mqtt.ha_discovery:
        return parts
    from gateway.network.discovery import Announced, Discovery
    from gateway.network.ha_gateway import MarketFeed

    events, bidder = ha
    announced = Announced(meters=[(d.name, d.profile) for d in config.devices.devices
                                  if d.profile.kind == "meter"],
                          dr=config.dr is not None, market=bidder is not None)
    feed = () if bidder is None else (MarketFeed(status=bidder.status, publish_state=events.publish_state,
                                                 interval_s=config.mqtt.health_interval),)
    return (*parts, *feed, Discovery(gw=topics.gw_id(key.address), version=__version__,
                                     announced=announced))


def metrics_server(config: GatewayConfig, *, key: GatewayKey, readout: Readout, started: float,
                   commands: Callable[[], Mapping[str, int]]) -> Callable[[], Work] | None:
    """The optional Prometheus endpoint (prometheus_client is imported only when it is on)."""
    if config.metrics is None:
        return None
    from gateway.ops import metrics

    collector = metrics.AgentCollector(
        readings=readout.health_readings, counters=readout.counters, started=started,
        commands=commands,
        info={"gw": topics.gw_id(key.address), "version": __version__,
              "config_hash": config.config_hash})
    return functools.partial(metrics.serve, config.metrics, collector=collector)


def live_state(config: GatewayConfig) -> LiveState | None:
    if config.web is None:
        return None
    from gateway.agent.web import LiveState

    return LiveState()


def web_page(config: GatewayConfig, *, key: GatewayKey, live: LiveState, readout: Readout,
             dr: DrLoop | None, bidder: Bidder | None) -> WebPage:
    """The local page (`[web]`): its modules are imported only when it is on."""
    from gateway.agent.web import HomeView, Sources, WebPage

    assert config.web is not None
    view = HomeView(Sources(config=config, gateway=key.address, readout=readout, live=live, dr=dr,
                            bidder=bidder))
    return WebPage(settings=config.web, view=view, live=live)


def chain_relay(config: GatewayConfig, *, key: GatewayKey) -> ChainRelayQueue | None:
    """`[chain] relay = "mqtt"`: the queue of signed Reports and commitments for the master
    station, published on the gateway's `chain` topic (docs/mqtt.md)."""
    if config.chain is None or config.chain.relay != "mqtt":
        return None
    from gateway.chain.relay_port import ChainRelayQueue

    return ChainRelayQueue(topic=topics.topic(topics.gw_id(key.address), topics.Kind.CHAIN))


def dr_loop(config: GatewayConfig, *, key: GatewayKey, layer: DeviceLayer, store: Store,
            publish: Callable[[EventBody], None], options: LoopOptions,
            relay: ChainRelayQueue | None = None,
            leaves: Callable[[int, int], list[tuple[int, bytes]]] | None = None) -> DrLoop:
    from gateway.loop.journal import Journal
    from gateway.loop.runner import DrLoop

    dr, chain = config.dr, config.chain
    assert dr is not None
    market = options.market
    if market is None and chain is not None:
        from gateway.chain.port import LazyMarketPort

        market = LazyMarketPort(chain, gateway_secret=key.secret(),
                                relay=None if relay is None else relay.put)
    main = next((d.name for d in config.devices.devices if d.role == "main"), None)
    if main is None:
        log.error("[dr] is configured but no device has role = \"main\": the loop cannot "
                  "measure the household's load")
    poll_s = options.poll_interval_s
    if poll_s is None:
        poll_s = chain.poll_interval if chain is not None else DEFAULT_MARKET_POLL_S
    return DrLoop(config=dr, journal=Journal(config.store.path), main_device=main,
                  io=LayerPoints(layer), publish=tee(publish, options.on_event),
                  leaves=store.interval_leaves if leaves is None else leaves, market=market,
                  market_address=market_address(market, chain), poll_interval_s=poll_s,
                  executor=options.executor)


def openadr_ven(config: GatewayConfig, *, dr: DrLoop | None, store: Store) -> Ven | None:
    """[openadr]: the VEN, offering the VTN's events to the DR loop (config load ensures [dr]);
    its opt answers go where the loop's bodies go."""
    if config.openadr is None or dr is None:
        return None
    from gateway.agent.openadr import OpenAdrIntake
    from gateway.network.openadr.ven import Ven

    main = dr.main or ""
    return Ven(config=config.openadr, resource=main, port=OpenAdrIntake(
        config=config.openadr, dr=dr, store=store, main=main, publish=dr.publish))


def market_address(market: MarketPort | None, chain: ChainConfig | None) -> str:
    """The market contract's address: the port's own when it knows it, else the [chain] one."""
    address = getattr(market, "market_address", None)  # not part of MarketPort: fakes have none
    if isinstance(address, str):
        return address
    return chain.market if chain is not None else ""


def tee(first: Callable[[EventBody], None],
        then: Callable[[EventBody], None] | None) -> Callable[[EventBody], None]:
    """`first`, followed by `then` when there is one, for every event body."""
    if then is None:
        return first

    def both(body: EventBody) -> None:
        first(body)
        then(body)

    return both
