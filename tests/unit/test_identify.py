"""Model identification (gateway.perception.identify) and the scan draft, without I/O.

Register words come from the manual-sourced reference vectors (tests/data/reference_vectors/*.yaml,
worked out by hand with struct from each manual's format), never from drgw's codec: a DTSU666 at
0x2006 holds 0x4510 0xB000 (2315.0 in units of 0.1 V), its frequency 0x459C 0x3000 (4998.0 x 0.01 Hz).
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.profiles import load_profile
from gateway.device.probe import Found, draft_config
from gateway.errors import ProfileError
from gateway.perception.identify import Fit, ProbeRead, judge, match, next_read, wanted_reads

VECTORS = Path(__file__).resolve().parents[1] / "data" / "reference_vectors"


def words(profile: str, point: str) -> tuple[ProbeRead, tuple[int, ...]]:
    """The read of `point` and the words the manual gives for it (its reference vector)."""
    data = yaml.safe_load((VECTORS / f"{profile}.yaml").read_text(encoding="utf-8"))
    (vec,) = [v for v in data["points"] if v["point"] == point]
    return ProbeRead(vec["table"], vec["pdu"], len(vec["words"])), tuple(vec["words"])


def dtsu666_seen() -> dict[ProbeRead, Any]:
    return dict([words("chint_dtsu666", "voltage_l1_v"), words("chint_dtsu666", "frequency_hz")])


def test_a_dtsu666_is_plausible_by_voltage_and_frequency_at_its_own_registers() -> None:
    dtsu, ddsu = load_profile("chint_dtsu666"), load_profile("chint_ddsu666")
    seen = dtsu666_seen()
    check = judge(dtsu, seen)
    assert check.fit is Fit.PLAUSIBLE
    assert "holding 0x2006 (voltage_l1_v) reads 231.5 V" in check.evidence
    assert "holding 0x2044 (frequency_hz) reads 49.98 Hz" in check.evidence
    # The DDSU666 reads its voltage at 0x2000: that register has not been read yet.
    assert next_read(ddsu, seen) == ProbeRead("holding", 0x2000, 2)
    assert judge(ddsu, seen).fit is Fit.UNPROVEN


def test_the_gate_decides_before_its_confirmation_is_read() -> None:
    dtsu = load_profile("chint_dtsu666")
    gate, _ = words("chint_dtsu666", "voltage_l1_v")
    # 0x3F80 0x0000 is 1.0: x 0.1 V is 0.1 V, no grid voltage. The frequency need not be read.
    seen: dict[ProbeRead, Any] = {gate: (0x3F80, 0x0000)}
    assert next_read(dtsu, seen) is None
    check = judge(dtsu, seen)
    assert check.fit is Fit.CONTRADICTED
    assert check.evidence == "holding 0x2006 (voltage_l1_v) reads 0.1 V, outside 80..300 V"


@pytest.mark.parametrize(("code", "fit"), [
    (0x02, Fit.CONTRADICTED),  # illegal data address: this device has no such register
    (0x01, Fit.CONTRADICTED),  # illegal function
    (0x06, Fit.UNPROVEN),  # server device busy: says nothing about the model
    (0x04, Fit.UNPROVEN),  # server device failure
    (None, Fit.UNPROVEN),  # no answer
])
def test_exceptions_at_a_plausibility_register(code: int | None, fit: Fit) -> None:
    gate, _ = words("chint_dtsu666", "voltage_l1_v")
    assert judge(load_profile("chint_dtsu666"), {gate: code}).fit is fit


def test_an_identification_register_identifies_or_rules_out() -> None:
    sdm630, sdm120 = load_profile("eastron_sdm630"), load_profile("eastron_sdm120")
    fc02 = ProbeRead("holding", 0xFC02, 1)
    # Meter codes: 0x0070 SDM630, 0x0020 SDM120 (the profiles' sources: Victron and Tinkerforge).
    assert judge(sdm630, {fc02: (0x0070,)}).fit is Fit.IDENTIFIED
    check = judge(sdm630, {fc02: (0x0020,)})
    assert check.fit is Fit.CONTRADICTED
    assert check.evidence == "holding 0xFC02 reads 32 (0x0020); eastron_sdm630 expects 112 (0x0070)"
    assert judge(sdm120, {fc02: (0x0020,)}).fit is Fit.IDENTIFIED


def test_a_missing_identification_register_leaves_it_to_plausibility() -> None:
    """Older SDM120 firmware lacks FC02 (the profile says so): its voltage and frequency decide."""
    sdm120 = load_profile("eastron_sdm120")
    seen: dict[ProbeRead, Any] = {ProbeRead("holding", 0xFC02, 1): 0x02}
    assert next_read(sdm120, seen) == words("eastron_sdm120", "voltage_l1_v")[0]
    seen.update([words("eastron_sdm120", "voltage_l1_v"), words("eastron_sdm120", "frequency_hz")])
    assert judge(sdm120, seen).fit is Fit.PLAUSIBLE


def test_identified_beats_plausible_and_several_matches_are_not_a_pick() -> None:
    names = ["eastron_sdm630", "eastron_sdm220", "eastron_sdm230", "eastron_sdm120"]
    profiles = [load_profile(n) for n in names]
    seen = dict([words("eastron_sdm630", "voltage_l1_v"), words("eastron_sdm630", "frequency_hz")])
    fc02 = ProbeRead("holding", 0xFC02, 1)
    found = match(profiles, {**seen, fc02: (0x0070,)})
    assert [c.profile for c in found.candidates] == ["eastron_sdm630"]
    assert found.proposal == "eastron_sdm630"
    found = match(profiles, {**seen, fc02: 0x02})  # no meter code: four plausible, no proposal
    assert sorted(c.profile for c in found.candidates) == sorted(names)
    assert found.proposal is None


def test_identity_reads_go_first_and_are_shared() -> None:
    profiles = [load_profile(n) for n in ("abb_b23", "abb_b24", "chint_dtsu666")]
    reads = wanted_reads(profiles, {})
    # One read of 0x8960 serves both ABB models, before any plausibility read.
    assert reads == [ProbeRead("holding", 0x8960, 2), ProbeRead("holding", 0x2006, 2)]


# ------------------------------------------------------------------------------------- schema

BASE: dict[str, Any] = {
    "schema": 1, "kind": "meter", "vendor": "Test", "model": "T1", "source": "unit test",
    "phases": 1, "transport": {"address_base": 0},
    "registers": [
        {"name": "voltage_l1_v", "table": "input", "address": 0, "type": "f32", "unit": "V"},
        {"name": "frequency_hz", "table": "input", "address": 70, "type": "f32", "unit": "Hz"},
        {"name": "meter_model", "table": "holding", "address": 50, "type": "string", "length": 4,
         "unit": ""},
    ],
}
GOOD_PLAUSIBLE = [{"point": "voltage_l1_v", "min": 80, "max": 300},
                  {"point": "frequency_hz", "min": 45, "max": 65}]


def write(tmp_path: Path, probe: dict[str, Any]) -> Path:
    data = copy.deepcopy(BASE)
    data["probe"] = probe
    path = tmp_path / "meters" / "test_p1.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_plausibility_probe_loads(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, {"plausible": GOOD_PLAUSIBLE}))
    assert profile.probe is None and profile.probed
    assert [(c.point.name, c.min, c.max) for c in profile.plausible] == [
        ("voltage_l1_v", 80.0, 300.0), ("frequency_hz", 45.0, 65.0)]


@pytest.mark.parametrize(("probe", "message"), [
    ({}, r"probe: table: a probe needs an identification register .* or both"),
    ({"plausible": GOOD_PLAUSIBLE[:1]}, r"plausible: list a value and at least one confirmation"),
    ({"plausible": [{**GOOD_PLAUSIBLE[0], "point": "voltage_l1"}, GOOD_PLAUSIBLE[1]]},
     r"plausible\[0\]: point: 'voltage_l1' is not a point of this profile; did you mean "
     r"'voltage_l1_v'\?"),
    ({"plausible": [{**GOOD_PLAUSIBLE[0], "min": 300, "max": 80}, GOOD_PLAUSIBLE[1]]},
     r"plausible\[0\]: min: min 300 must be below max 80 \(V\)"),
    ({"plausible": [GOOD_PLAUSIBLE[0], {"point": "meter_model", "min": 0, "max": 1}]},
     r"plausible\[1\]: point: meter_model is not a number"),
    ({"plausible": [GOOD_PLAUSIBLE[0], GOOD_PLAUSIBLE[0]]}, r"each check reads a different register"),
    ({"plausible": [{**GOOD_PLAUSIBLE[0], "maxx": 3}, GOOD_PLAUSIBLE[1]]},
     r"option 'maxx' is not valid; did you mean 'max'\?"),
    ({"table": "holding", "plausible": GOOD_PLAUSIBLE}, r"probe: option 'address' is required"),
])
def test_bad_probes_name_the_key_and_the_fix(tmp_path: Path, probe: dict[str, Any],
                                            message: str) -> None:
    with pytest.raises(ProfileError, match=message) as info:
        load_profile(write(tmp_path, probe))
    assert "test_p1.yaml" in str(info.value)


# ------------------------------------------------------------------------------------- the draft


def test_the_draft_proposes_one_fit_and_comments_the_rest() -> None:
    found = [
        Found(unit=1, baud=None, parity=None, profiles=["chint_dtsu666"], how="plausible",
              evidence={"chint_dtsu666": "holding 0x2006 (voltage_l1_v) reads 231.5 V"}),
        Found(unit=2, baud=None, parity=None, profiles=["eastron_sdm220", "eastron_sdm230"],
              how="plausible"),
        Found(unit=3, baud=None, parity=None, answered=["holding 0x000B: 0000"]),
    ]
    text = draft_config(found, tcp="10.0.0.7:4196", serial=None, framing="rtu")
    data = tomllib.loads(text)
    assert data["bus"] == [{"name": "bus1", "tcp": "10.0.0.7:4196", "framing": "rtu"}]
    assert data["device"] == [{"name": "chint_dtsu666_1", "profile": "chint_dtsu666",
                               "bus": "bus1", "unit": 1}]
    assert "# unit 2 answers like 2 profiles (plausible)" in text
    assert "#   eastron_sdm230" in text
    assert "# unit 3 answers but matches no profile; it answered:\n#   holding 0x000B: 0000" in text
    assert "UNKNOWN" not in text


texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=30)


@settings(max_examples=200, deadline=None)
@given(serial=texts, tcp=st.one_of(st.none(), texts), answered=st.lists(texts, max_size=3),
       evidence=texts, names=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=3))
def test_the_draft_is_always_valid_toml(serial: str, tcp: str | None, answered: list[str],
                                        evidence: str, names: list[str]) -> None:
    """Whatever a device answers (a type string can hold quotes, newlines, a '#') and whatever the
    port is called, the draft parses and holds exactly the single-candidate units."""
    found = [Found(unit=1, baud=9600, parity="N", profiles=[names[0]], evidence={names[0]: evidence}),
             Found(unit=2, baud=9600, parity="N", profiles=[*names, "x"], evidence={"x": evidence}),
             Found(unit=3, baud=9600, parity="N", answered=answered)]
    data = tomllib.loads(draft_config(found, tcp=tcp, serial=serial))
    assert [d["unit"] for d in data["device"]] == [1]
    assert data["device"][0]["profile"] == names[0]
    assert data["bus"][0]["tcp" if tcp else "serial"] == (tcp or serial)
