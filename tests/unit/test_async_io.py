"""The async I/O the nodes' async twins await: repository, models, sandbox, deadline, locks."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from langgraph.store.memory import InMemoryStore
from pydantic import BaseModel

from latm.aio import _SYNC_ONLY_STORES, arun_tool, holding, offload
from latm.backends import open_local_store
from latm.deadline import DeadlineExceeded, acall_within, stamp
from latm.llm import ModelError, ainvoke, ainvoke_structured, invoke, invoke_structured
from latm.repository import ToolRecord, ToolRepository, UsageDemo
from latm.sandbox import ExecLimits, SubprocessExecutor

from .scripted import scripted


def record(
    task_type: str, question: str, version: int = 1, make_id: str | None = None
) -> ToolRecord:
    return ToolRecord(
        name=task_type,
        task_type=task_type,
        description=f"Does {task_type}.",
        signature=f"def {task_type}(x)",
        docstring=f"Does {task_type}.",
        code=f"def {task_type}(x): ...",
        demos=[UsageDemo(question=question, call=f"{task_type}(1)", answer="1")],
        maker_model="m",
        verification=[],
        created_at="2026-01-01T00:00:00+00:00",
        version=version,
        make_id=make_id,
    )


class CountingStore(InMemoryStore):
    """An in-memory store that counts which of its entry points were used."""

    def __init__(self) -> None:
        super().__init__()
        self.sync_calls = 0
        self.async_calls = 0

    def batch(self, ops: Any) -> Any:
        self.sync_calls += 1
        return super().batch(ops)

    async def abatch(self, ops: Any) -> Any:
        self.async_calls += 1
        return await super().abatch(ops)


def test_async_twins_read_and_write_what_the_sync_methods_do_through_async_store_calls():
    store = CountingStore()
    repo = ToolRepository(store, "tenant")
    got: dict[str, Any] = {}

    async def scenario() -> None:
        stored = await repo.aput(record("word_sorting", "Sort these words: b a", make_id="m1"))
        assert stored.content_sha256 is not None
        await repo.aput(record("word_sorting", "Sort these words: b a", version=2, make_id="m2"))
        await repo.aput(record("dyck", "Complete the sequence: ( ["))
        got["latest"] = await repo.aget("word_sorting")
        got["missing"] = await repo.aget("missing")
        got["versions"] = await repo.aversions("word_sorting")
        got["made_by"] = await repo.amade_by("word_sorting", "m1")
        got["made_by_none"] = await repo.amade_by("word_sorting", "nope")
        got["next"] = await repo.anext_version("word_sorting")
        got["records"] = await repo.arecords()
        got["empty"] = (await repo.ais_empty(), await ToolRepository(store, "x").ais_empty())
        got["found"] = await repo.asearch("Sort these words: c d", limit=2)
        await repo.arecord_use(got["latest"], "ok")
        got["stats"] = await repo.arecord_use(got["latest"], "timeout", "timeout: 2 s")
        got["summed"] = await repo.astats("word_sorting", 2)
        got["stamp"] = await repo.aroute_stamp()
        await repo.atouch_routes()
        got["new_stamp"] = await repo.aroute_stamp()
        await repo.aput_route_item("dyck", {"v": [1, 2]})
        got["route"] = await repo.aroute_item("dyck")
        got["no_route"] = await repo.aroute_item("word_sorting")

    asyncio.run(scenario())
    # every operation was the store's own async batch: none of its sync entry points ran
    assert store.sync_calls == 0 and store.async_calls > 15

    assert got["latest"] == repo.get("word_sorting") and got["latest"].version == 2
    assert got["missing"] is None
    assert got["versions"] == repo.versions("word_sorting")
    assert [r.version for r in got["versions"]] == [1, 2]
    assert got["made_by"].version == 1 and got["made_by_none"] is None
    assert got["next"] == 3 == repo.next_version("word_sorting")
    assert got["records"] == repo.records() and len(got["records"]) == 2
    assert got["empty"] == (False, True)
    assert got["found"] == repo.search("Sort these words: c d", limit=2)
    assert got["found"][0][0].task_type == "word_sorting"
    stats = got["stats"]
    assert (stats.calls, stats.failures, stats.timeouts) == (2, 1, 1)
    assert got["summed"] == repo.stats("word_sorting", 2) == stats
    assert got["new_stamp"] not in (None, got["stamp"]) and got["new_stamp"] == repo.route_stamp()
    assert got["route"] == {"v": [1, 2]} == repo.route_item("dyck")
    assert got["no_route"] is None


def test_an_unreadable_record_is_quarantined_by_the_async_read_too():
    repo = ToolRepository(InMemoryStore(), "tenant")
    good = repo.put(record("t", "q"))
    tampered = {**good.model_dump(mode="json"), "code": "def t(x): return 'evil'"}
    repo.store.put(repo.namespace, "t", tampered)
    repo.store.put(repo.namespace, "junk", {"name": 3})

    async def scenario() -> None:
        assert await repo.aget("t") is None
        assert await repo.arecords() == []

    asyncio.run(scenario())
    reasons = {q["key"]: q["reason"] for q in repo.quarantined()}
    assert reasons["t"].startswith("content hash mismatch")
    assert reasons["junk"].startswith("not a tool record")
    assert repo.store.get(repo.namespace, "t") is None  # moved out of the way


def test_a_store_without_async_operations_runs_the_sync_ones_off_the_loop(tmp_path):
    store = open_local_store(tmp_path / "tools.sqlite")  # SqliteStore: abatch is not supported
    repo = ToolRepository(store, "tenant")
    loop_thread: list[int] = []
    used: list[int] = []
    original = store.batch

    def batch(ops: Any) -> Any:
        used.append(threading.get_ident())
        return original(ops)

    store.batch = batch  # type: ignore[method-assign]

    async def scenario() -> tuple[ToolRecord | None, int]:
        loop_thread.append(threading.get_ident())
        await repo.aput(record("t", "q"))
        return await repo.aget("t"), await repo.anext_version("t")

    got, next_version = asyncio.run(scenario())
    threads = list(used)
    assert threads and loop_thread[0] not in threads  # never on the event loop's thread
    assert type(store) in _SYNC_ONLY_STORES
    assert got is not None and got == repo.get("t") and next_version == 2


def test_concurrent_async_uses_are_all_counted_with_sync_ones_beside_them():
    repo = ToolRepository(InMemoryStore(), "tenant")
    tool = repo.put(record("t", "q"))

    async def scenario() -> None:
        sync_uses = [offload(repo.record_use, tool, "ok") for _ in range(10)]
        await asyncio.gather(*(repo.arecord_use(tool, "ok") for _ in range(20)), *sync_uses)

    asyncio.run(scenario())
    assert repo.stats("t", 1).calls == 30


def test_a_caller_cancelled_while_waiting_for_a_lock_never_leaves_it_taken():
    lock = threading.Lock()

    async def scenario() -> None:
        lock.acquire()  # a sync path holds it
        waiter = asyncio.create_task(_hold(lock))
        await asyncio.sleep(0.05)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        lock.release()  # the sync path is done: the abandoned wait takes and gives it back
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not lock.locked():
                break
        async with holding(lock):
            assert lock.locked()

    asyncio.run(scenario())
    assert not lock.locked()


async def _hold(lock: threading.Lock) -> None:
    async with holding(lock):
        await asyncio.sleep(10)


def test_the_async_deadline_cuts_a_slow_call_short_and_passes_other_errors_on():
    async def slow() -> str:
        await asyncio.sleep(5)
        return "late"

    async def own_timeout() -> str:
        raise TimeoutError("the call's own timeout")

    async def scenario() -> None:
        assert await acall_within(None, "a call", asyncio.sleep(0, "fine")) == "fine"
        assert await acall_within(stamp(5), "a call", asyncio.sleep(0, "fine")) == "fine"
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="during a maker call"):
            await acall_within(stamp(0.2), "a maker call", slow())
        assert time.monotonic() - started < 2
        with pytest.raises(DeadlineExceeded, match="before a maker call"):
            await acall_within(time.time() - 1, "a maker call", slow())
        with pytest.raises(TimeoutError, match="own timeout"):
            await acall_within(stamp(5), "a call", own_timeout())

    asyncio.run(scenario())


class Choice(BaseModel):
    tool: str


def test_async_model_calls_give_what_the_sync_ones_give(make_context):
    replies = ["a reply", '{"tool": "word_sorting"}', "x" * 50]
    sync_ctx = make_context(user=scripted(replies))
    async_ctx = make_context(user=scripted(replies))
    messages = [("human", "hi")]
    from latm.nodes.common import to_messages

    async def scenario() -> None:
        reply, usage = await ainvoke(async_ctx, "user", to_messages(messages))
        sync_reply, sync_usage = invoke(sync_ctx, "user", to_messages(messages))
        assert (reply.content, usage) == (sync_reply.content, sync_usage)
        assert reply.content == "a reply" and usage["user"]["total_tokens"] == 120
        parsed = await ainvoke_structured(async_ctx, "user", to_messages(messages), Choice)
        assert parsed == invoke_structured(sync_ctx, "user", to_messages(messages), Choice)
        assert parsed[0] == Choice(tool="word_sorting")

    asyncio.run(scenario())
    small = make_context(user=scripted(["x" * 50]), max_reply_chars=10)
    with pytest.raises(ModelError, match="50 characters long; the limit is 10"):
        asyncio.run(ainvoke(small, "user", to_messages(messages)))
    spent = make_context(user=scripted([]))
    with pytest.raises(ModelError, match="the user model"):
        asyncio.run(ainvoke(spent, "user", to_messages(messages)))


def test_a_tool_run_is_awaited_off_the_loop_which_keeps_serving_meanwhile():
    executor = SubprocessExecutor()
    code = "import time\n\ndef slow(x):\n    time.sleep(0.5)\n    return x * 2\n"
    limits = ExecLimits(timeout_s=5.0, memory_mb=256, max_output_bytes=4096)

    async def scenario() -> tuple[list[Any], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.02)
                ticks += 1

        beat = asyncio.create_task(ticker())
        results = await arun_tool(executor, code, ["slow(21)"], limits, cache_key=None)
        beat.cancel()
        return results, ticks

    results, ticks = asyncio.run(scenario())
    assert [r.value for r in results] == ["42"] and results[0].ok
    assert ticks >= 10  # the loop went on ticking while the tool slept for 0.5 s


# --- leases: the same bakery, awaited -------------------------------------------------------


def lease_ctx(**kwargs: Any) -> Any:
    from latm.graph.context import Context

    return Context(**{"lease_ttl_s": 30.0, "lease_wait_s": 10.0, **kwargs})


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_async_claims_make_one_tool_and_the_waiters_get_it_holding_no_thread(tmp_path, backend):
    from latm import leases

    store = InMemoryStore() if backend == "memory" else open_local_store(tmp_path / "l.sqlite")
    repo = ToolRepository(store, "tenant")
    tool = record("word_sorting", "Sort these words: b a")
    threads_before = threading.active_count()

    async def scenario() -> list[Any]:
        holder = await leases.aclaim(repo, lease_ctx(), "word_sorting", [])
        assert holder.kind == "make" and holder.lease is not None
        waiters = [
            asyncio.create_task(leases.aclaim(repo, lease_ctx(), "word_sorting", []))
            for _ in range(5)
        ]
        await asyncio.sleep(0.3)
        assert not any(w.done() for w in waiters)  # all wait for the holder
        await leases.arenew(repo, holder.lease, lease_ctx())
        stored = await repo.aput(tool)
        await leases.arelease(repo, holder.lease, made=stored)
        return await asyncio.gather(*waiters)

    got = asyncio.run(scenario())
    assert [g.kind for g in got] == ["hit"] * 5
    assert all(g.record is not None and g.record.task_type == "word_sorting" for g in got)
    assert leases.LeaseBook.of(repo).tickets("word_sorting") == []  # every ticket given back
    if backend == "memory":  # five waiters polled the store without a thread of their own each
        assert threading.active_count() <= threads_before + 1


def test_an_async_waiter_gives_up_after_the_wait_with_the_sync_paths_error():
    from latm import leases

    repo = ToolRepository(InMemoryStore(), "tenant")
    held = leases.claim(repo, lease_ctx(), "t", [])  # a sync caller holds it

    async def scenario() -> Any:
        return await leases.aclaim(repo, lease_ctx(lease_wait_s=0.3), "t", [])

    got = asyncio.run(scenario())
    assert held.kind == "make" and got.kind == "error"
    assert got.error is not None and "gave up waiting for it after 0.3 s" in got.error
    assert [t.owner for t in leases.LeaseBook.of(repo).tickets("t")] == [held.lease["owner"]]
