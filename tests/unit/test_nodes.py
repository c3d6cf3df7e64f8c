"""Each node's pure parts, called directly: no graph, no model, no sandbox."""

from __future__ import annotations

import json
from typing import Any

from langgraph.runtime import Runtime
from langgraph.store.memory import InMemoryStore

from latm.graph import Context
from latm.graph.context import PAPER
from latm.graph.state import (
    Candidate,
    CaseReport,
    Example,
    Making,
    State,
    TokenUsage,
    cases_of,
    check_kind,
    merge_usage,
    new_making,
    run_usage,
)
from latm.nodes.approval import edit_problem, parse_answer, review
from latm.nodes.common import STALE_THREAD, example_sets, message_text
from latm.nodes.dispatcher import check_request, embedding_route, fresh_run, parsers_say
from latm.nodes.propose import feedback, plan, propose, read_reply
from latm.nodes.use import call_prompt
from latm.nodes.verify import Evaluation, decide, decide_unchecked, verify
from latm.nodes.wrap import tool_record, usage_demos, wrap
from latm.repository import ToolRecord, UsageDemo
from latm.routing import Decision, Scored

from .scripted import SORT_CODE, bbh, maker_reply, words_of

EXAMPLES = [Example(input=e["input"], target=e["target"]) for e in bbh("word_sorting")[:6]]
VALIDATION = EXAMPLES[3:6]
STATE = State(task="", examples=EXAMPLES)


def ctx(**kwargs: Any) -> Context:
    return Context(**{**PAPER, "max_attempts": 2, **kwargs})


def candidate(index: int = 0, code: str | None = SORT_CODE, **kwargs: Any) -> Candidate:
    calls = [f"sort_words({words_of(e['input'])!r})" for e in VALIDATION]
    fields: dict[str, Any] = {
        "index": index,
        "prompt": [("system", "s"), ("human", "h")],
        "reply": "r",
        "code": code,
        "entry": "sort_words" if code else None,
        "calls": calls if code else [],
        "direct": False,
        "problem": None,
        "error": None,
    }
    return Candidate(**{**fields, **kwargs})  # type: ignore[typeddict-item]


def case(example: Example, passed: bool, check: str = "call") -> CaseReport:
    got = example["target"] if passed else "wrong"
    return CaseReport(
        input=example["input"],
        expected=example["target"],
        got=got,
        error=None,
        passed=passed,
        check=check,
    )


def evaluation(passes: list[bool], index: int = 0) -> Evaluation:
    report = [case(e, ok) for e, ok in zip(VALIDATION, passes, strict=True)]
    return Evaluation(candidate(index), report, None)


def making(attempts: int = 1, **kwargs: Any) -> Making:
    return Making(**{**new_making("m1"), "attempts": attempts, **kwargs})  # type: ignore[typeddict-item]


# ---------------------------------------------------------------- verify


def test_decide_passes_a_candidate_whose_every_check_passed() -> None:
    c = ctx()
    verdict = decide(
        [evaluation([True, True, True])], {}, 0, making=making(), sets=example_sets(STATE, c), ctx=c
    )
    assert verdict.outcome == "pass" and verdict.error is None
    best = verdict.making["best"]
    assert best is not None and best["code"] == SORT_CODE and best["index"] == 0
    assert best["conversation"][-1] == ("ai", "r")  # the candidate kept whole, reply last
    assert verdict.making["verified"] is True and verdict.making["revealed"] == []
    assert verdict.verification is not None and verdict.verification["cases"] == 3
    assert [e["event"] for e in verdict.events] == ["case"] * 3 + ["candidate", "evidence", "done"]
    json.dumps(verdict.events)


def test_decide_retries_and_reveals_the_failures_then_is_exhausted() -> None:
    c = ctx()
    sets = example_sets(STATE, c)
    first = decide([evaluation([True, False, True])], {}, 0, making=making(1), sets=sets, ctx=c)
    assert first.outcome == "retry" and first.error is None and first.verification is None
    assert first.making["verified"] is False
    assert first.making["revealed"] == [VALIDATION[1]["input"]]  # shown to the next round
    last = decide(
        [evaluation([False] * 3)], {}, 0, making=first.making | {"attempts": 2}, sets=sets, ctx=c
    )  # type: ignore[arg-type]
    assert last.outcome == "exhausted"
    assert last.error is not None and last.error.startswith(
        "could not make a verified tool in 2 attempt(s); best candidate of the last attempt: "
        "3 of 3 validation cases failed"
    )


def test_decide_prefers_the_candidate_that_passed_more() -> None:
    c = ctx(n_candidates=2)
    worse, better = evaluation([False, False, True], 0), evaluation([True, True, False], 1)
    verdict = decide([worse, better], {}, 0, making=making(), sets=example_sets(STATE, c), ctx=c)
    best = verdict.making["best"]
    assert best is not None and best["index"] == 1 and verdict.outcome == "retry"


def test_decide_keeps_a_verified_function_without_solve_and_stores_it_at_the_last_round() -> None:
    c = ctx(direct_entry=True, max_attempts=1)
    verdict = decide(
        [evaluation([True] * 3)], {}, 0, making=making(), sets=example_sets(STATE, c), ctx=c
    )
    # calls passed but no solve() entry verified: the function is found and, at the
    # last round, accepted without it (the paper's bar)
    events = [e["event"] for e in verdict.events]
    assert "function" in events and "no_direct" in events
    assert verdict.outcome == "pass" and verdict.making["function"] is not None
    best = verdict.making["best"]
    assert best is not None and best["direct"] is False and len(best["report"]) == 3


def test_decide_unchecked_ends_a_round_with_no_candidate_or_a_dead_maker() -> None:
    c = ctx()
    sets = example_sets(STATE, c)
    none = decide_unchecked([], making(1), sets, c)
    assert (
        none is not None and none.outcome == "stop" and none.error == "the maker made no proposal"
    )
    dead = decide_unchecked([candidate(code=None, error="down")], making(2), sets, c)
    assert dead is not None and dead.outcome == "exhausted" and dead.error == "down"
    assert decide_unchecked([candidate()], making(1), sets, c) is None  # checks must run


def test_decide_unchecked_keeps_a_verified_function_through_a_maker_outage() -> None:
    c = ctx(direct_entry=True)
    function = {
        "code": SORT_CODE,
        "entry": "sort_words",
        "calls": candidate()["calls"],
        "report": [case(e, True) for e in VALIDATION],
        "conversation": [("human", "h"), ("ai", "r")],
        "tried": 1,
    }
    verdict = decide_unchecked(
        [candidate(code=None, error="down")],
        making(2, function=function),
        example_sets(STATE, c),
        c,
    )
    assert verdict is not None and verdict.outcome == "pass"
    best = verdict.making["best"]
    assert best is not None and best["code"] == SORT_CODE and verdict.making["verified"]
    assert [e["event"] for e in verdict.events] == ["no_direct"]


# ---------------------------------------------------------------- propose


def test_plan_repairs_the_best_candidate_in_its_own_conversation() -> None:
    c = ctx()
    fresh, turns = plan(STATE, c, 0)
    assert [m.type for m in fresh] == ["system"] and len(turns) == 1
    report = [case(e, i != 1) for i, e in enumerate(VALIDATION)]
    best = {
        "index": 0,
        "code": SORT_CODE,
        "entry": "sort_words",
        "calls": [],
        "direct": False,
        "report": report,
        "problem": None,
        "conversation": [("system", "s"), ("human", "h"), ("ai", "r")],
    }
    state = State(task="", examples=EXAMPLES, making=making(best=best))
    history, (ask,) = plan(state, c, 0)
    assert [message_text(m) for m in history] == ["s", "h", "r"]
    assert ask == feedback(best, None)  # type: ignore[arg-type]
    assert VALIDATION[1]["target"] in ask and VALIDATION[0]["target"] not in ask
    # another candidate starts afresh, with the failure as a worked example
    other, (first,) = plan(state, c, 1)
    assert [m.type for m in other] == ["system"] and VALIDATION[1]["target"] in first


def test_read_reply_turns_a_reply_into_a_candidate_or_a_problem() -> None:
    good = read_reply(
        2, [("human", "h")], maker_reply(SORT_CODE, [e["input"] for e in VALIDATION]), None
    )
    assert good["index"] == 2 and good["entry"] == "sort_words" and len(good["calls"]) == 3
    bad = read_reply(0, [], "I cannot do that.", None)
    assert bad["code"] is None and bad["problem"]


# ---------------------------------------------------------------- dispatcher, review, wrap, use


def test_fresh_run_clears_the_output_and_the_working_state_in_plain_json() -> None:
    update = fresh_run()
    assert update["making"] is None and update["candidates"] == []
    assert update["usage"] == {"maker": None, "user": None}  # the run's usage starts over
    assert update["tool_record"] is None and update["lease"] is None and update["error"] is None
    json.dumps(update)


def test_usage_sums_and_a_runs_first_update_starts_it_over() -> None:
    one = TokenUsage(input_tokens=100, output_tokens=20, total_tokens=120, calls=1)
    earlier = {"maker": one, "user": one}
    assert merge_usage(earlier, {"user": one})["user"]["calls"] == 2
    assert merge_usage(earlier, run_usage()) == {}
    assert merge_usage(earlier, run_usage({"user": one})) == {"user": one}
    assert merge_usage(merge_usage(earlier, run_usage()), {"maker": one}) == {"maker": one}


def test_parsers_settle_a_borderline_request_only_when_every_tool_has_one() -> None:
    near = ["a", "b"]
    assert parsers_say({"a": True, "b": False}, near) == "a"
    assert parsers_say({"a": False, "b": False}, near) == ""  # no tool fits
    assert parsers_say({"a": True, "b": True}, near) is None  # the user model decides
    assert parsers_say({"a": True}, near) is None  # b has no solve entry: cannot tell
    assert parsers_say({}, []) is None


def test_embedding_route_reports_distance_threshold_and_margin() -> None:
    best = Scored(task_type="a", similarity=0.9, threshold=0.8, direct=True)
    info = embedding_route(Decision("hit", [best], 1.0), ["a"], "hash")
    assert info == {
        "by": "embedding",
        "tool": None,
        "verdict": "hit",
        "candidates": ["a"],
        "asked_model": False,
        "embedder": "hash",
        "distance": 0.1,
        "threshold": 0.2,
        "margin": 1.0,
    }
    assert "distance" not in embedding_route(Decision("none", [], 0.0), [], "hash")


def test_check_request_names_what_is_wrong() -> None:
    assert check_request(State(task=""), ctx())[0] == (
        "the request has no 'task' (and no 'examples' to make a tool from)"
    )
    assert check_request(State(task="x", make=True), ctx())[0] == (
        "'make' needs 'examples' to make a tool from"
    )
    assert check_request(State(task="x", examples=EXAMPLES), ctx()) == (None, EXAMPLES)


def test_parse_answer_reads_a_resume_value() -> None:
    assert parse_answer("approve") == ("approve", {"action": "approve"})
    assert "unknown action 'maybe'" in str(parse_answer({"action": "maybe"}))
    assert parse_answer({"action": "edit"}) == "an 'edit' needs the new tool source in 'code'"


def test_edit_problem_says_why_an_edit_is_not_verified() -> None:
    passed = [case(e, True) for e in VALIDATION]
    assert edit_problem(passed, None) is None
    assert edit_problem([*passed[:2], case(VALIDATION[2], False)], None) == (
        "the edited code failed 1 of 3 checks; the verified original is shown: "
        "edit again, approve it or reject"
    )
    assert str(edit_problem([], "no code")).startswith("the edited code cannot be used: no code;")
    assert edit_problem([], None) is not None  # nothing ran: not verified


def test_the_making_nodes_refuse_a_thread_without_making() -> None:
    runtime = Runtime(context=ctx(), store=InMemoryStore())
    # checkpointed by an older LATM: no making, its candidates the dispatcher's shortlist
    old = State(task="x", examples=EXAMPLES, candidates=["word_sorting"])  # type: ignore[typeddict-item]
    assert review(old, runtime) == {"error": STALE_THREAD}
    assert wrap(old, runtime) == {"error": STALE_THREAD}
    assert verify(old, runtime) == {"candidates": [], "error": STALE_THREAD}
    (candidate,) = propose(old, runtime)["candidates"]
    assert candidate["error"] == STALE_THREAD  # no model call


def test_usage_demos_skip_the_calls_that_failed() -> None:
    best: Any = {
        "calls": ["sort_words(['b', 'a'])", "sort_words(['x'])", "sort_words(['d', 'c'])"],
        "report": [
            case(VALIDATION[0], True),
            case(VALIDATION[1], False),
            case(VALIDATION[2], True),
            case(VALIDATION[0], True, "direct"),
        ],
    }
    demos = usage_demos(best, VALIDATION)
    assert [d.call for d in demos] == ["sort_words(['b', 'a'])", "sort_words(['d', 'c'])"]
    assert [check_kind(c) for c in best["report"]] == ["call"] * 3 + ["direct"]
    assert len(cases_of(best["report"], "direct")) == 1


def test_tool_record_packages_the_best_candidate_and_marks_an_edit() -> None:
    c = ctx()
    verdict = decide(
        [evaluation([True, True, True])], {}, 0, making=making(), sets=example_sets(STATE, c), ctx=c
    )
    state = State(
        task="", examples=EXAMPLES, making=verdict.making, verification=verdict.verification
    )
    record = tool_record(state, c, task_type="word_sorting", version=2)
    assert record.signature == "def sort_words(words: list[str]) -> str" and record.version == 2
    assert len(record.demos) == 3 and record.make_id == "m1"
    assert record.strength is not None and record.strength.cases == 3
    edited = State(**{**state, "making": {**verdict.making, "reviewed": "edited"}})  # type: ignore[typeddict-item]
    record = tool_record(edited, c, task_type="word_sorting", version=2)
    assert record.maker_model.endswith(", edited by a reviewer") and record.strength is None


def test_call_prompt_shows_the_signature_and_the_demos() -> None:
    record = ToolRecord(
        name="sort_words",
        task_type="word_sorting",
        description="Sort words.",
        signature="def sort_words(words: list[str]) -> str",
        docstring="Sort words.",
        code=SORT_CODE,
        demos=[UsageDemo(question="Sort: b a", call="sort_words(['b', 'a'])", answer="a b")],
        maker_model="m",
        verification=[],
        created_at="2026-01-01T00:00:00+00:00",
        version=1,
    )
    messages = call_prompt(record, "Sort: d c")
    assert [m.type for m in messages] == ["system", "human", "ai", "human"]
    assert "def sort_words(words: list[str]) -> str" in message_text(messages[0])
    assert "sort_words(['b', 'a'])" in message_text(messages[2])
    assert "Sort: d c" in message_text(messages[3])
