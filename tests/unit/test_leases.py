"""Tool-making leases never outlive their run: every way a run can end gives the lease back."""

from __future__ import annotations

import asyncio
import importlib
import os
import threading
import time
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from latm import leases
from latm.graph import Context
from latm.graph.builder import build_graph
from latm.graph.context import PAPER
from latm.repository import ToolRepository

from .scripted import SORT_CODE, ScriptedChatModel, bbh, maker_reply, scripted

dispatcher_module = importlib.import_module("latm.nodes.dispatcher")
propose_module = importlib.import_module("latm.nodes.propose")
verify_module = importlib.import_module("latm.nodes.verify")
wrap_module = importlib.import_module("latm.nodes.wrap")

EXAMPLES = bbh("word_sorting")
SIX = EXAMPLES[:6]
VALIDATION_QS = [e["input"] for e in EXAMPLES[3:6]]
MAKE = {"examples": SIX, "task_type": "word_sorting"}
LEASES = ("latm", "default", "leases")


def ctx(maker: Any = None, **kwargs: Any) -> Context:
    settings = {**PAPER, "exec_timeout_s": 2.0, "max_retries": 0, "lease_wait_s": 5.0, **kwargs}
    return Context(maker_llm=maker or scripted([]), user_llm=scripted([]), **settings)


def good_maker() -> ScriptedChatModel:
    return scripted([maker_reply(SORT_CODE, VALIDATION_QS)])


def tickets(store: InMemoryStore) -> list[Any]:
    return list(store.search(LEASES, limit=100))


def wait_until_free(store: InMemoryStore, timeout_s: float = 5.0) -> float:
    """Seconds until no lease ticket is left (fails after ``timeout_s``)."""
    started = time.monotonic()
    while tickets(store):
        assert time.monotonic() - started < timeout_s, [t.value for t in tickets(store)]
        time.sleep(0.01)
    return time.monotonic() - started


def next_request_makes_at_once(store: InMemoryStore) -> None:
    """A new request for the task takes the lease without waiting, and makes the tool."""
    started = time.monotonic()
    out = build_graph(store=store).invoke(MAKE, context=ctx(good_maker()))
    assert out["error"] is None and out["tool"]["version"] == 1, out
    assert time.monotonic() - started < 3.0
    assert tickets(store) == []


def raiser(node: str, error: BaseException, *, event: str | None = None) -> Any:
    from latm.nodes.common import emit

    def boom(runtime: Any, name: str, kind: str, **data: Any) -> None:
        if name == node and (event is None or kind == event):
            raise error
        emit(runtime, name, kind, **data)

    return boom


NODES = [
    (dispatcher_module, "dispatcher", "miss"),  # right after the dispatcher took the lease
    (propose_module, "propose", None),
    (verify_module, "verify", None),
    (wrap_module, "wrap", "stored"),  # after the tool was stored, before the release
]


@pytest.mark.parametrize(("module", "node", "event"), NODES, ids=[str(n[1]) for n in NODES])
def test_an_exception_in_any_making_node_leaves_no_lease(monkeypatch, module, node, event):
    store = InMemoryStore()
    monkeypatch.setattr(
        module, "emit", raiser(node, RuntimeError(f"injected in {node}"), event=event)
    )
    with pytest.raises(RuntimeError, match=f"injected in {node}"):
        build_graph(store=store).invoke(MAKE, context=ctx(good_maker()))
    assert tickets(store) == []
    monkeypatch.undo()
    if node == "wrap":  # the tool was stored: the next request is a cache hit
        out = build_graph(store=store).invoke(MAKE, context=ctx(good_maker(), lease_wait_s=0.5))
        assert out["error"] is None
    else:
        next_request_makes_at_once(store)


def test_keyboard_interrupt_while_making_leaves_no_lease(monkeypatch):
    store = InMemoryStore()
    monkeypatch.setattr(propose_module, "emit", raiser("propose", KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        build_graph(store=store).invoke(MAKE, context=ctx(good_maker()))
    assert tickets(store) == []
    monkeypatch.undo()
    next_request_makes_at_once(store)


def test_a_failed_store_write_ends_the_run_and_leaves_no_lease():
    class NoToolWrites(InMemoryStore):
        def batch(self, ops: Any) -> Any:
            for op in ops:
                if type(op).__name__ == "PutOp" and op.namespace[-1] == "tools":
                    raise OSError("disk full")
            return super().batch(ops)

    store = NoToolWrites()
    out = build_graph(store=store).invoke(MAKE, context=ctx(good_maker()))
    assert "disk full" in out["error"]
    assert tickets(store) == []


class SlowModel(ScriptedChatModel):
    """A maker that takes ``delay`` seconds per reply (a slow remote model)."""

    delay: float = 2.0

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(self.delay)
        return super()._generate(*args, **kwargs)


def slow_maker(delay: float) -> SlowModel:
    from langchain_core.messages import AIMessage

    return SlowModel(messages=iter([AIMessage(maker_reply(SORT_CODE, VALIDATION_QS))]), delay=delay)


def test_an_async_caller_timing_out_a_making_run_leaves_no_lease():
    store = InMemoryStore()
    app = build_graph(store=store)

    async def run() -> None:
        await asyncio.wait_for(app.ainvoke(MAKE, context=ctx(slow_maker(2.0))), timeout=0.5)

    with pytest.raises(TimeoutError):
        asyncio.run(run())
    freed = wait_until_free(store)
    assert freed < 1.0  # released when the run was cancelled, not when the maker returned
    next_request_makes_at_once(store)
    time.sleep(2.0)  # the cancelled run's maker call returns: it must not bring the lease back
    assert tickets(store) == []


def test_a_sync_caller_closing_the_stream_leaves_no_lease():
    store = InMemoryStore()
    stream = build_graph(store=store).stream(MAKE, context=ctx(good_maker()), stream_mode="updates")
    first = next(iter(stream))
    assert "dispatcher" in first and tickets(store)  # the lease is held
    stream.close()  # the caller stops listening: the run ends
    assert tickets(store) == []
    next_request_makes_at_once(store)


def test_a_lease_held_for_a_review_survives_the_pause_and_the_resumed_thread_takes_it_back():
    from langgraph.types import Command

    store = InMemoryStore()
    app = build_graph(store=store, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "review"}}
    app.invoke(MAKE, config, context=ctx(good_maker(), require_approval=True))
    (held,) = tickets(store)
    assert held.value["review"] is True and held.value["expires_at"] > time.time() + 80_000
    # another request waits for the reviewed tool rather than making it
    other = build_graph(store=store).invoke(MAKE, context=ctx(good_maker(), lease_wait_s=0.3))
    assert "another run is making the tool" in other["error"]
    out = app.invoke(
        Command(resume={"action": "approve"}), config, context=ctx(require_approval=True)
    )
    assert out["error"] is None and out["tool"]["version"] == 1
    assert tickets(store) == []


def test_a_retry_on_the_same_thread_takes_its_own_lease_back_at_once():
    store = InMemoryStore()
    tools = ToolRepository(store, "default")
    # a lease left by a run of thread "t" whose process is unknown (another host): not provably gone
    leases.LeaseBook.of(tools).write(
        "word_sorting",
        leases.Ticket(
            leases._owner_of_thread("t"), False, 1, time.time() + 600, "elsewhere:1:1", None
        ),
    )
    started = time.monotonic()
    out = build_graph(store=store, checkpointer=InMemorySaver()).invoke(
        MAKE, {"configurable": {"thread_id": "t"}}, context=ctx(good_maker())
    )
    assert out["error"] is None and time.monotonic() - started < 3.0
    assert tickets(store) == []
    # the same leftover held by another thread makes a new request wait (the TTL decides)
    leases.LeaseBook.of(tools).write(
        "sorting",
        leases.Ticket("someone", False, 1, time.time() + 600, "elsewhere:1:1", None),
    )
    blocked = leases.claim(tools, ctx(lease_wait_s=0.3), "sorting", SIX)
    assert blocked.kind == "error"


@pytest.mark.parametrize(
    "proc",
    [
        "same-process-finished-run",
        "dead-process-on-this-host",
        "reused-pid-on-this-host",
    ],
)
def test_a_provably_gone_holder_does_not_make_others_wait(proc):
    store = InMemoryStore()
    tools = ToolRepository(store, "default")
    if proc == "same-process-finished-run":
        holder, run = leases.PROC, "0192b0c8-0000-7000-8000-000000000000"  # not a live run
    elif proc == "reused-pid-on-this-host":  # a live process, but not the one that held it
        holder, run = f"{leases.HOST}:{os.getpid()}:started-another-time", None
    else:
        child = os.fork() if hasattr(os, "fork") else None
        if child == 0:
            os._exit(0)
        assert child is not None
        os.waitpid(child, 0)
        holder, run = f"{leases.HOST}:{child}:1", None
    leases.LeaseBook.of(tools).write(
        "word_sorting", leases.Ticket("gone", False, 1, time.time() + 600, holder, run)
    )
    started = time.monotonic()
    got = leases.claim(tools, ctx(lease_wait_s=5), "word_sorting", SIX)
    assert got.kind == "make" and time.monotonic() - started < 1.0
    leases.release(tools, got.lease)


def test_a_released_lease_is_not_renewed_back():
    store = InMemoryStore()
    tools = ToolRepository(store, "default")
    got = leases.claim(tools, ctx(), "word_sorting", SIX)
    assert got.lease is not None
    leases.release(tools, got.lease)
    leases.renew(tools, got.lease, ctx())  # a node of the ended run finishing late
    assert tickets(store) == []


def test_parallel_requests_still_make_one_tool_with_the_guard():
    store = InMemoryStore()
    maker = slow_maker(0.5)
    app = build_graph(store=store)
    outs: list[dict[str, Any]] = []

    def run() -> None:
        outs.append(app.invoke(MAKE, context=ctx(maker, lease_wait_s=20)))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [o["error"] for o in outs] == [None] * 4
    assert len(maker.received) == 1 and tickets(store) == []


def test_a_live_holder_elsewhere_is_waited_for():
    store = InMemoryStore()
    tools = ToolRepository(store, "default")
    alive = leases.Ticket("live", False, 1, time.time() + 600, leases.PROC, None)
    assert not leases.holder_gone(alive)  # this process, run unknown
    other_host = leases.Ticket("x", False, 1, time.time() + 600, "another-host:1:1", None)
    assert not leases.holder_gone(other_host)
    reviewed = leases.Ticket("r", False, 1, time.time() + 600, "x:999999:1", None, review=True)
    assert not leases.holder_gone(reviewed)
    leases.LeaseBook.of(tools).write("word_sorting", alive)
    assert leases.claim(tools, ctx(lease_wait_s=0.3), "word_sorting", SIX).kind == "error"
