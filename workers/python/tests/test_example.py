"""The example worker (examples/python/summarize.py) runs as a newcomer would run it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

from harness import REPO, FakeCoordinator, env_with_src, next_of


async def test_the_example_worker_echoes_and_summarizes(coordinator: FakeCoordinator):
    process = subprocess.Popen(
        [sys.executable, str(REPO / "examples" / "python" / "summarize.py"), "--nats", coordinator.url],
        env=env_with_src(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        announces = [await next_of(coordinator.announces, what="an announcement") for _ in range(2)]
        agents = {a["capabilities"][0]: coordinator.agents[a["name"]]["agent"] for a in announces}
        assert sorted(agents) == ["echo", "summarize"]

        await coordinator.publish_attempt(coordinator.attempt(agents["echo"], task="T1", input={"x": [1, 2]}))
        echoed = await coordinator.next_result()
        assert echoed["outcome"] == {"status": "succeeded", "output": {"x": [1, 2]}}

        text = "Revenue rose 12%. Costs fell. Margins widened a lot this quarter."
        await coordinator.publish_attempt(
            coordinator.attempt(agents["summarize"], task="T2", key="summarize", input={"text": text, "max_words": 5})
        )
        summary = await coordinator.next_result()
        assert summary["outcome"]["status"] == "succeeded"
        assert summary["outcome"]["output"] == {"summary": "Revenue rose 12%. Costs fell.", "words": 5}

        await coordinator.publish_attempt(coordinator.attempt(agents["summarize"], task="T3", input={"text": ""}))
        refused = await coordinator.next_result()
        assert refused["outcome"]["kind"] == "permanent"

        process.send_signal(signal.SIGINT)
        leaves = [await next_of(coordinator.leaves, what="a leave") for _ in range(2)]
        assert {leave["mode"] for leave in leaves} == {"drain"}
        code = await asyncio.get_running_loop().run_in_executor(None, process.wait, 15)
        assert code == 0, process.stderr.read() if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
