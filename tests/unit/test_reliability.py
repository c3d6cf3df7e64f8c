"""Reliability (issue: the graph never raises, a tool is stored once and whole, ...).

One test (or a few) per numbered item of the reliability issue.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.base import PutOp
from langgraph.store.memory import InMemoryStore
from pydantic import ValidationError

from latm.backends import open_backend
from latm.cli import main
from latm.cli.tools import content_hash
from latm.codeparse import ReplyError, parse_proposal
from latm.graph import Context
from latm.graph.builder import build_graph
from latm.graph.context import PAPER
from latm.nodes.common import get_tool_executor
from latm.repository import ToolRecord, ToolRepository, UsageDemo
from latm.usage import retired

from .scripted import (
    BUGGY_SORT_CODE,
    SORT_CODE,
    ScriptedChatModel,
    bbh,
    maker_reply,
    scripted,
    user_reply,
    words_of,
)

# ---------------------------------------------------------------- 1. parse race


class _Cycle:
    """Garbage whose finalizer runs Python code, so GC can switch threads mid-parse."""

    def __del__(self) -> None:
        sum(range(50))


def test_parallel_parsing_never_hits_the_ast_recursion_race() -> None:
    """Candidates are parsed in parallel threads; on 3.11 that raced without a lock."""
    nested = "(" * 30 + "1" + ")" * 30
    body = "\n".join(
        f"def helper_{i}(a):\n    return [x for x in range(a) if x % 2] or {nested}"
        for i in range(10)
    )
    reply = f"```python\n{body}\n\ndef tool(a):\n    return helper_0(a)\n\nCALLS = [tool(3)]\n```"
    errors: list[BaseException] = []

    def garbage() -> None:
        for _ in range(80_000):
            a, b = _Cycle(), _Cycle()
            a.other, b.other = b, a  # type: ignore[attr-defined]

    def work() -> None:
        for _ in range(120):
            try:
                parse_proposal(reply)
            except (SystemError, ReplyError) as exc:
                errors.append(exc)

    interval, threshold = sys.getswitchinterval(), gc.get_threshold()
    sys.setswitchinterval(1e-6)
    gc.set_threshold(50, 2, 2)
    try:
        threads = [threading.Thread(target=work) for _ in range(4)]
        churn = threading.Thread(target=garbage)
        churn.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        churn.join()
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*threshold)
    assert errors == []


# ------------------------------------------------------------- shared helpers

EXAMPLES = bbh("word_sorting")
SIX = EXAMPLES[:6]
VALIDATION_QS = [e["input"] for e in EXAMPLES[3:6]]


def ctx(maker: Any = None, user: Any = None, **kwargs: Any) -> Context:
    kwargs.setdefault("exec_timeout_s", 2.0)
    kwargs.setdefault("max_retries", 0)
    return Context(maker_llm=maker, user_llm=user, **{**PAPER, **kwargs})


def sqlite_repo() -> ToolRepository:
    return ToolRepository(open_backend(store_path=os.environ["LATM_STORE_PATH"]).store, "default")


def a_record(task_type: str = "word_sorting", code: str = SORT_CODE) -> ToolRecord:
    return ToolRecord(
        name="sort_words",
        task_type=task_type,
        description="Sort words alphabetically.",
        signature="def sort_words(words: list[str]) -> str",
        docstring="Sort words alphabetically.",
        code=code,
        demos=[UsageDemo(question="Sort: b a", call="sort_words(['b', 'a'])", answer="a b")],
        maker_model="m",
        verification=[],
        created_at="2026-01-01T00:00:00+00:00",
        version=1,
    )


# ------------------------------------------------------- 2. one atomic write


class CrashingStore(InMemoryStore):
    """Dies (like a kill -9) at its n-th write call, before doing it."""

    def __init__(self, crash_at: int) -> None:
        super().__init__()
        self.writes = 0
        self.crash_at = crash_at

    def _write(self) -> None:
        self.writes += 1
        if self.writes == self.crash_at:
            raise KeyboardInterrupt("killed")

    def put(self, *args: Any, **kwargs: Any) -> None:
        self._write()
        super().put(*args, **kwargs)

    def batch(self, ops: Any) -> Any:
        ops = list(ops)
        if any(isinstance(op, PutOp) for op in ops):
            self._write()
        return super().batch(ops)


def test_a_tool_is_stored_in_one_write_a_crash_leaves_all_or_nothing() -> None:
    for crash_at in (1, 2):
        store = CrashingStore(crash_at)
        repo = ToolRepository(store)
        with contextlib.suppress(KeyboardInterrupt):
            repo.put(a_record())
        latest = store.search(repo.namespace)
        versions = store.search(repo.versions_namespace)
        assert len(latest) == len(versions)  # never an orphan version
    assert ToolRepository(store).get("word_sorting") is not None


def test_a_resumed_wrap_never_stores_a_second_version(store) -> None:
    app = build_graph(store=store, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t1"}}
    maker = scripted([maker_reply(SORT_CODE, VALIDATION_QS)])
    user = scripted([user_reply(EXAMPLES[20]["input"])] * 2)
    context = ctx(maker, user)
    out = app.invoke(
        {"task": EXAMPLES[20]["input"], "examples": SIX, "task_type": "word_sorting"},
        config,
        context=context,
    )
    assert out["error"] is None
    # the process died after wrap's write but before its checkpoint: resume from before wrap
    before_wrap = next(s for s in app.get_state_history(config) if s.next == ("wrap",))
    again = app.invoke(None, before_wrap.config, context=context)
    assert again["error"] is None and again["tool"]["version"] == 1
    assert [r.version for r in ToolRepository(store).versions("word_sorting")] == [1]
    assert len(maker.received) == 1


# ------------------------------------------------------------ 3. identity


def test_two_tasks_whose_functions_share_a_name_never_overwrite_each_other(store) -> None:
    reverse = [
        {"input": e["input"], "target": " ".join(sorted(words_of(e["input"]), reverse=True))}
        for e in SIX
    ]
    for examples, code in ((SIX, SORT_CODE), (reverse, BUGGY_SORT_CODE)):
        maker = scripted([maker_reply(code, VALIDATION_QS)])
        out = build_graph(store=store).invoke({"examples": examples}, context=ctx(maker))
        assert out["error"] is None
    records = ToolRepository(store).records()
    assert len(records) == 2 and {r.version for r in records} == {1}
    assert {r.code for r in records} == {SORT_CODE, BUGGY_SORT_CODE}


# ------------------------------------------------------------ 4. quarantine


def _corrupt_json(task_type: str) -> None:
    with sqlite3.connect(os.environ["LATM_STORE_PATH"]) as conn:
        conn.execute(
            "UPDATE store SET value = '{not json' WHERE prefix = 'latm.default.tools' AND key = ?",
            (task_type,),
        )


def test_one_malformed_record_is_quarantined_and_harms_no_other(capsys) -> None:
    repo = sqlite_repo()
    repo.put(a_record("good_tool"))
    repo.put(a_record("bad_tool"))
    _corrupt_json("bad_tool")
    assert main(["tools", "list"]) == 0
    assert "good_tool" in capsys.readouterr().out
    assert [r.task_type for r in repo.records()] == ["good_tool"]
    assert [r.task_type for r, _ in repo.search("sort words")] == ["good_tool"]
    assert main(["tools", "export", "-o", os.environ["LATM_STORE_PATH"] + ".json"]) == 0
    capsys.readouterr()
    # the doctor lists it (quarantined, with the reason) and repairs the latest record
    assert main(["tools", "doctor", "--repair"]) == 0
    out = capsys.readouterr().out
    assert "bad_tool" in out and "not JSON" in out
    assert repo.get("bad_tool") is not None  # rebuilt from its intact version record
    assert main(["tools", "rm", "good_tool"]) == 0


def test_tools_stored_by_an_older_latm_are_reverified_and_restored(capsys) -> None:
    """Records written before content hashes are quarantined on read; the doctor brings back
    those whose stored cases still pass in the sandbox, and keeps an edited one out."""
    repo = sqlite_repo()
    for task_type, code in (("word_sorting", SORT_CODE), ("edited_tool", BUGGY_SORT_CODE)):
        old = a_record(task_type, code).model_dump(mode="json", exclude={"content_sha256"})
        repo.store.put(repo.versions_namespace, f"{task_type}:v1", old, index=False)
        repo.store.put(repo.namespace, task_type, old)
    assert repo.records() == []  # quarantined on first read, never served unchecked
    assert main(["tools", "doctor"]) == 0
    assert "tools doctor --reverify" in " ".join(capsys.readouterr().out.split())
    assert main(["tools", "doctor", "--reverify"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "word_sorting: re-verified in the sandbox and restored" in out
    assert "edited_tool: stays quarantined: re-verification failed" in out
    restored = repo.get("word_sorting")
    assert restored is not None and restored.content_sha256 is not None
    assert [r.version for r in repo.versions("word_sorting")] == [1]
    assert [r.task_type for r, _ in repo.search("sort words")] == ["word_sorting"]
    assert repo.get("edited_tool") is None


# ------------------------------------------------------- 5. who is at fault


def test_bad_calls_of_the_user_model_never_retire_a_sound_tool(store) -> None:
    maker = scripted([maker_reply(SORT_CODE, VALIDATION_QS)])
    bad_call = "```python\nsort_words(None)\n```"
    looping = "```python\nsort_words(list(iter(int, 1)))\n```"  # never ends, in the call
    user = scripted([bad_call] * 6 + [looping])
    context = ctx(maker, user, max_tool_failures=5)
    inputs = {"task": EXAMPLES[20]["input"], "task_type": "word_sorting"}
    made = build_graph(store=store).invoke({**inputs, "examples": SIX}, context=context)
    assert made["error"] is not None  # the user model's bad call, not a tool failure
    for _ in range(6):
        out = build_graph(store=store).invoke(inputs, context=context)
        assert out["cache_hit"] and "retired" not in str(out["error"])
    repo = ToolRepository(store)
    tool = repo.get("word_sorting")
    assert tool is not None and retired(repo, tool, context) is None
    stats = repo.stats("word_sorting", 1)
    # the looping call (it computes its own input) is refused before it runs
    assert stats.failures == 0 and stats.call_failures == stats.calls == 6


def test_a_tool_that_fails_on_well_formed_arguments_is_at_fault(store) -> None:
    trap = SORT_CODE.replace(
        '    return " ".join(sorted(words))',
        '    if "boom" in words:\n        raise RuntimeError("boom")\n'
        '    return " ".join(sorted(words))',
    )
    repo = ToolRepository(store)
    repo.put(a_record(code=trap))
    call = "```python\nsort_words(['zebra', 'boom'])\n```"
    context = ctx(scripted([]), scripted([call]), max_tool_failures=1)
    build_graph(store=store).invoke(
        {"task": "Sort: zebra boom", "task_type": "word_sorting"}, context=context
    )
    assert repo.stats("word_sorting", 1).failures == 1


def test_a_tool_that_fails_its_own_demos_is_still_at_fault(store) -> None:
    repo = ToolRepository(store)
    broken = a_record(code="def sort_words(words):\n    raise ValueError('broken')\n")
    repo.put(broken)
    context = ctx(scripted([]), scripted(["```python\nsort_words(['b', 'a'])\n```"] * 5))
    for _ in range(5):
        build_graph(store=store).invoke(
            {"task": "Sort: b a", "task_type": "word_sorting"}, context=context
        )
    assert repo.stats("word_sorting", 1).failures == 5
    tool = repo.get("word_sorting")
    assert tool is not None and retired(repo, tool, context) is not None


# ------------------------------------------- 6. verified function kept on outage


class Outage(ScriptedChatModel):
    """Replies with its script, then fails like a dead server."""

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            if len(self.received) >= 1:
                raise ConnectionError("connection refused")
        return super()._generate(*args, **kwargs)


def test_a_maker_outage_after_a_verified_function_stores_that_function(store) -> None:
    maker = Outage(messages=iter([AIMessage(maker_reply(SORT_CODE, VALIDATION_QS))]))
    context = ctx(maker, direct_entry=True, max_attempts=3)
    out = build_graph(store=store).invoke(
        {"examples": SIX, "task_type": "word_sorting"}, context=context
    )
    assert out["error"] is None, out["error"]
    tool = ToolRepository(store).get("word_sorting")
    assert tool is not None and tool.code.strip() == SORT_CODE.strip()
    assert tool.direct_entry is None


# -------------------------------------------------------- 7. early stop


LOOPING = "def sort_words(words):\n    while True:\n        pass\n"


class CountingExecutor:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0
        self.timeouts = 0
        self.lock = threading.Lock()

    def run(self, code: str, calls: Any, limits: Any, **kwargs: Any) -> Any:
        results = self.inner.run(code, calls, limits, **kwargs)
        with self.lock:
            self.calls += len(calls)
            self.timeouts += sum(r.status == "timeout" for r in results)
        return results


def test_looping_candidates_cost_one_deadline_each(store, monkeypatch) -> None:
    verify_mod = importlib.import_module("latm.nodes.verify")

    counting: list[CountingExecutor] = []

    def executor(c: Context) -> CountingExecutor:
        counting.append(CountingExecutor(get_tool_executor(c)))
        return counting[-1]

    monkeypatch.setattr(verify_mod, "get_tool_executor", executor)
    maker = scripted([maker_reply(LOOPING, VALIDATION_QS)] * 3)
    out = build_graph(store=store).invoke(
        {"examples": SIX, "task_type": "word_sorting"},
        context=ctx(maker, n_candidates=3, max_attempts=1, exec_timeout_s=1.0),
    )
    assert "could not make a verified tool" in str(out["error"])
    assert counting[0].timeouts == 3 and counting[0].calls == 3  # one per candidate, not 9


def test_direct_checks_stop_at_the_first_failure() -> None:
    from latm.nodes.verify import run_checks
    from latm.sandbox import ExecLimits, get_executor

    inner = CountingExecutor(get_executor("auto", allow_unsandboxed=True))
    checks = [("direct", f"solve({i!r})") for i in range(20)]
    code = "def solve(x):\n    return 'wrong'\n"
    results = run_checks(inner, code, checks, ExecLimits(timeout_s=2.0), lambda i, r: False)
    assert inner.calls == 1 and results[1:] == [None] * 19


# ------------------------------------------------------------ 8. deadline


class Hanging(ScriptedChatModel):
    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(30)
        raise AssertionError("not reached")


def test_the_run_deadline_ends_a_run_with_a_hung_maker(store) -> None:
    started = time.monotonic()
    out = build_graph(store=store).invoke(
        {"examples": SIX, "task_type": "word_sorting"},
        context=ctx(Hanging(messages=iter([])), run_deadline_s=1.0, max_attempts=3),
    )
    assert "deadline" in str(out["error"]) and time.monotonic() - started < 20
    assert ToolRepository(store).records() == []
    assert list(store.search(("latm", "default", "leases"), limit=10)) == []


def test_the_readme_documents_the_request_timeout_retries_and_deadline() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("### Settings", 1)[1].split("\n## ", 1)[0]
    for name in (
        "LATM_REQUEST_TIMEOUT_S",
        "LATM_MAX_RETRIES",
        "LATM_RUN_DEADLINE_S",
        "LATM_MAX_REQUEST_CHARS",
        "LATM_MAX_EXAMPLE_CHARS",
        "LATM_MAX_REPLY_CHARS",
    ):
        assert f"`{name}`" in table, name


# ----------------------------------------------------------- 9. size limits


def test_oversized_requests_and_examples_get_a_clear_error(store) -> None:
    app = build_graph(store=store)
    context = ctx(scripted([]), max_request_chars=1000, max_example_chars=500)
    out = app.invoke({"task": "x" * 1001}, context=context)
    assert "'task' is 1001 characters long; the limit is 1000" in str(out["error"])
    big = [*SIX[:5], {"input": "y" * 501, "target": "z"}]
    out = app.invoke({"examples": big}, context=context)
    assert "example 5: 'input' is 501 characters long; the limit is 500" in str(out["error"])


def test_an_oversized_maker_reply_is_refused_and_not_kept(store) -> None:
    huge = maker_reply(SORT_CODE + "#" + "x" * 300_000 + "\n", VALIDATION_QS)
    app = build_graph(store=store, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "big"}}
    out = app.invoke(
        {"examples": SIX, "task_type": "word_sorting"},
        config,
        context=ctx(scripted([huge]), max_attempts=1, max_reply_chars=100_000),
    )
    assert "LATM_MAX_REPLY_CHARS" in str(out["error"])
    assert len(repr(app.get_state(config).values)) < 100_000


# ------------------------------------------------------------ 10. input gaps


@pytest.mark.parametrize("task_type", ["abc\n", "a\tb", "x\x00"])
def test_task_types_with_control_characters_are_rejected(store, task_type) -> None:
    out = build_graph(store=store).invoke(
        {"task": "Sort: b a", "examples": SIX, "task_type": task_type}, context=ctx()
    )
    assert "invalid request: 'task_type' must be" in str(out["error"])
    with pytest.raises(ValidationError):
        a_record(task_type)


def test_non_utf8_input_is_reported_as_such(store) -> None:
    out = build_graph(store=store).invoke({"task": "Sort: b \udcff a"}, context=ctx())
    assert "'task' is not valid UTF-8 text" in str(out["error"])


def _write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (json.dumps([{"input": ["a", "b"], "target": "x"}]).encode(), "must be text"),
        (json.dumps([{"input": "a", "target": None}]).encode(), "must be text"),
        (b'[{"input": "caf\xe9", "target": "x"}]', "is not UTF-8 text"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_make_reports_bad_example_files_without_a_traceback(tmp_path, capsys, content, message):
    path = _write(tmp_path, "ex.json", content)
    assert main(["make", "--examples", path, "--task-type", "t"]) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split()) and "Traceback" not in err


def test_make_refuses_zero_attempts_and_bad_task_types(tmp_path, capsys) -> None:
    path = _write(tmp_path, "ex.json", json.dumps(SIX).encode())
    assert main(["make", "--examples", path, "--max-attempts", "0"]) == 2
    assert "setting 'max_attempts' must be at least 1" in capsys.readouterr().err
    assert main(["make", "--examples", path, "--task-type", "abc\n"]) == 2
    assert "must be" in capsys.readouterr().err


def test_make_reports_an_unreadable_store_without_a_traceback(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "store.sqlite"
    open_backend(store_path=str(bad))  # a real store, whose table then goes away
    with sqlite3.connect(bad) as conn:
        conn.execute("DROP TABLE store")
    monkeypatch.setenv("LATM_STORE_PATH", str(bad))
    path = _write(tmp_path, "ex.json", json.dumps(SIX).encode())
    assert main(["make", "--examples", path, "--task-type", "t"]) == 2
    err = capsys.readouterr().err
    assert "repository" in err and "Traceback" not in err


# -------------------------------------------------------------- 11. import


def _export(tmp_path: Path, tools: list[dict[str, Any]], **extra: Any) -> str:
    doc = {"format": "latm-tools", "tools": tools, "sha256": content_hash(tools), **extra}
    return _write(tmp_path, "tools.json", json.dumps(doc).encode())


def test_import_reverifies_edited_tools_and_refuses_unknown_schemas(tmp_path, capsys) -> None:
    repo = sqlite_repo()
    good = a_record().model_dump(mode="json")
    edited = {**good, "code": BUGGY_SORT_CODE}  # the hash recomputed over the edit
    assert main(["tools", "import", _export(tmp_path, [edited])]) == 2
    assert "re-verification failed" in " ".join(capsys.readouterr().err.split())
    assert main(["tools", "import", _export(tmp_path, [{**good, "schema_version": 99}])]) == 2
    assert "unknown record schema version 99" in " ".join(capsys.readouterr().err.split())
    assert main(["tools", "import", _export(tmp_path, [good], format_version=7)]) == 2
    assert main(["tools", "import", _export(tmp_path, [{**good, "task_type": "abc\n"}])]) == 2
    assert "the task type must be" in " ".join(capsys.readouterr().err.split())
    assert repo.records() == []
    assert main(["tools", "import", _export(tmp_path, [good])]) == 0
    assert repo.get("word_sorting") is not None


def test_code_edited_in_the_store_is_never_served(store) -> None:
    repo = ToolRepository(store)
    repo.put(a_record())
    item = store.get(repo.namespace, "word_sorting")
    assert item is not None
    store.put(repo.namespace, "word_sorting", {**item.value, "code": BUGGY_SORT_CODE})
    assert repo.get("word_sorting") is None
    out = build_graph(store=store).invoke(
        {"task": "Sort: b a", "task_type": "word_sorting"}, context=ctx(scripted([]))
    )
    assert "no tool for task type" in str(out["error"])
    assert next(q["reason"] for q in repo.quarantined()).startswith("content hash mismatch")
