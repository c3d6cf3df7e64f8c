"""Tool lifecycle: versions, use statistics, retirement, leases and bad records."""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langgraph.store.memory import InMemoryStore
from langgraph.store.sqlite import SqliteStore

from latm import leases
from latm.graph import Context
from latm.graph.builder import build_graph
from latm.graph.context import PAPER
from latm.nodes.record import record_use
from latm.nodes.wrap import tool_identity
from latm.repository import ToolRepository
from latm.sandbox import ExecResult

from .scripted import SORT_CODE, bbh, maker_reply, scripted, user_reply

EXAMPLES = bbh("word_sorting")
SIX = EXAMPLES[:6]
VALIDATION_QS = [e["input"] for e in EXAMPLES[3:6]]

TRAP = '''\
def sort_words(words: list[str]) -> str:
    """Sort words alphabetically and join them with single spaces."""
    if "boom" in words:
        raise RuntimeError("boom")
    return " ".join(sorted(words))
'''


def ctx(maker: Any = None, user: Any = None, **kwargs: Any) -> Context:
    settings = {**PAPER, "exec_timeout_s": 2.0, "max_retries": 0, **kwargs}
    return Context(maker_llm=maker or scripted([]), user_llm=user or scripted([]), **settings)


def repo(store: Any) -> ToolRepository:
    return ToolRepository(store, "default")


def make(store: Any, code: str = SORT_CODE, **kwargs: Any) -> dict[str, Any]:
    inputs = {"examples": SIX, "task_type": "word_sorting", **kwargs}
    return build_graph(store=store).invoke(
        inputs, context=ctx(scripted([maker_reply(code, VALIDATION_QS)]))
    )


def ask(store: Any, question: str, **kwargs: Any) -> dict[str, Any]:
    inputs = {"task": question, "task_type": "word_sorting", **kwargs}
    context = kwargs.pop("context", None) or ctx(user=scripted([user_reply(question)]))
    inputs.pop("context", None)
    return build_graph(store=store).invoke(inputs, context=context)


def boom(word: str = "boom") -> str:
    return f"Sort the following words alphabetically: List: zebra {word} apple"


# ----------------------------------------------------------------- versions


def test_a_remade_tool_keeps_its_history(store):
    make(store)
    make(store, make=True)
    out = make(store, make=True)
    assert out["tool"]["version"] == 3
    tools = repo(store)
    assert tools.get("word_sorting").version == 3
    assert [r.version for r in tools.versions("word_sorting")] == [1, 2, 3]
    assert [r.task_type for r in tools.records()] == ["word_sorting"]  # history is not listed


def test_next_version_counts_past_the_history_even_if_the_latest_is_unreadable(store):
    make(store)
    make(store, make=True)
    store.put(("latm", "default", "tools"), "word_sorting", {"garbage": True})
    assert repo(store).next_version("word_sorting") == 3


def test_delete_removes_history_and_statistics(store):
    make(store)
    ask(store, EXAMPLES[20]["input"])
    tools = repo(store)
    assert tools.stats("word_sorting", 1).calls == 1
    assert tools.delete("word_sorting")
    assert tools.versions("word_sorting") == [] and tools.stats("word_sorting", 1).calls == 0


# --------------------------------------------------------------- statistics


def test_use_counts_successes_errors_and_timeouts(store):
    make(store, code=TRAP)
    assert ask(store, EXAMPLES[20]["input"])["error"] is None
    failed = ask(store, boom())
    assert "RuntimeError: boom" in failed["error"]
    stats = repo(store).stats("word_sorting", 1)
    assert (stats.calls, stats.failures, stats.timeouts) == (2, 1, 0)
    assert "RuntimeError: boom" in stats.last_error and stats.last_used_at

    record = repo(store).get("word_sorting")
    tools = repo(store)
    tools.record_use(record, "timeout", "timeout: the call took longer than 2 s")
    stats = tools.stats("word_sorting", 1)
    assert (stats.calls, stats.failures, stats.timeouts) == (3, 2, 1)
    assert stats.last_error.startswith("timeout")


def test_counts_from_several_processes_are_summed(store):
    make(store)
    tools = repo(store)
    record = tools.get("word_sorting")
    tools.record_use(record, "ok")
    # another replica's shard of the same version
    store.put(
        tools.stats_namespace,
        "word_sorting:v1:other-host-1",
        {"task_type": "word_sorting", "version": 1, "calls": 4, "failures": 1, "timeouts": 1},
    )
    store.put(
        tools.stats_namespace,
        "word_sorting:v1:junk",
        {"task_type": "word_sorting", "version": 1, "calls": "x"},
    )
    stats = tools.stats("word_sorting", 1)
    assert (stats.calls, stats.failures, stats.timeouts) == (5, 1, 1)


def test_concurrent_uses_lose_no_count(store):
    make(store)
    tools = repo(store)
    record = tools.get("word_sorting")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: tools.record_use(record, "ok"), range(40)))
    assert tools.stats("word_sorting", 1).calls == 40


# --------------------------------------------------------------- retirement


def test_after_max_failures_the_dispatcher_stops_routing_to_the_tool(store):
    make(store, code=TRAP)
    for _ in range(2):
        assert (
            "boom"
            in ask(
                store, boom(), context=ctx(user=scripted([user_reply(boom())]), max_tool_failures=2)
            )["error"]
        )
    user = scripted([])
    out = ask(store, EXAMPLES[20]["input"], context=ctx(user=user, max_tool_failures=2))
    assert out["answer"] is None and user.received == []
    assert "tool word_sorting v1 is retired after 2 failures in 2 uses" in out["error"]
    assert "RuntimeError: boom" in out["error"] and "pass 'examples' to re-make it" in out["error"]


def test_a_retired_tool_is_remade_as_a_new_version_when_examples_are_given(store):
    make(store, code=TRAP)
    ask(store, boom(), context=ctx(user=scripted([user_reply(boom())]), max_tool_failures=1))
    question = EXAMPLES[20]
    maker = scripted([maker_reply(SORT_CODE, VALIDATION_QS)])
    out = build_graph(store=store).invoke(
        {"task": question["input"], "task_type": "word_sorting", "examples": SIX},
        context=ctx(maker, scripted([user_reply(question["input"])]), max_tool_failures=1),
    )
    assert out["error"] is None and out["answer"] == question["target"]
    assert out["tool"]["version"] == 2 and len(maker.received) == 1
    tools = repo(store)
    assert [r.version for r in tools.versions("word_sorting")] == [1, 2]
    assert tools.stats("word_sorting", 2).failures == 0  # a fresh start for the new version
    assert tools.stats("word_sorting", 1).failures == 1  # the old version keeps its record


def test_search_skips_retired_tools(store):
    make(store, code=TRAP)
    ask(store, boom(), context=ctx(user=scripted([user_reply(boom())]), max_tool_failures=1))
    user = scripted([])
    out = build_graph(store=store).invoke(
        {"task": EXAMPLES[30]["input"]}, context=ctx(user=user, max_tool_failures=1)
    )
    assert "no cached tool fits" in out["error"] and user.received == []


def test_zero_max_failures_never_retires(store):
    make(store, code=TRAP)
    for _ in range(3):
        ask(store, boom(), context=ctx(user=scripted([user_reply(boom())]), max_tool_failures=0))
    out = ask(
        store,
        EXAMPLES[20]["input"],
        context=ctx(user=scripted([user_reply(EXAMPLES[20]["input"])]), max_tool_failures=0),
    )
    assert out["error"] is None


# ------------------------------------------------------------------- leases


def sqlite_store(tmp_path) -> SqliteStore:
    conn = sqlite3.connect(
        str(tmp_path / "t.sqlite"), check_same_thread=False, isolation_level=None
    )
    conn.execute("PRAGMA journal_mode=WAL")
    s = SqliteStore(conn)
    s.setup()
    return s


def all_in_line(store: Any, maker: Any, n: int) -> Any:
    """The maker replies once all ``n`` requests hold a lease ticket (so none comes late)."""
    reply = maker._generate

    def generate(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if len(store.search(("latm", "default", "leases"), limit=100)) >= n:
                break
            time.sleep(0.05)
        return reply(*args, **kwargs)

    object.__setattr__(maker, "_generate", generate)
    return maker


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@pytest.mark.parametrize("with_task_type", [True, False])
def test_eight_concurrent_requests_for_a_new_task_make_one_tool(tmp_path, backend, with_task_type):
    store = InMemoryStore() if backend == "memory" else sqlite_store(tmp_path)
    maker = all_in_line(store, scripted([maker_reply(SORT_CODE, VALIDATION_QS)]), 8)
    questions = [EXAMPLES[20 + i] for i in range(8)]
    user = scripted([user_reply(q["input"]) for q in questions] * 2)
    app = build_graph(store=store)
    context = ctx(maker, user, lease_wait_s=60)

    def run(question: dict[str, str]) -> dict[str, Any]:
        inputs: dict[str, Any] = {"task": question["input"], "examples": SIX}
        if with_task_type:
            inputs["task_type"] = "word_sorting"
        else:  # no candidates in the empty repository, so no dispatch model call
            inputs["make"] = True
        return app.invoke(inputs, context=context)

    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(run, questions))

    assert len(maker.received) == 1
    assert [o["error"] for o in outs] == [None] * 8
    assert sorted(o["answer"] for o in outs) == sorted(q["target"] for q in questions)
    assert sum(not o["cache_hit"] for o in outs) == 1  # one maker, seven reused its tool
    key = "word_sorting" if with_task_type else tool_identity(None, "sort_words", SIX)
    tools = repo(store)
    assert [r.task_type for r in tools.records()] == [key]
    assert [r.version for r in tools.versions(key)] == [1]
    assert list(store.search(("latm", "default", "leases"), limit=100)) == []  # all released


def test_a_failed_maker_releases_the_lease_and_the_next_request_makes_the_tool(store):
    failing = scripted(["no code, sorry"])
    out = build_graph(store=store).invoke(
        {"examples": SIX, "task_type": "word_sorting"}, context=ctx(failing, max_attempts=1)
    )
    assert "no Python code block" in out["error"]
    assert list(store.search(("latm", "default", "leases"), limit=10)) == []
    assert make(store)["tool"]["version"] == 1


def test_a_dead_makers_lease_lapses_and_a_waiter_takes_over(store):
    tools = repo(store)
    short = ctx(lease_ttl_s=0.3, lease_wait_s=10)
    dead = leases.claim(tools, short, "word_sorting", SIX)
    assert dead.kind == "make"  # and its run never releases it
    started = time.monotonic()
    taker = leases.claim(tools, short, "word_sorting", SIX)
    assert taker.kind == "make" and taker.lease["owner"] != dead.lease["owner"]
    assert 0.2 < time.monotonic() - started < 5


def test_a_waiter_gives_up_after_the_wait_timeout_with_a_clear_error(store):
    tools = repo(store)
    holder = leases.claim(tools, ctx(lease_ttl_s=60), "word_sorting", SIX)
    assert holder.kind == "make"
    out = build_graph(store=store).invoke(
        {"task": EXAMPLES[20]["input"], "examples": SIX, "task_type": "word_sorting"},
        context=ctx(lease_wait_s=0.3),
    )
    assert "another run is making the tool for 'word_sorting'" in out["error"]
    assert "gave up waiting for it after 0.3 s" in out["error"]
    leases.release(tools, holder.lease)
    assert list(store.search(("latm", "default", "leases"), limit=10)) == []


def test_a_waiter_takes_the_tool_the_holder_stores(store):
    tools = repo(store)
    holder = leases.claim(tools, ctx(), "word_sorting", SIX)
    result: dict[str, Any] = {}

    def wait() -> None:
        result["claim"] = leases.claim(tools, ctx(lease_wait_s=10), "word_sorting", SIX)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)
    assert "claim" not in result  # still waiting
    elsewhere = InMemoryStore()
    make(elsewhere)
    made = repo(elsewhere).get("word_sorting")
    tools.put(made)  # what the holder's wrap stores, then releases
    leases.release(tools, holder.lease, made=made)
    waiter.join(5)
    assert result["claim"].kind == "hit" and result["claim"].record.version == 1


def test_corrupt_lease_records_are_ignored(store):
    ns = ("latm", "default", "leases", "word_sorting")
    store.put(ns, "junk", {"owner": "x"})
    store.put(ns, "junk2", {"owner": "y", "choosing": True, "number": "NaN?", "expires_at": 1e12})
    assert make(store)["error"] is None
    assert list(store.search(ns, limit=10)) == []


def test_lease_key_without_task_type_hashes_the_examples():
    key = leases.lease_key(None, SIX)
    assert key.startswith("ex-") and key == leases.lease_key(None, list(SIX))
    assert key != leases.lease_key(None, SIX[:5]) and leases.lease_key("t", SIX) == "t"


# --------------------------------------------------------------- bad input


def test_corrupt_and_foreign_records_are_survived_on_every_path(store):
    make(store)
    ns = ("latm", "default", "tools")
    store.put(ns, "broken", {"name": 3, "search_text": "sort the following words"})
    store.put(ns, "foreign", {"hello": "world", "search_text": "sort words alphabetically"})
    store.put(ns, "listy", {"search_text": "sort", "code": ["not", "text"]})
    tools = repo(store)
    assert [r.task_type for r in tools.records()] == ["word_sorting"]  # list
    assert [r.task_type for r, _ in tools.search(EXAMPLES[20]["input"])] == ["word_sorting"]
    q = EXAMPLES[21]
    out = ask(store, q["input"])  # a hit by task type, then use
    assert out["error"] is None and out["answer"] == q["target"]
    user = scripted([user_reply(q["input"])])
    out = build_graph(store=store).invoke({"task": q["input"]}, context=ctx(user=user))
    assert out["answer"] == q["target"]  # a hit in the embedding space
    assert out["routing"]["by"] == "embedding" and len(user.received) == 1
    out = build_graph(store=store).invoke(
        {"task": q["input"], "task_type": "broken"}, context=ctx()
    )
    assert out["error"] == "no tool for task type 'broken' and no examples to make one"


def test_a_tool_whose_code_fails_to_load_is_a_clear_error_and_others_keep_working(store):
    make(store)
    good = repo(store).get("word_sorting")
    bad = good.model_copy(update={"task_type": "broken_tool", "code": "def sort_words(:\n"})
    repo(store).put(bad)
    q = EXAMPLES[22]
    out = build_graph(store=store).invoke(
        {"task": q["input"], "task_type": "broken_tool"},
        context=ctx(user=scripted([user_reply(q["input"])])),
    )
    assert out["answer"] is None and "tool broken_tool v1 failed" in out["error"]
    assert "SyntaxError" in out["error"]
    stats = repo(store).stats("broken_tool", 1)
    assert stats.failures == 1 and "SyntaxError" in stats.last_error
    assert ask(store, q["input"])["answer"] == q["target"]  # the other tool still answers


def test_a_sqlite_database_closed_mid_run_ends_the_run_with_a_clear_error(tmp_path):
    store = sqlite_store(tmp_path)
    make(store)
    q = EXAMPLES[23]

    user = scripted([user_reply(q["input"])])
    original = user._generate

    def close_then_answer(*args: Any, **kwargs: Any) -> Any:
        store.conn.close()
        return original(*args, **kwargs)

    object.__setattr__(user, "_generate", close_then_answer)
    out = build_graph(store=store).invoke(
        {"task": q["input"], "task_type": "word_sorting"}, context=ctx(user=user)
    )
    # the run answers (the tool is in the state); recording its use fails with a warning
    assert out["answer"] == q["target"]
    out = build_graph(store=store).invoke(
        {"task": q["input"], "task_type": "word_sorting"}, context=ctx()
    )
    assert out["answer"] is None
    assert out["error"].startswith(
        "the tool repository is unavailable (reading tool 'word_sorting')"
    )
    assert "closed database" in out["error"]
    out = make(store, make=True)
    assert "the tool repository is unavailable" in out["error"]


def test_record_use_ignores_a_failing_store(store):
    make(store)
    record = repo(store).get("word_sorting")

    class BrokenStore(InMemoryStore):
        def batch(self, ops: Any) -> Any:
            raise sqlite3.OperationalError("disk I/O error")

    class Runtime:
        store = BrokenStore()

    assert record_use(Runtime(), ctx(), record, ExecResult("ok", value="x")) is None


def test_concurrent_make_only_requests_make_one_tool_and_answer_nothing(store):
    maker = all_in_line(store, scripted([maker_reply(SORT_CODE, VALIDATION_QS)]), 3)
    app = build_graph(store=store)
    context = ctx(maker, lease_wait_s=30)

    def run(_: int) -> dict[str, Any]:
        return app.invoke({"examples": SIX, "task_type": "word_sorting"}, context=context)

    with ThreadPoolExecutor(3) as pool:
        outs = list(pool.map(run, range(3)))
    assert len(maker.received) == 1
    assert [(o["error"], o["answer"]) for o in outs] == [(None, None)] * 3
    assert [o["tool"]["version"] for o in outs] == [1, 1, 1]
    assert sum(o["cache_hit"] for o in outs) == 2


def test_a_store_failing_during_best_of_n_making_ends_the_run_cleanly():
    class FlakyStore(InMemoryStore):
        broken = False

        def batch(self, ops: Any) -> Any:
            if self.broken:
                raise sqlite3.OperationalError("the database went away")
            return super().batch(ops)

    store = FlakyStore()
    replies = [maker_reply(SORT_CODE, VALIDATION_QS)] * 3
    maker = scripted(replies)
    reply = maker._generate

    def break_then_reply(*args: Any, **kwargs: Any) -> Any:
        store.broken = True
        return reply(*args, **kwargs)

    object.__setattr__(maker, "_generate", break_then_reply)
    out = build_graph(store=store).invoke(
        {"examples": SIX, "task_type": "word_sorting"}, context=ctx(maker, n_candidates=3)
    )
    assert len(maker.received) == 3
    assert out["error"].startswith("the tool repository is unavailable")
    assert "the database went away" in out["error"]
