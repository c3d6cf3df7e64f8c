"""The lucky-pass estimate and the label-free signals of latm.evidence (pure functions)."""

from __future__ import annotations

import math

import pytest

from latm import evidence
from latm.checks import copied_branch, hardcoded
from latm.graph.state import CaseReport, Example

from .scripted import bbh


def ex(question: str, answer: str) -> Example:
    return Example(input=question, target=answer)


def case(example: Example, passed: bool = True, check: str = "direct") -> CaseReport:
    return CaseReport(
        input=example["input"],
        expected=example["target"],
        got=example["target"] if passed else "?",
        error=None,
        passed=passed,
        check=check,
    )


YES_NO = [ex(f"Do you return? Take {i} steps.", "Yes" if i % 2 else "No") for i in range(1, 7)]


def test_guess_chance_of_a_yes_no_task_errs_towards_luck():
    chance, free_form = evidence.guess_chance(YES_NO)  # 3 Yes, 3 No
    assert chance == pytest.approx(4 / 7) and not free_form


def test_guess_chance_of_free_form_answers_is_small():
    chance, free_form = evidence.guess_chance(bbh("word_sorting")[:6])
    assert free_form and chance == pytest.approx(1 / (math.comb(6, 2) + 2))


def test_guess_chance_is_at_least_one_over_the_number_of_options():
    questions = [
        ex(f"Q{i}\nOptions:\n(A) x\n(B) y\n(C) z", f"({'ABCABCABCABC'[i]})") for i in range(12)
    ]
    chance, _ = evidence.guess_chance(questions)
    assert chance == pytest.approx(max(5 / 13, 1 / 3))
    two = [ex("Q\nOptions:\n(A) x\n(B) y", "(A)"), ex("R\nOptions:\n(A) x\n(B) y", "(B)")]
    assert evidence.guess_chance(two)[0] >= 0.5


def test_every_answer_the_same_leaves_luck_certain():
    same = [ex(f"Q{i}", "Yes") for i in range(8)]
    assert evidence.guess_chance(same)[0] == 1.0
    found = evidence.evidence(
        [case(e) for e in same],
        labelled=same,
        seen=set(),
        candidates=1,
        threshold=0.01,
        copy_guarded=True,
    )
    assert not found.sufficient and found.more_needed is None
    assert "every example has the same answer" in found.shortfall(3)


def test_demo_answers_the_maker_saw_are_no_evidence_unless_distinctive_and_guarded():
    seen = {e["input"] for e in YES_NO[:3]}
    found = evidence.evidence(
        [case(e) for e in YES_NO],
        labelled=YES_NO,
        seen=seen,
        candidates=3,
        threshold=0.01,
        copy_guarded=True,
    )
    assert found.cases == 6 and found.blind == 3
    assert found.lucky_pass == pytest.approx(3 * (4 / 7) ** 3)
    assert not found.sufficient
    words = bbh("word_sorting")[:6]
    seen = {e["input"] for e in words[:3]}
    guarded = evidence.evidence(
        [case(e) for e in words],
        labelled=words,
        seen=seen,
        candidates=9,
        threshold=0.01,
        copy_guarded=True,
    )
    assert guarded.blind == 6 and guarded.sufficient
    unguarded = evidence.evidence(
        [case(e) for e in words],
        labelled=words,
        seen=seen,
        candidates=9,
        threshold=0.01,
        copy_guarded=False,
    )
    assert unguarded.blind == 3


def test_an_example_counts_once_and_only_if_every_check_on_it_passed():
    checks = [case(YES_NO[3], check="call"), case(YES_NO[3]), case(YES_NO[4], passed=False)]
    found = evidence.evidence(
        checks, labelled=YES_NO, seen=set(), candidates=1, threshold=0.01, copy_guarded=True
    )
    assert found.cases == 1 and found.blind == 1


def test_more_needed_is_the_fewest_examples_that_suffice():
    assert evidence.more_needed(0.5, 3, 9, 0.01) == 7  # 9 / 2**10 < 1 % <= 9 / 2**9
    assert 9 * 0.5**10 <= 0.01 < 9 * 0.5**9
    assert evidence.more_needed(0.5, 20, 9, 0.01) == 0
    assert evidence.more_needed(1.0, 3, 1, 0.01) is None
    found = evidence.evidence(
        [case(e) for e in YES_NO],
        labelled=YES_NO,
        seen=set(),
        candidates=3,
        threshold=0.01,
        copy_guarded=True,
    )
    message = found.shortfall(3)
    assert f"at least {found.more_needed} more labelled example(s)" in message
    assert "3 candidate(s) were tried" in message and "57%" in message


def test_constant_answers():
    assert evidence.constant(["Yes", "Yes", "Yes"]) == "Yes"
    assert evidence.constant(["Yes", "No", "Yes"]) is None
    assert evidence.constant(["Yes", "Yes"]) is None  # too few to tell
    assert evidence.constant(["Yes", None, "Yes", "Yes"]) is None  # a failure is no answer


def test_perturbations_and_probes():
    question = "Sort the following words alphabetically: List: pear apple fig"
    assert evidence.perturbations(question) == [
        "Sort the following words alphabetically: List: fig apple pear"
    ]
    numbers = "Divide 95765 among 5 penguins; 2 are left."
    assert evidence.perturbations(numbers) == ["Divide 95766 among 6 penguins; 3 are left."]
    examples = [ex(question, "apple fig pear"), ex(numbers, "x")]
    probes = evidence.probes("List: b a", examples, limit=5)
    assert probes[0] == "List: b a" and question not in probes and len(probes) == 3
    assert evidence.probes(question, examples, limit=1) == [probes[1]]  # a known task is no probe


def test_agreement():
    scores = evidence.agreement({0: ["a", "b", None], 1: ["a", "b", None], 2: ["a", "c", "d"]})
    assert scores[0] == pytest.approx(3 / 5)  # with 1: 2 of 2; with 2: 1 of 3
    assert scores[2] == pytest.approx(2 / 6)
    assert evidence.agreement({0: ["a"]}) == {0: None}


NAVIGATE = [
    ex("Do you return? Always face forward. Take 1 step left. Take 2 steps right.", "No"),
    ex("Do you return? Take 3 steps forward. Take 3 steps backward.", "Yes"),
    ex("Do you return? Always face forward. Take 5 steps left. Take 5 steps right.", "Yes"),
]

DEGENERATE = '''\
def solve(request: str) -> str:
    """Answer."""
    for instruction in request.split(". "):
        if instruction == "Take 1 step left":
            return "No"
    return "Yes"
'''


@pytest.mark.parametrize(
    "code",
    [
        DEGENERATE,
        DEGENERATE.replace(
            'instruction == "Take 1 step left"', '"Take 3 steps forward" in request'
        ),
        DEGENERATE.replace(
            'instruction == "Take 1 step left"', 'instruction in ("Take 5 steps left",)'
        ),
        "def solve(r):\n    return {'Take 5 steps right': 'No'}.get(r, 'Yes')\n",
        "def solve(r):\n    match r:\n        case 'Take 3 steps forward':\n"
        "            return 'No'\n    return 'Yes'\n",
        "def solve(r):\n    return 'No' if r.endswith('Take 2 steps right.') else 'Yes'\n",
    ],
)
def test_branching_on_a_phrase_copied_from_a_question_is_hard_coding(code):
    problem = hardcoded(code, NAVIGATE)
    assert problem is not None and "example's question" in problem
    assert "branches on a phrase copied" in (copied_branch(code, NAVIGATE) or "")


def test_parsers_may_branch_on_keywords_and_template_phrases():
    parser = '''\
import re


def solve(request: str) -> str:
    """Return to the start?"""
    x = y = 0
    fixed = "Always face forward" in request
    for n, way in re.findall(r"Take (\\d+) steps? (\\w+)", request):
        if way == "left":
            x -= int(n)
        elif way in ("right", "forward") or way.startswith("back"):
            y += int(n)
    return "Yes" if (x, y) == (0, 0) and fixed is not None else "No"
'''
    assert hardcoded(parser, NAVIGATE) is None
    words = bbh("word_sorting")[:6]
    sorter = (
        "def solve(request):\n"
        "    if 'List:' not in request:\n        raise ValueError('no list')\n"
        "    return ' '.join(sorted(request.split('List:')[1].split()))\n"
    )
    assert hardcoded(sorter, words) is None


def test_distinctive_answers_seen_once_are_hard_to_guess_short_ones_are_not():
    schedule = [
        ex("A free 9-10, B free 9-9:30", "09:00 - 09:30"),
        ex("A free 9-10, B free 11-12", "No time slot works."),
        ex("A free 10-12, B free 10-11:30", "10:00 - 11:30"),
        ex("A free 8-9, B free 10-11", "No time slot works."),
        ex("A free 14-16, B free 14:30-15", "14:30 - 15:00"),
        ex("A free 9-11, B free 9:30-10:30", "09:30 - 10:30"),
    ]
    top, free_form = evidence.guess_chance(schedule)
    assert not free_form and top == pytest.approx(3 / 7)
    assert evidence.check_chance("No time slot works.", schedule) == pytest.approx(3 / 7)
    assert evidence.check_chance("14:30 - 15:00", schedule) == pytest.approx(1 / 7)
    assert evidence.check_chance("Yes", schedule) == pytest.approx(3 / 7)  # any tool emits it
    found = evidence.evidence(
        [case(e) for e in schedule],
        labelled=schedule,
        seen={e["input"] for e in schedule[:3]},
        candidates=3,
        threshold=0.01,
        copy_guarded=True,
    )
    # demo 1's shared answer was seen and can be copied: no evidence; the rest count
    assert found.blind == 5
    assert found.lucky_pass == pytest.approx(3 * (1 / 7) ** 4 * (3 / 7))
    assert found.sufficient


def test_a_vocabulary_of_position_phrases_is_no_lookup_of_the_examples():
    deduction = [
        ex("Five birds. The owl is the second from the left. The quail is the leftmost.", "(A)"),
        ex("Five books. The red book is the third from the right. The blue one is left.", "(B)"),
        ex("Five fruits. The apple is the cheapest. The pear is the rightmost.", "(C)"),
        ex(
            "Five cars. The bus is the second from the left. The van is the third from the right.",
            "(D)",
        ),
    ]
    parser = (
        "POSITIONS = {'the leftmost': 0, 'the second from the left': 1, 'the rightmost': 4}\n\n"
        "def solve(request):\n"
        "    for sentence in request.split('. '):\n"
        "        if sentence.endswith(('the third from the right', 'the rightmost')):\n"
        "            return '(B)'\n"
        "    return '(A)'\n"
    )
    assert hardcoded(parser, deduction) is None
    lookup = (
        "def solve(request):\n"
        "    if request.split('. ')[1] == 'The owl is':\n"
        "        return '(A)'\n"
        "    return '(C)'\n"
    )
    assert "branches on a phrase copied" in (hardcoded(lookup, deduction) or "")
