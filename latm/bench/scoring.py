"""Scoring of the benchmark: exact match after normalization, and CoT answer extraction.

Every method is scored by :func:`score`: :func:`latm.answers.is_correct` (exact
match after normalization, multiple choice → ``(X)``), with one relaxation the
same for all methods: a single final period is ignored on both sides, so that
"No time slot works" and "No time slot works." match.
"""

from __future__ import annotations

import re

from latm.answers import is_correct, parse_options

_ANSWER_IS = re.compile(r"answer is[ \t]*:?[ \t]*(\S.*)", re.IGNORECASE)
_PREFIX = re.compile(r"^(?:final answer|answer|a)\s*:\s*", re.IGNORECASE)
_LEADING_OPTION = re.compile(r"^\(([A-Z])\)")
_BOXED = re.compile(r"\\boxed\{(.*)\}")


def _drop_period(text: str) -> str:
    text = text.strip()
    return text[:-1].rstrip() if text.endswith(".") else text


def score(answer: str | None, target: str, question: str = "") -> bool:
    """Whether ``answer`` is right: exact match after normalization, final period ignored."""
    if answer is None:
        return False
    return is_correct(answer, target, question) or is_correct(
        _drop_period(answer), _drop_period(target), question
    )


def _clean(text: str) -> str:
    text = text.strip()
    boxed = _BOXED.search(text)
    if boxed:
        text = boxed.group(1)
    text = text.replace("**", "").replace("`", "").strip()
    text = _PREFIX.sub("", text).strip()
    core = text[:-1].rstrip() if text.endswith(".") else text
    if len(core) >= 2 and core[0] == core[-1] and core[0] in "\"'":
        text = core[1:-1].strip()
    return text


def extract_cot_answer(reply: str, question: str = "") -> str | None:
    """The final answer of a chain-of-thought reply.

    Takes what follows the last "answer is" (to the end of its line), or else
    the reply's last non-empty line; drops markdown emphasis, quotes and an
    "Answer:" prefix. For a multiple-choice question an answer that starts with
    an option, like "(B) the red book", becomes that option.

    Returns:
        The answer text, or ``None`` for an empty reply.
    """
    found = _ANSWER_IS.findall(reply)
    if found:
        raw = found[-1]
    else:
        lines = [line for line in reply.splitlines() if line.strip()]
        if not lines:
            return None
        raw = lines[-1]
    answer = _clean(raw)
    if parse_options(question):
        option = _LEADING_OPTION.match(answer)
        if option:
            return f"({option.group(1)})"
    return answer or None
