"""A worker process with one no-op agent, for bench/throughput.py."""

import sys

from swarm_worker import Worker

url, concurrency = sys.argv[1], int(sys.argv[2])
worker = Worker(nats_url=url)


@worker.agent(capability="noop", name="noop", concurrency=concurrency)
async def noop(task, ctx):
    return None


worker.run()
