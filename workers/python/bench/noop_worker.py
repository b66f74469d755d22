"""A worker process with one no-op agent, for bench/throughput.py and `swarm bench --remote-python`.

    python noop_worker.py NATS_URL CONCURRENCY [PREFIX]
"""

import sys

from swarm_worker import Worker

url, concurrency = sys.argv[1], int(sys.argv[2])
worker = Worker(nats_url=url, prefix=sys.argv[3] if len(sys.argv) > 3 else None)


@worker.agent(capability="noop", name="noop", concurrency=concurrency)
async def noop(task, ctx):
    return None


worker.run()
