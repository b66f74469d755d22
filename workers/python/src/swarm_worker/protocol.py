"""The messages of swarm's remote-agent protocol (protocol/REMOTE.md), as this worker reads and
writes them.

Every message is one JSON object of at most 1 MiB. Fields this module does not know are
ignored when reading, so a coordinator of a newer minor version is understood.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

#: The protocol version this package speaks.
PROTOCOL_VERSION = "1.0"
#: The largest encoded message (NATS's default `max_payload`).
MESSAGE_BYTES_MAX = 1024 * 1024
#: The longest failure message, in bytes of UTF-8.
FAILURE_MESSAGE_BYTES_MAX = 8 * 1024
#: The longest `reason` of a heartbeat or a leave, in bytes of UTF-8.
REASON_BYTES_MAX = 1024
#: The longest streamed text delta, in bytes of UTF-8.
TEXT_DELTA_BYTES_MAX = 64 * 1024
#: The most text one attempt may stream, in bytes of UTF-8.
TEXT_BYTES_MAX = 1024 * 1024
#: The longest duration the protocol carries (one year), in milliseconds.
DURATION_MS_MAX = 31_622_400_000

FAILURE_KINDS = ("transient", "permanent", "timeout", "invalid_output", "declined")


class ProtocolError(Exception):
    """The coordinator answered something this worker cannot use (another major version, a
    reply that is not the protocol's)."""


class Refused(Exception):
    """The coordinator refused an announcement; the message says why."""


class Failure(Exception):
    """Raise from an agent to end its attempt as failed.

    `kind` is one of `transient` (retried under the task's retry policy, not before
    `retry_after` seconds), `permanent` (not retried on this agent), `timeout`,
    `invalid_output` (a person reviews it) or `declined` (nothing ran; the task goes back to
    the queue). `partial_output` defaults to what the attempt reported through its context.
    """

    _UNSET: Any = object()

    def __init__(
        self,
        message: str,
        kind: str = "transient",
        retry_after: Optional[float] = None,
        partial_output: Any = _UNSET,
        usage: Optional[Mapping[str, Any]] = None,
    ) -> None:
        if kind not in FAILURE_KINDS:
            raise ValueError(f"Failure kind must be one of {', '.join(FAILURE_KINDS)}, not {kind!r}")
        if retry_after is not None and not 0 <= retry_after * 1000 <= DURATION_MS_MAX:
            raise ValueError("retry_after must be between 0 and one year, in seconds")
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.retry_after = retry_after
        self.partial_output = partial_output
        self.usage = dict(usage) if usage is not None else None


@dataclass(frozen=True)
class Spawned:
    """An agent's return value that succeeds with `output` and adds follow-up `tasks` (task
    specs in the HTTP API's format, e.g. `{"id": "part-1", "capability": "summarize",
    "input": {...}, "hard_timeout": "2m"}`) to the objective, each depending on this task."""

    output: Any
    tasks: List[Mapping[str, Any]]

    def __post_init__(self) -> None:
        if not 1 <= len(self.tasks) <= 1000:
            raise ValueError("a spawn has 1 to 1,000 tasks")


@dataclass(frozen=True)
class Task:
    """One attempt of one task, as the coordinator delivered it."""

    #: The objective's id (a UUID).
    objective: str
    #: The task's id, e.g. `"T42"`.
    id: str
    #: Which attempt of the task this is, from 1.
    attempt: int
    #: The agent id the attempt was given to, e.g. `"A7"`.
    agent: str
    #: The task's name in its objective's graph.
    key: str
    #: The capability it was allocated by.
    capability: str
    #: `{objective}/{task}/{number}`: the same for every delivery of this attempt. Pass it to
    #: whatever has side effects (an API's `Idempotency-Key`).
    idempotency_key: str
    #: The input, with references to dependencies' outputs resolved.
    input: Any = None
    #: The outputs of the tasks it depends on, by their keys.
    upstream: Dict[str, Any] = field(default_factory=dict)
    #: No progress for this long ends the attempt (milliseconds); None: no such timeout.
    idle_timeout_ms: Optional[int] = None
    #: Running this long ends the attempt (milliseconds); None: no such timeout.
    hard_timeout_ms: Optional[int] = None
    #: The objective's priority.
    priority: int = 0
    #: W3C Trace Context of the coordinator's span: `traceparent`, maybe `tracestate`.
    trace: Optional[Dict[str, str]] = None

    @property
    def traceparent(self) -> Optional[str]:
        return (self.trace or {}).get("traceparent")

    @property
    def tracestate(self) -> Optional[str]:
        return (self.trace or {}).get("tracestate")

    @property
    def identity(self) -> Dict[str, Any]:
        """The attempt's identity, `{objective, task, number}`, as every report carries it."""
        return {"objective": self.objective, "task": self.id, "number": self.attempt}

    @classmethod
    def from_message(cls, data: bytes) -> "Task":
        """Reads an `attempt` message; raises ProtocolError when it is not one."""
        try:
            m = json.loads(data)
            a = m["attempt"]
            task = cls(
                objective=_str(a["objective"]),
                id=_str(a["task"]),
                attempt=_int(a["number"]),
                agent=_str(m["agent"]),
                key=_str(m["key"]),
                capability=_str(m["capability"]),
                idempotency_key=_str(m["idempotency_key"]),
                input=m.get("input"),
                upstream=m.get("upstream") or {},
                idle_timeout_ms=_opt_int(m.get("idle_timeout_ms")),
                hard_timeout_ms=_opt_int(m.get("hard_timeout_ms")),
                priority=_int(m.get("priority") or 0),
                trace=m.get("trace"),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ProtocolError(f"not an attempt message: {e!r}") from None
        if not isinstance(task.upstream, dict):
            raise ProtocolError("not an attempt message: upstream is not an object")
        return task


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {type(v).__name__}")
    return v


def _int(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"expected an integer, got {type(v).__name__}")
    return v


def _opt_int(v: Any) -> Optional[int]:
    return None if v is None else _int(v)


def major(version: Any) -> Optional[int]:
    """The major part of a `MAJOR.MINOR` version, None when it is not one."""
    if not isinstance(version, str):
        return None
    head, dot, minor = version.partition(".")
    if not (dot and head.isdigit() and minor.isdigit()):
        return None
    return int(head)


def encode(message: Mapping[str, Any]) -> bytes:
    """One message as compact JSON; ValueError when it is over MESSAGE_BYTES_MAX or not JSON."""
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    if len(data) > MESSAGE_BYTES_MAX:
        raise ValueError(f"the message is {len(data)} bytes, over the protocol's 1 MiB")
    return data


def clip(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8, on a character boundary."""
    raw = text.encode()
    if len(raw) <= max_bytes:
        return text
    return raw[: max_bytes - 3].decode(errors="ignore") + "..."


def usage_of(usage: Mapping[str, Any]) -> Dict[str, Any]:
    """A `usage` object checked against the protocol (it refuses unknown fields)."""
    allowed = {"input_tokens", "output_tokens", "cached_input_tokens", "cost_usd_micros"}
    unknown = set(usage) - allowed
    if unknown:
        raise ValueError(f"usage has unknown fields: {', '.join(sorted(unknown))}")
    out: Dict[str, Any] = {}
    for name in ("input_tokens", "output_tokens", "cached_input_tokens", "cost_usd_micros"):
        value = usage.get(name)
        if value is None:
            if name in ("input_tokens", "output_tokens"):
                out[name] = 0
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"usage.{name} must be a whole number >= 0")
        out[name] = value
    return out
