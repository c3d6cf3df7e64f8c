"""Reliability (issue: the graph never raises, a tool is stored once and whole, ...).

One test (or a few) per numbered item of the reliability issue.
"""

from __future__ import annotations

import gc
import sys
import threading
from typing import Any

import pytest

from latm.codeparse import ReplyError, parse_proposal

# ---------------------------------------------------------------- 1. parse race


class _Cycle:
    """Garbage whose finalizer runs Python code, so GC can switch threads mid-parse."""

    def __del__(self) -> None:
        sum(range(50))


def test_parallel_parsing_never_hits_the_ast_recursion_race() -> None:
    """Candidates are parsed in parallel threads; on 3.11 that raced without a lock."""
    nested = "(" * 30 + "1" + ")" * 30
    body = "\n".join(
        f"def helper_{i}(a):\n    return [x for x in range(a) if x % 2] or {nested}"
        for i in range(10)
    )
    reply = f"```python\n{body}\n\ndef tool(a):\n    return helper_0(a)\n\nCALLS = [tool(3)]\n```"
    errors: list[BaseException] = []

    def garbage() -> None:
        for _ in range(80_000):
            a, b = _Cycle(), _Cycle()
            a.other, b.other = b, a  # type: ignore[attr-defined]

    def work() -> None:
        for _ in range(120):
            try:
                parse_proposal(reply)
            except (SystemError, ReplyError) as exc:
                errors.append(exc)

    interval, threshold = sys.getswitchinterval(), gc.get_threshold()
    sys.setswitchinterval(1e-6)
    gc.set_threshold(50, 2, 2)
    try:
        threads = [threading.Thread(target=work) for _ in range(4)]
        churn = threading.Thread(target=garbage)
        churn.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        churn.join()
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*threshold)
    assert errors == []
