"""What an agent holds while it runs one attempt: the way to report progress (a heartbeat,
partial output, streamed text, tokens spent) to the coordinator.

Every report resets the attempt's idle timeout, is sent as a `progress` message on core NATS
and renews the attempt's lease with an in-progress acknowledgement.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional

from .protocol import Spawned, Task

if TYPE_CHECKING:
    from .worker import _Run

#: How long a synchronous agent waits for one report to be handed to NATS.
_SYNC_REPORT_TIMEOUT_S = 30.0


class Context:
    """The context of one attempt, for an `async def` agent (`await ctx.partial(...)`)."""

    def __init__(self, run: "_Run") -> None:
        self._run = run

    @property
    def task(self) -> Task:
        """The attempt being run."""
        return self._run.task

    @property
    def idempotency_key(self) -> str:
        """The attempt's idempotency key: pass it to whatever has side effects."""
        return self._run.task.idempotency_key

    async def heartbeat(self) -> None:
        """Says the attempt is alive (resets its idle timeout) without new output."""
        await self._run.report()

    async def partial(self, output: Any) -> None:
        """Reports the output so far; it replaces the previous one and is kept in a timeout
        failure."""
        await self._run.report(partial=output)

    async def text(self, delta: str) -> None:
        """Streams text: `delta` is appended to what was streamed before (1 MiB in all)."""
        await self._run.report(text=delta)

    async def usage(
        self,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cached_input_tokens: Optional[int] = None,
        cost_usd_micros: Optional[int] = None,
    ) -> None:
        """Reports the tokens spent so far (a running total, not an increment); the last one
        is put in the result."""
        await self._run.report(
            usage={
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cached_input_tokens": cached_input_tokens,
                "cost_usd_micros": cost_usd_micros,
            }
        )

    def spawn(self, tasks: Iterable[Mapping[str, Any]], output: Any = None) -> Spawned:
        """The value to return to succeed with `output` and add follow-up `tasks` (the HTTP
        API's task specs) to the objective: `return ctx.spawn([...], output={...})`."""
        return Spawned(output=output, tasks=list(tasks))


class SyncContext:
    """The context of one attempt, for a plain `def` agent run in a thread: the same methods
    as `Context`, called without `await`; each returns once its report is sent."""

    def __init__(self, context: Context, loop: asyncio.AbstractEventLoop) -> None:
        self._context = context
        self._loop = loop

    @property
    def task(self) -> Task:
        return self._context.task

    @property
    def idempotency_key(self) -> str:
        return self._context.idempotency_key

    def _wait(self, coroutine: Any) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(_SYNC_REPORT_TIMEOUT_S)

    def heartbeat(self) -> None:
        self._wait(self._context.heartbeat())

    def partial(self, output: Any) -> None:
        self._wait(self._context.partial(output))

    def text(self, delta: str) -> None:
        self._wait(self._context.text(delta))

    def usage(
        self,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cached_input_tokens: Optional[int] = None,
        cost_usd_micros: Optional[int] = None,
    ) -> None:
        self._wait(self._context.usage(input_tokens, output_tokens, cached_input_tokens, cost_usd_micros))

    def spawn(self, tasks: Iterable[Mapping[str, Any]], output: Any = None) -> Spawned:
        return self._context.spawn(tasks, output)
