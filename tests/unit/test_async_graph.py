"""The graph's async path (ainvoke, astream), as a LangGraph server runs it, beside the sync one.

The same scenarios as the sync tests: make, hit, retry, failure, the approval
interrupt and its resume, and a cancelled run giving its lease back.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore
from langgraph.types import Command

from latm.graph import Context
from latm.graph.builder import build_graph
from latm.repository import ToolRepository

from .scripted import BUGGY_SORT_CODE, SORT_CODE, ScriptedChatModel, bbh, maker_reply, user_reply

EXAMPLES = bbh("word_sorting")
SIX = EXAMPLES[:6]
VALIDATION_QS = [e["input"] for e in EXAMPLES[3:6]]
HELD_OUT = EXAMPLES[20]
MAKE = {"task": HELD_OUT["input"], "examples": SIX, "task_type": "word_sorting"}


class Tracked(ScriptedChatModel):
    """A scripted model that records whether each call was awaited or blocking, and where."""

    calls: list[tuple[str, int]]

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        self.calls.append(("sync", threading.get_ident()))
        return super()._generate(*args, **kwargs)

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.calls.append(("async", threading.get_ident()))
        await asyncio.sleep(0)
        return super()._generate(messages, stop=stop, **kw)


def tracked(replies: list[str]) -> Tracked:
    from langchain_core.messages import AIMessage

    usage = {"input_tokens": 100, "output_tokens": 20, "total_tokens": 120}
    return Tracked(messages=iter(AIMessage(r, usage_metadata=usage) for r in replies), calls=[])


def tickets(store: InMemoryStore) -> list[Any]:
    return list(store.search(("latm", "default", "leases", "word_sorting")))


def test_a_miss_makes_the_tool_and_answers_like_the_sync_path(make_context):
    def models() -> tuple[Tracked, Tracked]:
        return tracked([maker_reply(SORT_CODE, VALIDATION_QS)]), tracked(
            [user_reply(HELD_OUT["input"])]
        )

    sync_store, async_store = InMemoryStore(), InMemoryStore()
    sync_out = build_graph(store=sync_store).invoke(MAKE, context=make_context(*models()))
    maker, user = models()
    async_out = asyncio.run(
        build_graph(store=async_store).ainvoke(MAKE, context=make_context(maker, user))
    )

    assert async_out["error"] is None and async_out["answer"] == HELD_OUT["target"]
    for key in ("answer", "tool", "cache_hit", "error", "usage", "attempts", "path"):
        assert async_out.get(key) == sync_out.get(key), key
    stored = ToolRepository(async_store, "default").get("word_sorting")
    assert stored is not None and stored.code.strip() == SORT_CODE.strip()
    # both models were awaited (ainvoke), on the event loop's own thread
    assert [kind for kind, _ in maker.calls + user.calls] == ["async", "async"]
    assert tickets(async_store) == []  # the lease went back when the tool was stored


def test_a_hit_streams_the_same_events_as_the_sync_path(make_context):
    store = InMemoryStore()
    build_graph(store=store).invoke(
        {"examples": SIX, "task_type": "word_sorting", "make": True},
        context=make_context(tracked([maker_reply(SORT_CODE, VALIDATION_QS)])),
    )
    question = EXAMPLES[30]
    inputs = {"task": question["input"], "task_type": "word_sorting"}

    def ctx() -> Context:
        return make_context(tracked([]), tracked([user_reply(question["input"])]))

    sync_events = [
        (mode, chunk)
        for mode, chunk in build_graph(store=store).stream(
            inputs, context=ctx(), stream_mode=["custom", "updates"]
        )
    ]

    async def collect() -> list[tuple[str, Any]]:
        app = build_graph(store=store)
        return [
            (mode, chunk)
            async for mode, chunk in app.astream(
                inputs, context=ctx(), stream_mode=["custom", "updates"]
            )
        ]

    async_events = asyncio.run(collect())

    def comparable(events: list[tuple[str, Any]]) -> list[Any]:
        """The events, without the run's own clock (its deadline stamp)."""
        return [
            c if m == "custom" else {n: sorted(set(u) - {"deadline_at"}) for n, u in c.items()}
            for m, c in events
        ]

    assert comparable(async_events) == comparable(sync_events)
    assert [m for m, _ in async_events] == [m for m, _ in sync_events]
    custom = [c for m, c in async_events if m == "custom"]
    assert [(e["node"], e["event"]) for e in custom][-1] == ("use", "answer")
    assert custom[-1]["answer"] == question["target"]
    assert ToolRepository(store, "default").stats("word_sorting", 1).calls == 2


def test_a_failed_verification_is_retried_and_passes(make_context):
    maker = tracked(
        [maker_reply(BUGGY_SORT_CODE, VALIDATION_QS), maker_reply(SORT_CODE, VALIDATION_QS)]
    )
    user = tracked([user_reply(HELD_OUT["input"])])
    out = asyncio.run(
        build_graph(store=InMemoryStore()).ainvoke(MAKE, context=make_context(maker, user))
    )
    assert out["error"] is None and out["answer"] == HELD_OUT["target"]
    assert out["usage"]["maker"]["calls"] == 2 and len(maker.calls) == 2
    assert "Expected: " in str(maker.received[1][-1].content)  # the failures were fed back


def test_exhausted_attempts_and_a_dead_model_end_with_clear_errors(make_context):
    store = InMemoryStore()
    maker = tracked([maker_reply(BUGGY_SORT_CODE, VALIDATION_QS)] * 2)
    out = asyncio.run(
        build_graph(store=store).ainvoke(MAKE, context=make_context(maker, max_attempts=2))
    )
    assert "could not make a verified tool in 2 attempt(s)" in out["error"]
    assert out["answer"] is None and ToolRepository(store, "default").get("word_sorting") is None

    dead = Context(
        maker_base_url="http://127.0.0.1:9/v1", user_base_url="http://127.0.0.1:9/v1", max_retries=0
    )
    out = asyncio.run(build_graph(store=store).ainvoke(MAKE, context=dead))
    assert out["error"].startswith("the maker model") and "127.0.0.1:9" in out["error"]
    assert ToolRepository(store, "default").get("word_sorting") is None
    assert tickets(store) == []


def test_the_approval_interrupt_pauses_and_an_async_resume_stores_the_tool(make_context):
    store = InMemoryStore()
    app = build_graph(store=store, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "review-async"}}
    maker = tracked([maker_reply(SORT_CODE, VALIDATION_QS)])
    user = tracked([user_reply(HELD_OUT["input"])])
    ctx = make_context(maker, user, require_approval=True)

    async def scenario() -> tuple[dict[str, Any], Any, dict[str, Any]]:
        paused = await app.ainvoke(MAKE, config, context=ctx)
        state = await app.aget_state(config)
        resumed = await app.ainvoke(Command(resume={"action": "approve"}), config, context=ctx)
        return paused, state, resumed

    paused, state, resumed = asyncio.run(scenario())
    (ask,) = paused["__interrupt__"]
    assert ask.value["type"] == "latm.approve_tool" and ask.value["passed"] == 3
    assert state.next == ("review",)
    assert resumed["error"] is None and resumed["answer"] == HELD_OUT["target"]
    assert ToolRepository(store, "default").get("word_sorting") is not None
    assert tickets(store) == []


def test_a_cancelled_async_run_gives_its_lease_back(make_context):
    store = InMemoryStore()

    class Slow(Tracked):
        async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
            await asyncio.sleep(2)
            return await super()._agenerate(*args, **kwargs)

        def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
            time.sleep(2)
            return super()._generate(*args, **kwargs)

    from langchain_core.messages import AIMessage

    slow = Slow(messages=iter([AIMessage(maker_reply(SORT_CODE, VALIDATION_QS))]), calls=[])

    async def scenario() -> bool:
        task = asyncio.create_task(
            build_graph(store=store).ainvoke(MAKE, context=make_context(slow))
        )
        for _ in range(100):  # until the run holds the lease
            await asyncio.sleep(0.02)
            if tickets(store):
                break
        held = bool(tickets(store))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return held

    assert asyncio.run(scenario()) is True
    deadline = time.monotonic() + 2
    while tickets(store) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tickets(store) == []
    out = build_graph(store=store).invoke(
        MAKE,
        context=make_context(
            tracked([maker_reply(SORT_CODE, VALIDATION_QS)]),
            tracked([user_reply(HELD_OUT["input"])]),
            lease_wait_s=0.5,
        ),
    )
    assert out["error"] is None and out["cache_hit"] is False  # the next request made it at once


class LoopStore(InMemoryStore):
    """A store that refuses a blocking call from an event loop, as a LangGraph server's does."""

    def batch(self, ops: Any) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return super().batch(ops)
        raise AssertionError("a blocking store call on the event loop")


def test_async_runs_never_block_the_event_loop_on_the_store(make_context):
    store = LoopStore()
    app = build_graph(store=store, checkpointer=InMemorySaver())
    maker = tracked([maker_reply(SORT_CODE, VALIDATION_QS)] * 2)
    question = EXAMPLES[30]
    user = tracked([user_reply(HELD_OUT["input"]), user_reply(question["input"])])

    async def scenario() -> list[dict[str, Any]]:
        made = await app.ainvoke(
            MAKE, {"configurable": {"thread_id": "make"}}, context=make_context(maker, user)
        )
        hit = await app.ainvoke(
            {"task": question["input"], "task_type": "word_sorting"},
            {"configurable": {"thread_id": "hit"}},
            context=make_context(maker, user),
        )
        config = {"configurable": {"thread_id": "review-on-loop"}}
        review_ctx = make_context(maker, user, require_approval=True)
        again = {"examples": SIX, "task_type": "word_sorting_2", "make": True}
        paused = await app.ainvoke(again, config, context=review_ctx)
        assert paused["__interrupt__"]
        approved = await app.ainvoke(
            Command(resume={"action": "approve"}), config, context=review_ctx
        )
        return [made, hit, approved]

    made, hit, approved = asyncio.run(scenario())
    assert made["error"] is None and made["answer"] == HELD_OUT["target"]
    assert hit["cache_hit"] is True and hit["answer"] == question["target"]
    assert approved["error"] is None and approved["tool"]["task_type"] == "word_sorting_2"
    tools = ToolRepository(store, "default")
    assert tools.stats("word_sorting", 1).calls == 2 and tools.get("word_sorting_2") is not None
    assert all(kind == "async" for kind, _ in maker.calls + user.calls)
