"""Remote config trials on disk (gateway.agent.trial): apply, begin, interrupt, confirm, rollback."""

from __future__ import annotations

import hashlib
from pathlib import Path

from gateway.agent import trial
from gateway.config.gateway import parse_config

GOOD = '[gateway]\nkey = "gw.key"\n'
NEW = '[gateway]\nkey = "gw.key"\nlog_level = "DEBUG"\n'
NEWER = '[gateway]\nkey = "gw.key"\nlog_level = "ERROR"\n'


def sha16(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_a_trial_that_fails_restores_the_last_good_config_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "drgw.toml"
    path.write_text(GOOD)
    trial.apply(path, NEW)
    assert path.read_text() == NEW and trial.on_trial(path)
    assert trial.last_good(path).read_text() == GOOD
    assert trial.begin(path)
    assert trial.rollback(path, reason="metrics port in use")
    assert path.read_text() == GOOD and not trial.on_trial(path)
    note = trial.last_rollback(path)
    assert note is not None
    assert (note.config_hash, note.restored_hash, note.reason) == (sha16(NEW), sha16(GOOD),
                                                                   "metrics port in use")
    assert trial.status(path) == {"config_trial": False, "config_rollback": note.as_json()}
    # The next change starts with a clean slate.
    trial.apply(path, NEWER)
    assert trial.last_rollback(path) is None
    assert trial.status(path)["config_trial"] is True


def test_a_start_that_never_reached_a_verdict_is_seen_by_the_next_one(tmp_path: Path) -> None:
    path = tmp_path / "drgw.toml"
    path.write_text(GOOD)
    trial.apply(path, NEW)
    assert trial.begin(path)
    trial.interrupt(path)  # SIGTERM before the verdict: try again
    assert trial.begin(path)
    assert not trial.begin(path)  # killed: the marker still says "started"
    trial.confirm(path)
    assert not trial.on_trial(path) and trial.begin(path)


def test_last_good_only_holds_a_config_that_ran(tmp_path: Path) -> None:
    path = tmp_path / "drgw.toml"
    path.write_text(GOOD)
    trial.apply(path, NEW)
    trial.apply(path, NEWER)  # NEW was never confirmed: it must not become "last good"
    assert trial.last_good(path).read_text() == GOOD
    assert trial.rollback(path, reason="x")
    assert path.read_text() == GOOD
    note = trial.last_rollback(path)
    assert note is not None and note.config_hash == sha16(NEWER)


def test_the_hash_of_a_rollback_is_the_config_hash_status_reports(tmp_path: Path) -> None:
    assert trial.text_hash(NEW) == parse_config(NEW, path=tmp_path / "drgw.toml").config_hash


def test_an_unreadable_rollback_note_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "drgw.toml"
    trial.report(path).write_text("{not json")
    assert trial.last_rollback(path) is None
