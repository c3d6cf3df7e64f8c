from __future__ import annotations

import pytest

from latm.answers import is_correct, normalize_answer, parse_options

MC = (
    "Which is rightmost?\nOptions:\n(A) The quail is the rightmost\n"
    "(B) The owl is the rightmost\n(C) The raven is the rightmost"
)


def test_parse_options():
    assert parse_options(MC) == {
        "A": "The quail is the rightmost",
        "B": "The owl is the rightmost",
        "C": "The raven is the rightmost",
    }
    assert parse_options("Sort: b a") == {}


@pytest.mark.parametrize(
    "answer",
    [
        "(B)",
        "B",
        "B)",
        " (B) ",
        "2",
        "The owl is the rightmost",
        "the owl is the rightmost.",
        "'B'",
    ],
)
def test_multiple_choice_answers_normalize_to_the_letter(answer):
    assert normalize_answer(answer, MC) == "(B)"
    assert is_correct(answer, "(B)", MC)


def test_wrong_or_out_of_range_answers_do_not_match():
    assert not is_correct("(A)", "(B)", MC)
    assert normalize_answer("7", MC) == "7"
    assert normalize_answer("(Z)", MC) == "(Z)"
    assert not is_correct(None, "(B)", MC)


def test_free_text_answers_compare_exactly_after_stripping():
    assert is_correct(" apple banana\n", "apple banana")
    assert not is_correct("banana apple", "apple banana")
    assert not is_correct("Apple banana", "apple banana")
    assert is_correct("14687", "14687")
    assert normalize_answer("B", "no options here") == "B"
