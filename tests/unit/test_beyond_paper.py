"""Best-of-N proposals, stronger verification and zero-LLM cache hits (beyond the paper)."""

from __future__ import annotations

from typing import Any

import pytest

from latm.checks import hardcoded
from latm.graph import Context
from latm.graph.builder import build_graph
from latm.graph.context import PAPER, paper_context
from latm.repository import ToolRepository

from .scripted import BUGGY_SORT_CODE, SORT_CODE, bbh, maker_reply, scripted, user_reply, words_of

EXAMPLES = bbh("word_sorting")
VALIDATION_QS = [e["input"] for e in EXAMPLES[3:6]]  # 5, 3 and 14 words

RAISING = '''\
def sort_words(words: list[str]) -> str:
    """Sort words."""
    raise RuntimeError("not yet")
'''

PARTIAL = '''\
def sort_words(words: list[str]) -> str:
    """Sort short lists of words (long ones are not handled yet)."""
    if len(words) > 4:
        return ""
    return " ".join(sorted(words))
'''

VERBOSE_SORT = '''\
def sort_words(words: list[str]) -> str:
    """Sort words alphabetically and join them with single spaces."""
    ordered = list(words)
    ordered.sort()
    result = ""
    for i, word in enumerate(ordered):
        result = result + (" " if i else "") + word
    return result
'''

SOLVE = '''\
import re


def sort_words(words: list[str]) -> str:
    """Sort words alphabetically and join them with single spaces."""
    return " ".join(sorted(words))


def solve(request: str) -> str:
    """Answer a word-sorting question given as text."""
    match = re.search(r"List:(.*)$", request, re.S)
    if not match:
        raise ValueError("not a word-sorting question")
    return sort_words(match.group(1).split())
'''

SOLVE_BAD_PARSER = SOLVE.replace("match.group(1).split()", "match.group(1).split()[:4]")


def ctx(maker: Any, user: Any, **kwargs: Any) -> Context:
    settings = {**PAPER, "exec_timeout_s": 2.0, "max_retries": 0, **kwargs}
    return Context(maker_llm=maker, user_llm=user, **settings)


def tools(store: Any) -> ToolRepository:
    return ToolRepository(store, "default")


def test_best_of_n_keeps_the_candidate_that_passes(store):
    maker = scripted(
        [
            maker_reply(BUGGY_SORT_CODE, VALIDATION_QS),
            maker_reply(SORT_CODE, VALIDATION_QS),
            maker_reply(RAISING, VALIDATION_QS),
        ]
    )
    out = build_graph(store=store).invoke(
        {"examples": EXAMPLES[:6], "task_type": "word_sorting"},
        context=ctx(maker, scripted([]), n_candidates=3),
    )
    assert out["error"] is None
    assert out["usage"]["maker"]["calls"] == 3  # one round of three parallel proposals
    assert tools(store).get("word_sorting").code.strip() == SORT_CODE.strip()


def test_best_of_n_prefers_the_simplest_passing_candidate(store):
    maker = scripted(
        [maker_reply(VERBOSE_SORT, VALIDATION_QS), maker_reply(SORT_CODE, VALIDATION_QS)]
    )
    build_graph(store=store).invoke(
        {"examples": EXAMPLES[:6], "task_type": "word_sorting"},
        context=ctx(maker, scripted([]), n_candidates=2),
    )
    assert tools(store).get("word_sorting").code.strip() == SORT_CODE.strip()


def test_next_round_repairs_the_best_failing_candidate_and_restarts_the_others(store):
    round_one = [
        maker_reply(BUGGY_SORT_CODE, VALIDATION_QS),
        "no code, sorry",
        maker_reply(PARTIAL, VALIDATION_QS),
    ]
    round_two = [maker_reply(SORT_CODE, VALIDATION_QS)] * 3
    maker = scripted(round_one + round_two)
    out = build_graph(store=store).invoke(
        {"examples": EXAMPLES[:6], "task_type": "word_sorting"},
        context=ctx(maker, scripted([]), n_candidates=3),
    )
    assert out["error"] is None and out["usage"]["maker"]["calls"] == 6
    second_round = ["\n".join(str(m.content) for m in messages) for messages in maker.received[3:]]
    assert len(second_round) == 3
    # PARTIAL passed 1 of 3 (the 3-word list): it is the best failure.
    repairs = [h for h in second_round if "long ones are not handled yet" in h]
    fresh = [h for h in second_round if h not in repairs]
    assert len(repairs) == 1 and len(fresh) == 2
    repair = maker.received[3:][second_round.index(repairs[0])]
    assert "reverse=True" not in repairs[0]
    assert f"Expected: {EXAMPLES[3]['target']!r}" in str(repair[-1].content)
    assert f"Question 2: {EXAMPLES[4]['input']}" not in str(repair[-1].content)
    for history in fresh:
        # a new conversation: no earlier code, the failed cases shown as worked examples
        assert "def " not in history.split("CALLS = [")[0].replace("def name_of_your_function", "")
        assert "An earlier attempt misread this task" in history
        assert f"Question: {EXAMPLES[3]['input']}\nAnswer: {EXAMPLES[3]['target']}" in history
        assert f"Answer: {EXAMPLES[5]['target']}" in history
        assert f"Answer: {EXAMPLES[4]['target']}" not in history  # that case passed
    # the two fresh candidates see the demos in different orders
    firsts = {h.index(EXAMPLES[0]["input"]) < h.index(EXAMPLES[1]["input"]) for h in fresh}
    assert firsts == {True, False}


def test_first_round_candidates_see_the_demos_in_different_orders(store):
    maker = scripted([maker_reply(SORT_CODE, VALIDATION_QS)] * 3)
    build_graph(store=store).invoke(
        {"examples": EXAMPLES[:6], "task_type": "word_sorting"},
        context=ctx(maker, scripted([]), n_candidates=3),
    )
    orders = set()
    for messages in maker.received:
        text = str(messages[-1].content)
        orders.add(tuple(sorted(range(3), key=lambda i: text.index(EXAMPLES[i]["input"]))))
    assert orders == {(0, 1, 2), (1, 2, 0), (2, 0, 1)}


def test_rounds_and_candidates_are_capped(store):
    maker = scripted([maker_reply(BUGGY_SORT_CODE, VALIDATION_QS)] * 4)
    out = build_graph(store=store).invoke(
        {"examples": EXAMPLES[:6], "task_type": "word_sorting"},
        context=ctx(maker, scripted([]), n_candidates=2, max_attempts=2),
    )
    assert "could not make a verified tool in 2 attempt(s)" in out["error"]
    assert len(maker.received) == 4 and tools(store).records() == []


LOOKUP = '''\
ANSWERS = {{
    {q0!r}: {a0!r},
    {q1!r}: {a1!r},
}}


def sort_words(words: list[str]) -> str:
    """Sort words."""
    return ANSWERS.get(" ".join(words), " ".join(sorted(words)))
'''


def test_code_that_hard_codes_example_answers_is_rejected_and_fed_back(store):
    cheat = LOOKUP.format(q0="x", a0=EXAMPLES[3]["target"], q1="y", a1=EXAMPLES[5]["target"])
    maker = scripted([maker_reply(cheat, VALIDATION_QS), maker_reply(SORT_CODE, VALIDATION_QS)])
    out = build_graph(store=store).invoke(
        {"examples": EXAMPLES[:6], "task_type": "word_sorting"},
        context=ctx(maker, scripted([]), reject_hardcoded=True),
    )
    assert out["error"] is None and len(maker.received) == 2
    assert "hard-codes the answer of an example" in str(maker.received[1][-1].content)
    assert "ANSWERS" not in tools(store).get("word_sorting").code


def test_hard_coding_check():
    examples = [
        {
            "input": "Sort the following words alphabetically: List: pear apple",
            "target": "apple pear",
        },
        {"input": "Sort the following words alphabetically: List: b a", "target": "a b"},
        {"input": "When can A and B meet? A: 9-10", "target": "No time slot works."},
        {"input": "When can A and B meet? A: 11-12", "target": "No time slot works."},
    ]
    assert "answer of an example ('apple pear')" in hardcoded("X = 'apple pear'", examples)
    assert "part of an example's question" in hardcoded(f"Q = {examples[0]['input']!r}", examples)
    # Shared answers, template text, short answers and docstrings are fine.
    fine = '''\
def solve(request: str) -> str:
    """For example 'apple pear' comes from 'pear apple'."""
    if "Sort the following words alphabetically" in request:
        return "a b"[:0]
    return "No time slot works."
'''
    assert hardcoded(fine, examples) is None
    assert hardcoded("N = 14687", [{"input": "q", "target": "14687"}]).startswith("the code")


def direct_ctx(maker: Any, user: Any, **kwargs: Any) -> Context:
    return ctx(maker, user, direct_entry=True, **kwargs)


SOLVE_ONLY = SOLVE[SOLVE.index("def solve") :]


def test_direct_entry_is_verified_on_every_example_the_demos_included(store):
    maker = scripted([maker_reply(SOLVE, VALIDATION_QS)])
    out = build_graph(store=store).invoke(
        {"examples": EXAMPLES[:12], "task_type": "word_sorting"},
        context=direct_ctx(maker, scripted([])),
    )
    assert out["error"] is None and len(maker.received) == 1  # offered at once: kept
    record = tools(store).get("word_sorting")
    assert record.direct_entry == "solve"
    checks = [c.get("check") for c in record.verification]
    assert checks.count("call") == 3 and checks.count("direct") == 12  # examples 0..11
    direct = [c["input"] for c in record.verification if c.get("check") == "direct"]
    assert direct == [e["input"] for e in EXAMPLES[:12]]
    assert record.strength is not None and record.strength.level == "verified"
    assert record.strength.cases == 12 and out["verification"]["cases"] == 12


def test_the_function_comes_first_and_its_solve_entry_is_asked_for_next(store):
    # the entry's reply also "fixes" sort_words into a wrong one: the verified one stays
    wrong_redefinition = SORT_CODE.replace("sorted(words))", "sorted(words, reverse=True))")
    maker = scripted(
        [
            maker_reply(SORT_CODE, VALIDATION_QS),
            f"```python\nimport re\n\n{wrong_redefinition}\n\n{SOLVE_ONLY}\n```",
        ]
    )
    out = build_graph(store=store).invoke(
        {"examples": EXAMPLES[:12], "task_type": "word_sorting"},
        context=direct_ctx(maker, scripted([])),
    )
    assert out["error"] is None and len(maker.received) == 2
    first, second = maker.received
    assert "solve(request" not in str(first[-1].content)  # round 1: the function only
    # round 2 continues the conversation that made the function
    assert [m.type for m in second] == ["system", "human", "ai", "human"]
    assert "def sort_words" in str(second[2].content)
    assert "Now write `solve(request: str) -> str`" in str(second[-1].content)
    record = tools(store).get("word_sorting")
    assert record.direct_entry == "solve" and record.code.count("def sort_words") == 1
    assert "reverse=True" not in record.code
    assert [c.get("check") for c in record.verification].count("direct") == 12


def test_cache_hit_through_the_direct_entry_uses_no_model(store):
    build_graph(store=store).invoke(
        {"examples": EXAMPLES[:12], "task_type": "word_sorting"},
        context=direct_ctx(scripted([maker_reply(SOLVE, VALIDATION_QS)]), scripted([])),
    )
    user = scripted([])
    question = EXAMPLES[100]
    out = build_graph(store=store).invoke(
        {"task": question["input"], "task_type": "word_sorting"},
        context=direct_ctx(scripted([]), user),
    )
    assert out["answer"] == question["target"] and out["path"] == "direct"
    assert out["usage"] == {} and user.received == []


def test_a_request_the_direct_entry_rejects_falls_back_to_the_user_model(store):
    build_graph(store=store).invoke(
        {"examples": EXAMPLES[:12], "task_type": "word_sorting"},
        context=direct_ctx(scripted([maker_reply(SOLVE, VALIDATION_QS)]), scripted([])),
    )
    question = "Put these in dictionary order please: pear, fig, apple"
    user = scripted(["```python\nsort_words(['pear', 'fig', 'apple'])\n```"])
    out = build_graph(store=store).invoke(
        {"task": question, "task_type": "word_sorting"}, context=direct_ctx(scripted([]), user)
    )
    assert out["answer"] == "apple fig pear" and out["path"] == "llm"
    assert out["usage"]["user"]["calls"] == 1


def test_a_direct_entry_that_fails_extra_examples_is_fed_back_with_a_hint(store):
    bad_solve_only = SOLVE_BAD_PARSER[SOLVE_BAD_PARSER.index("def solve") :]
    maker = scripted(
        [
            maker_reply(SOLVE_BAD_PARSER, VALIDATION_QS),  # calls pass, solve fails
            f"```python\n{bad_solve_only}\n```",  # told what failed: still wrong
            f"```python\n{SOLVE_ONLY}\n```",  # told again: fixed
        ]
    )
    out = build_graph(store=store).invoke(
        {"examples": EXAMPLES[:12], "task_type": "word_sorting"},
        context=direct_ctx(maker, scripted([]), max_attempts=3),
    )
    assert out["error"] is None and len(maker.received) == 3
    for retry in (str(maker.received[1][-1].content), str(maker.received[2][-1].content)):
        assert "but solve(request) failed" in retry and "solve(question) got" in retry
    # each repair continues the conversation: the failing solve is in the history
    assert "split()[:4]" in str(maker.received[2][-2].content)
    record = tools(store).get("word_sorting")
    assert record.direct_entry == "solve" and record.code.count("def solve") == 1
    assert "split()[:4]" not in record.code


def test_other_candidates_ask_for_solve_afresh_in_the_functions_conversation(store):
    maker = scripted(
        [
            maker_reply(SORT_CODE, VALIDATION_QS),
            maker_reply(BUGGY_SORT_CODE, VALIDATION_QS),
            f"```python\n{SOLVE_ONLY}\n```",
            f"```python\n{SOLVE_ONLY}\n```",
        ]
    )
    out = build_graph(store=store).invoke(
        {"examples": EXAMPLES[:12], "task_type": "word_sorting"},
        context=direct_ctx(maker, scripted([]), n_candidates=2),
    )
    assert out["error"] is None and len(maker.received) == 4
    for messages in maker.received[2:]:
        assert "Now write `solve(request: str) -> str`" in str(messages[-1].content)
        assert "def sort_words" in str(messages[-2].content)
        assert "reverse=True" not in "\n".join(str(m.content) for m in messages)
    assert tools(store).get("word_sorting").direct_entry == "solve"


def test_on_the_last_attempt_a_tool_whose_calls_pass_is_kept_without_its_direct_entry(store):
    maker = scripted([maker_reply(SOLVE_BAD_PARSER, VALIDATION_QS)])
    out = build_graph(store=store).invoke(
        {"examples": EXAMPLES[:12], "task_type": "word_sorting"},
        context=direct_ctx(maker, scripted([]), max_attempts=1),
    )
    assert out["error"] is None
    record = tools(store).get("word_sorting")
    assert record.direct_entry is None and "def solve" not in record.code
    assert [c.get("check") for c in record.verification] == ["call"] * 3


def test_a_tool_whose_calls_fail_is_not_kept_even_on_the_last_attempt(store):
    buggy_solve = SOLVE.replace("sorted(words))", "sorted(words, reverse=True))")
    maker = scripted([maker_reply(buggy_solve, VALIDATION_QS)])
    out = build_graph(store=store).invoke(
        {"examples": EXAMPLES[:12], "task_type": "word_sorting"},
        context=direct_ctx(maker, scripted([]), max_attempts=1),
    )
    assert "could not make a verified tool" in out["error"]
    assert tools(store).records() == []


def test_without_a_solve_entry_the_tool_is_kept_for_the_llm_path(store):
    # the function verifies; two rounds of asking for its entry get nothing usable
    maker = scripted([maker_reply(SORT_CODE, VALIDATION_QS), "no idea", "still no idea"])
    out = build_graph(store=store).invoke(
        {"examples": EXAMPLES[:12], "task_type": "word_sorting"},
        context=direct_ctx(maker, scripted([])),
    )
    assert out["error"] is None and len(maker.received) == 3
    assert "could not be used" in str(maker.received[2][-1].content)
    record = tools(store).get("word_sorting")
    assert record.direct_entry is None and record.code.strip() == SORT_CODE.strip()
    question = EXAMPLES[101]
    user = scripted([user_reply(question["input"])])
    out = build_graph(store=store).invoke(
        {"task": question["input"], "task_type": "word_sorting"},
        context=direct_ctx(scripted([]), user),
    )
    assert out["answer"] == question["target"] and out["path"] == "llm"


def test_paper_settings():
    paper = paper_context()
    assert (paper.n_candidates, paper.direct_entry, paper.reject_hardcoded) == (1, False, False)
    assert (paper.n_validation, paper.max_attempts) == (3, 3)
    default = Context()
    assert default.n_candidates > 1 and default.direct_entry and default.reject_hardcoded


@pytest.mark.parametrize("two_step", [True, False])
def test_two_step_prompt_asks_for_a_description_first(store, two_step):
    replies = ["The input is a list of words; sort them."] if two_step else []
    maker = scripted([*replies, maker_reply(SORT_CODE, VALIDATION_QS)])
    out = build_graph(store=store).invoke(
        {"examples": EXAMPLES[:6], "task_type": "word_sorting"},
        context=ctx(maker, scripted([]), two_step=two_step),
    )
    assert out["error"] is None
    assert len(maker.received) == (2 if two_step else 1)
    if two_step:
        assert "Before writing any code, describe" in str(maker.received[0][-1].content)
        assert "sort them." in str(maker.received[1][-2].content)


HANGS_ON_LONG = SOLVE.replace(
    "    return sort_words(match.group(1).split())",
    "    words = match.group(1).split()\n"
    "    while len(words) > 15:\n"
    "        pass\n"
    "    return sort_words(words)",
)


def test_a_tool_that_hangs_stops_its_checks_after_one_chunk(store):
    import time

    long_lists = [e for e in EXAMPLES[3:] if len(e["input"].split("List:")[1].split()) > 15]
    examples = EXAMPLES[:3] + long_lists[:30]
    questions = [e["input"] for e in examples[3:6]]
    started = time.perf_counter()
    out = build_graph(store=store).invoke(
        {"examples": examples, "task_type": "word_sorting"},
        context=direct_ctx(
            scripted([maker_reply(HANGS_ON_LONG, questions)]),
            scripted([]),
            max_attempts=1,
            exec_timeout_s=0.5,
        ),
    )
    # 30 direct checks would cost 15 s of deadlines; the first chunk's timeout stops them.
    assert time.perf_counter() - started < 8
    # Its calls pass, so on this last attempt it is kept, without the hanging entry.
    assert out["error"] is None and tools(store).get("word_sorting").direct_entry is None


def test_odd_candidates_write_solve_at_once_even_ones_the_function_alone(store):
    maker = scripted([maker_reply(SORT_CODE, VALIDATION_QS), maker_reply(SOLVE, VALIDATION_QS)])
    build_graph(store=store).invoke(
        {"examples": EXAMPLES[:12], "task_type": "word_sorting"},
        context=direct_ctx(maker, scripted([]), n_candidates=2),
    )
    asked = sorted("solve(request: str) -> str" in str(m[-1].content) for m in maker.received)
    assert asked == [False, True]


def test_a_verified_solve_outweighs_a_miscopied_call_which_is_no_usage_demo(store):
    # the maker dropped a word when copying question 2 into its call; solve parses the
    # raw questions and is right on every example beyond the demos
    reply = maker_reply(SOLVE, VALIDATION_QS)
    first_word = words_of(VALIDATION_QS[1])[0]
    miscopied = reply.replace(f"['{first_word}', ", "[", 1)
    assert miscopied != reply
    out = build_graph(store=store).invoke(
        {"examples": EXAMPLES[:12], "task_type": "word_sorting"},
        context=direct_ctx(scripted([miscopied]), scripted([])),
    )
    assert out["error"] is None
    record = tools(store).get("word_sorting")
    assert record.direct_entry == "solve"
    calls = [c for c in record.verification if c.get("check") == "call"]
    assert [c["passed"] for c in calls] == [True, False, True]
    assert [d.question for d in record.demos] == [VALIDATION_QS[0], VALIDATION_QS[2]]


def test_a_tool_function_named_solve_is_kept_when_its_entry_stage_fails(store):
    # The maker names its data function `solve` (the lost tool): it is read as
    # `solve_task`, its calls verify, and when no raw-question entry verifies in time the
    # verified function is stored, callable by the user model.
    named_solve = SORT_CODE.replace("def sort_words", "def solve")
    maker = scripted(
        [
            maker_reply(named_solve, VALIDATION_QS, entry="solve"),
            "```python\ndef solve(request: str) -> str:\n    return 'wrong'\n```",
        ]
    )
    out = build_graph(store=store).invoke(
        {"examples": EXAMPLES[:12], "task_type": "word_sorting"},
        context=direct_ctx(maker, scripted([]), max_attempts=2),
    )
    assert out["error"] is None, out["error"]
    record = tools(store).get("word_sorting")
    assert record.name == "solve_task" and record.direct_entry is None
    assert "def solve_task(" in record.code and "def solve(" not in record.code
