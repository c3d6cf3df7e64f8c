"""The ``updates`` and ``custom`` streams carry plain JSON, whatever the run does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from latm.graph import Context
from latm.graph.builder import build_graph
from latm.graph.state import OutputState

from .scripted import BUGGY_SORT_CODE, SORT_CODE, bbh, maker_reply, scripted, user_reply

EXAMPLES = bbh("word_sorting")
DEMOS_AND_VALIDATION = EXAMPLES[:6]
VALIDATION_QS = [e["input"] for e in EXAMPLES[3:6]]
HELD_OUT = EXAMPLES[20]
OUTPUT_KEYS = frozenset(OutputState.__annotations__)
MAKE = {"task": HELD_OUT["input"], "examples": DEMOS_AND_VALIDATION, "task_type": "word_sorting"}


def streamed(app: Any, inputs: Any, ctx: Any, config: Any = None) -> list[tuple[str, Any]]:
    """Every (mode, chunk) of a run, each checked to be plain JSON."""
    chunks = []
    for mode, chunk in app.stream(inputs, config, context=ctx, stream_mode=["updates", "custom"]):
        if mode == "updates" and "__interrupt__" in chunk:
            # LangGraph's own interrupt marker (an Interrupt object); its payload is ours
            (pause,) = chunk["__interrupt__"]
            json.dumps(pause.value)
            continue
        text = json.dumps(chunk)  # raises on an object JSON cannot hold (Overwrite, a message)
        assert "__overwrite__" not in text
        if mode == "updates":
            for node, update in chunk.items():
                # a server streams the output keys alone: a node must write one of them,
                # or it shows up as null there
                assert isinstance(update, dict) and set(update) & OUTPUT_KEYS, f"{node}: {update}"
        chunks.append((mode, chunk))
    return chunks


def nodes(chunks: list[tuple[str, Any]]) -> list[str]:
    return [node for mode, chunk in chunks if mode == "updates" for node in chunk]


def test_a_make_a_hit_and_a_failure_stream_plain_json(store, make_context):
    app = build_graph(store=store)
    make = streamed(
        app,
        MAKE,
        make_context(
            scripted([maker_reply(SORT_CODE, VALIDATION_QS)]),
            scripted([user_reply(HELD_OUT["input"])]),
        ),
    )
    assert nodes(make) == ["dispatcher", "propose", "verify", "wrap", "use"]
    updates = [chunk for mode, chunk in make if mode == "updates"]
    # a run's first usage names every role (null: nothing spent yet), then each node's own
    assert updates[0]["dispatcher"]["usage"] == {"maker": None, "user": None}
    assert updates[1]["propose"]["usage"]["maker"]["calls"] == 1
    assert updates[4]["use"]["usage"] == {
        "user": {"input_tokens": 100, "output_tokens": 20, "total_tokens": 120, "calls": 1}
    }
    assert any(mode == "custom" and c["event"] == "case" for mode, c in make)

    hit = streamed(
        app,
        {"task": EXAMPLES[30]["input"]},
        make_context(None, scripted([user_reply(EXAMPLES[30]["input"])])),
    )
    assert nodes(hit) == ["dispatcher", "use"]
    assert next(c for m, c in hit if m == "updates")["dispatcher"]["cache_hit"] is True

    failed = streamed(
        build_graph(store=store),
        {**MAKE, "task_type": "other_sorting"},
        make_context(scripted([maker_reply(BUGGY_SORT_CODE, VALIDATION_QS)] * 2), max_attempts=2),
    )
    assert nodes(failed) == ["dispatcher", "propose", "verify", "propose", "verify"]
    last = [c for m, c in failed if m == "updates"][-1]["verify"]
    assert last["error"].startswith("could not make a verified tool in 2 attempt(s)")
    assert last["making"]["attempts"] == 2 and last["candidates"] == []


def test_an_invalid_request_and_a_dead_maker_stream_plain_json(store, make_context):
    app = build_graph(store=store)
    invalid = streamed(app, {"task": ""}, make_context())
    assert nodes(invalid) == ["dispatcher"]

    dead = Context(
        maker_base_url="http://127.0.0.1:9/v1", maker_model="m", max_retries=0, request_timeout_s=5
    )
    chunks = streamed(app, MAKE, dead)
    n = dead.n_candidates  # one propose branch per candidate, then verify ends the run
    assert nodes(chunks) == ["dispatcher", *["propose"] * n, "verify"]
    verify = [c for m, c in chunks if m == "updates"][-1]["verify"]
    assert "the maker model 'm' at http://127.0.0.1:9/v1 failed" in verify["error"]


@pytest.mark.parametrize("answer", [{"action": "approve"}, {"action": "reject", "reason": "no"}])
def test_approval_streams_plain_json(store, make_context, answer):
    app = build_graph(store=store, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "review"}}
    ctx = make_context(
        scripted([maker_reply(SORT_CODE, VALIDATION_QS)]),
        scripted([user_reply(HELD_OUT["input"])]),
        require_approval=True,
    )
    paused = streamed(app, MAKE, ctx, config)
    assert nodes(paused) == ["dispatcher", "propose", "verify"]
    resumed = streamed(app, Command(resume=answer), ctx, config)
    if answer["action"] == "approve":
        assert nodes(resumed) == ["review", "wrap", "use"]
        review = next(c for m, c in resumed if m == "updates")["review"]
        assert review["making"]["reviewed"] == "approved"
    else:
        assert nodes(resumed) == ["review"]
        assert "rejected" in next(c for m, c in resumed if m == "updates")["review"]["error"]
