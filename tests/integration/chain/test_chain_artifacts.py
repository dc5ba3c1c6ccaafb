"""The committed artifacts are exactly what solc-js makes of the committed sources."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from gateway.chain.artifacts import ARTIFACT_DIR, CONTRACT_NAMES, CONTRACTS_DIR, load_artifact


def missing(what: str) -> None:
    message = f"{what} is missing; install it with `npm ci --prefix gateway/chain/contracts`"
    if os.environ.get("DRGW_ALLOW_MISSING") == "1":
        pytest.skip(message)
    pytest.fail(message)


def test_recompiling_the_sources_reproduces_the_artifacts() -> None:
    node = shutil.which("node")
    if node is None:
        missing("node (Node.js 20)")
    if not (CONTRACTS_DIR / "node_modules" / "solc").exists():
        missing("solc-js (npm package solc)")
    done = subprocess.run([str(node), str(CONTRACTS_DIR / "compile.js"), "--check"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_artifacts_target_prague_and_fit_the_code_size_limit() -> None:
    for name in CONTRACT_NAMES:
        data = json.loads((ARTIFACT_DIR / f"{name}.json").read_text())
        assert data["settings"]["evmVersion"] == "prague"
        assert data["compiler"].startswith("solc-js 0.8.")
        assert 0 < (len(data["deployedBytecode"]) - 2) // 2 <= 24_576  # EIP-170
        assert load_artifact(name).bytecode.startswith("0x6")
