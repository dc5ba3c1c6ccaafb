"""`drgw market deploy|register|announce|clear|settle|check|status` against anvil, keys from files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.chain.market_client import MarketClient, decoder
from gateway.chain.outbox import ChainOutbox
from gateway.chain.sender import TxSender
from gateway.cli import main
from gateway.master.operator import read_deployment

pytestmark = [pytest.mark.anvil, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def test_live_operator_runs_a_window(anvil, market_class, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    node = anvil.node()
    keys = node.funded_keys
    key_file = tmp_path / "operator.key"
    key_file.write_text("0x" + keys[0].hex() + "\n")
    key_file.chmod(0o644)
    deployment = tmp_path / "market.json"
    live = ["--rpc", anvil.url, "--key", str(key_file), "--deployment", str(deployment)]
    assert main(["market", "deploy", *live]) == 2
    assert "chmod 600" in capsys.readouterr().err
    key_file.chmod(0o600)
    assert main(["market", "deploy", *live, "--lockout-minutes", "10",
                 "--report-grace-minutes", "0"]) == 0
    d = read_deployment(deployment)
    outbox = ChainOutbox(":memory:")
    client = MarketClient(w3=node.w3, deployment=d)
    op = TxSender(w3=node.w3, key=keys[0], outbox=outbox, decoder=decoder())
    agg = TxSender(w3=node.w3, key=keys[1], outbox=outbox, decoder=decoder())
    home = TxSender(w3=node.w3, key=keys[2], outbox=outbox, decoder=decoder())
    assert main(["market", "register", *live, "--aggregator", agg.address]) == 0
    assert main(["market", "register", *live, "--household", home.address,
                 "--gateway", agg.address]) == 2
    assert "--household needs --gateway ADDRESS and --via AGGREGATOR" in capsys.readouterr().err
    assert main(["market", "register", *live, "--household", home.address, "--gateway",
                 op.address, "--via", home.address]) == 3
    assert "UnknownAggregator" in capsys.readouterr().err
    assert main(["market", "register", *live, "--household", home.address, "--gateway",
                 op.address, "--via", agg.address]) == 0
    client.mint(op, home.address, 10**9)
    client.approve(home, 10**9)
    now = node.latest_timestamp()
    client.place_bid(home, from_s=now, to_s=now + 86_400, power_w=-3000, rated_w=3000,
                     price_mtok=20_000)
    too_soon = str(node.latest_timestamp() + 60)
    assert main(["market", "announce", *live, "--start", too_soon, "--end", too_soon + "0",
                 "--retail", "0.6", "--realtime", "0.68", "--omega", "1.2"]) == 3
    assert "LockoutViolated" in capsys.readouterr().err
    start = node.latest_timestamp() + 1200
    assert main(["market", "announce", *live, "--start", str(start), "--end", str(start + 600),
                 "--retail", "0.6", "--realtime", "0.68", "--omega", "1.2"]) == 0
    assert "window 1 announced: optimum 33.333 kW, reduce load" in capsys.readouterr().out
    assert main(["market", "clear", *live]) == 0
    assert "window 1 cleared" in capsys.readouterr().out
    assert main(["market", "check", *live]) == 3
    assert "WrongWindowState" in capsys.readouterr().err
    node.set_next_timestamp(start + 600)
    client.mint(op, op.address, 10**9)  # settle takes every winner's possible payment at once
    client.approve(op, 10**9)
    for phase in ("settle", "check"):
        assert main(["market", phase, *live, "--window", "1"]) == 0
    capsys.readouterr()
    assert main(["market", "status", *live, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "checked" and status["target_kw"] == 3.0
    assert status["bids"] == [{"id": 1, "award_kw": 3.0, "state": "done"}]
    assert status["pending_txs"] == 0
    assert client.household(home.address)["score"] == 350  # a winner without a Report
