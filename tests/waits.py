"""Waiting in tests for a condition, not for the clock: poll a predicate until it holds, or fail.

A test that sleeps for "long enough" flakes on a loaded machine and wastes time on an idle one. These
helpers wait for the event itself (N records committed, a reply received, a cycle seen) with a
generous timeout, and when it does not come they fail naming what was awaited, plus any detail the
caller can give (a log tail, the messages seen so far). The timeout is a ceiling for a broken
system, never a claim about speed: speed claims live in bench/.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

DEFAULT_TIMEOUT_S = 30.0


def _failure(what: str, timeout: float, detail: Callable[[], str] | None) -> AssertionError:
    extra = "" if detail is None else "\n" + detail()
    return AssertionError(f"waited {timeout:g} s for {what}{extra}")


def wait_for(predicate: Callable[[], object], *, what: str, timeout: float = DEFAULT_TIMEOUT_S,
             poll_s: float = 0.05, detail: Callable[[], str] | None = None) -> None:
    """Block until `predicate()` is true (checked every `poll_s`), else raise AssertionError."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise _failure(what, timeout, detail)
        time.sleep(poll_s)


async def until(predicate: Callable[[], object], *, what: str, timeout: float = DEFAULT_TIMEOUT_S,
                poll_s: float = 0.02, detail: Callable[[], str] | None = None) -> None:
    """`wait_for` for coroutines: the event loop (a simulated home, a link) keeps running meanwhile."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise _failure(what, timeout, detail)
        await asyncio.sleep(poll_s)
