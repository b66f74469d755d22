"""A worker process for the SIGTERM test: its agent reports that it started, then waits for a
message on `test.release` before it succeeds."""

import logging
import sys

import nats

from swarm_worker import Context, Worker

url = sys.argv[1]
worker = Worker(nats_url=url, prefix="swarm")


@worker.agent(capability="held", name="held", concurrency=2)
async def held(task, ctx: Context):
    nc = await nats.connect(url)
    try:
        sub = await nc.subscribe("test.release")
        await nc.flush()
        await ctx.partial("started")
        await sub.next_msg(timeout=30)
    finally:
        await nc.close()
    return {"released": task.id}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    worker.run()
