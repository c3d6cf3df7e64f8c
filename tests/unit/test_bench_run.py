"""``latm bench`` end to end with prompt-driven fake models (no network)."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import Counter
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from latm.bench.costs import load_prices
from latm.bench.records import ITEMS, MAKE, RunDir
from latm.bench.report import build_results, markdown
from latm.bench.runner import BenchOptions, run_bench
from latm.bench.tasks import prepare_task
from latm.cli import main
from latm.cli import run as cli_run
from latm.graph import context as context_module
from latm.graph.context import Context
from latm.prompts.bench import COT_SYSTEM

from .scripted import SORT_CODE, maker_reply, words_of

PAPER: dict[str, Any] = dict(getattr(context_module, "PAPER", {}))
TASK = prepare_task("word_sorting")
BY_INPUT = {item.input: item for item in TASK.test}

# Token usage each kind of call reports, so that the expected costs can be worked out by hand.
USAGE = {
    ("maker", "make"): (1000, 200),
    ("maker", "cot"): (300, 100),
    ("user", "use"): (100, 10),
    ("user", "cot"): (300, 100),
}


class FakeModel(BaseChatModel):
    """Answers from the prompt: tool code (maker), tool calls (user), CoT (both).

    The CoT of the maker is always right; the user's CoT is right on even test indexes.
    ``fail_on`` makes the call for one test index raise (a dead server) once per entry.
    """

    role: str
    fail_on: list[int] = Field(default_factory=list)
    interrupt_after: int | None = None

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        object.__setattr__(self, "_lock", threading.Lock())
        object.__setattr__(self, "kinds", Counter())

    @property
    def _llm_type(self) -> str:
        return "fake"

    def _item(self, text: str) -> Any:
        found = [item for question, item in BY_INPUT.items() if question in text]
        return found[-1] if found else None

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kwargs: Any) -> ChatResult:
        text = "\n".join(str(m.content) for m in messages)
        kind = "cot" if COT_SYSTEM in text else ("make" if self.role == "maker" else "use")
        item = self._item(str(messages[-1].content))
        with self._lock:
            self.kinds[kind] += 1
            total = sum(self.kinds.values())
            if self.interrupt_after is not None and total > self.interrupt_after:
                raise KeyboardInterrupt
            if item is not None and item.index in self.fail_on:
                self.fail_on.remove(item.index)
                raise ConnectionError("server went away")
        if kind == "make":
            reply = maker_reply(SORT_CODE, [e["input"] for e in TASK.validation])
        elif kind == "use":
            reply = f"```python\nsort_words({words_of(item.input)!r})\n```"
        elif item is None:  # a task the fake does not know
            reply = "So the answer is x."
        elif self.role == "maker" or item.index % 2 == 0:
            reply = f"Sorting the words one by one.\nSo the answer is {item.target}."
        else:
            reply = "So the answer is zzz."
        tokens_in, tokens_out = USAGE[(self.role, kind)]
        message = AIMessage(
            content=reply,
            usage_metadata={
                "input_tokens": tokens_in,
                "output_tokens": tokens_out,
                "total_tokens": tokens_in + tokens_out,
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


def context(maker: FakeModel, user: FakeModel, **kw: Any) -> Context:
    return Context(
        maker_llm=maker, user_llm=user, exec_timeout_s=2.0, max_retries=0, **{**PAPER, **kw}
    )


@pytest.fixture
def models(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeModel]:
    holder = {"maker": FakeModel(role="maker"), "user": FakeModel(role="user")}

    def inject(ctx: Context) -> Context:
        return dataclasses.replace(
            ctx,
            maker_llm=holder["maker"],
            user_llm=holder["user"],
            exec_timeout_s=2.0,
            max_retries=0,
            **PAPER,
        )

    monkeypatch.setattr(cli_run, "configure_models", inject)
    return holder


def test_cli_bench_end_to_end_then_rerun_does_nothing(models, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["bench", "--tasks", "word_sorting", "--limit", "4", "--out", str(out)]
    assert main(argv) == 0
    stdout = capsys.readouterr().out

    results = json.loads((out / "results.json").read_text())
    task = results["tasks"]["word_sorting"]
    make, methods = task["make"], task["methods"]
    assert make["ok"] and make["attempts"] == 1 and "def sort_words" in make["code"]
    assert [n["node"] for n in make["nodes"]] == ["dispatcher", "propose", "verify", "wrap"]
    assert all(n["seconds"] >= 0 for n in make["nodes"])
    assert make["nodes"][1]["usage"]["maker"]["input_tokens"] == 1000
    assert make["usage"]["maker"] == {
        "input_tokens": 1000,
        "output_tokens": 200,
        "total_tokens": 1200,
        "calls": 1,
    }
    # Test items 10-13: the tool answers all; the user's CoT only the even ones; the maker's all.
    assert (methods["latm"]["correct"], methods["latm"]["answered"]) == (4, 4)
    assert methods["latm"]["cache_hits"] == 4
    assert set(methods["latm"]["node_times"]) == {"dispatcher", "use"}
    assert (methods["cot_user"]["correct"], methods["cot_maker"]["correct"]) == (2, 4)
    assert methods["latm"]["usage"] == {
        "user": {"input_tokens": 400, "output_tokens": 40, "total_tokens": 440, "calls": 4}
    }
    assert models["maker"].kinds == Counter({"make": 1, "cot": 4})
    assert models["user"].kinds == Counter({"use": 4, "cot": 4})

    # Costs under the paper's prices: maker $30/$60, user $2/$2 per 1M tokens.
    paper = {m: methods[m]["cost"]["paper-2023"] for m in methods}
    make_cost = (1000 * 30 + 200 * 60) / 1e6
    use_cost = (100 * 2 + 10 * 2) / 1e6
    cot_maker = (300 * 30 + 100 * 60) / 1e6
    cot_user = (300 * 2 + 100 * 2) / 1e6
    assert paper["latm"]["fixed"] == pytest.approx(make_cost)
    assert paper["latm"]["per_item"] == pytest.approx(use_cost)
    assert paper["latm"]["total"] == pytest.approx(make_cost + 4 * use_cost)
    assert paper["cot_maker"]["per_item"] == pytest.approx(cot_maker)
    assert paper["cot_user"]["total"] == pytest.approx(4 * cot_user)
    n_maker = -(-make_cost // (cot_maker - use_cost))
    n_user = -(-make_cost // (cot_user - use_cost))
    assert task["break_even"]["paper-2023"] == {"cot_maker": n_maker, "cot_user": n_user}
    assert methods["latm"]["cost"]["local"]["total"] == 0

    table = (out / "results.md").read_text()
    assert table == stdout
    assert "| word_sorting | LATM (tool) | 4/4 = 100% |" in table
    assert "| word_sorting | CoT, user model | 2/4 = 50% |" in table
    assert "yes (1 attempt)" in table
    assert f"| {int(n_maker)} | {int(n_user)} |" in table
    assert "first 4 of 240 (--limit 4)" in table
    assert (out / "cost_vs_n.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Running it again finds everything done: no model call at all.
    before = (sum(models["maker"].kinds.values()), sum(models["user"].kinds.values()))
    assert main(argv) == 0
    assert (sum(models["maker"].kinds.values()), sum(models["user"].kinds.values())) == before
    # A larger limit runs only the new items (and makes no new tool).
    assert main([*argv[:4], "6", *argv[5:]]) == 0
    assert models["maker"].kinds == Counter({"make": 1, "cot": 6})
    assert models["user"].kinds == Counter({"use": 6, "cot": 6})
    results = json.loads((out / "results.json").read_text())
    assert results["tasks"]["word_sorting"]["methods"]["cot_maker"]["answered"] == 6

    # The report alone is rebuilt from the records, for the last run's tasks and limit.
    (out / "results.json").unlink()
    assert main(["bench", "--out", str(out), "--report-only", "--pricing", "local"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert list(again["tasks"]) == ["word_sorting"] and again["options"]["limit"] == 6
    assert again["pricing"] == "local"
    assert again["tasks"]["word_sorting"]["methods"] == results["tasks"]["word_sorting"]["methods"]
    assert models["maker"].kinds == Counter({"make": 1, "cot": 6})


def test_crashed_run_continues_where_it_stopped(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    options = BenchOptions(tasks=("word_sorting",), limit=5, concurrency=2)
    maker = FakeModel(role="maker", interrupt_after=3)  # the make call, then 2 CoT calls, then stop
    user = FakeModel(role="user")
    stats = run_bench(context(maker, user), options, run_dir)
    assert stats.interrupted
    first = list(run_dir.read(ITEMS))
    assert 0 < len(first) < 15
    # A torn line (the crash hit mid-write) is skipped.
    with open(run_dir.file(ITEMS), "a") as handle:
        handle.write('{"task": "word_sorting", "method": "latm", "ind')

    maker2, user2 = FakeModel(role="maker"), FakeModel(role="user")
    stats = run_bench(context(maker2, user2), options, run_dir)
    assert not stats.interrupted and stats.skipped == len(first)
    assert maker2.kinds["make"] == 0  # the tool made before the crash is reused
    records = run_dir.item_records()
    assert len(records) == 15
    assert stats.answered == 15 - len(first)
    assert sum(maker2.kinds.values()) + sum(user2.kinds.values()) == 15 - len(first)


def test_items_run_item_by_item_across_tasks_so_a_stopped_run_is_balanced(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    options = BenchOptions(
        tasks=("word_sorting", "dyck_languages"), limit=3, methods=("cot_user",), concurrency=1
    )
    user = FakeModel(role="user", interrupt_after=4)
    stats = run_bench(context(FakeModel(role="maker"), user), options, run_dir)
    assert stats.interrupted
    done = [(r["task"], r["index"]) for r in run_dir.read(ITEMS)]
    assert done == [
        ("word_sorting", 10),
        ("dyck_languages", 10),
        ("word_sorting", 11),
        ("dyck_languages", 11),
    ]


def test_model_failures_are_recorded_and_retried_on_the_next_run(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    options = BenchOptions(tasks=("word_sorting",), limit=3, methods=("latm", "cot_user"))
    user = FakeModel(role="user", fail_on=[11, 11])  # both user calls of item 11 fail once
    stats = run_bench(context(FakeModel(role="maker"), user), options, run_dir)
    assert stats.infra_errors == 2
    failed = [r for r in run_dir.item_records().values() if r["error"]]
    assert {(r["method"], r["index"]) for r in failed} == {("latm", 11), ("cot_user", 11)}
    assert all(r["infra"] and "failed" in r["error"] for r in failed)
    partial = build_results(run_dir, options, load_prices(), "paper-2023")
    assert partial["tasks"]["word_sorting"]["methods"]["latm"]["infra_errors"] == 1

    user2 = FakeModel(role="user")
    stats = run_bench(context(FakeModel(role="maker"), user2), options, run_dir)
    assert stats.answered == 2 and stats.infra_errors == 0
    assert sum(user2.kinds.values()) == 2
    results = build_results(run_dir, options, load_prices(), "paper-2023")
    latm = results["tasks"]["word_sorting"]["methods"]["latm"]
    assert latm["correct"] == 3 and latm["errors"] == 0


def test_failed_tool_making_is_reported_and_latm_scores_zero(tmp_path):
    class NoCodeMaker(FakeModel):
        def _generate(self, messages: list[BaseMessage], stop: Any = None, **kw: Any) -> ChatResult:
            if COT_SYSTEM in "\n".join(str(m.content) for m in messages):
                return super()._generate(messages, stop, **kw)
            self.kinds["make"] += 1
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content="no idea"))])

    run_dir = RunDir(tmp_path / "run")
    options = BenchOptions(tasks=("word_sorting",), limit=2)
    maker, user = NoCodeMaker(role="maker"), FakeModel(role="user")
    stats = run_bench(context(maker, user, max_attempts=2), options, run_dir)
    assert stats.no_tool == ["word_sorting"] and maker.kinds["make"] == 2
    assert user.kinds["use"] == 0  # no tool, nothing to call
    results = build_results(run_dir, options, load_prices(), "paper-2023")
    task = results["tasks"]["word_sorting"]
    assert task["make"]["ok"] is False and task["make"]["attempts"] == 2
    assert "could not make a verified tool" in task["make"]["error"]
    assert task["methods"]["latm"]["accuracy"] == 0 and task["methods"]["latm"]["no_tool"]
    assert task["break_even"]["paper-2023"] == {}
    text = markdown(results)
    assert "0/2 = 0% (no tool)" in text and "no (2 attempts)" in text and "| no tool |" in text
    # The failed making is a result, not a crash: running again does not retry it.
    stats = run_bench(context(maker, user, max_attempts=2), options, run_dir)
    assert maker.kinds["make"] == 2 and len(list(run_dir.read(MAKE))) == 1


def test_continuing_with_other_settings_is_refused(models, tmp_path, capsys):
    out = str(tmp_path / "run")
    base = ["bench", "--tasks", "word_sorting", "--limit", "1", "--methods", "cot_user"]
    assert main([*base, "--out", out]) == 0
    capsys.readouterr()
    assert main([*base, "--out", out, "--cot-max-tokens", "99"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "holds a run with other settings (cot_max_tokens: 1024 there, 99 now)" in err
    assert main([*base, "--out", out, "--cot-max-tokens", "99", "--fresh"]) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--limit", "0"], "--limit must be at least 1"),
        (["--concurrency", "0"], "--concurrency must be at least 1"),
        (["--pricing", "nope"], "no price preset 'nope'"),
        (["--prices", "/nonexistent/p.toml"], "cannot read the price table"),
        (["--set", "bogus=1"], "expected FIELD=VALUE"),
    ],
)
def test_user_mistakes_are_clear_errors(models, tmp_path, capsys, args, message):
    assert main(["bench", "--out", str(tmp_path / "r"), *args]) == 2
    assert message in " ".join(capsys.readouterr().err.split())
