"""Answer normalization and exact-match scoring, as the paper's scorer does it.

Multiple-choice questions list their options as lines ``(A) text``; an answer
given as the option's letter (``A``, ``(A)``, ``A)``), its number (``1``) or its
text is normalized to ``(A)``. Every other answer is compared as stripped text.
"""

from __future__ import annotations

import re

_OPTION = re.compile(r"^\s*\(([A-Z])\)\s*(.+?)\s*$", re.MULTILINE)
_LETTER = re.compile(r"^\(?([A-Z])\)?[.:]?$")
_NUMBER = re.compile(r"^[0-9]{1,4}$")


def clean(text: object) -> str:
    """Any value as text that every encoder takes (lone surrogates become ``?``)."""
    if not isinstance(text, str):
        try:
            text = str(text)
        except Exception:  # a value whose str() fails is no answer
            return ""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def parse_options(question: str) -> dict[str, str]:
    """Return the multiple-choice options of a question, letter to text.

    Args:
        question: The question text.

    Returns:
        ``{"A": "text", ...}`` in order, or an empty dict when it has none.
    """
    return {m.group(1): m.group(2) for m in _OPTION.finditer(question)}


def _clean(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def normalize_answer(answer: str, question: str = "") -> str:
    """Normalize an answer for exact-match comparison.

    Args:
        answer: The answer text (a tool's output or a target).
        question: The question it answers, whose options (if any) map
            letters, numbers and option texts to ``(X)``.

    Returns:
        The normalized answer.
    """
    text = _clean(clean(answer))
    options = parse_options(clean(question)) if question else {}
    if not options:
        return text
    letter = _LETTER.match(text)
    if letter and letter.group(1) in options:
        return f"({letter.group(1)})"
    if _NUMBER.match(text) and 1 <= int(text) <= len(options):  # ASCII digits only
        return f"({list(options)[int(text) - 1]})"
    folded = text.rstrip(".").casefold()
    for key, option in options.items():
        if option.rstrip(".").casefold() == folded:
            return f"({key})"
    return text


def is_correct(answer: str | None, target: str, question: str = "") -> bool:
    """Whether ``answer`` matches ``target`` exactly after normalization."""
    if answer is None:
        return False
    return normalize_answer(answer, question) == normalize_answer(target, question)
