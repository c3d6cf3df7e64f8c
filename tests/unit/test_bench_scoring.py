"""The benchmark's scorer and the extraction of chain-of-thought answers."""

from __future__ import annotations

import pytest

from latm.bench.scoring import extract_cot_answer, score

MC = (
    "The following paragraphs each describe a set of five objects.\n"
    "Options:\n(A) The owl is the leftmost\n(B) The robin is the leftmost\n"
    "(C) The hawk is the leftmost"
)


@pytest.mark.parametrize(
    ("reply", "question", "expected"),
    [
        ("First, ... Then ...\nSo the answer is apple banana cherry.", "", "apple banana cherry"),
        ("Step 1\nSo the answer is (B).", MC, "(B)"),
        ("So the answer is (B) The robin is the leftmost.", MC, "(B)"),
        ("...\nSo the answer is **(C)**.", MC, "(C)"),
        ("The answer is: 42", "", "42"),
        ("Therefore, the correct answer is:\n\nSo the answer is (E).", MC, "(E)"),
        ("So the answer is (E).\n\nThe final answer is \\(\\boxed{E}\\).", MC, "E"),
        ("I think the answer is 3.\nWait, no.\nSo the answer is 7.", "", "7"),
        ("reasoning\nAnswer: `] ) >`", "", "] ) >"),
        ("So the answer is No time slot works.", "", "No time slot works."),
        ("So the answer is $\\boxed{1234}$.", "", "1234"),
        ('So the answer is "09:00 - 09:30".', "", "09:00 - 09:30"),
        ("", "", None),
        ("   \n  ", "", None),
    ],
)
def test_extract_cot_answer(reply, question, expected):
    answer = extract_cot_answer(reply, question)
    if expected is None:
        assert answer is None
    else:
        assert answer is not None and answer.rstrip(".") == expected.rstrip(".")


@pytest.mark.parametrize(
    ("answer", "target", "question", "ok"),
    [
        ("apple banana", "apple banana", "", True),
        ("  apple banana ", "apple banana", "", True),
        ("banana apple", "apple banana", "", False),
        ("B", "(B)", MC, True),
        ("2", "(B)", MC, True),
        ("The robin is the leftmost", "(B)", MC, True),
        ("(A)", "(B)", MC, False),
        ("No time slot works", "No time slot works.", "", True),
        ("No time slot works.", "No time slot works.", "", True),
        ("09:00 - 09:30.", "09:00 - 09:30", "", True),
        ("09:00-09:30", "09:00 - 09:30", "", False),
        ("])>", "] ) >", "", False),
        ("1234", "1234", "", True),
        ("12345", "1234", "", False),
        (None, "1234", "", False),
    ],
)
def test_score(answer, target, question, ok):
    assert score(answer, target, question) is ok
