"""The example parent agent (examples/parent_agent.py) with LATM as its subgraph."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from latm.repository import ToolRepository

from .scripted import SORT_CODE, bbh, maker_reply, scripted, user_reply

EXAMPLES = bbh("word_sorting")
KNOWN = {"word_sorting": EXAMPLES[:6]}
VALIDATION_QS = [e["input"] for e in EXAMPLES[3:6]]


@pytest.fixture(scope="module")
def example() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "examples" / "parent_agent.py"
    spec = importlib.util.spec_from_file_location("parent_agent_example", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its TypedDict's annotations resolve in the module
    spec.loader.exec_module(module)
    return module


def ask(app: Any, ctx: Any, question: str, config: Any = None, **state: Any) -> dict[str, Any]:
    state.setdefault("worked_examples", KNOWN)
    return dict(app.invoke({"request": question, **state}, config, context=ctx))


def test_the_parent_hands_the_subtask_to_latm_and_shares_its_store(example, store, make_context):
    first, second = EXAMPLES[20], EXAMPLES[21]
    maker = scripted([maker_reply(SORT_CODE, VALIDATION_QS)])
    user = scripted([user_reply(first["input"]), user_reply(second["input"])])
    ctx = make_context(maker, user)
    assistant = example.build_assistant(store)

    out = ask(assistant, ctx, first["input"])

    assert out["result"] == first["target"] and out["made_tool"] is True
    assert out["skill"] == "word_sorting"
    assert out["trace"] == [
        "route: word_sorting",
        "latm: made a new tool word_sorting v1",
        "reply: tools in the shared store: word_sorting v1",
    ]
    # LATM's keys stay out of the parent's state: only the mapped ones come back.
    assert not {"task", "answer", "tool", "usage", "examples"} & set(out)
    assert ToolRepository(store).get("word_sorting") is not None  # the parent's store

    out = ask(assistant, ctx, second["input"])

    assert out["result"] == second["target"] and out["made_tool"] is False
    assert out["trace"][1] == "latm: used a cached tool word_sorting v1"
    assert len(maker.received) == 1 and len(user.received) == 2


def test_a_request_without_a_skill_never_reaches_latm(example, store, make_context):
    maker, user = scripted([]), scripted([])
    out = ask(example.build_assistant(store), make_context(maker, user), "What is the weather?")
    assert out["result"] == "I have no skill for that request."
    assert out["trace"] == ["route: no skill fits", "reply"]
    assert maker.received == [] and user.received == []


def test_latm_errors_are_mapped_into_the_parents_reply(example, store, make_context):
    out = ask(
        example.build_assistant(store),
        make_context(scripted([]), scripted([])),
        EXAMPLES[20]["input"],
        worked_examples={},
    )
    assert out["result"] == (
        "sorry, that failed: no tool for task type 'word_sorting' and no examples to make one"
    )
    assert out["trace"][1] == "latm: error"


def test_an_approval_interrupt_inside_latm_pauses_the_parent(example, store, make_context):
    question = EXAMPLES[20]
    ctx = make_context(
        scripted([maker_reply(SORT_CODE, VALIDATION_QS)]),
        scripted([user_reply(question["input"])]),
        require_approval=True,
    )
    assistant = example.build_assistant(store, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "parent-1"}}

    out = ask(assistant, ctx, question["input"], config)

    (pending,) = out["__interrupt__"]
    assert pending.value["task_type"] == "word_sorting"
    assert ToolRepository(store).get("word_sorting") is None
    assert assistant.get_state(config).next == ("delegate",)

    out = dict(assistant.invoke(Command(resume={"action": "approve"}), config, context=ctx))

    assert out["result"] == question["target"] and out["made_tool"] is True
    assert ToolRepository(store).get("word_sorting") is not None
