"""A worker process that hosts agents for a swarm over NATS JetStream, doing exactly the
worker's part of protocol/REMOTE.md.

For each agent: announce it (again and again until a coordinator answers), heartbeat it every
`heartbeat_interval_ms` and follow the answer, pull attempts from the consumer the
announcement named with at most `concurrency` in flight, report progress on core NATS with an
in-progress acknowledgement each time (at once, on every report, and at least every third of
the lease), stop an attempt past its idle or hard timeout, publish its result with JetStream
(`Nats-Msg-Id` = the idempotency key), wait for the publish to be stored, and only then
acknowledge the attempt. A delivery of an attempt that runs or recently finished here is not
run again. Everything it holds is bounded: running attempts by `concurrency`, remembered
results by count and bytes, streamed text by the protocol's 1 MiB.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import inspect
import json
import logging
import os
import re
import signal
import socket
import ssl
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Set

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from .context import Context, SyncContext
from .protocol import (
    FAILURE_MESSAGE_BYTES_MAX,
    PROTOCOL_VERSION,
    REASON_BYTES_MAX,
    TEXT_BYTES_MAX,
    TEXT_DELTA_BYTES_MAX,
    Failure,
    ProtocolError,
    Refused,
    Spawned,
    Task,
    clip,
    encode,
    major,
    usage_of,
)

log = logging.getLogger("swarm_worker")

#: The most attempts one fetch asks for.
FETCH_BATCH_MAX = 256
#: How long one fetch waits for attempts before asking again (seconds).
FETCH_WAIT_S = 1.0
#: How many finished attempts' results are kept to answer a redelivery.
FINISHED_KEPT_MAX = 10_000
#: How many bytes of finished attempts' results are kept to answer a redelivery.
FINISHED_KEPT_BYTES_MAX = 64 * 1024 * 1024
#: The longest wait between two tries of the same thing (announce, result publish), seconds.
RETRY_DELAY_MAX_S = 5.0

_UNSET: Any = Failure._UNSET
_NAME_CHARS = re.compile(r"[^\x21-\x7e]")
_CAPABILITY = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")


@dataclass
class AgentSpec:
    """An agent as its decorator declared it."""

    fn: Callable[..., Any]
    name: str
    capabilities: List[str]
    concurrency: int
    description: Optional[str]
    labels: Dict[str, str]
    cost_hint: Optional[float]
    is_async: bool
    takes_context: bool


def agent(
    capability: Optional[str] = None,
    *,
    capabilities: Optional[List[str]] = None,
    concurrency: int = 1,
    name: Optional[str] = None,
    description: Optional[str] = None,
    labels: Optional[Mapping[str, str]] = None,
    cost_hint: Optional[float] = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Marks a function as an agent, to be given to `Worker.add` (or use `Worker.agent`).

    The function is `fn(task)` or `fn(task, ctx)`, `async def` or plain `def` (run in a
    thread, with a `SyncContext`). It returns the output (any JSON value), or `ctx.spawn(...)`
    to add follow-up tasks, or raises `Failure`; any other exception fails the attempt as
    `transient`. `name` must be unique in the swarm; it defaults to `{function}@{host}`, the
    same after a restart, so a restarted worker replaces its predecessor at once.
    """

    caps = list(capabilities or []) + ([capability] if capability else [])
    if not caps:
        raise ValueError("an agent needs a capability")
    if len(caps) > 64 or len(set(caps)) != len(caps):
        raise ValueError("an agent has 1 to 64 capabilities, without duplicates")
    for cap in caps:
        if not _CAPABILITY.match(cap):
            raise ValueError(f"capability {cap!r}: 1 to 64 letters, digits and _ - . : /")
    if not 1 <= concurrency <= 4096:
        raise ValueError("concurrency must be between 1 and 4096")
    if description is not None and len(description.encode()) > 1024:
        raise ValueError("description is at most 1024 bytes")
    if labels is not None and len(labels) > 32:
        raise ValueError("at most 32 labels")

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if not params:
            raise TypeError(f"agent {fn.__name__} must take the task: def {fn.__name__}(task, ctx)")
        agent_name = name or f"{fn.__name__}@{_host()}"
        if _NAME_CHARS.search(agent_name) or not 1 <= len(agent_name) <= 128:
            raise ValueError(f"agent name {agent_name!r}: 1 to 128 printable ASCII characters, no spaces")
        fn.__swarm_agent__ = AgentSpec(  # type: ignore[attr-defined]
            fn=fn,
            name=agent_name,
            capabilities=caps,
            concurrency=concurrency,
            description=description,
            labels=dict(labels or {}),
            cost_hint=cost_hint,
            is_async=inspect.iscoroutinefunction(fn),
            takes_context=len(params) >= 2,
        )
        return fn

    return mark


def _host() -> str:
    host = _NAME_CHARS.sub("-", socket.gethostname())[:255]
    return host or "localhost"


def _redact(url: str) -> str:
    """`url` without its user information (credentials are never logged)."""
    return re.sub(r"//[^@/]*@", "//***@", url)


class Worker:
    """Hosts agents for a swarm: connects to the NATS server its coordinator uses, announces
    each agent, runs the attempts it is given, and drains on SIGTERM or SIGINT.

    Credentials: `token`, `user` + `password`, `creds_file` or `nkeys_seed` (files need
    `pip install swarm-worker[nkeys]`), each read from `NATS_TOKEN`, `NATS_USER`,
    `NATS_PASSWORD`, `NATS_CREDS`, `NATS_NKEY_SEED` when not given; `tls` is an
    `ssl.SSLContext` (a `tls://` URL gets the default one). They are never logged.
    `connect_options` are passed on to `nats.connect` as they are.
    """

    def __init__(
        self,
        nats_url: Optional[str] = None,
        prefix: Optional[str] = None,
        *,
        token: Optional[str] = None,
        user: Optional[str] = None,
        password: Optional[str] = None,
        creds_file: Optional[str] = None,
        nkeys_seed: Optional[str] = None,
        tls: Optional[ssl.SSLContext] = None,
        host: Optional[str] = None,
        announce_timeout: float = 5.0,
        connect_options: Optional[Mapping[str, Any]] = None,
    ) -> None:
        env = os.environ
        self.nats_url = nats_url or env.get("NATS_URL") or "nats://127.0.0.1:4222"
        self.prefix = prefix or env.get("SWARM_NATS_PREFIX") or "swarm"
        self.host = host or _host()
        self.announce_timeout = announce_timeout
        self._options: Dict[str, Any] = {}
        for key, value, var in (
            ("token", token, "NATS_TOKEN"),
            ("user", user, "NATS_USER"),
            ("password", password, "NATS_PASSWORD"),
            ("user_credentials", creds_file, "NATS_CREDS"),
            ("nkeys_seed", nkeys_seed, "NATS_NKEY_SEED"),
        ):
            chosen = value if value is not None else env.get(var)
            if chosen:
                self._options[key] = chosen
        if tls is not None:
            self._options["tls"] = tls
        elif self.nats_url.startswith("tls://"):
            self._options["tls"] = ssl.create_default_context()
        self._options.update(connect_options or {})
        self._specs: List[AgentSpec] = []
        self._hosts: List[_AgentHost] = []
        self._stopping: Optional[str] = None
        self._stopped_hard = False
        self._signals = 0
        self._closing = False
        self._health: Dict[str, Any] = {}
        self.nc: Optional[NATS] = None

    def agent(self, capability: Optional[str] = None, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """`@worker.agent(capability="summarize", concurrency=4)`: declares and adds an agent
        (the arguments are those of `agent`)."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.add(agent(capability, **kwargs)(fn))
            return fn

        return register

    def add(self, fn: Callable[..., Any]) -> None:
        """Adds a function marked with `@agent(...)`."""
        spec = getattr(fn, "__swarm_agent__", None)
        if not isinstance(spec, AgentSpec):
            raise TypeError(f"{fn!r} is not an agent: decorate it with @agent(capability=...)")
        if any(s.name == spec.name for s in self._specs):
            raise ValueError(f"two agents are named {spec.name!r}: give one another name=")
        self._specs.append(spec)

    def run(self) -> None:
        """Runs the worker until its agents have drained: the first SIGTERM or SIGINT drains
        (no new attempts, running ones finish and report, `leave` of mode `drain`), a second
        one leaves at once. Exits the process with the coordinator's message if it refuses an
        agent."""
        try:
            asyncio.run(self._run_with_signals())
        except (Refused, ProtocolError) as e:
            raise SystemExit(f"swarm worker: {e}") from None

    async def _run_with_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except NotImplementedError:  # Windows: Ctrl-C ends the process as usual
                pass
        await self.serve()

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("%s: draining (a second signal leaves at once)", sig.name)
            self.stop(drain=True, reason=sig.name)
        else:
            log.info("%s again: leaving at once", sig.name)
            self.stop(drain=False, reason=sig.name)

    def stop(self, drain: bool = True, reason: str = "stopped") -> None:
        """Asks the worker to stop (call it on the worker's event loop): drained, or at once
        (running attempts are abandoned and run again elsewhere)."""
        if self._stopping is None:
            self._stopping = reason
        if not drain:
            self._stopped_hard = True
        for host in self._hosts:
            host.stop(drain, reason)

    async def serve(self) -> None:
        """Runs the worker on the current event loop until every agent has drained or the
        worker is stopped. Raises `Refused` when the coordinator refuses an agent."""
        if not self._specs:
            raise ValueError("the worker has no agents: add one with @worker.agent(...)")
        self.nc = await self._connect()
        js = self.nc.jetstream()
        self._hosts = [_AgentHost(self, spec, self.nc, js) for spec in self._specs]
        for host in self._hosts:
            host.health, host.health_reason = self._health.get(host.spec.name, ("up", None))
        if self._stopping is not None:
            for host in self._hosts:
                host.stop(not self._stopped_hard, self._stopping)
        tasks = [asyncio.ensure_future(h.serve()) for h in self._hosts]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                if t.exception() is not None:
                    self.stop(drain=False, reason=f"another agent stopped: {t.exception()}")
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise t.exception()  # type: ignore[misc]
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Results were stored and leaves flushed before this: nothing is left to drain.
            self._closing = True
            await self.nc.close()

    async def _connect(self) -> NATS:
        async def error_cb(e: Exception) -> None:
            log.warning("NATS: %s", e)

        async def disconnected_cb() -> None:
            if not self._closing:
                log.warning("NATS: disconnected from %s", _redact(self.nats_url))

        async def reconnected_cb() -> None:
            log.info("NATS: reconnected")

        delay = 0.25
        while True:
            try:
                return await nats.connect(
                    servers=[self.nats_url],
                    name=f"swarm-worker {self.host} {os.getpid()}",
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    error_cb=error_cb,
                    disconnected_cb=disconnected_cb,
                    reconnected_cb=reconnected_cb,
                    **self._options,
                )
            except (OSError, nats.errors.Error, asyncio.TimeoutError) as e:
                if self._stopping is not None:
                    raise
                log.warning("cannot connect to NATS at %s (%s); trying again", _redact(self.nats_url), type(e).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_DELAY_MAX_S)

    def set_health(self, health: str, reason: Optional[str] = None, agent: Optional[str] = None) -> None:
        """Says how the agents (or the one named `agent`) are, from the next heartbeat on:
        `up`, `degraded` (working, but failing or throttled: given work only when no agent
        that is up has room) or `down` (given no work, e.g. its API key was refused), with a
        `reason` when not up."""
        if health not in ("up", "degraded", "down"):
            raise ValueError("health is up, degraded or down")
        names = {s.name for s in self._specs}
        if agent is not None and agent not in names:
            raise ValueError(f"no agent is named {agent!r}")
        for spec in self._specs:
            if agent is None or spec.name == agent:
                self._health[spec.name] = (health, None if health == "up" else clip(reason or health, REASON_BYTES_MAX))
        for host in self._hosts:
            host.health, host.health_reason = self._health.get(host.spec.name, ("up", None))

    @property
    def stats(self) -> Dict[str, Dict[str, int]]:
        """Counters per agent name: attempts run, duplicates not run again, results
        published."""
        return {h.spec.name: dict(h.stats) for h in self._hosts}


class _AgentHost:
    """One announced agent: its announcement, heartbeats, pulls and running attempts."""

    def __init__(self, worker: Worker, spec: AgentSpec, nc: NATS, js: Any) -> None:
        self.worker = worker
        self.spec = spec
        self.nc = nc
        self.js = js
        self.prefix = worker.prefix
        self.session = str(uuid.uuid4())
        self.agent_id: Optional[str] = None
        self.heartbeat_s = 2.0
        self.lease_s = 30.0
        self.sub: Any = None
        self.running: Dict[str, _Run] = {}
        self.finished: "collections.OrderedDict[str, bytes]" = collections.OrderedDict()
        self.finished_bytes = 0
        self.held = 0  # attempt messages fetched and not yet acknowledged
        self.slot_freed = asyncio.Event()
        self.stopping = asyncio.Event()
        self.drain_leave_first = True
        self.drain_reason = ""
        self.hard_stop = False
        self.heartbeats_done = False
        self.health = "up"
        self.health_reason: Optional[str] = None
        self.handlers: Set[asyncio.Task[None]] = set()
        # The fetch under way: cancelled when the agent leaves at once, left to end when it
        # drains (what it brings is run).
        self.fetching: Optional[asyncio.Future[List[Msg]]] = None
        self.executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        if not spec.is_async:
            self.executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=spec.concurrency, thread_name_prefix=f"swarm-{spec.fn.__name__}"
            )
        self.stats: "collections.Counter[str]" = collections.Counter()

    def stop(self, drain: bool, reason: str, leave_first: bool = True) -> None:
        if not self.stopping.is_set():
            self.drain_reason = reason
            self.drain_leave_first = leave_first
            self.stopping.set()
            self.slot_freed.set()
        if not drain and not self.hard_stop:
            self.hard_stop = True
            for handler in list(self.handlers):
                handler.cancel()
            if self.fetching is not None:
                self.fetching.cancel()

    async def serve(self) -> None:
        try:
            if not await self.announce():
                return
            heartbeats = asyncio.ensure_future(self.heartbeat_loop())
            try:
                await self.fetch_loop()
                if self.hard_stop:
                    await self.leave("now")
                    return
                if self.drain_leave_first:
                    await self.leave("drain")
                if self.handlers:
                    await asyncio.wait(set(self.handlers))
                if self.hard_stop:
                    await self.leave("now")
                    return
                if not self.drain_leave_first:
                    await self.leave("drain")
            finally:
                # The flag as well as the cancellation: Python 3.11's wait_for (in nats-py's
                # request) can swallow a cancellation that meets a reply.
                self.heartbeats_done = True
                heartbeats.cancel()
                await asyncio.gather(heartbeats, return_exceptions=True)
                if self.sub is not None:
                    try:
                        await self.sub.unsubscribe()
                    except Exception:
                        pass
        finally:
            if self.executor is not None:
                self.executor.shutdown(wait=False, cancel_futures=True)

    async def announce(self) -> bool:
        """Announces the agent until a coordinator answers; False when stopped meanwhile."""
        spec = self.spec
        message: Dict[str, Any] = {
            "protocol_version": PROTOCOL_VERSION,
            "name": spec.name,
            "session": self.session,
            "capabilities": spec.capabilities,
            "max_concurrency": spec.concurrency,
            "host": self.worker.host,
        }
        if spec.description:
            message["description"] = spec.description
        if spec.labels:
            message["labels"] = spec.labels
        if spec.cost_hint is not None:
            message["cost_hint"] = spec.cost_hint
        data = encode(message)
        subject = f"{self.prefix}.agents.announce"
        delay = 0.1
        waited_logged = False
        while not self.stopping.is_set():
            try:
                reply = await self.nc.request(subject, data, timeout=self.worker.announce_timeout)
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError, asyncio.TimeoutError):
                if not waited_logged:
                    log.info("%s: no coordinator answers on %s yet; announcing again until one does", spec.name, subject)
                    waited_logged = True
                await self._pause(delay)
                delay = min(delay * 2, RETRY_DELAY_MAX_S)
                continue
            except nats.errors.ConnectionClosedError:
                return False
            await self._accept(reply.data)
            return True
        return False

    async def _accept(self, data: bytes) -> None:
        try:
            reply = _json_object(data)
            status = reply.get("status")
            if status == "refused":
                raise Refused(f"the coordinator refused agent {self.spec.name}: {reply.get('message', '(no message)')}")
            if status != "accepted":
                raise ProtocolError(f"the coordinator's answer to an announcement has status {status!r}")
            theirs = reply.get("protocol_version")
            if major(theirs) != major(PROTOCOL_VERSION):
                raise ProtocolError(
                    f"the coordinator speaks protocol {theirs} and this worker speaks protocol "
                    f"{PROTOCOL_VERSION}: their major versions differ; use a worker made for protocol {theirs}"
                )
            agent_id = str(reply["agent"])
            heartbeat_s = int(reply["heartbeat_interval_ms"]) / 1000
            lease_s = int(reply["lease_ms"]) / 1000
            subject = str(reply["attempts_subject"])
            consumer = str(reply["attempts_consumer"])
        except (KeyError, ValueError, TypeError) as e:
            raise ProtocolError(f"the coordinator's answer to an announcement is not the protocol's: {e!r}") from None
        if heartbeat_s <= 0 or lease_s <= 0:
            raise ProtocolError("the coordinator's heartbeat interval and lease must be above 0")
        stream = await self.js.find_stream_name_by_subject(subject)
        sub = await self.js.pull_subscribe_bind(durable=consumer, stream=stream)
        old, self.sub = self.sub, sub
        self.agent_id, self.heartbeat_s, self.lease_s = agent_id, heartbeat_s, lease_s
        log.info("%s: announced as %s (pulling %s)", self.spec.name, agent_id, consumer)
        if old is not None:
            try:
                await old.unsubscribe()
            except Exception:
                pass

    async def _pause(self, seconds: float) -> None:
        """Waits `seconds`, or less if the agent is stopped meanwhile."""
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def heartbeat_loop(self) -> None:
        subject = f"{self.prefix}.agents.heartbeat"
        while not self.heartbeats_done:
            await asyncio.sleep(self.heartbeat_s)
            message: Dict[str, Any] = {
                "agent": self.agent_id,
                "session": self.session,
                "in_flight": len(self.running),
                "health": self.health,
            }
            if self.health_reason is not None:
                message["reason"] = self.health_reason
            try:
                reply = await self.nc.request(subject, encode(message), timeout=max(self.heartbeat_s, 0.5))
                directive = _json_object(reply.data).get("directive")
            except (nats.errors.Error, asyncio.TimeoutError, ValueError) as e:
                log.debug("%s: heartbeat unanswered (%s); sending the next one at the next interval", self.spec.name, type(e).__name__)
                continue
            if directive == "drain" and not self.stopping.is_set():
                log.info("%s: the coordinator drains it", self.spec.name)
                self.stop(drain=True, reason="drained by the coordinator", leave_first=False)
            elif directive == "announce" and not self.stopping.is_set():
                log.info("%s: the coordinator does not know it; announcing again", self.spec.name)
                try:
                    await self.announce()
                except (Refused, ProtocolError) as e:
                    log.error("%s: %s", self.spec.name, e)
                    self.stop(drain=True, reason=str(e), leave_first=False)

    async def leave(self, mode: str) -> None:
        message = {"agent": self.agent_id, "session": self.session, "mode": mode}
        if self.drain_reason:
            message["reason"] = clip(self.drain_reason, REASON_BYTES_MAX)
        try:
            await self.nc.publish(f"{self.prefix}.agents.leave", encode(message))
            await self.nc.flush(timeout=2)
        except (nats.errors.Error, asyncio.TimeoutError) as e:
            log.warning("%s: could not send leave (%s)", self.spec.name, type(e).__name__)

    async def fetch_loop(self) -> None:
        concurrency = self.spec.concurrency
        while not self.stopping.is_set():
            free = concurrency - self.held
            if free <= 0:
                self.slot_freed.clear()
                if concurrency - self.held <= 0 and not self.stopping.is_set():
                    await self.slot_freed.wait()
                continue
            sub = self.sub
            self.fetching = asyncio.ensure_future(sub.fetch(batch=min(free, FETCH_BATCH_MAX), timeout=FETCH_WAIT_S))
            try:
                msgs = await self.fetching
            except (asyncio.TimeoutError, nats.errors.TimeoutError):
                continue
            except asyncio.CancelledError:
                if self.hard_stop:
                    return
                raise
            except nats.errors.ConnectionClosedError:
                return
            except (nats.errors.Error, nats.js.errors.Error) as e:
                log.warning("%s: fetching attempts failed (%s); trying again", self.spec.name, e)
                await self._pause(1.0)
                continue
            for msg in msgs:
                self.held += 1
                handler = asyncio.ensure_future(self.handle(msg))
                self.handlers.add(handler)
                handler.add_done_callback(self.handlers.discard)

    def release(self, count: int = 1) -> None:
        self.held -= count
        self.slot_freed.set()

    async def handle(self, msg: Msg) -> None:
        """One delivered attempt message, from its delivery to its acknowledgement; an error
        is logged (the attempt, unacknowledged, is delivered again after its lease)."""
        try:
            await self._handle(msg)
        except nats.errors.ConnectionClosedError:
            log.warning("%s: the connection closed before an attempt was reported", self.spec.name)
        except Exception:
            log.exception("%s: an attempt could not be handled", self.spec.name)

    async def _handle(self, msg: Msg) -> None:
        try:
            task = Task.from_message(msg.data)
        except ProtocolError as e:
            log.error("%s: an attempt message that is not the protocol's was dropped: %s", self.spec.name, e)
            await _quietly(msg.term())
            self.release()
            return
        key = task.idempotency_key
        running = self.running.get(key)
        if running is not None:
            # The same attempt delivered again while it runs: it is acknowledged with the run.
            self.stats["duplicates"] += 1
            running.msgs.append(msg)
            return
        kept = self.finished.get(key)
        if kept is not None:
            self.stats["duplicates"] += 1
            self.finished.move_to_end(key)
            try:
                await self.store_result(key, kept)
                await _quietly(msg.ack())
            finally:
                self.release()
            return
        run = _Run(self, task, msg)
        self.running[key] = run
        try:
            result = await run.execute()
            await self.store_result(key, result)
            self.remember(key, result)
            del self.running[key]
            for m in run.msgs:
                await _quietly(m.ack())
        finally:
            self.running.pop(key, None)
            run.close()
            self.release(len(run.msgs))

    def remember(self, key: str, result: bytes) -> None:
        self.finished[key] = result
        self.finished_bytes += len(result)
        while len(self.finished) > FINISHED_KEPT_MAX or self.finished_bytes > FINISHED_KEPT_BYTES_MAX:
            _, old = self.finished.popitem(last=False)
            self.finished_bytes -= len(old)

    async def store_result(self, key: str, result: bytes) -> None:
        """Publishes a result until JetStream has stored it (never gives up while the worker
        drains: an attempt is acknowledged only after its result is stored)."""
        subject = f"{self.prefix}.results"
        delay = 0.1
        while True:
            try:
                await self.js.publish(subject, result, headers={"Nats-Msg-Id": key}, timeout=5)
                self.stats["results"] += 1
                return
            except nats.errors.ConnectionClosedError:
                raise
            except (nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError) as e:
                if self.hard_stop:
                    raise asyncio.CancelledError from e
                log.warning("%s: publishing the result of %s failed (%s); trying again", self.spec.name, key, type(e).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_DELAY_MAX_S)


class _Run:
    """One running attempt: its reports, timers and outcome."""

    def __init__(self, host: _AgentHost, task: Task, msg: Msg) -> None:
        self.host = host
        self.task = task
        self.msgs: List[Msg] = [msg]
        self.loop = asyncio.get_running_loop()
        self.subject = f"{host.prefix}.progress.{task.id}.{task.attempt}"
        self.seq = 0
        self.partial: Any = _UNSET
        self.text_parts: List[str] = []
        self.text_bytes = 0
        self.usage: Optional[Dict[str, Any]] = None
        self.started = self.loop.time()
        self.last_activity = self.started
        self.last_sent = self.started
        self.expired: Optional[str] = None
        self.closed = False
        # The task the agent runs in (the handler's), cancelled by a timeout while `calling`.
        self.work: Optional[asyncio.Future[Any]] = None
        self.calling = False
        self.timer: Optional[asyncio.TimerHandle] = None
        self.sends: Set[asyncio.Task[None]] = set()

    async def report(self, partial: Any = _UNSET, text: Optional[str] = None, usage: Optional[Mapping[str, Any]] = None, activity: bool = True) -> None:
        """Sends one progress message (and an in-progress acknowledgement)."""
        if self.closed:
            return
        if text is not None:
            if not isinstance(text, str):
                raise TypeError("streamed text must be a str")
            if text == "":
                return
            raw = text.encode()
            if self.text_bytes + len(raw) > TEXT_BYTES_MAX:
                raise ValueError("an attempt streams at most 1 MiB of text")
            if len(raw) > TEXT_DELTA_BYTES_MAX:
                # Deltas are at most 64 KiB: 16,384 characters are at most 64 KiB of UTF-8.
                for i in range(0, len(text), TEXT_DELTA_BYTES_MAX // 4):
                    await self.report(text=text[i : i + TEXT_DELTA_BYTES_MAX // 4], usage=usage)
                return
        message: Dict[str, Any] = {"attempt": self.task.identity, "agent": self.task.agent, "seq": self.seq + 1}
        if partial is not _UNSET:
            message["partial_output"] = partial
        if text is not None:
            message["text"] = {"offset": self.text_bytes, "delta": text}
        if usage is not None:
            message["usage"] = usage_of(usage)
        data = encode(message)
        self.seq += 1
        if partial is not _UNSET:
            self.partial = partial
        if text is not None:
            self.text_parts.append(text)
            self.text_bytes += len(text.encode())
        if usage is not None:
            self.usage = message["usage"]
        now = self.loop.time()
        if activity:
            self.last_activity = now
        self.last_sent = now
        try:
            await self.host.nc.publish(self.subject, data)
            await self.msgs[-1].in_progress()
        except nats.errors.Error as e:
            # Progress is worth nothing once late; the next report makes up for a lost one.
            log.debug("progress of %s not sent: %s", self.task.idempotency_key, type(e).__name__)

    def _schedule(self) -> None:
        """Sets the attempt's one timer to the first of: the next keepalive, its idle timeout,
        its hard timeout."""
        due = self.last_sent + self.host.lease_s / 3
        if self.task.idle_timeout_ms is not None:
            due = min(due, self.last_activity + self.task.idle_timeout_ms / 1000)
        if self.task.hard_timeout_ms is not None:
            due = min(due, self.started + self.task.hard_timeout_ms / 1000)
        self.timer = self.loop.call_at(due, self._tick)

    def _tick(self) -> None:
        if self.closed:
            return
        now = self.loop.time()
        if self.task.hard_timeout_ms is not None and now >= self.started + self.task.hard_timeout_ms / 1000:
            self._expire("hard")
            return
        if self.task.idle_timeout_ms is not None and now >= self.last_activity + self.task.idle_timeout_ms / 1000:
            self._expire("idle")
            return
        interval = self.host.lease_s / 3
        if now - self.last_sent >= interval * 0.9:
            self.last_sent = now
            send = self.loop.create_task(self.report(activity=False))
            self.sends.add(send)
            send.add_done_callback(self.sends.discard)
        self._schedule()

    def _expire(self, why: str) -> None:
        if self.calling and self.work is not None:
            self.expired = why
            self.work.cancel()

    async def _call(self) -> Any:
        spec = self.host.spec
        ctx = Context(self)
        if spec.is_async:
            if spec.takes_context:
                return await spec.fn(self.task, ctx)
            return await spec.fn(self.task)
        args = (self.task, SyncContext(ctx, self.loop)) if spec.takes_context else (self.task,)
        return await self.loop.run_in_executor(self.host.executor, functools.partial(spec.fn, *args))

    async def execute(self) -> bytes:
        """Runs the attempt to its end, in the calling task, and returns its encoded
        `result`. A timeout cancels the agent (the task catches that cancellation); any other
        cancellation of the task goes on up."""
        self.host.stats["attempts"] += 1
        start = time.monotonic()
        await self.report()  # seq 1: the attempt started
        self.work = asyncio.current_task()
        self._schedule()
        value: Any = None
        error: Optional[BaseException] = None
        self.calling = True
        try:
            value = await self._call()
        except asyncio.CancelledError as e:
            if self.expired is None or self.host.hard_stop:
                raise
            uncancel = getattr(self.work, "uncancel", None)
            if uncancel is not None:
                uncancel()
            error = e
        except Exception as e:
            error = e
        finally:
            self.calling = False
            self.close()
        outcome = self._outcome(value, error)
        result = {
            "attempt": self.task.identity,
            "agent": self.task.agent,
            "outcome": outcome,
            "duration_ms": int((time.monotonic() - start) * 1000),
        }
        try:
            return encode(result)
        except (ValueError, TypeError) as e:
            result["outcome"] = self._failed("invalid_output", f"the agent's output cannot be sent: {e}", partial=_UNSET)
            return encode(result)

    def _outcome(self, value: Any, error: Optional[BaseException]) -> Dict[str, Any]:
        if isinstance(error, asyncio.CancelledError):
            if self.expired == "idle":
                return self._failed("timeout", f"no progress for {self.task.idle_timeout_ms} ms (the task's idle timeout)")
            return self._failed("timeout", f"ran past the task's hard timeout of {self.task.hard_timeout_ms} ms")
        if isinstance(error, Failure):
            outcome = self._failed(error.kind, error.message, partial=error.partial_output)
            if error.retry_after is not None:
                outcome["retry_after_ms"] = int(error.retry_after * 1000)
            if error.usage is not None:
                outcome["usage"] = usage_of(error.usage)
            return outcome
        if error is not None:
            log.warning("%s: attempt %s raised", self.host.spec.name, self.task.idempotency_key, exc_info=error)
            return self._failed("transient", f"{type(error).__name__}: {error}")
        if isinstance(value, Spawned):
            outcome = {"status": "spawned", "output": value.output, "tasks": [dict(t) for t in value.tasks]}
        else:
            outcome = {"status": "succeeded", "output": value}
        if self.usage is not None:
            outcome["usage"] = self.usage
        try:
            encode(outcome)
        except (ValueError, TypeError) as e:
            return self._failed("invalid_output", f"the agent's output cannot be sent: {e}", partial=_UNSET)
        return outcome

    def _failed(self, kind: str, message: str, partial: Any = _UNSET) -> Dict[str, Any]:
        outcome: Dict[str, Any] = {"status": "failed", "kind": kind, "message": clip(message, FAILURE_MESSAGE_BYTES_MAX)}
        if partial is _UNSET:
            partial = self.partial if self.partial is not _UNSET else ("".join(self.text_parts) if self.text_parts else _UNSET)
        if partial is not _UNSET:
            outcome["partial_output"] = partial
        if self.usage is not None:
            outcome["usage"] = self.usage
        return outcome

    def close(self) -> None:
        """Stops the attempt's timers; later reports are dropped."""
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _json_object(data: bytes) -> Dict[str, Any]:
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


async def _quietly(awaitable: Any) -> None:
    """Awaits an acknowledgement; one that cannot be sent is logged, the server redelivers."""
    try:
        await awaitable
    except nats.errors.Error as e:
        log.warning("an acknowledgement could not be sent: %s", type(e).__name__)
