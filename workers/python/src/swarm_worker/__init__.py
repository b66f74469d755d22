"""Write agents for a swarm in Python: a worker hosts them over NATS JetStream.

```python
from swarm_worker import Worker, Context, Failure

worker = Worker(nats_url="nats://127.0.0.1:4222", prefix="swarm")

@worker.agent(capability="summarize", concurrency=4)
async def summarize(task, ctx: Context):
    await ctx.partial({"draft": task.input["text"][:20]})
    return {"summary": task.input["text"][:100]}

worker.run()
```

The protocol is protocol/REMOTE.md in the swarm repository.
"""

from .context import Context, SyncContext
from .protocol import PROTOCOL_VERSION, Failure, ProtocolError, Refused, Spawned, Task
from .worker import Worker, agent

__all__ = [
    "PROTOCOL_VERSION",
    "Context",
    "Failure",
    "ProtocolError",
    "Refused",
    "Spawned",
    "SyncContext",
    "Task",
    "Worker",
    "agent",
]
