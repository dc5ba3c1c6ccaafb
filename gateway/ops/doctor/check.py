"""One line of `drgw doctor`: a check's name, its level (OK / WARN / FAIL), what it saw and the fix."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Level(StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    name: str
    level: Level
    detail: str
    fix: str = ""

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "level": str(self.level), "detail": self.detail, "fix": self.fix}


def ok(name: str, detail: str) -> Check:
    return Check(name=name, level=Level.OK, detail=detail)


def warn(name: str, detail: str, fix: str) -> Check:
    return Check(name=name, level=Level.WARN, detail=detail, fix=fix)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name=name, level=Level.FAIL, detail=detail, fix=fix)
