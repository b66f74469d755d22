"""The Python worker against the real coordinator: `swarm serve --nats` and the example worker,
each a process of its own, with a real nats-server between them.

The `swarm` binary is `$SWARM_BIN` (scripts/test.sh sets it to the one `cargo test` built), else
`target/debug/swarm` under `$CARGO_TARGET_DIR` or the repository. A missing binary fails the
test with the reason: it is never skipped.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator, List, Optional

import pytest

from harness import NatsServer

ROOT = Path(__file__).resolve().parents[3]
PATIENCE = 30.0


def swarm_binary() -> str:
    candidates = [os.environ.get("SWARM_BIN")]
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        candidates.append(os.path.join(target, "debug", "swarm"))
    candidates.append(str(ROOT / "target" / "debug" / "swarm"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        "the swarm binary was not found: build it (cargo build) and set SWARM_BIN, "
        "or run scripts/test.sh, which does"
    )


class Serve:
    """`swarm serve --nats` on an ephemeral port, its data in a temporary directory."""

    def __init__(self, nats_url: str) -> None:
        self.data = tempfile.mkdtemp(prefix="swarm-serve-")
        self.process = subprocess.Popen(
            [swarm_binary(), "serve", "--addr", "127.0.0.1:0", "--data-dir", self.data, "--nats", nats_url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.data,
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
        deadline = time.monotonic() + 60
        self.url = None
        while self.url is None:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                raise RuntimeError(f"swarm serve exited: {''.join(self.log)}")
            if line.startswith("swarm API on "):
                self.url = line.split()[3].removesuffix("/v1")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as answer:
            return json.loads(answer.read())

    def post(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def until(self, what: str, probe) -> Any:
        """Asks `probe` until it returns something true, for at most PATIENCE seconds."""
        deadline = time.monotonic() + PATIENCE
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {PATIENCE}s\n{''.join(self.log)}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def serve(nats_server: NatsServer) -> Iterator[Serve]:
    server = Serve(nats_server.url)
    try:
        yield server
    finally:
        server.stop()


def remote_agents(serve: Serve) -> List[dict]:
    return [a for a in serve.get("/v1/agents") if a.get("remote")]


def test_the_example_worker_runs_tasks_for_swarm_serve(serve: Serve, nats_server: NatsServer) -> None:
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "python" / "summarize.py"), "--nats", nats_server.url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        agents = serve.until("the worker's two agents are registered", lambda: len(remote_agents(serve)) == 2 and remote_agents(serve))
        assert sorted(c for a in agents for c in a["capabilities"]) == ["echo", "summarize"]
        assert all(a["remote"]["host"] for a in agents)

        text = "Swarm runs agents anywhere. Workers speak NATS. This sentence is cut."
        accepted = serve.post(
            "/v1/objectives",
            {
                "goal": "summarize a text remotely",
                "tasks": [
                    {"id": "sum", "capability": "summarize", "input": {"text": text, "max_words": 8}},
                    {"id": "back", "capability": "echo", "depends_on": ["sum"], "input": {"$from": "sum"}},
                ],
            },
        )
        objective = accepted["id"]
        view = serve.until(
            "the objective ends",
            lambda: (v := serve.get(f"/v1/objectives/{objective}"))["status"] not in ("running", "pending") and v,
        )
        assert view["status"] == "succeeded", view
        outputs = {t["key"]: t.get("output") for t in view["tasks"]}
        assert outputs["sum"]["summary"] == "Swarm runs agents anywhere. Workers speak NATS."
        assert outputs["back"] == outputs["sum"]
        # The tokens the worker reported are the task's.
        summed = next(t for t in view["tasks"] if t["key"] == "sum")
        assert summed.get("usage", {}).get("output_tokens") == 7, summed

        # SIGTERM drains the worker: it leaves, and its agents leave the registry.
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=PATIENCE) == 0
        serve.until("the drained agents are gone", lambda: remote_agents(serve) == [])
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
