"""The agent's lifetime: its parts run as named tasks of one TaskGroup and stop as one exit stack unwinds.

Inside `async with lifetime(stop) as life`, a part is started with `life.start(name, work, stop=...)`:
the task joins the TaskGroup and its stop step joins the AsyncExitStack, so when the block is left
the parts stop newest first, each in its own way (cancelled, or asked to finish), before the
TaskGroup is left. Any part that ends, normally or with an error, ends the agent: the error is kept
and raised once everything has stopped in order, because a failed part must not take the others
down half-way (what was read still gets committed and published).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

RESTART = 75  # exit status asking the caller (drgw run / systemd) to start the agent again
STOP_TIMEOUT_S = 5.0  # how long one part may take to stop before it is abandoned

Work = Coroutine[Any, Any, None]
StopStep = Callable[["asyncio.Task[None]"], Awaitable[None]]


class StopRequest:
    """Asked for by a signal, a remote command or a failed trial; carries the exit status."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.code = 0

    def __call__(self, code: int = 0) -> None:
        self.code = code
        self.requested.set()


async def cancel(task: asyncio.Task[None]) -> None:
    """The stop step of a part that has nothing to finish: cancel it and wait a moment for it."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, TimeoutError, Exception):
        await asyncio.wait_for(task, STOP_TIMEOUT_S)


class Lifetime:
    """Starts parts and registers their stop steps (see the module docstring and `lifetime`)."""

    def __init__(self, *, tasks: asyncio.TaskGroup, stack: contextlib.AsyncExitStack,
                 stop: StopRequest) -> None:
        self._tasks, self._stack, self._stop = tasks, stack, stop
        self.failure: Exception | None = None

    def start(self, name: str, work: Work, *, stop: StopStep = cancel) -> asyncio.Task[None]:
        """Run `work` as the task `name`; when the agent stops, `stop(task)` ends it."""
        task = self._tasks.create_task(self._supervised(work), name=name)
        # a part stopped before its first step would leave `work` never awaited (a RuntimeWarning)
        task.add_done_callback(lambda _: work.close())
        self._stack.push_async_callback(stop, task)
        return task

    def on_stop(self, step: Callable[[], None]) -> None:
        """A stop step of its own, between those of the parts started before and after it."""
        self._stack.callback(step)

    async def _supervised(self, work: Work) -> None:
        try:
            await work
        except Exception as exc:  # kept, so that the TaskGroup does not abort the other parts
            self.keep(exc)
        finally:
            self._stop.requested.set()  # the exit status stays what was asked for, if anything

    def keep(self, exc: Exception) -> None:
        if self.failure is None:
            self.failure = exc

    def raise_failure(self) -> None:
        """Re-raise the first error a part ended with, once all parts have stopped."""
        if self.failure is not None:
            raise self.failure


@contextlib.asynccontextmanager
async def lifetime(stop: StopRequest) -> AsyncIterator[Lifetime]:
    """The parts started inside stop, newest first, when the block is left; then the first error a
    part (or the block, or a stop step) raised is raised as it was."""
    async with asyncio.TaskGroup() as tasks:
        stack = contextlib.AsyncExitStack()
        life = Lifetime(tasks=tasks, stack=stack, stop=stop)
        try:
            async with stack:
                yield life
        except Exception as exc:  # raised below: inside, the TaskGroup would wrap it in a group
            life.keep(exc)
    life.raise_failure()
