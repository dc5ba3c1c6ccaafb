"""Device profile files: where they are searched ($DRGW_PROFILES, the checkout, the installed share dir)
and how a YAML file on disk becomes a typed Profile (the schema itself is gateway.perception.profile_schema).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from gateway.errors import ProfileError
from gateway.perception.profile_schema import did_you_mean, profile_from_mapping
from gateway.perception.profiles import Profile


def profile_dirs() -> list[Path]:
    """Folders searched for profiles: $DRGW_PROFILES, a source checkout, the installed share dir."""
    dirs: list[Path] = []
    env = os.environ.get("DRGW_PROFILES")
    if env:
        dirs.extend(Path(p) for p in env.split(os.pathsep) if p)
    checkout = Path(__file__).resolve().parents[2] / "device_profiles"
    if checkout.is_dir():
        dirs.append(checkout)
    installed = Path(sys.prefix) / "share" / "drgw" / "device_profiles"
    if installed.is_dir():
        dirs.append(installed)
    return dirs


def profile_paths() -> list[Path]:
    """Every profile file, first folder wins when two folders hold the same name."""
    found: dict[str, Path] = {}
    for folder in profile_dirs():
        for sub in ("meters", "appliances"):
            for path in sorted((folder / sub).glob("*.yaml")):
                found.setdefault(path.stem, path)
    return [found[name] for name in sorted(found)]


def load_profile(name_or_path: str | Path) -> Profile:
    """Load one profile by name (`eastron_sdm630`) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return parse_profile(path)
    for candidate in profile_paths():
        if candidate.stem == str(name_or_path):
            return parse_profile(candidate)
    names = [p.stem for p in profile_paths()]
    raise ProfileError(
        f"no device profile named {name_or_path!r}{did_you_mean(str(name_or_path), names)}; "
        f"`drgw profiles list` shows the {len(names)} known profiles"
    )


def load_all() -> list[Profile]:
    return [parse_profile(path) for path in profile_paths()]


def parse_profile(path: Path) -> Profile:
    """Read and check one profile file; errors name the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read the profile: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from exc
    return profile_from_mapping(data, path=path)
