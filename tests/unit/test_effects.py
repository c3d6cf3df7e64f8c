"""Node bodies written once as steps, driven sync (invoke) and async (ainvoke) in a real graph."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, TypedDict
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from latm.deadline import DeadlineExceeded, stamp
from latm.effects import (
    Steps,
    adrive,
    async_node,
    blocking,
    drive,
    io,
    sync_node,
    twin,
    within,
)
from latm.graph.context import Context


class S(TypedDict, total=False):
    x: int
    log: list[str]
    error: str | None


class Calls:
    """Sync and async twins of a lookup that record which path and thread ran them."""

    def __init__(self) -> None:
        self.paths: list[tuple[str, int]] = []

    def double(self, x: int) -> int:
        self.paths.append(("sync", threading.get_ident()))
        if x < 0:
            raise ValueError("negative")
        return 2 * x

    async def adouble(self, x: int) -> int:
        self.paths.append(("async", threading.get_ident()))
        await asyncio.sleep(0)
        if x < 0:
            raise ValueError("negative")
        return 2 * x

    def slow_square(self, x: int) -> int:
        self.paths.append(("blocking", threading.get_ident()))
        time.sleep(0.01)
        return x * x


def body_of(calls: Calls):  # type: ignore[no-untyped-def]
    def helper(x: int) -> Steps[int]:
        doubled = yield io(calls.double, calls.adouble, x)
        return int(doubled) + 1

    def body(state: S, runtime: Runtime[Context]) -> Steps[dict[str, Any]]:
        try:
            doubled = yield io(calls.double, calls.adouble, state["x"])
        except ValueError as exc:  # raised where the step was yielded
            return {"error": f"no double: {exc}"}
        squared = yield blocking(calls.slow_square, doubled)
        plus = yield from helper(squared)
        return {"x": plus, "log": [f"{state['x']}->{doubled}->{squared}->{plus}"]}

    return body


def graph_of(body: Any, **compile_kwargs: Any) -> Any:
    builder = StateGraph(S, context_schema=Context)
    builder.add_node("step", twin(body, "step"))
    builder.add_edge(START, "step")
    builder.add_edge("step", END)
    return builder.compile(**compile_kwargs)


def test_one_body_gives_the_same_update_on_the_sync_and_the_async_path():
    sync_calls, async_calls = Calls(), Calls()
    out_sync = graph_of(body_of(sync_calls)).invoke({"x": 3}, context=Context())
    out_async = asyncio.run(graph_of(body_of(async_calls)).ainvoke({"x": 3}, context=Context()))

    assert out_sync == out_async == {"x": 73, "log": ["3->6->36->73"]}
    assert [p for p, _ in sync_calls.paths] == ["sync", "blocking", "sync"]
    assert [p for p, _ in async_calls.paths] == ["async", "blocking", "async"]
    # the async path awaited its twins on the loop's thread and ran the blocking step elsewhere
    (loop,) = {t for p, t in async_calls.paths if p == "async"}
    (elsewhere,) = {t for p, t in async_calls.paths if p == "blocking"}
    assert loop != elsewhere


def test_an_io_error_is_raised_in_the_body_where_it_yielded_on_both_paths():
    for run in (
        lambda g: g.invoke({"x": -1}, context=Context()),
        lambda g: asyncio.run(g.ainvoke({"x": -1}, context=Context())),
    ):
        out = run(graph_of(body_of(Calls())))
        assert out == {"x": -1, "error": "no double: negative"}


def test_an_uncaught_error_leaves_the_node_on_both_paths():
    def body(state: S, runtime: Runtime[Context]) -> Steps[dict[str, Any]]:
        yield blocking(int, "not a number")
        return {}

    with pytest.raises(ValueError, match="invalid literal"):
        graph_of(body).invoke({"x": 1}, context=Context())
    with pytest.raises(ValueError, match="invalid literal"):
        asyncio.run(graph_of(body).ainvoke({"x": 1}, context=Context()))


class Spans(BaseCallbackHandler):
    def __init__(self) -> None:
        self.names: list[str] = []

    def on_chain_start(
        self, serialized: Any, inputs: Any, *, run_id: UUID, name: str | None = None, **kw: Any
    ) -> None:
        self.names.append(str(name or kw.get("name") or (serialized or {}).get("name")))


def test_the_node_is_one_span_in_traces_on_both_paths():
    for run in (
        lambda g, cb: g.invoke({"x": 2}, context=Context(), config={"callbacks": [cb]}),
        lambda g, cb: asyncio.run(
            g.ainvoke({"x": 2}, context=Context(), config={"callbacks": [cb]})
        ),
    ):
        spans = Spans()
        run(graph_of(body_of(Calls())), spans)
        assert spans.names.count("step") == 1, spans.names


def test_plain_node_functions_of_a_body_for_callers_outside_a_graph():
    body = body_of(Calls())
    runtime: Any = None
    assert sync_node(body)({"x": 1}, runtime) == {"x": 9, "log": ["1->2->4->9"]}
    assert asyncio.run(async_node(body)({"x": 1}, runtime)) == {"x": 9, "log": ["1->2->4->9"]}


def test_a_step_within_the_deadline_is_cut_short_on_both_paths():
    async def asleep() -> str:
        await asyncio.sleep(5)
        return "late"

    def sleep() -> str:
        time.sleep(5)
        return "late"

    def body() -> Steps[str]:
        try:
            return str((yield within(stamp(0.2), "a slow call", io(sleep, asleep))))
        except DeadlineExceeded as exc:
            return str(exc)

    started = time.monotonic()
    assert "during a slow call" in drive(body())
    assert "during a slow call" in asyncio.run(adrive(body()))
    assert time.monotonic() - started < 3


def test_a_cancelled_async_run_unwinds_the_body():
    unwound: list[str] = []

    def body() -> Steps[None]:
        try:
            yield io(time.sleep, asyncio.sleep, 10)
        finally:
            unwound.append("finally")

    async def main() -> None:
        task = asyncio.create_task(adrive(body()))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert unwound == ["finally"]
