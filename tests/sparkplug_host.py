"""A Sparkplug host in miniature for the tests: a paho subscriber to spBv1.0/# that keeps every
message the edge node sends, decoded with pysparkplug (an independent decoder, not our codec)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt


@dataclass
class Host:
    """A Sparkplug host in miniature: every message on spBv1.0/#, in arrival order."""

    port: int
    got: list[tuple[str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Host:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="spb-host")
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe("spBv1.0/#", qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        assert self.subscribed.wait(10)
        return self

    def _on(self, client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if "/NCMD/" in msg.topic:  # a host's own command, not the node's
            return
        with self.lock:
            self.got.append((msg.topic, bytes(msg.payload)))

    def __exit__(self, *exc: object) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def kinds(self) -> list[str]:
        with self.lock:
            return [t.split("/")[2] for t, _ in self.got]

    def messages(self) -> list[tuple[str, bytes]]:
        with self.lock:
            return list(self.got)


def decode_all(messages: list[tuple[str, bytes]]) -> list[tuple[str, Any]]:
    """pysparkplug's reading of each message; DDATA against the device's latest DBIRTH."""
    import pysparkplug

    births: dict[str, Any] = {}
    out: list[tuple[str, Any]] = []
    for topic, raw in messages:
        kind = topic.split("/")[2]
        cls = getattr(pysparkplug, kind[0] + kind[1:].capitalize())  # NBIRTH -> NBirth
        msg = cls.decode(raw, birth=births.get(topic.replace("DDATA", "DBIRTH"))) \
            if kind == "DDATA" else cls.decode(raw)
        if kind == "DBIRTH":
            births[topic] = msg
        out.append((kind, msg))
    return out
