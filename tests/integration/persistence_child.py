"""A child process for the persistence tests: one LATM run against a real backend.

Usage: ``python -m tests.integration.persistence_child MODE DATABASE_URL STORE_PATH [ARG]``

* ``make N``: make the word_sorting tool (scripted maker) and answer; the maker
  replies only once ``N`` requests hold a lease ticket, and each maker call is
  appended to ``STORE_PATH.calls``. Prints the output as JSON.
* ``durable THREAD``: make the tool on a checkpointed thread and print ``VERIFIED``
  as soon as ``verify`` has finished, then hang (the parent kills the process).
* ``resume THREAD``: resume the thread with a maker that must not be called;
  prints the output and the nodes that ran as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from latm.backends import open_backend
from latm.graph import Context
from latm.graph.builder import build_graph
from latm.graph.context import PAPER
from tests.unit.scripted import SORT_CODE, bbh, maker_reply, scripted, user_reply

EXAMPLES = bbh("word_sorting")
VALIDATION_QS = [e["input"] for e in EXAMPLES[3:6]]


def counted(maker: Any, calls: Path, store: Any, wait_for: int) -> Any:
    """Log each maker call to ``calls``; reply once ``wait_for`` requests hold tickets."""
    reply = maker._generate

    def generate(*args: Any, **kwargs: Any) -> Any:
        with calls.open("a") as handle:
            handle.write("call\n")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(store.search(("latm", "default", "leases"), limit=100)) >= wait_for:
                break
            time.sleep(0.05)
        return reply(*args, **kwargs)

    object.__setattr__(maker, "_generate", generate)
    return maker


def context(database_url: str, store_path: str, maker: Any, user: Any) -> Context:
    return Context(
        maker_llm=maker,
        user_llm=user,
        database_url=database_url,
        store_path=store_path,
        embeddings="hash:64" if database_url else "",
        exec_timeout_s=5.0,
        max_retries=0,
        lease_wait_s=120,
        **PAPER,
    )


def main(argv: list[str]) -> int:
    mode, database_url, store_path, arg = argv[1], argv[2], argv[3], argv[4]
    embeddings = "hash:64" if database_url else ""
    backend = open_backend(database_url, store_path=store_path, embeddings=embeddings)
    question = EXAMPLES[20]
    inputs = {"task": question["input"], "examples": EXAMPLES[:6], "task_type": "word_sorting"}
    if mode == "make":
        maker = counted(
            scripted([maker_reply(SORT_CODE, VALIDATION_QS)]),
            Path(store_path + ".calls"),
            backend.store,
            int(arg),
        )
        ctx = context(database_url, store_path, maker, scripted([user_reply(question["input"])]))
        out = build_graph(store=backend.store).invoke(inputs, context=ctx)
        print(json.dumps(out), flush=True)
        return 0
    app = build_graph(store=backend.store, checkpointer=backend.checkpointer())
    config = {"configurable": {"thread_id": arg}}
    if mode == "durable":
        maker = scripted([maker_reply(SORT_CODE, VALIDATION_QS)])
        ctx = context(database_url, store_path, maker, scripted([user_reply(question["input"])]))
        for update in app.stream(
            inputs, config, context=ctx, stream_mode="updates", durability="sync"
        ):
            if "verify" in update:
                print("VERIFIED", flush=True)
                time.sleep(300)  # the parent kills this process here
        print("FINISHED", flush=True)
        return 1
    if mode == "resume":
        maker = scripted([])  # any call fails the run
        ctx = context(database_url, store_path, maker, scripted([user_reply(question["input"])]))
        nodes, output = [], {}
        for kind, chunk in app.stream(None, config, context=ctx, stream_mode=["updates", "values"]):
            if kind == "updates":
                nodes.extend(chunk)
            else:
                output = chunk
        keys = ("answer", "error", "tool", "cache_hit")
        print(
            json.dumps(
                {
                    "nodes": nodes,
                    "maker_calls": len(maker.received),
                    **{k: output.get(k) for k in keys},
                }
            ),
            flush=True,
        )
        return 0
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
