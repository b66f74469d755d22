"""An example swarm worker in Python: an `echo` agent and a `summarize` agent.

Run it against the NATS server your swarm uses (see protocol/REMOTE.md):

    pip install ./workers/python
    python examples/python/summarize.py --nats nats://127.0.0.1:4222

It announces both agents to the coordinator and runs the attempts it is given until SIGTERM or
Ctrl-C, which drain it: running attempts finish and report, then it leaves.
"""

import argparse
import asyncio
import logging
import re

from swarm_worker import Context, Failure, Worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats", default=None, help="the NATS server (default: $NATS_URL or nats://127.0.0.1:4222)")
    parser.add_argument("--prefix", default=None, help="the swarm's subject prefix (default: swarm)")
    parser.add_argument("--concurrency", type=int, default=4, help="attempts each agent runs at once")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    # Credentials come from NATS_TOKEN, NATS_USER/NATS_PASSWORD or NATS_CREDS when set.
    worker = Worker(nats_url=args.nats, prefix=args.prefix)

    @worker.agent(capability="echo", concurrency=args.concurrency, description="Returns its input unchanged.")
    def echo(task):
        return task.input

    @worker.agent(
        capability="summarize",
        concurrency=args.concurrency,
        description="Keeps the first sentences of a text (a stand-in for a model).",
    )
    async def summarize(task, ctx: Context):
        text = (task.input or {}).get("text") if isinstance(task.input, dict) else task.input
        if not isinstance(text, str) or not text.strip():
            raise Failure("the input needs a non-empty `text`", kind="permanent")
        max_words = int((task.input or {}).get("max_words", 50)) if isinstance(task.input, dict) else 50
        summary = []
        for sentence in re.split(r"(?<=[.!?])\s+", text.strip()):
            words = sentence.split()
            if summary and len(" ".join(summary).split()) + len(words) > max_words:
                break
            summary.append(" ".join(words[:max_words]))
            await ctx.text(summary[-1] + " ")  # streamed to the coordinator as it is written
            await asyncio.sleep(0)  # a model call would be awaited here
        await ctx.usage(input_tokens=len(text.split()), output_tokens=len(" ".join(summary).split()))
        return {"summary": " ".join(summary), "words": len(" ".join(summary).split())}

    worker.run()


if __name__ == "__main__":
    main()
