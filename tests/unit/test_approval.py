"""Human approval before ``wrap`` stores a tool (``Context.require_approval``)."""

from __future__ import annotations

from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from latm.graph.builder import build_graph
from latm.nodes.approval import INTERRUPT_TYPE
from latm.repository import ToolRepository

from .scripted import BUGGY_SORT_CODE, SORT_CODE, bbh, maker_reply, scripted, user_reply

EXAMPLES = bbh("word_sorting")
DEMOS_AND_VALIDATION = EXAMPLES[:6]
VALIDATION_QS = [e["input"] for e in EXAMPLES[3:6]]
HELD_OUT = EXAMPLES[20]

EDITED_SORT_CODE = '''\
def sort_words(words: list[str]) -> str:
    """Sort words alphabetically (case-insensitively) and join them with spaces."""
    return " ".join(sorted(words, key=str.lower))
'''


@pytest.fixture
def app(store: Any) -> Any:
    return build_graph(store=store, checkpointer=InMemorySaver())


def start(app: Any, ctx: Any, thread: str = "t1") -> tuple[dict[str, Any], dict[str, Any]]:
    config = {"configurable": {"thread_id": thread}}
    out = app.invoke(
        {"task": HELD_OUT["input"], "examples": DEMOS_AND_VALIDATION, "task_type": "word_sorting"},
        config,
        context=ctx,
    )
    return out, config


def pending(app: Any, config: dict[str, Any]) -> dict[str, Any]:
    """The payload of the thread's one pending interrupt."""
    interrupts = app.get_state(config).interrupts
    assert len(interrupts) == 1
    return dict(interrupts[0].value)


def stored(store: Any) -> Any:
    return ToolRepository(store, "default").get("word_sorting")


def test_off_by_default_stores_without_asking(store, app, make_context):
    ctx = make_context(
        scripted([maker_reply(SORT_CODE, VALIDATION_QS)]), scripted([user_reply(HELD_OUT["input"])])
    )
    out, config = start(app, ctx)
    assert out["answer"] == HELD_OUT["target"] and "__interrupt__" not in out
    assert app.get_state(config).interrupts == ()
    assert stored(store) is not None


def test_pauses_before_storing_and_approval_stores_and_answers(store, app, make_context):
    maker = scripted([maker_reply(SORT_CODE, VALIDATION_QS)])
    user = scripted([user_reply(HELD_OUT["input"])])
    ctx = make_context(maker, user, require_approval=True)

    out, config = start(app, ctx)

    assert "__interrupt__" in out and out.get("answer") is None
    assert stored(store) is None  # nothing is stored while waiting
    ask = pending(app, config)
    assert ask["type"] == INTERRUPT_TYPE and ask["task_type"] == "word_sorting"
    assert ask["code"].strip() == SORT_CODE.strip()
    assert ask["signature"] == "def sort_words(words: list[str]) -> str"
    assert ask["passed"] == 3 and ask["cases"] == 3 and len(ask["verification"]) == 3
    assert ask["version"] == 1 and ask["problem"] is None
    assert app.get_state(config).next == ("review",)
    assert user.received == []  # the user model has not run yet

    out = app.invoke(Command(resume={"action": "approve"}), config, context=ctx)

    assert out["error"] is None and out["answer"] == HELD_OUT["target"]
    assert out["tool"] == {"name": "sort_words", "task_type": "word_sorting", "version": 1}
    record = stored(store)
    assert record.code.strip() == SORT_CODE.strip() and record.maker_model == "ScriptedChatModel"
    assert len(maker.received) == 1  # resuming did not ask the maker again


def test_rejection_ends_with_an_error_and_stores_nothing(store, app, make_context):
    user = scripted([])
    ctx = make_context(
        scripted([maker_reply(SORT_CODE, VALIDATION_QS)]), user, require_approval=True
    )
    _, config = start(app, ctx)

    out = app.invoke(
        Command(resume={"action": "reject", "reason": "uses sorted()"}), config, context=ctx
    )

    assert out["answer"] is None and out["tool"] is None
    assert out["error"] == (
        "the reviewer rejected tool 'word_sorting': uses sorted(). Nothing was stored."
    )
    assert stored(store) is None and user.received == []
    assert app.get_state(config).next == ()


def test_a_passing_edit_is_reverified_and_stored(store, app, make_context):
    ctx = make_context(
        scripted([maker_reply(SORT_CODE, VALIDATION_QS)]),
        scripted([user_reply(HELD_OUT["input"])]),
        require_approval=True,
    )
    _, config = start(app, ctx)
    events: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    for mode, chunk in app.stream(
        Command(resume={"action": "edit", "code": EDITED_SORT_CODE}),
        config,
        context=ctx,
        stream_mode=["custom", "values"],
    ):
        if mode == "custom":
            events.append(chunk)
        else:
            final = chunk

    assert final["error"] is None and final["answer"] == HELD_OUT["target"]
    record = stored(store)
    assert record.code == EDITED_SORT_CODE
    assert record.maker_model == "ScriptedChatModel, edited by a reviewer"
    assert record.description.startswith("Sort words alphabetically (case-insensitively)")
    assert len(record.verification) == 3 and all(c["passed"] for c in record.verification)
    rechecks = [e for e in events if e["event"] == "recheck"]
    assert len(rechecks) == 3 and all(e["passed"] and e["check"] == "call" for e in rechecks)
    assert {"node": "review", "event": "edit_verified", "cases": 3, "direct": False} in events


def test_a_failing_edit_is_not_stored_and_the_reviewer_is_asked_again(store, app, make_context):
    ctx = make_context(
        scripted([maker_reply(SORT_CODE, VALIDATION_QS)]),
        scripted([user_reply(HELD_OUT["input"])]),
        require_approval=True,
    )
    _, config = start(app, ctx)

    out = app.invoke(
        Command(resume={"action": "edit", "code": BUGGY_SORT_CODE}), config, context=ctx
    )

    assert "__interrupt__" in out and stored(store) is None
    ask = pending(app, config)
    assert ask["problem"] == (
        "the edited code failed 3 of 3 checks; "
        "the verified original is shown: edit again, approve it or reject"
    )
    assert ask["code"].strip() == SORT_CODE.strip()  # the verified original is offered again
    assert ask["rejected_edit"]["code"] == BUGGY_SORT_CODE
    assert not any(c["passed"] for c in ask["rejected_edit"]["verification"])

    out = app.invoke(Command(resume={"action": "approve"}), config, context=ctx)

    assert out["error"] is None and out["answer"] == HELD_OUT["target"]
    assert stored(store).code.strip() == SORT_CODE.strip()


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("yes please", "must be an object with an 'action'"),
        ({"action": "merge"}, "unknown action 'merge'"),
        ({"action": "edit"}, "an 'edit' needs the new tool source in 'code'"),
        ({"action": "edit", "code": "def other(x):\n    return x\n"}, "defines no function"),
    ],
)
def test_a_malformed_answer_asks_again(store, app, make_context, answer, problem):
    ctx = make_context(
        scripted([maker_reply(SORT_CODE, VALIDATION_QS)]), scripted([]), require_approval=True
    )
    _, config = start(app, ctx)

    out = app.invoke(Command(resume=answer), config, context=ctx)

    assert "__interrupt__" in out and stored(store) is None
    assert problem in pending(app, config)["problem"]


def test_without_a_checkpointer_approval_is_a_clear_error(store, make_context):
    ctx = make_context(
        scripted([maker_reply(SORT_CODE, VALIDATION_QS)]), scripted([]), require_approval=True
    )
    out = build_graph(store=store).invoke(
        {"examples": DEMOS_AND_VALIDATION, "task_type": "word_sorting"}, context=ctx
    )
    assert "human approval is on" in out["error"] and "no checkpointer" in out["error"]
    assert "__interrupt__" not in out and stored(store) is None


def test_the_setting_reads_its_environment_variable(monkeypatch):
    from latm.graph import Context

    assert Context().require_approval is False
    monkeypatch.setenv("LATM_REQUIRE_APPROVAL", "1")
    assert Context().require_approval is True


SOLVE = '''\
def sort_words(words: list[str]) -> str:
    """Sort words alphabetically and join them with single spaces."""
    return " ".join(sorted(words))


def solve(request: str) -> str:
    """Answer a word-sorting question given as text."""
    return sort_words(request.split("List:", 1)[1].split())
'''


def test_an_edit_is_checked_like_the_makers_code_including_its_direct_entry(
    store, app, make_context
):
    examples = bbh("word_sorting")[:12]
    ctx = make_context(
        scripted([maker_reply(SOLVE, VALIDATION_QS)]),
        scripted([]),
        require_approval=True,
        direct_entry=True,
    )
    config = {"configurable": {"thread_id": "direct"}}
    app.invoke({"examples": examples, "task_type": "word_sorting"}, config, context=ctx)
    ask = pending(app, config)
    assert [c["check"] for c in ask["verification"]] == ["call"] * 3 + ["direct"] * 12

    # An edit whose solve() drops words fails its direct checks: not stored, asked again.
    broken = SOLVE.replace(".split())", ".split()[:2])")
    app.invoke(Command(resume={"action": "edit", "code": broken}), config, context=ctx)
    ask = pending(app, config)
    assert ask["problem"].startswith("the edited code failed")
    failed = [c for c in ask["rejected_edit"]["verification"] if not c["passed"]]
    assert failed and {c["check"] for c in failed} == {"direct"}
    assert stored(store) is None

    # A correct edit passes every check and keeps its direct entry.
    fixed = SOLVE.replace('"""Sort words', '"""Sort the words')
    out = app.invoke(Command(resume={"action": "edit", "code": fixed}), config, context=ctx)
    assert out["error"] is None
    record = stored(store)
    assert record.code == fixed and record.direct_entry == "solve"
    assert len(record.verification) == 15 and all(c["passed"] for c in record.verification)
    assert record.strength is None  # a person's code: no search to weigh


def test_the_tool_making_lease_is_held_through_the_review(store, app, make_context):
    import time

    maker = scripted([maker_reply(SORT_CODE, VALIDATION_QS)])
    ctx = make_context(maker, scripted([]), require_approval=True, lease_ttl_s=60.0)
    _, config = start(app, ctx)
    lease = app.get_state(config).values["lease"]
    tickets = list(store.search(("latm", "default", "leases", lease["key"])))
    assert [t.key for t in tickets] == [lease["owner"]]
    # held for the review's TTL (a day by default), not the maker's 60 s
    assert tickets[0].value["expires_at"] > time.time() + 86_000


def test_wrap_stores_nothing_that_skipped_the_review(store, app, make_context):
    # e.g. a thread an older LATM paused inside wrap, or a review node skipped by hand
    maker = scripted([maker_reply(SORT_CODE, VALIDATION_QS)])
    ctx = make_context(maker, scripted([user_reply(HELD_OUT["input"])]), require_approval=True)
    out, config = start(app, ctx)
    assert app.get_state(config).next == ("review",)

    app.update_state(config, {}, as_node="review")
    out = app.invoke(None, config, context=ctx)

    assert "was not reviewed" in out["error"] and stored(store) is None
