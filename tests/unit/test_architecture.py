"""The architecture's rules hold (docs/architecture.md, setup.cfg [importlinter]), and each can fail.

lint-imports checks the import contracts; this file runs it on the tree, shows that it catches a
deliberate upward import in a copy of the package, and adds what import-linter cannot see: the pure
modules call no wall clock, read no environment and open no file.
"""

from __future__ import annotations

import ast
import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")
pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (.[test])")


def contracts() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_tree_keeps_every_contract() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def lint_broken_copy(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess[str]:
    """lint-imports on a copy of the package in which `module` (a path under gateway/) got `line`."""
    shutil.copytree(ROOT / "gateway", tmp_path / "gateway",
                    ignore=shutil.ignore_patterns("node_modules", "artifacts", "__pycache__"))
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    source = tmp_path / "gateway" / module
    source.write_text(source.read_text() + f"\n{line}  # noqa: E402,F401\n")
    return lint(tmp_path)


def test_an_upward_import_breaks_the_layers_contract(tmp_path: Path) -> None:
    # perception (pure, low) imports the device layer (above it)
    result = lint_broken_copy(tmp_path, "perception/names.py", "from gateway.device import bus")
    assert result.returncode == 1, result.stdout
    assert "gateway.perception is not allowed to import gateway.device" in result.stdout
    assert "gateway.perception.names -> gateway.device.bus" in result.stdout


def test_a_clock_import_in_a_pure_module_breaks_the_pure_contract(tmp_path: Path) -> None:
    result = lint_broken_copy(tmp_path, "loop/verdict.py", "import time")
    assert result.returncode == 1, result.stdout
    assert "gateway.loop.verdict is not allowed to import time" in result.stdout


# ------------------------------------------------------------------ what import-linter cannot see

# Calls that read the wall clock, the environment or files: a pure module takes these as arguments.
IMPURE_ATTRIBUTES = {"now", "utcnow", "today", "environ", "getenv", "read_text", "read_bytes",
                     "write_text", "write_bytes", "stat", "open"}
IMPURE_NAMES = {"open", "input", "print"}


def pure_modules() -> list[Path]:
    listed = contracts()["importlinter:contract:pure"]["source_modules"].split()
    files: list[Path] = []
    for module in listed:
        base = ROOT / Path(*module.split("."))
        files.extend(sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")])
    return files


def impure_uses(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Attribute) and node.attr in IMPURE_ATTRIBUTES:
            found.append(f"{path.name}:{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in IMPURE_NAMES:
            found.append(f"{path.name}:{node.lineno}: {node.func.id}()")
    return found


def test_pure_modules_exist_and_do_no_io() -> None:
    files = pure_modules()
    assert len(files) >= 20 and all(f.exists() for f in files), files
    offences = [use for f in files for use in impure_uses(f)]
    assert offences == []


def test_the_impurity_scan_sees_clock_env_and_file_use(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import datetime as dt\nimport os\n\n\ndef f(p):\n"
                      "    return dt.datetime.now(), os.environ['TZ'], open(p), p.read_text()\n")
    assert sorted(impure_uses(sample)) == ["sample.py:6: .environ", "sample.py:6: .now",
                                           "sample.py:6: .read_text", "sample.py:6: open()"]


# ------------------------------------------------------------------ the agent without the simulator

def run_without_pymodbus(code: str) -> subprocess.CompletedProcess[str]:
    # sys.modules[name] = None makes `import name` raise ImportError, as on a gateway installed
    # without the `sim` extra.
    return subprocess.run([sys.executable, "-c", "import sys; sys.modules['pymodbus'] = None\n" + code],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_the_agent_imports_without_pymodbus() -> None:
    result = run_without_pymodbus("import gateway.cli; gateway.cli.build_parser()\n"
                                  "from gateway.agent import Agent\n"
                                  "assert 'pymodbus' not in [m for m in sys.modules if sys.modules[m]]")
    assert result.returncode == 0, result.stderr


def test_simulate_without_pymodbus_says_how_to_install_it() -> None:
    result = run_without_pymodbus("from gateway.cli import main\n"
                                  "sys.exit(main(['simulate', 'examples/homes/ev_home.toml']))")
    assert result.returncode == 2, result.stderr
    assert "pip install 'drgw[sim]'" in result.stderr
