"""What tracers and stream consumers see of a run: tags, metadata, spans, custom events.

A real LangChain callback handler records every chain and chat-model run of
graph runs with scripted models (as LangSmith's tracer or Studio would see them).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import defaultdict
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessageChunk, BaseMessage

from latm.graph import Context
from latm.graph.builder import build_graph
from latm.tracing import TAG, call_config

from .scripted import BUGGY_SORT_CODE, SORT_CODE, bbh, maker_reply, scripted, user_reply

EXAMPLES = bbh("word_sorting")
DEMOS_AND_VALIDATION = EXAMPLES[:6]
VALIDATION_QS = [e["input"] for e in EXAMPLES[3:6]]
HELD_OUT = EXAMPLES[20]
NODES = {"dispatcher", "propose", "verify", "review", "wrap", "use"}


class Recorder(BaseCallbackHandler):
    """Records the name, tags, metadata and parent of every chain and chat-model run."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.chains: list[dict[str, Any]] = []
        self.models: list[dict[str, Any]] = []

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        run = {
            "name": kwargs.get("name"),
            "run_id": run_id,
            "parent": parent_run_id,
            "tags": tags or [],
            "metadata": metadata or {},
        }
        with self.lock:
            self.chains.append(run)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        run = {"parent": parent_run_id, "tags": tags or [], "metadata": metadata or {}}
        with self.lock:
            self.models.append(run)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [c for c in self.chains if c["name"] == name]

    def role(self, role: str) -> list[dict[str, Any]]:
        return [m for m in self.models if m["metadata"].get("latm_role") == role]


def make_inputs() -> dict[str, Any]:
    return {
        "task": HELD_OUT["input"],
        "examples": DEMOS_AND_VALIDATION,
        "task_type": "word_sorting",
    }


def test_call_config_omits_unknown_fields():
    config = call_config("maker", "propose", candidate=0, attempt=2)
    assert config["metadata"] == {
        "latm_role": "maker",
        "latm_node": "propose",
        "latm_candidate": 0,
        "latm_attempt": 2,
    }
    assert config["tags"] == [TAG, "latm:maker", "latm:node:propose"]


def test_model_calls_and_nodes_carry_latm_tags_and_metadata(store, make_context):
    """Best-of-2 miss, then a hit: every model call says who, what, which candidate and round."""
    maker = scripted([maker_reply(SORT_CODE, VALIDATION_QS)] * 2)
    user = scripted([user_reply(HELD_OUT["input"]), user_reply(EXAMPLES[30]["input"])])
    ctx = make_context(maker, user, n_candidates=2)
    app = build_graph(store=store)
    made = Recorder()
    out = app.invoke(make_inputs(), {"callbacks": [made]}, context=ctx)
    assert out["error"] is None and out["answer"] == HELD_OUT["target"]

    makers = made.role("maker")
    assert sorted(m["metadata"]["latm_candidate"] for m in makers) == [0, 1]
    for call in makers:
        meta = call["metadata"]
        assert meta["latm_node"] == "propose" and meta["latm_attempt"] == 1
        assert meta["latm_task_type"] == "word_sorting"
        assert meta["langgraph_node"] == "propose"  # LangGraph's own metadata is kept
        assert {TAG, "latm:maker", "latm:node:propose"} <= set(call["tags"])
    [use_call] = made.role("user")
    assert use_call["metadata"]["latm_node"] == "use"
    assert use_call["metadata"]["latm_task_type"] == "word_sorting"
    assert use_call["metadata"]["latm_tool_version"] == 1
    assert use_call["metadata"]["latm_cache_hit"] is False
    assert {TAG, "latm:user", "latm:node:use"} <= set(use_call["tags"])
    assert len(made.models) == 3

    # every node's span names the node (and the role of its model), and carries the tag
    spans = [c for c in made.chains if c["name"] in NODES]
    assert {c["name"] for c in spans} == {"dispatcher", "propose", "verify", "wrap", "use"}
    for span in spans:
        assert span["metadata"]["latm_node"] == span["name"], span
        assert TAG in span["tags"]
    roles = {c["name"]: c["metadata"].get("latm_role") for c in spans}
    assert roles == {
        "dispatcher": "user",
        "propose": "maker",
        "verify": None,
        "wrap": None,
        "use": "user",
    }

    hit = Recorder()
    again = app.invoke(
        {"task": EXAMPLES[30]["input"], "task_type": "word_sorting", "examples": []},
        {"callbacks": [hit]},
        context=ctx,
    )
    assert again["cache_hit"] is True
    [use_call] = hit.models
    assert use_call["metadata"]["latm_cache_hit"] is True
    assert use_call["metadata"]["latm_tool_version"] == 1


def _dispatcher_spans(recorder: Recorder) -> list[dict[str, Any]]:
    return recorder.named("dispatcher")


def test_the_dispatcher_is_one_span_and_its_model_call_is_its_child(store, make_context):
    """The LLM dispatcher's model call hangs directly under the one ``dispatcher`` span."""
    make_ctx = make_context(
        scripted([maker_reply(SORT_CODE, VALIDATION_QS)]), scripted([user_reply(HELD_OUT["input"])])
    )
    app = build_graph(store=store)
    app.invoke(make_inputs(), context=make_ctx)

    question = EXAMPLES[40]
    user = scripted(['{"tool": "word_sorting"}', user_reply(question["input"])])
    recorder = Recorder()
    out = app.invoke(
        {"task": question["input"]},
        {"callbacks": [recorder]},
        context=make_context(scripted([]), user, dispatch="llm"),
    )
    assert out["cache_hit"] is True
    [span] = _dispatcher_spans(recorder)
    [root] = [c for c in recorder.chains if c["parent"] is None]
    assert span["parent"] == root["run_id"]
    dispatch_call = [m for m in recorder.models if m["metadata"]["latm_node"] == "dispatcher"]
    assert len(dispatch_call) == 1
    assert dispatch_call[0]["parent"] == span["run_id"]
    assert dispatch_call[0]["metadata"]["latm_role"] == "user"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_exactly_one_dispatcher_span_per_run(store, make_context, mode):
    ctx = make_context(
        scripted([maker_reply(SORT_CODE, VALIDATION_QS)]), scripted([user_reply(HELD_OUT["input"])])
    )
    app = build_graph(store=store)
    recorder = Recorder()
    config: Any = {"callbacks": [recorder]}
    if mode == "sync":
        out = app.invoke(make_inputs(), config, context=ctx)
    else:
        out = asyncio.run(app.ainvoke(make_inputs(), config, context=ctx))
    assert out["error"] is None and out["answer"] == HELD_OUT["target"]
    spans = _dispatcher_spans(recorder)
    assert len(spans) == 1, [c["name"] for c in recorder.chains]
    assert spans[0]["metadata"]["langgraph_node"] == "dispatcher"


def test_parallel_candidates_stream_tokens_tagged_with_their_candidate(store, make_context):
    """``stream_mode="messages"``: each chunk names its candidate, round and role."""
    replies = [
        maker_reply(SORT_CODE, VALIDATION_QS),
        "No code this time, sorry: " + " ".join(f"word{i}" for i in range(40)),
    ]
    maker = scripted(replies)
    ctx = make_context(maker, scripted([user_reply(HELD_OUT["input"])]), n_candidates=2)
    texts: dict[tuple[int, int], str] = defaultdict(str)
    order: list[int] = []
    for chunk, meta in build_graph(store=store).stream(
        make_inputs(), context=ctx, stream_mode="messages"
    ):
        if meta.get("latm_role") != "maker":
            continue
        assert isinstance(chunk, AIMessageChunk)
        assert meta["langgraph_node"] == "propose" and meta["latm_node"] == "propose"
        assert {TAG, "latm:maker", "latm:node:propose"} <= set(meta["tags"])
        texts[(meta["latm_attempt"], meta["latm_candidate"])] += str(chunk.content)
        order.append(meta["latm_candidate"])
    assert set(texts) == {(1, 0), (1, 1)}
    # each candidate's chunks rebuild exactly one whole reply, however they interleaved
    assert sorted(texts.values()) == sorted(replies)
    assert len(order) > 2


def _custom_events(app: Any, inputs: dict[str, Any], ctx: Context) -> list[Any]:
    return list(app.stream(inputs, context=ctx, stream_mode="custom"))


def _assert_clean(events: list[Any]) -> None:
    assert events
    for event in events:
        assert isinstance(event, dict)
        assert json.loads(json.dumps(event)) == event  # plain JSON, nothing lost
        assert isinstance(event["node"], str) and isinstance(event["event"], str)
        assert not [k for k in event if k.startswith("_")], event


def test_custom_events_are_plain_json_on_every_path(store, make_context):
    app = build_graph(store=store)
    # a retry, then a stored tool and an answer
    maker = scripted(
        [maker_reply(BUGGY_SORT_CODE, VALIDATION_QS), maker_reply(SORT_CODE, VALIDATION_QS)]
    )
    ctx = make_context(maker, scripted([user_reply(HELD_OUT["input"])]))
    made = _custom_events(app, make_inputs(), ctx)
    _assert_clean(made)
    assert {"propose", "verify", "wrap", "use"} <= {e["node"] for e in made}
    # a hit
    hit_ctx = make_context(scripted([]), scripted([user_reply(EXAMPLES[30]["input"])]))
    hit = _custom_events(app, {"task": EXAMPLES[30]["input"], "task_type": "word_sorting"}, hit_ctx)
    _assert_clean(hit)
    # attempts exhausted on a reply with no code
    bad = make_context(scripted(["no code"] * 3), scripted([]), max_attempts=2)
    _assert_clean(_custom_events(app, {**make_inputs(), "task_type": "other_task"}, bad))
    # a malformed request
    _assert_clean(_custom_events(app, {"task": "x", "examples": "nope"}, make_context()))


def test_custom_events_of_a_review_are_plain_json(store, make_context):
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import Command

    app = build_graph(store=store, checkpointer=InMemorySaver())
    ctx = make_context(
        scripted([maker_reply(SORT_CODE, VALIDATION_QS)]),
        scripted([user_reply(HELD_OUT["input"])]),
        require_approval=True,
    )
    config: Any = {"configurable": {"thread_id": "review"}}
    _assert_clean(list(app.stream(make_inputs(), config, context=ctx, stream_mode="custom")))
    edited = SORT_CODE.replace("alphabetically", "in order")
    resumed = list(
        app.stream(
            Command(resume={"action": "edit", "code": edited}),
            config,
            context=ctx,
            stream_mode="custom",
        )
    )
    _assert_clean(resumed)
    assert {e["node"] for e in resumed} >= {"review", "wrap", "use"}
