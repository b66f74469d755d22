"""Fixtures: a real nats-server per test, a fake coordinator on it, and a running worker."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import FakeCoordinator, NatsServer, next_of  # noqa: E402


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    # No skip: a missing nats-server fails the test with the reason (see NatsServer).
    server = NatsServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def coordinator(nats_server: NatsServer) -> AsyncIterator[FakeCoordinator]:
    fake = await FakeCoordinator(nats_server.url).start()
    try:
        yield fake
    finally:
        await fake.stop()
    assert fake.invalid == [], "the worker sent messages that do not match the protocol's schemas"


class Running:
    """A worker serving on the test's event loop."""

    def __init__(self, worker: Any, task: "asyncio.Task[None]", agent: str) -> None:
        self.worker = worker
        self.task = task
        self.agent = agent


@pytest.fixture
async def start(coordinator: FakeCoordinator) -> AsyncIterator[Callable[..., Any]]:
    started = []

    async def start_worker(worker: Any) -> Running:
        task = asyncio.ensure_future(worker.serve())
        announce = await next_of(coordinator.announces, what="announcement")
        agent = coordinator.agents[announce["name"]]["agent"]
        running = Running(worker, task, agent)
        started.append(running)
        return running

    yield start_worker
    for running in started:
        running.worker.stop(drain=False, reason="the test ended")
        await asyncio.wait_for(asyncio.gather(running.task, return_exceptions=True), 10)
