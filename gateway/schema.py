"""Strict reading of data files (profiles, scenarios, config): every key checked, errors name the fix.

`Fields` wraps one mapping from a YAML or TOML file. Each accessor marks its key as known; after all
accessors ran, `reject_unknown()` fails on any key left over, with a "did you mean" suggestion:

    device_profiles/meters/x.yaml: registers[3]: option 'scal' is not valid; did you mean 'scale'?

Numeric accessors take the key's range (`minimum`, `maximum`, inclusive, and the `unit` to name), so a
value outside it fails with the file, the key and the range instead of reaching the code:

    drgw.toml: store: outbox_max_rows: -1 is out of range; use a whole number from 1 to 100000000

`default` is what a missing key gives; a present key is always checked (0 never turns into the default).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, overload

from gateway.errors import ConfigError


def expect_one_of(value: Any, choices: Sequence[Any], *, where: str,
                  error: type[ConfigError] = ConfigError) -> None:
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise error(f"{where}: {value!r} is not valid; use one of {listed}")


def shown(number: float) -> str:
    """A bound as a reader writes it in the file: 86400, not 86400.0 or 8.64e+04; 0.05 as 0.05."""
    if isinstance(number, float) and number.is_integer() and abs(number) < 1e16:
        return str(int(number))
    return repr(number)


@dataclass(frozen=True, slots=True)
class Bounds:
    """A numeric key's inclusive range and its unit ("seconds"), as the error message states them."""

    minimum: float | None = None
    maximum: float | None = None
    unit: str = ""

    def holds(self, value: float) -> bool:
        return ((self.minimum is None or value >= self.minimum)
                and (self.maximum is None or value <= self.maximum))

    def text(self, kind: str) -> str:
        """"a whole number from 1 to 65535 seconds": `kind` and the range."""
        unit = f" {self.unit}" if self.unit else ""
        if self.minimum is not None and self.maximum is not None:
            return f"{kind} from {shown(self.minimum)} to {shown(self.maximum)}{unit}"
        if self.minimum is not None:
            return f"{kind} of at least {shown(self.minimum)}{unit}"
        if self.maximum is not None:
            return f"{kind} of at most {shown(self.maximum)}{unit}"
        return f"{kind}{f' of {self.unit}' if self.unit else ''}"


class Fields:
    """Typed, strict access to one mapping of a data file."""

    def __init__(self, data: Any, *, where: str, error: type[ConfigError] = ConfigError) -> None:
        self.where = where
        self._error = error
        if not isinstance(data, dict):
            raise error(f"{where}: expected a mapping of keys to values, found {type(data).__name__}")
        self._data: dict[str, Any] = data
        self._known: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def fail(self, key: str, message: str) -> NoReturn:
        raise self._error(f"{self.where}: {key}: {message}")

    def peek(self, key: str, default: Any = None) -> Any:
        self._known.add(key)
        return self._data.get(key, default)

    def optional(self, key: str) -> Any:
        return self.peek(key)

    def _get(self, key: str, required: bool) -> Any:
        self._known.add(key)
        if key not in self._data:
            if required:
                raise self._error(f"{self.where}: option {key!r} is required")
            return None
        return self._data[key]

    def _str(self, key: str, required: bool, choices: Sequence[str] | None,
             allow_empty: bool) -> str | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, str) or (not value and not allow_empty):
            self.fail(key, f"must be a non-empty text, found {value!r}")
        if choices is not None and value not in choices:
            close = difflib.get_close_matches(value, list(choices), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.fail(key, f"{value!r} is not valid; use one of {', '.join(choices)}{hint}")
        return value

    def require_str(self, key: str, *, choices: Sequence[str] | None = None,
                    allow_empty: bool = False) -> str:
        value = self._str(key, True, choices, allow_empty)
        assert value is not None
        return value

    def optional_str(self, key: str, *, choices: Sequence[str] | None = None) -> str | None:
        return self._str(key, False, choices, False)

    def _int(self, key: str, required: bool, choices: Sequence[int] | None,
             bounds: Bounds = Bounds()) -> int | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            wanted = (f"one of {', '.join(map(str, choices))}" if choices is not None
                      else bounds.text("a whole number"))
            self.fail(key, f"must be {wanted}, found {value!r}")
        if choices is not None and value not in choices:
            self.fail(key, f"{value} is not valid; use one of {', '.join(map(str, choices))}")
        if not bounds.holds(value):
            self.fail(key, f"{value} is out of range; use {bounds.text('a whole number')}")
        return value

    def require_int(self, key: str, *, choices: Sequence[int] | None = None,
                    minimum: int | None = None, maximum: int | None = None, unit: str = "") -> int:
        value = self._int(key, True, choices, Bounds(minimum, maximum, unit))
        assert value is not None
        return value

    @overload
    def optional_int(self, key: str, *, choices: Sequence[int] | None = None,
                     minimum: int | None = None, maximum: int | None = None, unit: str = "",
                     default: int) -> int: ...

    @overload
    def optional_int(self, key: str, *, choices: Sequence[int] | None = None,
                     minimum: int | None = None, maximum: int | None = None, unit: str = "",
                     default: None = None) -> int | None: ...

    def optional_int(self, key: str, *, choices: Sequence[int] | None = None,
                     minimum: int | None = None, maximum: int | None = None, unit: str = "",
                     default: int | None = None) -> int | None:
        value = self._int(key, False, choices, Bounds(minimum, maximum, unit))
        return default if value is None else value

    def _number(self, key: str, required: bool, bounds: Bounds = Bounds()) -> float | None:
        value = self._get(key, required)
        if value is None:
            return None
        # TOML and YAML can spell nan and inf; no setting or profile field means either.
        if (not isinstance(value, int | float) or isinstance(value, bool)
                or not math.isfinite(value)):
            self.fail(key, f"must be {bounds.text('a number')}, found {value!r}")
        if not bounds.holds(value):
            self.fail(key, f"{shown(value)} is out of range; use {bounds.text('a number')}")
        return float(value)

    def require_number(self, key: str, *, minimum: float | None = None,
                       maximum: float | None = None, unit: str = "") -> float:
        value = self._number(key, True, Bounds(minimum, maximum, unit))
        assert value is not None
        return value

    @overload
    def optional_number(self, key: str, *, minimum: float | None = None,
                        maximum: float | None = None, unit: str = "", default: float) -> float: ...

    @overload
    def optional_number(self, key: str, *, minimum: float | None = None,
                        maximum: float | None = None, unit: str = "",
                        default: None = None) -> float | None: ...

    def optional_number(self, key: str, *, minimum: float | None = None,
                        maximum: float | None = None, unit: str = "",
                        default: float | None = None) -> float | None:
        value = self._number(key, False, Bounds(minimum, maximum, unit))
        return default if value is None else value

    def optional_bool(self, key: str) -> bool | None:
        value = self._get(key, False)
        if value is not None and not isinstance(value, bool):
            self.fail(key, f"must be true or false, found {value!r}")
        return value

    def _list(self, key: str, required: bool) -> list[Any] | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, list):
            self.fail(key, f"must be a list, found {type(value).__name__}")
        return value

    def require_list(self, key: str) -> list[Any]:
        value = self._list(key, True)
        assert value is not None
        return value

    def optional_list(self, key: str) -> list[Any] | None:
        return self._list(key, False)

    def list(self, key: str, *, required: bool = False) -> list[Any]:
        return self._list(key, required) or []

    def optional_mapping(self, key: str) -> dict[str, Any] | None:
        value = self._get(key, False)
        if value is not None and not isinstance(value, dict):
            self.fail(key, f"must be a mapping, found {type(value).__name__}")
        return value

    def sub(self, key: str, *, required: bool = False) -> Fields:
        value = self._get(key, required)
        if value is None:
            return Fields({}, where=f"{self.where}: {key}", error=self._error)
        return Fields(value, where=f"{self.where}: {key}", error=self._error)

    def reject_unknown(self) -> None:
        for key in self._data:
            if key in self._known:
                continue
            close = difflib.get_close_matches(str(key), sorted(self._known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise self._error(f"{self.where}: option {key!r} is not valid{hint}")
