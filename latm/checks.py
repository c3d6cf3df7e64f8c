"""Static checks of proposed tools: code that hard-codes the examples is no tool.

A small maker, checked on three examples, may return a lookup table of the
answers it was shown. These checks read the syntax tree only (nothing runs).
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Sequence

from latm.codeparse import parse_module
from latm.graph.state import Example

_OPTION = re.compile(r"^\(?[A-Za-z]\)?$")
MIN_TARGET_CHARS = 4
MIN_INPUT_FRAGMENT_CHARS = 20
MIN_BRANCH_PHRASE_CHARS = 8
_DATA_PHRASE = re.compile(r"(?=.*\d)(?=.*[A-Za-z])(?=.*\s)")


def _literals(tree: ast.AST) -> list[str]:
    """String and number constants of the code, docstrings excluded."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and id(node) not in docstrings:
            value = node.value
            if isinstance(value, str):
                found.append(value.strip())
            elif isinstance(value, int | float) and not isinstance(value, bool):
                try:
                    found.append(str(value))
                except ValueError:  # an int too long for str(): no example's answer
                    continue
    return found


def _strings(node: ast.AST) -> list[str]:
    """The string constants of ``node``: itself, or the items of a tuple/list/set of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [s for elt in node.elts for s in _strings(elt)]
    return []


def branch_literals(tree: ast.AST) -> list[tuple[str, bool]]:
    """String literals the code branches on, each with whether it is a single equality test.

    Equality: ``x == "..."``, ``x != "..."``, a ``match`` case. Other branches:
    ``"..." in x``, ``x in ("...", ...)``, a dict key (a lookup table),
    ``x.startswith("...")``, ``x.endswith("...")`` (a vocabulary of phrases, as
    parsers rightly hold, unless a phrase carries an example's data).
    """
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for op, left, right in zip(node.ops, operands, operands[1:], strict=False):
                if isinstance(op, ast.Eq | ast.NotEq):
                    found += [(s, True) for s in _strings(left) + _strings(right)]
                elif isinstance(op, ast.In | ast.NotIn):
                    # "..." in text: containment; text in ("...", ...): equality
                    if isinstance(left, ast.Constant):
                        found += [(s, False) for s in _strings(left)]
                    if not isinstance(right, ast.Constant):
                        found += [(s, False) for s in _strings(right)]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("startswith", "endswith")
        ):
            found += [(s, False) for arg in node.args for s in _strings(arg)]
        elif isinstance(node, ast.MatchValue):
            found += [(s, True) for s in _strings(node.value)]
        elif isinstance(node, ast.Dict):
            found += [(s, False) for key in node.keys if key is not None for s in _strings(key)]
    return found


def copied_branch(code: str, examples: Sequence[Example]) -> str | None:
    """Name a phrase copied from an example's question that the code branches on.

    A tool that recognises the examples (``if step == "Take 1 step": ...``)
    instead of reading them passes the examples it was shown and answers the
    rest by a default. Flagged: a branch literal (a comparison, membership,
    lookup key, prefix or suffix test) found in an example's question that holds
    a number within words (``"Take 1 step"``: data, not a keyword of the task),
    or an equality test with a phrase of two or more words, 8+ characters, found
    in exactly one example's question. Single words, vocabularies of phrases and
    template phrases shared by several questions are what parsers rightly test.

    Args:
        code: The proposed tool code.
        examples: Every example of the request.

    Returns:
        A message for the maker, or ``None``.
    """
    try:
        literals = branch_literals(parse_module(code))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    inputs = [e["input"].casefold() for e in examples]
    for literal, equality in literals:
        phrase = " ".join(literal.split())
        if not phrase:
            continue
        holders = sum(phrase.casefold() in text for text in inputs)
        if not holders:
            continue
        data = bool(_DATA_PHRASE.match(phrase))
        lookup = (
            equality
            and len(phrase.split()) >= 2
            and len(phrase) >= MIN_BRANCH_PHRASE_CHARS
            and holders == 1
            and len(inputs) > 1
        )
        if data or lookup:
            return (
                f"the code branches on a phrase copied from an example's question "
                f"({phrase[:60]!r}): a tool must read any question of the task, not "
                f"recognise the examples"
            )
    return None


def hardcoded(code: str, examples: Sequence[Example]) -> str | None:
    """Name the first example answer or input that ``code`` holds as a literal.

    An answer counts when it is distinctive: at least 4 characters, not an
    option letter, and the answer of one example only (an answer shared by
    several examples, like "No time slot works.", is a format constant). An
    input counts when a literal of 20+ characters is found in exactly one
    example's input (text shared by several inputs is the question's template,
    which a parser may rightly hold). Last, :func:`copied_branch`: a phrase of
    an example's question that the code branches on.

    Args:
        code: The proposed tool code.
        examples: Every example of the request (demos and validation).

    Returns:
        A message for the maker, or ``None`` when nothing is hard-coded.
    """
    try:
        literals = _literals(parse_module(code))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    counts = Counter(e["target"].strip() for e in examples)
    distinctive = {
        t
        for t, n in counts.items()
        if n == 1 and len(t) >= MIN_TARGET_CHARS and not _OPTION.match(t)
    }
    inputs = [e["input"] for e in examples]
    for literal in literals:
        if literal in distinctive:
            return f"the code hard-codes the answer of an example ({literal!r})"
        if len(literal) >= MIN_INPUT_FRAGMENT_CHARS:
            holders = sum(literal in text for text in inputs)
            if holders == 1 and len(inputs) > 1:
                return f"the code hard-codes part of an example's question ({literal[:60]!r})"
    return copied_branch(code, examples)
