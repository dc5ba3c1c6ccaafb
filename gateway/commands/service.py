"""`drgw install-service`: install the systemd units, the `drgw` user, its directories; enable the agent.

The steps are planned first (`plan()`), as data: `--dry-run` prints them and changes nothing,
otherwise each is printed as it runs. `--root DIR` writes into a tree instead of / (for tests and
image builds): users go into DIR/etc via `systemd-sysusers --root`, units are enabled with
`systemctl --root`, and nothing is started. docs/operations.md describes every step.

The unit files ship once, in the top-level systemd/ folder: a source checkout uses it directly and
`pip install` copies it to <prefix>/share/drgw/systemd (setup.cfg data_files), as device profiles are.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError, DrgwError

USER = "drgw"
UNIT_DIR = Path("/usr/local/lib/systemd/system")  # systemd.unit(5): units of locally installed software
SYSUSERS = Path("/usr/local/lib/sysusers.d/drgw.conf")  # sysusers.d(5) searches /usr/local/lib too
BIN = Path("/usr/local/bin/drgw")  # what ExecStart= runs (systemd/drgw.service)
STATE_DIR = Path("/var/lib/drgw")  # StateDirectory=drgw: key, store, outboxes
CONFIG_DIR = Path("/etc/drgw")  # ConfigurationDirectory=drgw: drgw.toml, TLS files
CONFIG = CONFIG_DIR / "drgw.toml"
# ProtectHome=yes hides these from the service: a drgw installed there cannot be its ExecStart.
HIDDEN_FROM_SERVICE = ("/home/", "/root/", "/run/user/")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("install-service", help="install the systemd units, the drgw user and "
                                                     "its directories; enable and start the agent")
    parser.add_argument("--dry-run", action="store_true", help="print every step, change nothing")
    parser.add_argument("--root", type=Path, default=Path("/"),
                        help="install into this tree instead of / (nothing is started)")
    parser.add_argument("--drgw", type=Path, default=None,
                        help="the drgw executable the service runs (default: the one beside this "
                             "Python, e.g. /opt/drgw/bin/drgw); linked as /usr/local/bin/drgw")
    parser.add_argument("--sim", action="store_true",
                        help="also enable drgw-sim.service (simulated meters, for field tests)")
    parser.add_argument("--no-start", action="store_true", help="enable, but do not start now")
    parser.set_defaults(func=run)


@dataclass(frozen=True, slots=True)
class Step:
    text: str
    action: Callable[[], None]


def units_source() -> Path:
    """The shipped systemd/ folder: a source checkout's, else the installed share dir."""
    for folder in (Path(__file__).resolve().parents[2] / "systemd",
                   Path(sys.prefix) / "share" / "drgw" / "systemd"):
        if (folder / "drgw.service").is_file():
            return folder
    raise ConfigError(f"the systemd unit files are not installed (looked in the source checkout and "
                      f"{sys.prefix}/share/drgw/systemd): reinstall drgw with pip")


def default_drgw() -> Path:
    return Path(sys.executable).parent / "drgw"


def check_executable(drgw: Path) -> Path:
    path = drgw.absolute()
    if str(path).startswith(HIDDEN_FROM_SERVICE):
        raise ConfigError(f"--drgw {path}: the service cannot run it, ProtectHome=yes hides "
                          "/home, /root and /run/user; install drgw into /opt/drgw (docs/operations.md)")
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ConfigError(f"--drgw {path}: not an executable drgw; install drgw into a venv "
                          "(docs/operations.md) or pass --drgw PATH")
    return path


def run(args: argparse.Namespace) -> int:
    root = args.root.absolute()
    if not args.dry_run and root == Path("/") and os.geteuid() != 0:
        raise DrgwError("install-service changes the system: run it as root "
                        "(`sudo drgw install-service`), or add --dry-run to see the steps")
    steps = plan(root=root, source=units_source(), drgw=check_executable(args.drgw or default_drgw()),
                 sim=args.sim, start=not args.no_start)
    for i, step in enumerate(steps, 1):
        print(f"{i:2}. {step.text}", flush=True)
        if not args.dry_run:
            step.action()
    if args.dry_run:
        print("dry run: nothing was changed")
    elif not (root / CONFIG.relative_to("/")).exists():
        print(f"next: write {CONFIG} (`drgw init`), check it with `drgw doctor`, then "
              "`systemctl start drgw`")
    return 0


def plan(*, root: Path, source: Path, drgw: Path, sim: bool = False, start: bool = True) -> list[Step]:
    """Every step of the installation into `root` ("/" for the real system)."""
    at = _in(root)
    offline = root != Path("/")
    units = sorted(source.glob("*.service"))
    steps = [_copy(unit, at(UNIT_DIR / unit.name), 0o644) for unit in units]
    steps.append(_copy(source / "drgw.sysusers", at(SYSUSERS), 0o644))
    # Inside a tree (an image being built), the link names the path the booted system will see.
    inside = offline and drgw.is_relative_to(root)
    steps.append(_link(at(BIN), Path("/") / drgw.relative_to(root) if inside else drgw))
    sysusers = ["systemd-sysusers", f"--root={root}"] if offline else ["systemd-sysusers", str(SYSUSERS)]
    steps.append(_command(sysusers, "creates the system user drgw, member of dialout"))
    steps.append(_directory(at(STATE_DIR), 0o700, root))
    steps.append(_directory(at(CONFIG_DIR), 0o750, root))
    enable = ["drgw.service"] + [u.name for u in units if u.name == "drgw-provision.service"]
    if sim:
        enable.append("drgw-sim.service")
    if offline:
        steps.append(_command(["systemctl", f"--root={root}", "enable", *enable],
                              "enabled in the tree; nothing is started"))
        return steps
    steps.append(_command(["systemctl", "daemon-reload"], "systemd reads the new units"))
    now = start and at(CONFIG).exists()
    steps.append(_command(["systemctl", "enable", *(["--now"] if now else []), *enable],
                          "starts at boot" + (" and now" if now else
                                              f"; not started now ({CONFIG} missing or --no-start)")))
    return steps


def _in(root: Path) -> Callable[[Path], Path]:
    return lambda path: root / path.relative_to("/")


def _copy(src: Path, dst: Path, mode: int) -> Step:
    def action() -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.copyfile(src, tmp)
        tmp.chmod(mode)
        tmp.replace(dst)

    return Step(f"copy {src} -> {dst} (mode {mode:04o})", action)


def _link(link: Path, target: Path) -> Step:
    if link.is_symlink() or not link.exists():
        def action() -> None:
            link.parent.mkdir(parents=True, exist_ok=True)
            tmp = link.with_name(link.name + ".tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target)
            tmp.replace(link)

        return Step(f"link {link} -> {target} (the unit's ExecStart)", action)
    return Step(f"keep {link}: it exists and is not a symlink; it must run this drgw", lambda: None)


def _command(argv: list[str], why: str) -> Step:
    def action() -> None:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        except FileNotFoundError:
            raise DrgwError(f"{argv[0]} is not installed: drgw's service needs systemd") from None
        if done.returncode != 0:
            raise DrgwError(f"`{' '.join(argv)}` failed ({done.returncode}): "
                            f"{(done.stderr or done.stdout).strip()}")

    return Step(f"run `{' '.join(argv)}`: {why}", action)


def _directory(path: Path, mode: int, root: Path) -> Step:
    def action() -> None:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        if os.geteuid() != 0:
            return  # --root as an ordinary user: the tree keeps its owner
        uid, gid = _ids(USER, root)
        for folder, _dirs, files in os.walk(path):
            os.chown(folder, uid, gid)
            for name in files:
                os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)

    return Step(f"create {path} (mode {mode:04o}, owner {USER}:{USER}, files inside too)", action)


def _ids(user: str, root: Path) -> tuple[int, int]:
    """uid and gid of `user` in the tree's /etc/passwd (the system's own when root is /)."""
    if root == Path("/"):
        entry = pwd.getpwnam(user)
        return entry.pw_uid, entry.pw_gid
    for line in (root / "etc" / "passwd").read_text(encoding="utf-8").splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise DrgwError(f"{root}/etc/passwd has no user {user}: systemd-sysusers did not create it")
