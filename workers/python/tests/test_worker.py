"""The worker against a real nats-server and a fake coordinator that checks every message the
worker sends against the protocol's JSON Schemas."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, List

import pytest

from harness import FakeCoordinator, next_of, wait_until
from swarm_worker import Context, Failure, ProtocolError, Refused, Worker, agent


def make_worker(coordinator: FakeCoordinator) -> Worker:
    return Worker(nats_url=coordinator.url, prefix=coordinator.prefix)


async def all_progress(coordinator: FakeCoordinator, count: int) -> List[dict]:
    return [await next_of(coordinator.progress, what=f"progress {i + 1} of {count}") for i in range(count)]


async def test_an_async_agent_succeeds_and_its_attempt_is_acknowledged(coordinator, start):
    worker = make_worker(coordinator)
    seen: List[Any] = []

    @worker.agent(capability="summarize", concurrency=3, name="summarizer", description="Summarizes.", labels={"model": "none"})
    async def summarize(task, ctx: Context):
        seen.append(task)
        return {"summary": task.input["text"][:9], "upstream": sorted(task.upstream)}

    running = await start(worker)
    announce = coordinator.agents["summarizer"]["announce"]
    assert announce["capabilities"] == ["summarize"]
    assert announce["max_concurrency"] == 3
    assert announce["protocol_version"] == "1.0"
    assert announce["labels"] == {"model": "none"}

    attempt = coordinator.attempt(running.agent, task="T1", number=2)
    await coordinator.publish_attempt(attempt)
    result = await coordinator.next_result()

    assert result["attempt"] == attempt["attempt"]
    assert result["agent"] == running.agent
    assert result["outcome"] == {"status": "succeeded", "output": {"summary": "Quarterly", "upstream": ["fetch"]}}
    assert result["_msg_id"] == attempt["idempotency_key"]
    first = await next_of(coordinator.progress, what="the attempt's first progress")
    assert first["seq"] == 1 and "partial_output" not in first and "text" not in first
    assert first["_subject"] == "swarm.progress.T1.2"
    task = seen[0]
    assert (task.objective, task.id, task.attempt, task.key, task.capability) == (
        attempt["attempt"]["objective"], "T1", 2, "summarize", "summarize")
    assert task.idempotency_key == attempt["idempotency_key"]
    assert (task.idle_timeout_ms, task.hard_timeout_ms, task.priority) == (30000, 120000, 5)
    assert task.traceparent == attempt["trace"]["traceparent"]
    assert task.tracestate == "swarm=a7"
    await wait_until(lambda: _empty(coordinator, "ATTEMPTS"), what="the attempt's acknowledgement")


def drain_queue(q: asyncio.Queue) -> None:
    while not q.empty():
        q.get_nowait()


async def _empty(coordinator: FakeCoordinator, stream: str) -> bool:
    return await coordinator.stream_messages(stream) == 0


async def test_a_sync_agent_runs_in_a_thread_and_reports_partial_output(coordinator, start):
    worker = make_worker(coordinator)
    threads: List[str] = []

    @worker.agent(capability="echo")
    def echo(task, ctx):
        threads.append(threading.current_thread().name)
        ctx.partial({"half": True})
        ctx.usage(input_tokens=3, output_tokens=4)
        return task.input

    running = await start(worker)
    await coordinator.publish_attempt(coordinator.attempt(running.agent, input={"n": 1}))
    result = await coordinator.next_result()
    assert result["outcome"] == {"status": "succeeded", "output": {"n": 1}, "usage": {"input_tokens": 3, "output_tokens": 4}}
    assert threads and threads[0] != threading.main_thread().name
    progress = await all_progress(coordinator, 3)
    assert [p["seq"] for p in progress] == [1, 2, 3]
    assert progress[1]["partial_output"] == {"half": True}
    assert progress[2]["usage"] == {"input_tokens": 3, "output_tokens": 4}


async def test_an_agent_of_one_parameter_gets_only_the_task(coordinator, start):
    worker = make_worker(coordinator)

    @worker.agent(capability="one")
    def one(task):
        return task.key

    running = await start(worker)
    await coordinator.publish_attempt(coordinator.attempt(running.agent, key="k.1"))
    assert (await coordinator.next_result())["outcome"]["output"] == "k.1"


@pytest.mark.parametrize(
    "failure, expected",
    [
        (Failure("rate limited", kind="transient", retry_after=2.0),
         {"status": "failed", "kind": "transient", "message": "rate limited", "retry_after_ms": 2000}),
        (Failure("bad request", kind="permanent"), {"status": "failed", "kind": "permanent", "message": "bad request"}),
        (Failure("too slow", kind="timeout"), {"status": "failed", "kind": "timeout", "message": "too slow"}),
        (Failure("not a summary", kind="invalid_output", partial_output={"x": 1}),
         {"status": "failed", "kind": "invalid_output", "message": "not a summary", "partial_output": {"x": 1}}),
        (Failure("breaker open", kind="declined"), {"status": "failed", "kind": "declined", "message": "breaker open"}),
        (KeyError("text"), {"status": "failed", "kind": "transient", "message": "KeyError: 'text'"}),
    ],
)
async def test_failures_are_reported_with_their_kind(coordinator, start, failure, expected):
    worker = make_worker(coordinator)

    @worker.agent(capability="fail")
    async def fail(task, ctx):
        raise failure

    running = await start(worker)
    await coordinator.publish_attempt(coordinator.attempt(running.agent))
    result = await coordinator.next_result()
    assert result["outcome"] == expected
    await wait_until(lambda: _empty(coordinator, "ATTEMPTS"), what="the failed attempt's acknowledgement")


def test_a_failure_kind_outside_the_protocol_is_refused():
    with pytest.raises(ValueError, match="kind"):
        Failure("x", kind="flaky")


async def test_progress_streams_text_in_utf8_bytes_and_failure_keeps_the_partial_output(coordinator, start):
    worker = make_worker(coordinator)

    @worker.agent(capability="stream")
    async def stream(task, ctx: Context):
        await ctx.text("Réveil ")
        await ctx.text("matin")
        await ctx.usage(input_tokens=10, output_tokens=2, cost_usd_micros=7)
        await ctx.partial({"draft": "Réveil matin"})
        raise Failure("the model server answered 429", retry_after=0.5)

    running = await start(worker)
    await coordinator.publish_attempt(coordinator.attempt(running.agent))
    result = await coordinator.next_result()
    progress = await all_progress(coordinator, 5)
    assert [p["seq"] for p in progress] == [1, 2, 3, 4, 5]
    assert progress[1]["text"] == {"offset": 0, "delta": "Réveil "}
    assert progress[2]["text"] == {"offset": len("Réveil ".encode()), "delta": "matin"}
    assert progress[3]["usage"] == {"input_tokens": 10, "output_tokens": 2, "cost_usd_micros": 7}
    assert result["outcome"] == {
        "status": "failed",
        "kind": "transient",
        "message": "the model server answered 429",
        "partial_output": {"draft": "Réveil matin"},
        "usage": {"input_tokens": 10, "output_tokens": 2, "cost_usd_micros": 7},
        "retry_after_ms": 500,
    }


async def test_spawned_follow_ups(coordinator, start):
    worker = make_worker(coordinator)

    @worker.agent(capability="split")
    async def split(task, ctx: Context):
        return ctx.spawn(
            [{"id": f"part-{i}", "capability": "summarize", "input": {"section": i}, "hard_timeout": "2m"} for i in (1, 2)],
            output={"sections": 2},
        )

    running = await start(worker)
    await coordinator.publish_attempt(coordinator.attempt(running.agent))
    outcome = (await coordinator.next_result())["outcome"]
    assert outcome["status"] == "spawned"
    assert outcome["output"] == {"sections": 2}
    assert [t["id"] for t in outcome["tasks"]] == ["part-1", "part-2"]


async def test_an_attempt_without_progress_past_its_idle_timeout_fails_as_timeout(coordinator, start):
    worker = make_worker(coordinator)
    never = asyncio.Event()

    @worker.agent(capability="stall")
    async def stall(task, ctx: Context):
        await ctx.partial("half")
        await never.wait()

    running = await start(worker)
    await coordinator.publish_attempt(coordinator.attempt(running.agent, idle_timeout_ms=200, hard_timeout_ms=None))
    outcome = (await coordinator.next_result())["outcome"]
    assert outcome["status"] == "failed" and outcome["kind"] == "timeout"
    assert "idle timeout" in outcome["message"]
    assert outcome["partial_output"] == "half"


async def test_an_attempt_past_its_hard_timeout_fails_as_timeout(coordinator, start):
    worker = make_worker(coordinator)

    @worker.agent(capability="busy")
    async def busy(task, ctx: Context):
        while True:  # busy, and saying so: the idle timeout never passes
            await ctx.heartbeat()
            await asyncio.sleep(0.02)

    running = await start(worker)
    await coordinator.publish_attempt(coordinator.attempt(running.agent, idle_timeout_ms=1000, hard_timeout_ms=300))
    outcome = (await coordinator.next_result())["outcome"]
    assert outcome["status"] == "failed" and outcome["kind"] == "timeout"
    assert "hard timeout" in outcome["message"]


async def test_an_output_that_is_not_json_is_invalid_output(coordinator, start):
    worker = make_worker(coordinator)

    @worker.agent(capability="odd")
    async def odd(task, ctx: Context):
        return {"a set": {1, 2}}

    running = await start(worker)
    await coordinator.publish_attempt(coordinator.attempt(running.agent))
    outcome = (await coordinator.next_result())["outcome"]
    assert outcome["status"] == "failed" and outcome["kind"] == "invalid_output"


async def test_a_finished_attempt_delivered_again_is_not_run_again(coordinator, start):
    worker = make_worker(coordinator)
    runs: List[str] = []

    @worker.agent(capability="once")
    async def once(task, ctx: Context):
        runs.append(task.idempotency_key)
        return len(runs)

    running = await start(worker)
    attempt = coordinator.attempt(running.agent)
    await coordinator.publish_attempt(attempt)
    first = await coordinator.next_result()
    await coordinator.publish_attempt(attempt)
    await wait_until(lambda: worker.stats["once@" + worker.host].get("duplicates") == 1, what="the duplicate delivery")
    await wait_until(lambda: _empty(coordinator, "ATTEMPTS"), what="both deliveries' acknowledgements")
    assert runs == [attempt["idempotency_key"]]
    assert first["outcome"]["output"] == 1
    # The kept result was published again with the same Nats-Msg-Id: stored once.
    assert worker.stats["once@" + worker.host]["results"] == 2
    assert await coordinator.stream_messages("RESULTS") == 1


async def test_a_running_attempt_delivered_again_is_not_started_twice(coordinator, start):
    worker = make_worker(coordinator)
    runs: List[str] = []
    release = asyncio.Event()

    @worker.agent(capability="slow", concurrency=4, name="slow")
    async def slow(task, ctx: Context):
        runs.append(task.idempotency_key)
        await release.wait()
        return "done"

    running = await start(worker)
    attempt = coordinator.attempt(running.agent)
    await coordinator.publish_attempt(attempt)
    await coordinator.publish_attempt(attempt)
    await wait_until(lambda: worker.stats["slow"].get("duplicates") == 1, what="the second delivery")
    release.set()
    assert (await coordinator.next_result())["outcome"]["output"] == "done"
    await wait_until(lambda: _empty(coordinator, "ATTEMPTS"), what="both deliveries' acknowledgements")
    assert runs == [attempt["idempotency_key"]]


async def test_no_more_than_concurrency_attempts_run_at_once(coordinator, start):
    worker = make_worker(coordinator)
    now = 0
    most = 0
    release = asyncio.Event()

    @worker.agent(capability="wide", concurrency=2, name="wide")
    async def wide(task, ctx: Context):
        nonlocal now, most
        now += 1
        most = max(most, now)
        await release.wait()
        now -= 1
        return task.id

    running = await start(worker)
    for i in range(5):
        await coordinator.publish_attempt(coordinator.attempt(running.agent, task=f"T{i}"))
    await wait_until(lambda: now == 2, what="two attempts running")
    drain_queue(coordinator.heartbeats)
    await next_of(coordinator.heartbeats, what="a heartbeat")
    heartbeat = await next_of(coordinator.heartbeats, what="a heartbeat sent while two run")
    assert heartbeat["in_flight"] == 2
    release.set()
    outputs = sorted([(await coordinator.next_result())["outcome"]["output"] for _ in range(5)])
    assert outputs == [f"T{i}" for i in range(5)]
    assert most == 2


async def test_a_refused_announcement_stops_the_worker_with_the_coordinators_message(nats_server):
    coordinator = await FakeCoordinator(nats_server.url, refuse="a name in use by another live session").start()
    try:
        worker = make_worker(coordinator)

        @worker.agent(capability="x")
        async def x(task, ctx):
            return None

        with pytest.raises(Refused, match="a name in use by another live session"):
            await asyncio.wait_for(worker.serve(), 10)
        assert coordinator.invalid == []
    finally:
        await coordinator.stop()


async def test_an_accepted_answer_of_another_major_version_stops_the_worker(nats_server):
    import json

    import nats

    nc = await nats.connect(nats_server.url)
    try:
        async def answer(msg):
            await msg.respond(json.dumps({
                "status": "accepted", "agent": "A1", "protocol_version": "2.0", "heartbeat_interval_ms": 100,
                "lease_ms": 1000, "attempts_subject": "swarm.attempts.A1", "attempts_consumer": "agent-A1",
            }).encode())

        await nc.subscribe("swarm.agents.announce", cb=answer)
        worker = Worker(nats_url=nats_server.url)

        @worker.agent(capability="x")
        async def x(task, ctx):
            return None

        with pytest.raises(ProtocolError, match="2.0"):
            await asyncio.wait_for(worker.serve(), 10)
    finally:
        await nc.close()


async def test_the_worker_announces_until_a_coordinator_answers(nats_server):
    worker = Worker(nats_url=nats_server.url, announce_timeout=0.2)

    @worker.agent(capability="x", name="patient")
    async def x(task, ctx):
        return None

    serving = asyncio.ensure_future(worker.serve())
    import nats

    nc = await nats.connect(nats_server.url)
    tries = asyncio.Queue()

    async def unanswered(msg):  # no coordinator yet: nobody answers
        await tries.put(msg)

    sub = await nc.subscribe("swarm.agents.announce", cb=unanswered)
    await next_of(tries, what="a first announcement")
    await next_of(tries, what="a second announcement")
    await sub.unsubscribe()
    await nc.close()
    coordinator = await FakeCoordinator(nats_server.url).start()
    try:
        announce = await next_of(coordinator.announces, what="an announcement the coordinator answers")
        assert announce["name"] == "patient"
        worker.stop(drain=True)
        await asyncio.wait_for(serving, 10)
        leave = await next_of(coordinator.leaves, what="the leave")
        assert leave["mode"] == "drain"
    finally:
        await coordinator.stop()


async def test_a_drain_directive_finishes_the_running_attempt_then_leaves(coordinator, start):
    worker = make_worker(coordinator)
    release = asyncio.Event()

    @worker.agent(capability="d", name="drained")
    async def drained(task, ctx: Context):
        await ctx.partial("started")
        await release.wait()
        return "finished"

    running = await start(worker)
    await coordinator.publish_attempt(coordinator.attempt(running.agent))
    await next_of(coordinator.progress, what="the attempt's start")
    coordinator.directives.append({"directive": "drain", "reason": "removed by an operator (DELETE /v1/agents/A7)"})
    await wait_until(lambda: not coordinator.directives, what="the drain directive")
    release.set()
    assert (await coordinator.next_result())["outcome"]["output"] == "finished"
    leave = await next_of(coordinator.leaves, what="the leave after draining")
    assert leave["mode"] == "drain" and leave["agent"] == running.agent
    await asyncio.wait_for(running.task, 10)


async def test_an_announce_directive_announces_again_and_pulls_from_the_new_consumer(coordinator, start):
    worker = make_worker(coordinator)

    @worker.agent(capability="again", name="again")
    async def again(task, ctx: Context):
        return task.agent

    running = await start(worker)
    first = coordinator.agents["again"]
    coordinator.directives.append({"directive": "announce"})
    second_announce = await next_of(coordinator.announces, what="the second announcement")
    assert second_announce["session"] == first["announce"]["session"]
    second = coordinator.agents["again"]["agent"]
    assert second != running.agent
    drain_queue(coordinator.heartbeats)
    await next_of(coordinator.heartbeats, what="a heartbeat")
    heartbeat = await next_of(coordinator.heartbeats, what="a heartbeat under the new id")
    assert heartbeat["agent"] == second
    await coordinator.publish_attempt(coordinator.attempt(second))
    result = await coordinator.next_result()
    assert result["agent"] == second and result["outcome"]["output"] == second


def test_agent_declarations_are_checked():
    with pytest.raises(ValueError, match="capability"):
        agent(capability="has space")
    with pytest.raises(ValueError, match="concurrency"):
        agent(capability="ok", concurrency=0)
    worker = Worker()

    @worker.agent(capability="a", name="same")
    def a(task):
        return None

    with pytest.raises(ValueError, match="same"):
        worker.agent(capability="b", name="same")(lambda task: None)


async def test_sigterm_drains_the_worker_process(coordinator):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from harness import env_with_src

    script = Path(__file__).with_name("held_worker.py")
    process = subprocess.Popen(
        [sys.executable, str(script), coordinator.url], env=env_with_src(), stderr=subprocess.PIPE, text=True
    )
    try:
        announce = await next_of(coordinator.announces, what="the worker process's announcement")
        agent_id = coordinator.agents[announce["name"]]["agent"]
        await coordinator.publish_attempt(coordinator.attempt(agent_id, task="T5"))
        await wait_until(lambda: _started(coordinator), what="the attempt's partial output")
        process.send_signal(signal.SIGTERM)
        leave = await next_of(coordinator.leaves, what="the leave after SIGTERM")
        assert leave == {"agent": agent_id, "session": announce["session"], "mode": "drain", "reason": "SIGTERM"}
        # Work given after the leave is not taken: the process only finishes what it runs.
        await coordinator.publish_attempt(coordinator.attempt(agent_id, task="T6"))
        await coordinator.nc.publish("test.release", b"")
        result = await coordinator.next_result()
        assert result["attempt"]["task"] == "T5"
        assert result["outcome"] == {"status": "succeeded", "output": {"released": "T5"}}
        code = await asyncio.get_running_loop().run_in_executor(None, process.wait, 15)
        stderr = process.stderr.read() if process.stderr else ""
        assert code == 0, stderr
        assert await coordinator.stream_messages("ATTEMPTS") == 1  # T6, never delivered
        assert await coordinator.stream_messages("RESULTS") == 1
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def _started(coordinator: FakeCoordinator) -> bool:
    while not coordinator.progress.empty():
        if coordinator.progress.get_nowait().get("partial_output") == "started":
            return True
    return False


async def test_a_second_sigterm_leaves_at_once(coordinator):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from harness import env_with_src

    script = Path(__file__).with_name("held_worker.py")
    process = subprocess.Popen([sys.executable, str(script), coordinator.url], env=env_with_src())
    try:
        announce = await next_of(coordinator.announces, what="the worker process's announcement")
        agent_id = coordinator.agents[announce["name"]]["agent"]
        await coordinator.publish_attempt(coordinator.attempt(agent_id, task="T5"))
        await wait_until(lambda: _started(coordinator), what="the attempt's partial output")
        process.send_signal(signal.SIGTERM)
        assert (await next_of(coordinator.leaves, what="the first leave"))["mode"] == "drain"
        process.send_signal(signal.SIGTERM)
        assert (await next_of(coordinator.leaves, what="the second leave"))["mode"] == "now"
        code = await asyncio.get_running_loop().run_in_executor(None, process.wait, 15)
        assert code == 0
        # The abandoned attempt was neither reported nor acknowledged: it runs again elsewhere.
        assert await coordinator.stream_messages("RESULTS") == 0
        assert await coordinator.stream_messages("ATTEMPTS") == 1
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_credentials_come_from_the_environment_and_are_never_logged(monkeypatch, caplog):
    import logging

    from harness import NatsServer

    secret = "s3cret-token-0451"
    server = NatsServer("--auth", secret)
    coordinator = None
    worker = None
    serving = None
    try:
        coordinator = await FakeCoordinator(server.url, token=secret).start()
        monkeypatch.setenv("NATS_TOKEN", secret)
        caplog.set_level(logging.DEBUG)
        worker = Worker(nats_url=server.url)

        @worker.agent(capability="auth", name="auth")
        async def auth(task, ctx: Context):
            return "in"

        serving = asyncio.ensure_future(worker.serve())
        announce = await next_of(coordinator.announces, what="the announcement over an authenticated connection")
        await coordinator.publish_attempt(coordinator.attempt(coordinator.agents[announce["name"]]["agent"]))
        assert (await coordinator.next_result())["outcome"]["output"] == "in"
        assert caplog.text, "the worker logged nothing: the check below would prove nothing"
        assert secret not in caplog.text
        assert coordinator.invalid == []
    finally:
        if worker is not None and serving is not None:
            worker.stop(drain=False)
            await asyncio.wait_for(asyncio.gather(serving, return_exceptions=True), 10)
        if coordinator is not None:
            await coordinator.stop()
        server.stop()


async def test_a_long_attempt_keeps_its_lease_with_progress_every_third_of_it(nats_server):
    # A 600 ms lease: without the in-progress acknowledgements JetStream would deliver the
    # attempt again while it runs (seen as a duplicate).
    coordinator = await FakeCoordinator(nats_server.url, lease_ms=600).start()
    worker = Worker(nats_url=nats_server.url)
    release = asyncio.Event()
    serving = None
    try:
        @worker.agent(capability="long", name="long", concurrency=2)  # a free slot pulls a redelivery
        async def long(task, ctx: Context):
            await release.wait()  # no report of its own
            return "kept"

        serving = asyncio.ensure_future(worker.serve())
        announce = await next_of(coordinator.announces, what="the announcement")
        await coordinator.publish_attempt(coordinator.attempt(coordinator.agents[announce["name"]]["agent"], idle_timeout_ms=None))
        seqs = [(await next_of(coordinator.progress, what=f"progress {i + 1}"))["seq"] for i in range(7)]
        assert seqs == [1, 2, 3, 4, 5, 6, 7]  # seven reports: more than two leases went by
        release.set()
        assert (await coordinator.next_result())["outcome"]["output"] == "kept"
        assert worker.stats["long"].get("duplicates", 0) == 0
        assert worker.stats["long"]["attempts"] == 1
        assert coordinator.invalid == []
    finally:
        if serving is not None:
            worker.stop(drain=False)
            await asyncio.wait_for(asyncio.gather(serving, return_exceptions=True), 10)
        await coordinator.stop()


async def test_health_goes_out_with_the_heartbeats(coordinator, start):
    worker = make_worker(coordinator)

    @worker.agent(capability="h", name="h")
    async def h(task, ctx: Context):
        return None

    await start(worker)
    worker.set_health("degraded", "the model server answered 503 three times in a row")
    drain_queue(coordinator.heartbeats)
    await next_of(coordinator.heartbeats, what="a heartbeat")
    heartbeat = await next_of(coordinator.heartbeats, what="a heartbeat after the change")
    assert heartbeat["health"] == "degraded"
    assert heartbeat["reason"] == "the model server answered 503 three times in a row"
    with pytest.raises(ValueError):
        worker.set_health("sick")
