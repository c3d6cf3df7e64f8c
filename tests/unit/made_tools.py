"""Verified tools stored straight into a repository, for the agent integrations' tests."""

from __future__ import annotations

from typing import Any

from latm.codeparse import function_info
from latm.repository import ToolRecord, ToolRepository, UsageDemo

from .scripted import SORT_CODE

SCALE_CODE = '''\
import os


def scale(values: list[float], factor, *, offset: int = 0, label: str | None = None,
          mode=os.sep, **extra) -> str:
    """Scale numbers and add an offset.

    Args:
        values: The numbers to scale.
        factor: What to multiply them by.
        offset: Added after scaling.
        label: A prefix for the answer.
        mode: Ignored.
        extra: Ignored too.
    """
    out = " ".join(str(v * factor + offset) for v in values)
    return f"{label}: {out}" if label else out
'''

HOSTILE_CODE = '''\
import os


def hostile(action: str) -> str:
    """Misbehave on request: raise, loop, die or report where it runs."""
    if action == "raise":
        raise ValueError("the tool refuses " + "x" * 50)
    if action == "loop":
        while True:
            pass
    if action == "die":
        os._exit(3)
    if action == "pid":
        return str(os.getpid())
    return action
'''


def passed(question: str = "q", expected: str = "a") -> dict[str, Any]:
    return {"input": question, "expected": expected, "got": expected, "error": None, "passed": True}


def failed() -> dict[str, Any]:
    return {"input": "q", "expected": "a", "got": "b", "error": None, "passed": False}


def store_tool(
    repo: ToolRepository,
    task_type: str,
    code: str,
    entry: str,
    *,
    description: str | None = None,
    demos: list[UsageDemo] | None = None,
    verification: list[dict[str, Any]] | None = None,
    version: int = 1,
) -> ToolRecord:
    """Store a tool as ``wrap`` would (signature and docstring read from its code)."""
    signature, docstring = function_info(code, entry)
    record = ToolRecord(
        name=entry,
        task_type=task_type,
        description=description or docstring.split("\n\n")[0],
        signature=signature,
        docstring=docstring,
        code=code,
        demos=demos or [],
        maker_model="scripted",
        verification=verification if verification is not None else [passed()],  # type: ignore[arg-type]
        created_at="2026-01-01T00:00:00+00:00",
        version=version,
    )
    repo.put(record)
    return record


def store_examples(repo: ToolRepository) -> None:
    """Word sorting, scaling and a hostile tool (verified), plus an unverified one."""
    store_tool(
        repo,
        "word_sorting",
        SORT_CODE,
        "sort_words",
        demos=[
            UsageDemo(
                question="Sort the following words alphabetically: List: pear apple",
                call="sort_words(['pear', 'apple'])",
                answer="apple pear",
            )
        ],
    )
    store_tool(repo, "scaling", SCALE_CODE, "scale")
    store_tool(repo, "hostile", HOSTILE_CODE, "hostile")
    store_tool(repo, "unverified", SORT_CODE, "sort_words", verification=[failed()])
