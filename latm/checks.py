"""Static checks of proposed tools: code that hard-codes the examples is no tool.

A small maker, checked on three examples, may return a lookup table of the
answers it was shown. These checks read the syntax tree only (nothing runs).
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Sequence

from latm.codeparse import parse_python
from latm.graph.state import Example

_OPTION = re.compile(r"^\(?[A-Za-z]\)?$")
MIN_TARGET_CHARS = 4
MIN_INPUT_FRAGMENT_CHARS = 20


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


def hardcoded(code: str, examples: Sequence[Example]) -> str | None:
    """Name the first example answer or input that ``code`` holds as a literal.

    An answer counts when it is distinctive: at least 4 characters, not an
    option letter, and the answer of one example only (an answer shared by
    several examples, like "No time slot works.", is a format constant). An
    input counts when a literal of 20+ characters is found in exactly one
    example's input (text shared by several inputs is the question's template,
    which a parser may rightly hold).

    Args:
        code: The proposed tool code.
        examples: Every example of the request (demos and validation).

    Returns:
        A message for the maker, or ``None`` when nothing is hard-coded.
    """
    try:
        literals = _literals(parse_python(code))
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
    return None
