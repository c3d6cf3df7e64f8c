"""Worked examples with their reasoning: shown to the maker and the CoT shots, never checked."""

from __future__ import annotations

import json
from typing import Any

import pytest

from latm.bench.cot import cot_messages
from latm.bench.tasks import prepare_task
from latm.data import TASKS, load_task, task_rationales
from latm.graph import Context
from latm.graph.builder import build_graph
from latm.graph.context import PAPER
from latm.repository import ToolRepository

from .scripted import SORT_CODE, bbh, maker_reply, scripted
from .test_bench_run import models  # noqa: F401  (fixture)

EXAMPLES = bbh("word_sorting")
VALIDATION_QS = [e["input"] for e in EXAMPLES[3:6]]
REASONING = "Compare the words letter by letter; MARKER-7f3 joins them with spaces."


def ctx(maker: Any, **kwargs: Any) -> Context:
    settings = {**PAPER, "exec_timeout_s": 2.0, "max_retries": 0, **kwargs}
    return Context(maker_llm=maker, user_llm=scripted([]), **settings)


def test_the_maker_sees_a_demos_reasoning_between_question_and_answer(store):
    examples = [dict(e) for e in EXAMPLES[:6]]
    examples[1]["rationale"] = f"  {REASONING}\n"
    maker = scripted([maker_reply(SORT_CODE, VALIDATION_QS)])
    out = build_graph(store=store).invoke(
        {"examples": examples, "task_type": "word_sorting"}, context=ctx(maker)
    )
    assert out["error"] is None and out["tool"]["name"] == "sort_words"
    prompt = str(maker.received[0][-1].content)
    demo = (
        f"Question: {EXAMPLES[1]['input']}\nReasoning: {REASONING}\nAnswer: {EXAMPLES[1]['target']}"
    )
    assert demo in prompt
    # Only the demo that has one shows a reasoning line.
    assert prompt.count("Reasoning:") == 1
    stored = ToolRepository(store, "default").get("word_sorting")
    assert stored is not None and REASONING not in json.dumps(stored.model_dump(mode="json"))


def test_a_blank_reasoning_is_no_reasoning(store):
    examples = [dict(e) for e in EXAMPLES[:6]]
    examples[0]["rationale"] = "   "
    maker = scripted([maker_reply(SORT_CODE, VALIDATION_QS)])
    out = build_graph(store=store).invoke(
        {"examples": examples, "task_type": "word_sorting"}, context=ctx(maker)
    )
    assert out["error"] is None
    assert "Reasoning:" not in str(maker.received[0][-1].content)


@pytest.mark.parametrize("bad", [5, ["steps"], {"a": 1}])
def test_a_reasoning_that_is_not_text_is_a_clear_error(store, bad):
    examples = [dict(e) for e in EXAMPLES[:6]]
    examples[2]["rationale"] = bad
    maker = scripted([])
    out = build_graph(store=store).invoke(
        {"examples": examples, "task_type": "word_sorting"}, context=ctx(maker)
    )
    assert out["error"] == "invalid request: example 2: 'rationale' must be text"
    assert maker.received == [] and ToolRepository(store, "default").get("word_sorting") is None


@pytest.mark.parametrize("task", TASKS)
def test_every_task_ships_reasoning_for_its_three_demos_that_reaches_their_answers(task):
    plain = load_task(task)
    annotated = load_task(task, rationales=True)
    assert [e for e in plain if "rationale" in e] == []
    assert [i for i, e in enumerate(annotated) if "rationale" in e] == [0, 1, 2]
    assert sorted(task_rationales(task)) == [0, 1, 2]
    for example in annotated[:3]:
        # The reasoning arrives at the example's own answer.
        assert example["target"] in example["rationale"]
    assert [(e["input"], e["target"]) for e in annotated] == [
        (e["input"], e["target"]) for e in plain
    ]


def test_bench_tasks_carry_reasoning_on_their_demos_only_when_asked():
    task = prepare_task("word_sorting", limit=2, rationales=True)
    assert all(d.get("rationale") for d in task.demos)
    assert not any("rationale" in e for e in task.validation)
    assert not any("rationale" in d for d in prepare_task("word_sorting", limit=2).demos)
    # The paper's Dyck preparation drops the reasoning, which is written for the spaced form.
    dyck = prepare_task("dyck_languages", limit=1, dyck_strip_spaces=True, rationales=True)
    assert not any("rationale" in d for d in dyck.demos)
    assert " " not in dyck.demos[0]["target"]


def test_cot_shots_show_the_reasoning_before_the_final_answer():
    demos = prepare_task("chinese_remainder_theorem", limit=1, rationales=True).demos
    text = str(cot_messages(demos, "How many?")[-1].content)
    first = demos[0]
    assert f"Reasoning: {first['rationale']}\nFinal answer: {first['target']}" in text
    plain = prepare_task("chinese_remainder_theorem", limit=1).demos
    assert "Reasoning:" not in str(cot_messages(plain, "How many?")[-1].content)


def test_bench_records_whether_demos_had_reasoning_and_paper_mode_drops_it(
    models,  # noqa: F811
    tmp_path,
    capsys,
):
    from latm.cli import main

    base = ["bench", "--tasks", "word_sorting", "--limit", "1", "--methods", "cot_user"]
    default, paper = str(tmp_path / "default"), str(tmp_path / "paper")
    assert main([*base, "--out", default]) == 0
    assert main([*base, "--out", paper, "--paper"]) == 0
    capsys.readouterr()
    runs = {
        p: json.loads((tmp_path / p / "results.json").read_text()) for p in ("default", "paper")
    }
    assert runs["default"]["options"]["rationales"] is True
    assert runs["paper"]["options"]["rationales"] is False
    assert "demos with their reasoning" in (tmp_path / "default" / "results.md").read_text()
    assert "demos questions and answers (paper)" in (tmp_path / "paper" / "results.md").read_text()
    # A report rebuilt alone keeps what the run did, whatever the flags say now.
    assert main(["bench", "--out", paper, "--report-only"]) == 0
    assert (
        json.loads((tmp_path / "paper" / "results.json").read_text())["options"]["rationales"]
        is False
    )
    # Continuing a run without the reasoning it was started with is refused.
    capsys.readouterr()
    assert main([*base, "--out", default, "--no-rationales"]) == 2
    assert "rationales: True there, False now" in " ".join(capsys.readouterr().err.split())


def test_the_slot_benchmark_sends_the_graphs_own_first_request(store):
    from latm.bench.local_parallel import maker_messages
    from latm.data import paper_split

    split = paper_split(load_task("word_sorting", rationales=True))
    maker = scripted([maker_reply(SORT_CODE, [e["input"] for e in split["validation"]])])
    out = build_graph(store=store).invoke(
        {"examples": split["demos"] + split["validation"], "task_type": "word_sorting"},
        context=Context(
            maker_llm=maker,
            user_llm=scripted([]),
            n_candidates=1,
            max_attempts=1,
            exec_timeout_s=2.0,
        ),
    )
    assert out["error"] is None
    sent = [{"role": m.type, "content": m.content} for m in maker.received[0]]
    expected = [
        {"role": r.replace("user", "human"), "content": c}
        for r, c in ((m["role"], m["content"]) for m in maker_messages("word_sorting"))
    ]
    assert sent == expected
    assert "Reasoning:" in expected[1]["content"]


def test_the_input_schema_offers_the_reasoning_as_an_optional_field():
    from latm.graph.builder import graph

    schema = graph.get_input_jsonschema()
    example = schema["$defs"]["Example"]
    assert example["properties"]["rationale"]["type"] == "string"
    assert sorted(example["required"]) == ["input", "target"]
