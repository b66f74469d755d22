"""No-op attempts per second through one worker process.

Starts a nats-server and the tests' fake coordinator, publishes the attempts to the agent the
coordinator will accept first (they wait in the work-queue stream), starts a worker process
with one no-op agent, and times from its announcement to the last result stored.

    python workers/python/bench/throughput.py --attempts 20000 --concurrency 256
"""

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROFILE: list = []
sys.path.insert(0, str(HERE.parent / "tests"))

from harness import FakeCoordinator, NatsServer, env_with_src, next_of  # noqa: E402


async def bench(attempts: int, concurrency: int) -> float:
    server = NatsServer()
    process = None
    try:
        coordinator = await FakeCoordinator(server.url, validate=False, listen_progress=False).start()
        agent = f"A{coordinator.next_agent}"
        template = coordinator.attempt(agent, input=None, upstream=None, trace=None)
        subject = f"{coordinator.prefix}.attempts.{agent}"
        for start in range(0, attempts, 1000):
            acks = []
            for i in range(start, min(start + 1000, attempts)):
                template["attempt"]["task"] = f"T{i}"
                template["idempotency_key"] = f"{template['attempt']['objective']}/T{i}/1"
                acks.append(await coordinator.js.publish_async(subject, json.dumps(template).encode()))
            await asyncio.gather(*acks)
        process = subprocess.Popen(
            [sys.executable, *PROFILE, str(HERE / "noop_worker.py"), server.url, str(concurrency)], env=env_with_src()
        )
        await next_of(coordinator.announces, timeout=30, what="the worker's announcement")
        began = time.perf_counter()
        while await stored(coordinator) < attempts:
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - began
        process.send_signal(signal.SIGTERM)
        await asyncio.get_running_loop().run_in_executor(None, process.wait, 30)
        await coordinator.stop()
        return attempts / elapsed
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        server.stop()


async def stored(coordinator: FakeCoordinator) -> int:
    """The results stored so far (0 when the server is too busy to say in time)."""
    try:
        return await coordinator.stream_messages("RESULTS")
    except asyncio.TimeoutError:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--attempts", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--profile", metavar="FILE", help="run the worker under cProfile, its stats to FILE")
    args = parser.parse_args()
    if args.profile:
        PROFILE.extend(["-m", "cProfile", "-o", args.profile])
    rate = asyncio.run(bench(args.attempts, args.concurrency))
    print(f"{args.attempts} no-op attempts, concurrency {args.concurrency}: {rate:,.0f} attempts/s in one worker process")


if __name__ == "__main__":
    main()
