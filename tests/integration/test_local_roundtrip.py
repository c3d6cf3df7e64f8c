"""A full make -> use round trip of the LATM graph on the key-less local default.

The maker (Qwen2.5-Coder 1.5B) is weak, so the run may end either way; what
is asserted is that it ends cleanly: with a verified, stored tool and an
answer, or with a clear ``error`` and no tool, never with an exception.
Skipped only when ``latm local install`` has not been run (see :mod:`.local_server`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langgraph.store.memory import InMemoryStore

from latm.data import load_task, paper_split
from latm.graph import Context
from latm.graph.builder import build_graph
from latm.local import LocalEndpoints

from .local_server import local_endpoints

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def endpoints() -> Iterator[LocalEndpoints]:
    yield from local_endpoints()


def test_make_then_use_ends_with_a_verified_tool_or_a_clean_error(
    endpoints: LocalEndpoints,
) -> None:
    split = paper_split(load_task("word_sorting"))
    examples = [*split["demos"], *split["validation"]]
    held_out = split["test"][0]
    ctx = Context(
        maker_base_url=endpoints.maker_base_url,
        maker_model=endpoints.maker_model,
        user_base_url=endpoints.user_base_url,
        user_model=endpoints.user_model,
        n_candidates=1,
        max_attempts=2,
        request_timeout_s=240.0,
    )
    out: dict[str, Any] = build_graph(store=InMemoryStore()).invoke(
        {"task": held_out["input"], "examples": examples}, context=ctx
    )
    print(f"round trip: tool={out.get('tool')} answer={out.get('answer')!r}", out.get("error"))
    assert set(out) >= {"answer", "error", "tool", "cache_hit"}, out
    assert out["cache_hit"] is False
    if out["tool"] is None:
        assert isinstance(out["error"], str) and out["error"].strip(), out
        assert out["answer"] is None
    else:
        assert out["tool"]["task_type"], out["tool"]
        assert out["error"] is None or isinstance(out["error"], str)
        if out["error"] is None:
            assert isinstance(out["answer"], str)
