"""Strict reading of data files (profiles, scenarios, config): every key checked, errors name the fix.

`Fields` wraps one mapping from a YAML or TOML file. Each accessor marks its key as known; after all
accessors ran, `reject_unknown()` fails on any key left over, with a "did you mean" suggestion:

    device_profiles/meters/x.yaml: registers[3]: option 'scal' is not valid; did you mean 'scale'?
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any, NoReturn

from gateway.errors import ConfigError


def expect_one_of(value: Any, choices: Sequence[Any], *, where: str,
                  error: type[ConfigError] = ConfigError) -> None:
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise error(f"{where}: {value!r} is not valid; use one of {listed}")


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

    def _int(self, key: str, required: bool, choices: Sequence[int] | None) -> int | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(key, f"must be a whole number, found {value!r}")
        if choices is not None and value not in choices:
            self.fail(key, f"{value} is not valid; use one of {', '.join(map(str, choices))}")
        return value

    def require_int(self, key: str, *, choices: Sequence[int] | None = None) -> int:
        value = self._int(key, True, choices)
        assert value is not None
        return value

    def optional_int(self, key: str, *, choices: Sequence[int] | None = None) -> int | None:
        return self._int(key, False, choices)

    def _number(self, key: str, required: bool) -> float | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool):
            self.fail(key, f"must be a number, found {value!r}")
        return float(value)

    def require_number(self, key: str) -> float:
        value = self._number(key, True)
        assert value is not None
        return value

    def optional_number(self, key: str) -> float | None:
        return self._number(key, False)

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
