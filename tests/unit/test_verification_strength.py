"""Verification that luck cannot pass: demos checked, degenerate tools rejected, evidence
weighed against the search, agreement between candidates, and the label-noise measure."""

from __future__ import annotations

import random
from typing import Any

import pytest

from latm.bench.label_noise import measure
from latm.graph import Context
from latm.graph.builder import build_graph
from latm.repository import ToolRepository

from .scripted import SORT_CODE, bbh, maker_reply, scripted

WORDS = bbh("word_sorting")
LEAD = "If you follow these instructions, do you return to the starting point? "
MOVES = {"left": (-1, 0), "right": (1, 0), "forward": (0, 1), "backward": (0, -1)}
OPPOSITE = {"left": "right", "right": "left", "forward": "backward", "backward": "forward"}


def navigate(rng: random.Random, back: bool) -> dict[str, str]:
    """A navigation question whose answer is right: it returns when ``back``."""
    steps = [(rng.randint(1, 9), rng.choice(list(MOVES))) for _ in range(rng.randint(2, 3))]
    if back:
        steps += [(n, OPPOSITE[way]) for n, way in reversed(steps)]
    else:
        steps.append((rng.randint(1, 9), rng.choice(list(MOVES))))
    x = sum(n * MOVES[way][0] for n, way in steps)
    y = sum(n * MOVES[way][1] for n, way in steps)
    text = " ".join(f"Take {n} step{'s' if n > 1 else ''} {way}." for n, way in steps)
    return {
        "input": LEAD + "Always face forward. " + text,
        "target": "Yes" if x == y == 0 else "No",
    }


def navigation(n: int, seed: int = 1) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [navigate(rng, back=i % 2 == 0) for i in range(n)]


NAVIGATOR = '''\
import re


def walk(steps: list[tuple[int, str]]) -> str:
    """Whether the steps return to the start ("Yes"/"No")."""
    moves = {"left": (-1, 0), "right": (1, 0), "forward": (0, 1), "backward": (0, -1)}
    x = sum(n * moves[way][0] for n, way in steps)
    y = sum(n * moves[way][1] for n, way in steps)
    return "Yes" if x == y == 0 else "No"


def solve(request: str) -> str:
    """Answer a navigation question given as text."""
    steps = re.findall(r"Take (\\d+) steps? (\\w+)", request)
    return walk([(int(n), way) for n, way in steps])
'''


SOLVE = (
    SORT_CODE
    + '''

def solve(request: str) -> str:
    """Answer a word-sorting question given as text."""
    return sort_words(request.split("List:", 1)[1].split())
'''
)


def reply(code: str, questions: list[str], entry: str = "walk") -> str:
    calls = "\n".join(f"    solve({q!r})," for q in questions)
    return f"```python\n{code}\nCALLS = [\n{calls}\n]\n```\n"


def context(maker: Any, **kwargs: Any) -> Context:
    settings = {"exec_timeout_s": 2.0, "max_retries": 0, "n_candidates": 1, **kwargs}
    return Context(maker_llm=maker, user_llm=scripted([]), **settings)


def make(store: Any, examples: list[dict[str, str]], ctx: Context, **inputs: Any) -> Any:
    return build_graph(store=store).invoke(
        {"examples": examples, "task_type": "navigate", **inputs}, context=ctx
    )


def stored(store: Any, task_type: str = "navigate") -> Any:
    return ToolRepository(store, "default").get(task_type)


def the_issues_examples() -> list[dict[str, str]]:
    """Three demos answered "No", three validation examples answered "Yes"."""
    rng = random.Random(7)
    return [navigate(rng, back=False) for _ in range(3)] + [
        navigate(rng, back=True) for _ in range(3)
    ]


def test_an_always_yes_tool_is_not_stored_on_the_issues_examples(store):
    examples = the_issues_examples()
    always_yes = 'def solve(request: str) -> str:\n    """Answer."""\n    return "Yes"\n'
    maker = scripted([reply(always_yes, [e["input"] for e in examples[3:]])] * 3)
    out = make(store, examples, context(maker))
    assert stored(store) is None and "Nothing was stored" in out["error"]


def test_a_solve_that_contradicts_a_demo_is_not_verified(store):
    # right on the validation examples (5, 3 and 14 words), wrong on demo 0 (2 words)
    wrong_on_pairs = SOLVE.replace(
        'return sort_words(request.split("List:", 1)[1].split())',
        'words = request.split("List:", 1)[1].split()\n'
        '    return " ".join(sorted(words, reverse=len(words) == 2))',
    )
    qs = [e["input"] for e in WORDS[3:6]]
    maker = scripted([maker_reply(wrong_on_pairs, qs)] + [f"```python\n{wrong_on_pairs}\n```"] * 2)
    out = build_graph(store=store).invoke(
        {"examples": WORDS[:6], "task_type": "word_sorting"}, context=context(maker)
    )
    assert out["error"] is None
    record = stored(store, "word_sorting")
    assert record.direct_entry is None  # its solve() was never accepted
    assert f"Expected: {WORDS[0]['target']!r}" in str(maker.received[1][-1].content)


def test_the_degenerate_tool_of_the_issue_is_rejected(store):
    examples = the_issues_examples()
    # "Take 3 steps", as the issue's tool had `if instruction == 'Take 1 step'`
    first_steps = [
        e["input"].split("forward. ", 1)[1].split(".")[0].rsplit(" ", 1)[0] for e in examples[:3]
    ]
    branches = "".join(
        f"        if instruction.rsplit(' ', 1)[0] == {step!r}:\n            return 'No'\n"
        for step in first_steps
    )
    degenerate = (
        "def solve(request: str) -> str:\n"
        '    """Answer."""\n'
        "    for instruction in request.split('. '):\n"
        f"{branches}"
        "    return 'Yes'\n"
    )
    maker = scripted([reply(degenerate, [e["input"] for e in examples[3:]])] * 3)
    out = make(store, examples, context(maker))
    assert stored(store) is None
    assert "branches on a phrase copied from an example's question" in out["error"]


def test_an_answer_that_ignores_the_question_is_rejected(store):
    rng = random.Random(3)
    examples = [navigate(rng, back=True) for _ in range(6)]  # every answer "Yes"
    always_yes = 'def solve(request: str) -> str:\n    """Answer."""\n    return "Yes"\n'
    maker = scripted([reply(always_yes, [e["input"] for e in examples[3:]])] * 3)
    out = make(store, examples, context(maker, agreement_probes=3))
    assert stored(store) is None
    assert "does not depend on the question" in out["error"]
    assert "does not depend on the question" in str(maker.received[1][-1].content)


def test_too_few_examples_ask_for_more_and_store_nothing(store):
    examples = navigation(6)
    maker = scripted([reply(NAVIGATOR, [e["input"] for e in examples[3:]])])
    out = make(store, examples, context(maker))
    assert stored(store) is None
    assert out["error"].startswith("the tool passed every check but is not verified")
    assert "give at least " in out["error"] and "LATM_WEAK_TOOLS=store" in out["error"]
    assert out["verification"]["level"] == "weak" and out["verification"]["cases"] == 6
    assert len(maker.received) == 1  # more candidates cannot help: no second round


def test_weak_tools_are_stored_marked_when_asked(store):
    examples = navigation(6)
    maker = scripted([reply(NAVIGATOR, [e["input"] for e in examples[3:]])])
    out = make(store, examples, context(maker, weak_tools="store"))
    assert out["error"] is None
    record = stored(store)
    assert record.strength.level == "weak" and out["verification"]["level"] == "weak"
    assert record.strength.lucky_pass > 0.01 and record.strength.blind_cases == 3
    assert "WEAKLY verified" in record.strength.describe()


def test_enough_examples_verify_a_yes_no_tool(store):
    examples = navigation(24)
    maker = scripted([reply(NAVIGATOR, [e["input"] for e in examples[3:6]])])
    out = make(store, examples, context(maker))
    assert out["error"] is None
    record = stored(store)
    assert record.strength.level == "verified" and record.strength.cases == 24
    assert record.strength.blind_cases == 21
    assert record.strength.lucky_pass <= 0.01


ODD_SORT = '''\
def solve(request: str) -> str:
    """Sort."""
    words = request.split("List:")[1].split()
    return " ".join(words if "zebra" in words else sorted(words))
'''


def test_candidates_that_pass_are_compared_on_unlabelled_inputs(store):
    qs = [e["input"] for e in WORDS[3:6]]
    calls = "\n".join(f"    solve({q!r})," for q in qs)
    odd = f"```python\n{ODD_SORT}\nCALLS = [\n{calls}\n]\n```\n"
    words = [q.split("List:", 1)[1].split() for q in qs]
    good = maker_reply(SOLVE, qs).replace(
        "CALLS = [", "CALLS = [\n" + "".join(f"    sort_words({w!r}),\n" for w in words) + "#"
    )
    maker = scripted([odd, good, good])
    task = "Sort the following words alphabetically: List: zebra apple mango"
    out = build_graph(store=store).invoke(
        {"task": task, "examples": WORDS[:6], "task_type": "word_sorting"},
        context=context(maker, n_candidates=3),
    )
    assert out["error"] is None and out["answer"] == "apple mango zebra"
    record = stored(store, "word_sorting")
    assert "zebra" not in record.code  # the simplest, but the others disagree with it
    assert record.strength.compared == 2 and record.strength.probes >= 1
    assert 0.5 < record.strength.agreement < 1
    assert out["verification"]["agreement"] == record.strength.agreement


def test_random_labels_almost_never_yield_a_stored_tool():
    # scripted makers writing plausible wrong code, the default settings
    for task, n in (("yes_no", 6), ("five_options", 6), ("yes_no", 15)):
        result = measure(task, n, trials=8, seed=5, exec_timeout_s=2.0, max_retries=0)
        assert result["stored"] == 0 and result["crashed"] == 0, result


def test_answers_shown_to_the_maker_after_a_failure_are_no_more_evidence(store):
    examples = navigation(24)  # 12 "Yes" (even indexes), 12 "No"
    always_no = 'def solve(request: str) -> str:\n    """Answer."""\n    return "No"\n'
    qs = [e["input"] for e in examples[3:6]]
    maker = scripted([reply(always_no, qs), reply(NAVIGATOR, qs)])
    out = make(store, examples, context(maker))
    assert out["error"] is None
    strength = stored(store).strength
    # round 1 failed one validation call (reported to the maker); its direct checks
    # stopped at their first failure, a demo, so no other answer was shown
    assert strength.cases == 24 and strength.blind_cases == 24 - 3 - 1
    assert strength.candidates == 2 and strength.level == "verified"
    assert strength.lucky_pass == pytest.approx(2 * (13 / 25) ** 20)


def test_the_bench_tools_made_today_still_verify_with_the_benchs_six_examples():
    from latm.bench.label_noise import bench_split_table

    rows = {tuple(c.strip() for c in row.split("|")[1:3]): row for row in bench_split_table()[2:]}
    for task in ("word_sorting", "chinese_remainder_theorem"):
        for how in ("solve", "calls"):
            assert rows[(task, how)].count("(verified)") == 2, rows[(task, how)]
    # five options, three unseen answers: no way to tell a right tool from a lucky one
    assert "needs" in rows[("logical_deduction_five_objects", "solve")]
