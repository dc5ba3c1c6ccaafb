"""The pure parts of the master's market operation and relay config: the price feed's formats,
the window decision (seed 003's rule, hand-computed cases) and the strict config errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.chain.settings import parse_chain as parse_gateway_chain
from gateway.errors import ConfigError
from gateway.master.chain_settings import MarketOps
from gateway.master.market_ops import decide
from gateway.master.price_feed import FeedError, PriceSlot, TopicFeed, parse_feed
from gateway.master.settings import parse
from gateway.schema import Fields

OPS = MarketOps(feed="f.csv", retail_micro=600_000, threshold_micro=50_000, omega_milli=1200,
                mode="shift", pricing="uniform", slot_s=900, lead_s=30, horizon_s=3600,
                poll_ms=1000, claims=True)


def test_csv_and_json_feeds_read_alike() -> None:
    # 2026-12-05T18:00Z = 1796493600 (date -d 2026-12-05T18:00Z +%s)
    csv_text = "start,realtime\n2026-12-05T19:00+01:00,0.68\n1796494500,0.61\n"
    json_text = '{"prices": [{"start": 1796494500, "realtime": 0.61},' \
                ' {"start": "2026-12-05T18:00Z", "realtime": 0.68}]}'
    expected = [PriceSlot(start_s=1796493600, realtime_micro=680_000),
                PriceSlot(start_s=1796494500, realtime_micro=610_000)]
    assert parse_feed(csv_text, source="a.csv") == expected
    assert parse_feed(json_text, source="a.json") == expected


@pytest.mark.parametrize(("text", "message"), [
    ("time,price\n1,0.5\n", "header must name start and realtime"),
    ("start,realtime\n2026-12-05T18:00,0.5\n", "line 2: start '2026-12-05T18:00' must be unix "
                                              "seconds or ISO 8601 with a zone"),
    ("start,realtime\n1,cheap\n", "line 2: realtime 'cheap' must be a price"),
    ('[{"start": 1, "realtime": 500}]', "item 0: realtime 500.0 is out of range"),
])
def test_a_bad_feed_names_the_row_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(FeedError, match=r"prices\.csv") as info:
        parse_feed(text, source="prices.csv")
    assert message in str(info.value)


def test_decide_takes_the_earliest_slot_worth_a_window_after_the_lockout() -> None:
    now, lockout = 10_000, 600
    slots = [PriceSlot(start_s=10_300, realtime_micro=900_000),  # worth it but inside the lockout
             PriceSlot(start_s=10_900, realtime_micro=640_000),  # |0.64 - 0.60| = 0.04 < 0.05
             PriceSlot(start_s=11_800, realtime_micro=540_000),  # 0.06 below retail: worth it
             PriceSlot(start_s=12_700, realtime_micro=700_000)]
    plan = decide(slots, ops=OPS, now_s=now, lockout_s=lockout, free_from_s=0)
    assert plan is not None and (plan.start_s, plan.end_s, plan.realtime_micro) == (
        11_800, 12_700, 540_000)
    # a window already set until 12,000 on chain: the next candidate is the one at 12,700
    later = decide(slots, ops=OPS, now_s=now, lockout_s=lockout, free_from_s=12_000)
    assert later is not None and later.start_s == 12_700
    # beyond the horizon (now + 3600 = 13,600): nothing
    assert decide(slots[3:], ops=OPS, now_s=now - 3000, lockout_s=lockout, free_from_s=0) is None


def _master(extra: str, tmp_path: Path) -> object:
    import tomllib

    text = f'[broker]\nurl = "mqtt://127.0.0.1:1883"\n[database]\nsqlite = "m.sqlite"\n{extra}'
    return parse(tomllib.loads(text), path=tmp_path / "master.toml")


def test_master_chain_and_market_sections_are_read_strictly(tmp_path: Path) -> None:
    chain = '[chain]\nrpc = "http://127.0.0.1:8545"\nmarket = "0x' + "ab" * 20 + '"\nkey = "r.key"\n'
    settings = _master(chain + '[market]\nprice_feed = "p.csv"\nretail = 0.6\nthreshold = 0.05\n',
                       tmp_path)
    assert settings.chain.key == tmp_path / "r.key"  # type: ignore[attr-defined]
    assert settings.market.retail_micro == 600_000  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="price_feed needs a \\[chain\\] section"):
        _master('[market]\nprice_feed = "p.csv"\nretail = 0.6\nthreshold = 0.05\n', tmp_path)
    with pytest.raises(ConfigError, match="mode"):
        _master(chain + '[market]\nprice_feed = "p.csv"\nretail = 0.6\nthreshold = 0.05\n'
                'mode = "peak"\n', tmp_path)
    with pytest.raises(ConfigError, match="relay_sec"):
        _master(chain + "relay_sec = 2\n", tmp_path)


def test_gateway_relay_mode_is_checked(tmp_path: Path) -> None:
    base = {"rpc": "http://127.0.0.1:8545", "market": "0x" + "ab" * 20,
            "household": "0x" + "cd" * 20}
    cfg = parse_gateway_chain(Fields({**base, "relay": "mqtt"}, where="gw.toml [chain]"),
                              base=tmp_path, store_path=tmp_path / "store.sqlite")
    assert cfg.relay == "mqtt" and cfg.sender_key is None
    with pytest.raises(ConfigError, match="relay: 'pigeon'"):
        parse_gateway_chain(Fields({**base, "relay": "pigeon"}, where="gw.toml [chain]"),
                            base=tmp_path, store_path=tmp_path / "store.sqlite")
    with pytest.raises(ConfigError, match="sender_key: is not used with relay"):
        parse_gateway_chain(Fields({**base, "relay": "mqtt", "sender_key": "k"},
                                   where="gw.toml [chain]"),
                            base=tmp_path, store_path=tmp_path / "store.sqlite")


def test_an_mqtt_feed_names_one_topic_without_wildcards(tmp_path: Path) -> None:
    chain = '[chain]\nrpc = "http://127.0.0.1:8545"\nmarket = "0x' + "ab" * 20 + '"\nkey = "r.key"\n'
    market = '[market]\nretail = 0.6\nthreshold = 0.05\nprice_feed = '
    settings = _master(chain + market + '"mqtt:grid/prices/nl"\n', tmp_path)
    assert settings.market.feed_topic == "grid/prices/nl"  # type: ignore[attr-defined]
    assert _master(chain + market + '"p.csv"\n', tmp_path).market.feed_topic is None  # type: ignore[attr-defined]
    for bad in ("mqtt:", "mqtt:grid/+/prices", "mqtt:grid/#"):
        with pytest.raises(ConfigError, match=r"price_feed.*one topic without wildcards"):
            _master(chain + market + f'"{bad}"\n', tmp_path)


def test_a_topic_feed_keeps_the_last_good_message() -> None:
    feed = TopicFeed("grid/prices")
    assert feed.slots == [] and feed.received == 0
    feed.take(b"start,realtime\n1796493600,0.68\n")
    good = [PriceSlot(start_s=1796493600, realtime_micro=680_000)]
    assert feed.slots == good and feed.received == 1 and feed.error is None
    feed.take(b"start,realtime\n1796493600,cheap\n")  # refused: named, and the feed stays
    assert feed.slots == good and feed.received == 1
    assert feed.error is not None and "price feed topic grid/prices" in feed.error \
        and "line 2: realtime 'cheap' must be a price" in feed.error
    feed.take(b"\xff\xfe")
    assert feed.slots == good and "not UTF-8" in (feed.error or "")
    feed.take(b'[{"start": 1796494500, "realtime": 0.61}]')
    assert feed.slots == [PriceSlot(start_s=1796494500, realtime_micro=610_000)]
    assert feed.received == 2 and feed.error is None
