"""Studio's side of ``langgraph dev``: the graph's description, Chat mode, tagged streams, traces.

Driven by the real ``langgraph_sdk`` client, as Studio drives the server.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient

from ..unit.scripted import SORT_CODE, bbh, maker_reply, user_reply
from .conftest import ROOT, ServerProcess
from .fake_openai import FakeOpenAI

pytestmark = pytest.mark.integration

EXAMPLES = bbh("word_sorting")
DEMOS_AND_VALIDATION = EXAMPLES[:6]
VALIDATION_QS = [e["input"] for e in EXAMPLES[3:6]]
HELD_OUT = EXAMPLES[20]


@pytest.fixture
def client(langgraph_server: ServerProcess) -> SyncLangGraphClient:
    """A client of its own tenant (an API key of the server's ``LATM_API_KEYS``)."""
    _, key = langgraph_server.new_tenant()
    return get_sync_client(url=langgraph_server.url, api_key=key, timeout=120)


def test_the_server_serves_the_graph_description_of_langgraph_json(client):
    described = json.loads((ROOT / "langgraph.json").read_text())["graphs"]["latm"]
    assert "tool" in described["description"]
    [assistant] = client.assistants.search(graph_id="latm")
    assert assistant["description"] == described["description"]


def test_chat_mode_a_human_message_in_an_ai_message_out_turn_after_turn(client, fake: FakeOpenAI):
    """What Studio's Chat mode sends: ``messages`` only, on one thread."""
    second = EXAMPLES[30]
    fake.script("maker", [maker_reply(SORT_CODE, VALIDATION_QS)])
    fake.script("user", [user_reply(HELD_OUT["input"]), user_reply(second["input"])])
    thread = client.threads.create()["thread_id"]
    first = client.runs.wait(
        thread,
        "latm",
        input={
            "messages": [{"role": "human", "content": HELD_OUT["input"]}],
            "examples": DEMOS_AND_VALIDATION,
            "task_type": "word_sorting",
        },
    )
    assert isinstance(first, dict) and first["error"] is None, first
    assert first["messages"][-1]["type"] == "ai"
    assert first["messages"][-1]["content"] == HELD_OUT["target"]
    out = client.runs.wait(
        thread,
        "latm",
        input={
            "messages": [{"role": "human", "content": [{"type": "text", "text": second["input"]}]}]
        },
    )
    assert isinstance(out, dict) and out["cache_hit"] is True, out
    assert [m["type"] for m in out["messages"]] == ["human", "ai", "human", "ai"]
    assert out["messages"][-1]["content"] == second["target"]
    assert fake.left("maker") == 0 and fake.left("user") == 0


def _no_code(body: dict[str, Any]) -> str:
    return "Candidate one has no code, only words: " + " ".join(f"w{i}" for i in range(30))


def test_parallel_candidates_stream_tokens_named_by_candidate_over_messages_tuple(
    client, fake: FakeOpenAI
):
    """Two candidates per round: every streamed maker chunk says which one it belongs to."""
    good = maker_reply(SORT_CODE, VALIDATION_QS)
    # candidate 0 samples without a seed, the others with one (latm.nodes.propose)
    fake.script("maker", [lambda b: good if b.get("seed") is None else _no_code(b)] * 2)
    fake.script("user", [user_reply(HELD_OUT["input"])])
    thread = client.threads.create()["thread_id"]
    texts: dict[int, str] = defaultdict(str)
    values: dict[str, Any] = {}
    for part in client.runs.stream(
        thread,
        "latm",
        input={
            "task": HELD_OUT["input"],
            "examples": DEMOS_AND_VALIDATION,
            "task_type": "word_sorting",
        },
        context={"n_candidates": 2},
        stream_mode=["messages-tuple", "values"],
    ):
        assert part.event != "error", part.data
        if part.event == "values":
            values = part.data
        elif part.event == "messages":
            chunk, meta = part.data
            if meta.get("latm_role") == "maker":
                assert meta["latm_node"] == "propose" and meta["latm_attempt"] == 1
                assert "latm:maker" in meta["tags"]
                texts[meta["latm_candidate"]] += chunk.get("content") or ""
    assert values["error"] is None and values["answer"] == HELD_OUT["target"], values
    assert texts == {0: good, 1: _no_code({})}


def test_the_server_traces_one_dispatcher_span_and_tagged_model_calls(client, fake: FakeOpenAI):
    """``stream_mode="events"`` (LangChain's callback events): what a tracer sees."""
    fake.script("maker", [maker_reply(SORT_CODE, VALIDATION_QS)])
    fake.script("user", [user_reply(HELD_OUT["input"])])
    thread = client.threads.create()["thread_id"]
    events: list[dict[str, Any]] = []
    for part in client.runs.stream(
        thread,
        "latm",
        input={
            "task": HELD_OUT["input"],
            "examples": DEMOS_AND_VALIDATION,
            "task_type": "word_sorting",
        },
        stream_mode="events",
    ):
        assert part.event != "error", part.data
        if part.event == "events":
            events.append(part.data)
    starts = [e for e in events if e["event"] == "on_chain_start"]
    dispatchers = [e for e in starts if e["name"] == "dispatcher"]
    assert len(dispatchers) == 1, [e["name"] for e in starts]
    assert dispatchers[0]["metadata"]["latm_node"] == "dispatcher"
    assert "latm" in dispatchers[0]["tags"]
    models = [e for e in events if e["event"] == "on_chat_model_start"]
    roles = sorted(e["metadata"]["latm_role"] for e in models)
    assert roles == ["maker", "user"]
    for event in models:
        meta = event["metadata"]
        assert meta["latm_task_type"] == "word_sorting"
        assert f"latm:{meta['latm_role']}" in event["tags"]
    [use_call] = [e for e in models if e["metadata"]["latm_role"] == "user"]
    assert use_call["metadata"]["latm_cache_hit"] is False
    assert use_call["metadata"]["latm_tool_version"] == 1


def test_a_chat_agents_graph_calls_latm_on_the_server_through_remote_graph(
    langgraph_server: ServerProcess, fake: FakeOpenAI
):
    """A parent graph with ``MessagesState`` adds the served graph as a node (``RemoteGraph``)."""
    from langchain_core.messages import AIMessage, HumanMessage
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.pregel.remote import RemoteGraph

    _, key = langgraph_server.new_tenant()
    client = get_sync_client(url=langgraph_server.url, api_key=key, timeout=120)
    fake.script("maker", [maker_reply(SORT_CODE, VALIDATION_QS)])
    made = client.runs.wait(
        None, "latm", input={"examples": DEMOS_AND_VALIDATION, "task_type": "word_sorting"}
    )
    assert isinstance(made, dict) and made["error"] is None, made

    asked = EXAMPLES[40]
    fake.script("user", [user_reply(asked["input"])])
    parent = StateGraph(MessagesState)
    parent.add_node("latm", RemoteGraph("latm", url=langgraph_server.url, api_key=key))
    parent.add_edge(START, "latm")
    parent.add_edge("latm", END)
    out = parent.compile().invoke({"messages": [HumanMessage(asked["input"])]})
    human, answer = out["messages"]
    assert isinstance(human, HumanMessage) and human.content == asked["input"]
    assert isinstance(answer, AIMessage) and answer.content == asked["target"]
