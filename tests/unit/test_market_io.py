"""Scenario files, the Report's signed bytes (golden), revert decoding and the SQLite outbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.chain.outbox import ChainOutbox, StoredTx
from gateway.chain.report import Report, report_digest, sign_report
from gateway.chain.revert import ChainRevert, RevertDecoder, revert_data
from gateway.errors import ConfigError
from gateway.market.model import Mode
from gateway.market.scenario import load_scenario

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "market" / "evening-peak.toml"
MARKET = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
REPORT = Report(
    household="0x70997970C51812dc3A010C7d01b50e0d17dc79C8", window=7, seq_from=100, seq_to=109,
    window_start=1_719_858_600, window_end=1_719_859_200, baseline_method=2,
    baseline_input_hash=bytes(range(32)), baseline_wh=1500, actual_wh=1100, delivered_wh=400,
    merkle_root=bytes(range(32, 64)))


def test_example_scenario_reads_into_contract_units() -> None:
    s = load_scenario(EXAMPLE.read_text(), source=EXAMPLE.name)
    assert (s.mtok_per_currency, s.retail_micro, s.realtime_micro) == (1_000_000, 600_000, 680_000)
    assert (s.omega_milli, s.mode, s.deposit_per_kw_mtok, s.tolerance_bps) == (
        1200, Mode.SHIFT, 100_000, 500)
    assert s.end_s - s.start_s == 600 and s.start_s - s.announced_s == 600 == s.lockout_s
    first = s.bids[0]
    assert (first.key, first.power_w, first.rated_w, first.price_mtok, first.actual_w) == (
        "h1-ac", -2000, 3000, 31_500, -1950)
    assert s.bids[-1].actual_w == s.bids[-1].power_w  # actual_kw defaults to kw


@pytest.mark.parametrize(("edit", "message"), [
    (("omega = 1.2", "omgea = 1.2"), "did you mean 'omega'"),
    (('mode = "shift"', 'mode = "shed"'), 'market.mode must be "shift" or "curtail"'),
    (("tolerance = 0.05", "tolerance = 1.5"), "market.tolerance = 1.5 is out of range"),
    (('announced_at = "18:20"', 'announced_at = "18:25"'), "lockout_minutes"),
    (('start = "18:30"', 'start = "6:30pm"'), 'window.start must be a clock time "HH:MM"'),
    (("rated_kw = 3.0", "rated_kw = 1.0"), "bid[0].rated_kw = 1.0 is out of range"),
    (('id = "h2-ev"', 'id = "h1-ac"'), "bid id 'h1-ac' is used twice"),
])
def test_scenario_errors_name_the_key_and_the_fix(edit: tuple[str, str], message: str) -> None:
    text = EXAMPLE.read_text().replace(*edit, 1)
    with pytest.raises(ConfigError) as info:
        load_scenario(text, source="s.toml")
    assert message in str(info.value) and "s.toml" in str(info.value)


def test_report_digest_is_pinned_and_matches_eip712_by_hand() -> None:
    from eth_abi import encode
    from eth_utils import keccak

    from gateway.chain.report import REPORT_FIELDS

    type_string = "Report(" + ",".join(f"{t} {n}" for n, t in REPORT_FIELDS) + ")"
    struct = keccak(encode(["bytes32", *(t for _, t in REPORT_FIELDS)],
                           [keccak(text=type_string), *REPORT.as_tuple()]))
    domain = keccak(encode(
        ["bytes32", "bytes32", "bytes32", "uint256", "address"],
        [keccak(text="EIP712Domain(string name,string version,uint256 chainId,"
                     "address verifyingContract)"),
         keccak(text="DRMarket"), keccak(text="1"), 31337, MARKET]))
    digest = report_digest(REPORT, chain_id=31337, market=MARKET)
    assert digest == keccak(b"\x19\x01" + domain + struct)
    assert digest.hex() == GOLDEN_DIGEST


# int64 baselineWh and actualWh since issue 13 (signed energies): recomputed by hand from the literal
# type string; test_chain_reports.py checks that the contract's reportDigest agrees on the EVM
GOLDEN_DIGEST = "c7328bc7f92e314d385850a8d1cfa0a1a5b2fa47b694e9f54070996bf05b4510"


def test_signature_recovers_to_the_gateway() -> None:
    from eth_account import Account

    key = bytes.fromhex("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
    signed = sign_report(REPORT, key=key, chain_id=31337, market=MARKET)
    digest = report_digest(REPORT, chain_id=31337, market=MARKET)
    assert len(signed.signature) == 65
    assert Account._recover_hash(digest, signature=signed.signature) == signed.signer


def test_revert_decoder_names_custom_errors_from_both_node_kinds() -> None:
    from eth_abi import encode
    from eth_utils import keccak

    abi = [{"type": "error", "name": "DuplicateReport", "inputs": [
        {"name": "household", "type": "address"}, {"name": "window", "type": "uint32"}]}]
    data = keccak(text="DuplicateReport(address,uint32)")[:4] + encode(
        ["address", "uint32"], [REPORT.household, 7])
    decoded = RevertDecoder(abi).decode(data)
    assert str(decoded) == f"DuplicateReport(household={REPORT.household}, window=7)"
    assert revert_data(type("E", (Exception,), {"data": "0x" + data.hex()})()) == data
    assert revert_data(Exception(f"execution reverted: {data!r}")) == data
    err = ChainRevert(decoded, action="submitReport")
    assert "submitReport reverted with DuplicateReport(" in str(err)
    assert RevertDecoder(abi).decode(b"\x01\x02\x03\x04").name == ""


def test_outbox_keeps_signed_transactions_and_reports(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    box = ChainOutbox(path)
    box.record_tx(StoredTx(chain_id=1, account="0xA", nonce=4, tx_hash="0x01", raw=b"\x02raw",
                           purpose="p", state="pending"))
    key = bytes.fromhex("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
    report_id = box.queue_report(sign_report(REPORT, key=key, chain_id=1, market=MARKET),
                                 chain_id=1, market=MARKET)
    box.close()
    box = ChainOutbox(path)
    assert box.next_nonce(1, "0xA") == 5 and box.next_nonce(1, "0xB") is None
    assert box.pending_txs(1, "0xA")[0].raw == b"\x02raw"
    (queued,) = box.reports(state="queued")
    assert queued.id == report_id and queued.signed.report == REPORT
    box.finish_tx("0x01", state="mined", block=3, gas_used=50_000)
    assert box.pending_txs(1, "0xA") == () and box.tx_totals() == (1, 50_000)
