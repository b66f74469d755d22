"""A real nats-server and a small fake coordinator, for the tests and the throughput bench.

The fake coordinator does the coordinator's part of protocol/REMOTE.md that a worker sees:
it creates the streams, answers announcements (creating each agent's durable pull consumer)
and heartbeats, publishes attempts, and reads results, progress and leaves. Every message the
worker sends is checked against the protocol's JSON Schemas; a message that does not match is
recorded in `invalid` (the tests assert it stays empty).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[3]
SCHEMAS = REPO / "protocol" / "schema" / "remote"
EXAMPLES = SCHEMAS / "examples"


class NatsServer:
    """A nats-server with JetStream on a random loopback port and a temporary store."""

    def __init__(self, *args: str) -> None:
        binary = shutil.which("nats-server")
        if binary is None:
            raise RuntimeError(
                "nats-server is not on PATH: the swarm-worker tests need a real one "
                "(Debian: apt-get install nats-server; scripts/test.sh installs it)"
            )
        self.store = tempfile.mkdtemp(prefix="swarm-worker-nats-")
        self.process = subprocess.Popen(
            [binary, "-js", "-a", "127.0.0.1", "-p", "-1", "-sd", self.store, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.log: List[str] = []

        def read() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                self.log.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        port = None
        deadline = time.monotonic() + 15
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                line = None
            if line is None:
                self.stop()
                raise RuntimeError("nats-server did not become ready:\n" + "".join(self.log))
            found = re.search(r"Listening for client connections on 127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
            if "Server is ready" in line and port is not None:
                break
        self.url = f"nats://127.0.0.1:{port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        shutil.rmtree(self.store, ignore_errors=True)


def load_schema_validators() -> Dict[str, Any]:
    import jsonschema

    validators = {}
    for path in SCHEMAS.glob("*.json"):
        schema = json.loads(path.read_text())
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        validators[path.stem] = cls(schema, format_checker=cls.FORMAT_CHECKER)
    return validators


def example(name: str) -> Dict[str, Any]:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


class FakeCoordinator:
    """The coordinator's side of the protocol, as far as a worker sees it."""

    def __init__(
        self,
        url: str,
        prefix: str = "swarm",
        heartbeat_interval_ms: int = 200,
        lease_ms: int = 30_000,
        refuse: Optional[str] = None,
        validate: bool = True,
        listen_progress: bool = True,
        token: Optional[str] = None,
    ) -> None:
        self.url = url
        self.token = token
        self.prefix = prefix
        self.streams = prefix.upper().replace("-", "_")
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.lease_ms = lease_ms
        self.refuse = refuse
        self.validators = load_schema_validators() if validate else None
        self.invalid: List[str] = []
        self.announces: "asyncio.Queue[Dict[str, Any]]" = asyncio.Queue()
        self.heartbeats: "asyncio.Queue[Dict[str, Any]]" = asyncio.Queue()
        self.leaves: "asyncio.Queue[Dict[str, Any]]" = asyncio.Queue()
        self.progress: "asyncio.Queue[Dict[str, Any]]" = asyncio.Queue()
        self.directives: List[Dict[str, Any]] = []
        self.agents: Dict[str, Dict[str, Any]] = {}
        self.next_agent = 7
        self.listen_progress = listen_progress

    def check(self, kind: str, message: Dict[str, Any]) -> None:
        if self.validators is None:
            return
        errors = sorted(self.validators[kind].iter_errors(message), key=str)
        for e in errors:
            self.invalid.append(f"{kind}: {e.message} at {list(e.absolute_path)} in {message}")

    async def start(self) -> "FakeCoordinator":
        import nats
        from nats.js.api import RetentionPolicy, StorageType

        self.nc = await nats.connect(self.url, token=self.token)
        self.js = self.nc.jetstream()
        await self.js.add_stream(
            name=f"{self.streams}_ATTEMPTS",
            subjects=[f"{self.prefix}.attempts.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
        )
        await self.js.add_stream(
            name=f"{self.streams}_RESULTS",
            subjects=[f"{self.prefix}.results"],
            storage=StorageType.FILE,
        )
        self.results_sub = await self.js.pull_subscribe(
            f"{self.prefix}.results", durable="coordinator", stream=f"{self.streams}_RESULTS"
        )
        await self.nc.subscribe(f"{self.prefix}.agents.announce", cb=self._on_announce)
        await self.nc.subscribe(f"{self.prefix}.agents.heartbeat", cb=self._on_heartbeat)
        await self.nc.subscribe(f"{self.prefix}.agents.leave", cb=self._on_leave)
        if self.listen_progress:
            await self.nc.subscribe(f"{self.prefix}.progress.>", cb=self._on_progress)
        return self

    async def stop(self) -> None:
        await self.nc.close()

    async def _on_announce(self, msg: Any) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig

        announce = json.loads(msg.data)
        self.check("announce", announce)
        if self.refuse is not None:
            reply = {"status": "refused", "protocol_version": "1.0", "message": self.refuse}
        else:
            agent = f"A{self.next_agent}"
            self.next_agent += 1
            consumer = f"agent-{agent}"
            await self.js.add_consumer(
                f"{self.streams}_ATTEMPTS",
                ConsumerConfig(
                    durable_name=consumer,
                    filter_subject=f"{self.prefix}.attempts.{agent}",
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=self.lease_ms / 1000,
                    max_ack_pending=announce["max_concurrency"],
                ),
            )
            self.agents[announce["name"]] = {"agent": agent, "consumer": consumer, "announce": announce}
            reply = {
                "status": "accepted",
                "agent": agent,
                "protocol_version": "1.0",
                "heartbeat_interval_ms": self.heartbeat_interval_ms,
                "lease_ms": self.lease_ms,
                "attempts_subject": f"{self.prefix}.attempts.{agent}",
                "attempts_consumer": consumer,
                "a_field_of_a_later_minor_version": True,
            }
        await self.announces.put(announce)
        await msg.respond(json.dumps(reply).encode())

    async def _on_heartbeat(self, msg: Any) -> None:
        heartbeat = json.loads(msg.data)
        self.check("heartbeat", heartbeat)
        await self.heartbeats.put(heartbeat)
        reply = self.directives.pop(0) if self.directives else {"directive": "continue"}
        await msg.respond(json.dumps(reply).encode())

    async def _on_leave(self, msg: Any) -> None:
        leave = json.loads(msg.data)
        self.check("leave", leave)
        await self.leaves.put(leave)

    async def _on_progress(self, msg: Any) -> None:
        progress = json.loads(msg.data)
        self.check("progress", progress)
        progress["_subject"] = msg.subject
        await self.progress.put(progress)

    def attempt(self, agent: str, task: str = "T42", number: int = 1, **fields: Any) -> Dict[str, Any]:
        """An attempt like the protocol's example, for `agent`, with `fields` replaced."""
        attempt = copy.deepcopy(example("attempt"))
        objective = attempt["attempt"]["objective"]
        attempt["attempt"] = {"objective": objective, "task": task, "number": number}
        attempt["agent"] = agent
        attempt["idempotency_key"] = f"{objective}/{task}/{number}"
        attempt["a_field_of_a_later_minor_version"] = {"ignored": True}
        for key, value in fields.items():
            if value is None:
                attempt.pop(key, None)
            else:
                attempt[key] = value
        self.check("attempt", {k: v for k, v in attempt.items()})
        return attempt

    async def publish_attempt(self, attempt: Dict[str, Any]) -> None:
        await self.js.publish(f"{self.prefix}.attempts.{attempt['agent']}", json.dumps(attempt).encode())

    async def next_result(self, timeout: float = 10.0) -> Dict[str, Any]:
        """The next result in the results stream (checked against its schema), with its
        `Nats-Msg-Id` under `_msg_id`."""
        msgs = await self.results_sub.fetch(1, timeout=timeout)
        msg = msgs[0]
        await msg.ack()
        result = json.loads(msg.data)
        self.check("result", result)
        result["_msg_id"] = (msg.headers or {}).get("Nats-Msg-Id")
        return result

    async def stream_messages(self, name: str) -> int:
        info = await self.js.stream_info(f"{self.streams}_{name}")
        return info.state.messages


async def next_of(q: "asyncio.Queue[Any]", timeout: float = 10.0, what: str = "a message") -> Any:
    try:
        return await asyncio.wait_for(q.get(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"no {what} within {timeout} s") from None


async def wait_until(predicate: Any, timeout: float = 10.0, what: str = "the condition") -> None:
    """Waits for `predicate()` (maybe async) to hold, checking it as the event loop turns."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        await asyncio.sleep(0.01)


def env_with_src() -> Dict[str, str]:
    """The environment for a worker subprocess that imports this checkout's package."""
    env = dict(os.environ)
    src = str(REPO / "workers" / "python" / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env
