"""What exposing a tool to agents costs per call: the executor alone, a LangChain tool, MCP.

``python -m latm.bench.agent_tools [-n N]`` stores one verified tool in an
in-memory repository and times N warm calls of it, side by side in one run:
the sandbox executor called directly (what the ``use`` node does), the
LangChain tool (argument validation and the literal call on top), and an MCP
``tools/call`` through the real client connected in process (protocol, a
repository read and a worker thread on top). It prints the median and 90th
percentile of each, and the ratios to the executor alone.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from langgraph.store.memory import InMemoryStore

from latm.graph.context import Context
from latm.repository import ToolRecord, ToolRepository
from latm.sandbox import ExecLimits, get_executor

CODE = '''\
def sort_words(words: list[str]) -> str:
    """Sort words alphabetically and join them with single spaces."""
    return " ".join(sorted(words))
'''
WORDS = ["pear", "apple", "fig", "kiwi", "plum", "lime", "date", "cherry"]


def _record() -> ToolRecord:
    return ToolRecord(
        name="sort_words",
        task_type="word_sorting",
        description="Sort words alphabetically and join them with single spaces.",
        signature="def sort_words(words: list[str]) -> str",
        docstring="Sort words alphabetically and join them with single spaces.",
        code=CODE,
        demos=[],
        maker_model="bench",
        verification=[{"input": "q", "expected": "a", "got": "a", "error": None, "passed": True}],
        created_at="2026-01-01T00:00:00+00:00",
        version=1,
    )


def _time(n: int, call: Callable[[], Any]) -> list[float]:
    call()  # warm: the tool's worker starts once
    out = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        out.append((time.perf_counter() - start) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    """Time the three ways of calling a tool and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=50, help="calls per way (default 50)")
    args = parser.parse_args(argv)

    # optional extra (mcp): only this benchmark needs it
    import anyio
    from mcp import Client

    from latm.integrations.langchain import as_langchain_tools
    from latm.integrations.mcp import ToolService, build_server

    context = Context()
    repo = ToolRepository(InMemoryStore(), "bench")
    record = _record()
    repo.put(record)
    executor = get_executor(context.executor, allow_unsandboxed=context.allow_unsandboxed)
    limits = ExecLimits(timeout_s=context.exec_timeout_s)
    call = f"sort_words({WORDS!r})"
    key = f"bench/{record.cache_key}"
    tool = as_langchain_tools(repo, context=context, executor=executor)[0]

    rows: dict[str, list[float]] = {}
    rows["executor.run"] = _time(
        args.n, lambda: executor.run(record.code, [call], limits, cache_key=key)
    )
    rows["LangChain tool.invoke"] = _time(args.n, lambda: tool.invoke({"words": WORDS}))

    async def mcp_calls() -> list[float]:
        service = ToolService(repo, context=context, executor=executor)
        async with Client(build_server(service)) as client:
            await client.call_tool("word_sorting", {"words": WORDS})
            out = []
            for _ in range(args.n):
                start = time.perf_counter()
                result = await client.call_tool("word_sorting", {"words": WORDS})
                out.append((time.perf_counter() - start) * 1000)
                assert not result.is_error, result.content
            return out

    rows["MCP tools/call (in process)"] = anyio.run(mcp_calls)
    base = statistics.median(rows["executor.run"])
    print(f"{args.n} warm calls each, executor {executor.name}")
    print(f"{'way':<30} {'median ms':>10} {'p90 ms':>8} {'x executor':>11}")
    for name, times in rows.items():
        median = statistics.median(times)
        p90 = statistics.quantiles(times, n=10)[-1]
        print(f"{name:<30} {median:>10.2f} {p90:>8.2f} {median / base:>11.2f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
