"""LATM on ``langgraph dev``, driven by the ``langgraph_sdk`` client over HTTP.

The server loads the repository's ``langgraph.json``; its models are the
scripted OpenAI-compatible server of ``fake_openai``; generated code runs in
LATM's sandbox inside the server process. Each test is its own tenant (an API
key of the server's ``LATM_API_KEYS``), so its own repository namespace, as
tools persist in the server's store.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient

from latm.graph.state import OutputState

from ..unit.scripted import SORT_CODE, bbh, maker_reply, user_reply
from .conftest import ServerProcess
from .fake_openai import FakeOpenAI

pytestmark = pytest.mark.integration

EXAMPLES = bbh("word_sorting")
DEMOS_AND_VALIDATION = EXAMPLES[:6]
VALIDATION_QS = [e["input"] for e in EXAMPLES[3:6]]
HELD_OUT = EXAMPLES[20]
OUTPUT_KEYS = set(OutputState.__annotations__)


@pytest.fixture
def tenant(langgraph_server: ServerProcess) -> tuple[str, str]:
    return langgraph_server.new_tenant()


@pytest.fixture
def client(langgraph_server: ServerProcess, tenant: tuple[str, str]) -> SyncLangGraphClient:
    return get_sync_client(url=langgraph_server.url, api_key=tenant[1], timeout=120)


@pytest.fixture
def namespace(tenant: tuple[str, str]) -> str:
    """The tenant's namespace: its name (from its API key, never from the request)."""
    return tenant[0]


def make_tool(client: SyncLangGraphClient, fake: FakeOpenAI, namespace: str) -> dict[str, Any]:
    fake.script("maker", [maker_reply(SORT_CODE, VALIDATION_QS)])
    thread = client.threads.create()
    out = client.runs.wait(
        thread["thread_id"],
        "latm",
        input={"examples": DEMOS_AND_VALIDATION, "task_type": "word_sorting"},
    )
    assert isinstance(out, dict) and out["error"] is None, out
    return out


def test_the_server_serves_the_graph_studio_draws(client):
    assistants = client.assistants.search(graph_id="latm")
    assert len(assistants) == 1
    drawn = client.assistants.get_graph(assistants[0]["assistant_id"])
    nodes = {n["id"] for n in drawn["nodes"]}
    assert nodes == {
        "__start__",
        "dispatcher",
        "propose",
        "verify",
        "review",
        "wrap",
        "use",
        "__end__",
    }
    edges = {(e["source"], e["target"]) for e in drawn["edges"]}
    assert {("verify", "wrap"), ("verify", "propose"), ("wrap", "use")} <= edges
    assert {("verify", "review"), ("review", "wrap")} <= edges
    labels = {(e["source"], e["target"]): e.get("data") for e in drawn["edges"]}
    assert labels[("dispatcher", "use")] == "hit" and labels[("review", "wrap")] == "approved"


def test_a_run_streams_progress_events_and_leaves_its_state_on_the_thread(client, fake, namespace):
    fake.script("maker", [maker_reply(SORT_CODE, VALIDATION_QS)])
    fake.script("user", [user_reply(HELD_OUT["input"])])
    thread = client.threads.create()
    custom: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for part in client.runs.stream(
        thread["thread_id"],
        "latm",
        input={
            "task": HELD_OUT["input"],
            "examples": DEMOS_AND_VALIDATION,
            "task_type": "word_sorting",
        },
        stream_mode=["custom", "updates"],
    ):
        if part.event == "custom":
            custom.append(part.data)
        elif part.event == "updates":
            updates.append(part.data)
        assert part.event != "error", part.data

    kinds = [(e["node"], e["event"]) for e in custom]
    assert kinds == [
        ("dispatcher", "miss"),
        ("propose", "start"),
        ("propose", "proposed"),
        ("verify", "case"),
        ("verify", "case"),
        ("verify", "case"),
        ("verify", "candidate"),
        ("verify", "evidence"),
        ("verify", "done"),
        ("wrap", "stored"),
        ("use", "call"),
        ("use", "answer"),
    ]
    cases = [e for e in custom if e["event"] == "case"]
    assert all(c["passed"] and c["attempt"] == 1 for c in cases)
    assert [c["expected"] for c in cases] == [e["target"] for e in EXAMPLES[3:6]]
    assert custom[-1]["answer"] == HELD_OUT["target"]
    # Updates name the nodes in order and carry only the output schema's keys.
    assert [next(iter(u)) for u in updates] == ["dispatcher", "propose", "verify", "wrap", "use"]
    for update in updates:
        for values in update.values():
            assert values and set(values) <= OUTPUT_KEYS, update  # no node shows up as null
            assert "__overwrite__" not in json.dumps(values)

    state = client.threads.get_state(thread["thread_id"])
    assert state["next"] == [] and state["interrupts"] == []
    values = state["values"]
    assert values["answer"] == HELD_OUT["target"] and values["error"] is None
    assert values["tool"] == {"name": "sort_words", "task_type": "word_sorting", "version": 1}
    assert values["usage"]["maker"]["calls"] == 1 and values["usage"]["user"]["calls"] == 1
    making = values["making"]
    assert len(making["best"]["report"]) == 3 and making["attempts"] == 1
    # The models were reached over HTTP, with the settings of the server's environment.
    (maker_request,) = fake.requests("maker")
    assert maker_request["model"] == "scripted-maker"
    assert EXAMPLES[0]["target"] in str(maker_request["messages"])
    assert fake.left("maker") == 0 and fake.left("user") == 0


def test_a_cached_tool_answers_through_runs_wait_without_the_maker(client, fake, namespace):
    make_tool(client, fake, namespace)
    question = EXAMPLES[30]
    fake.script("user", [user_reply(question["input"])])
    thread = client.threads.create()

    out = client.runs.wait(
        thread["thread_id"],
        "latm",
        input={"task": question["input"], "task_type": "word_sorting"},
    )

    assert out["cache_hit"] is True and out["error"] is None
    assert out["answer"] == question["target"]
    assert set(out) == OUTPUT_KEYS
    assert len(fake.requests("maker")) == 1  # only the one that made the tool
    assert "maker" not in out["usage"]


def test_the_server_store_is_the_repository_with_a_semantic_index(client, fake, namespace):
    make_tool(client, fake, namespace)

    found = client.store.search_items(
        ("latm", namespace, "tools"), query="put these words in alphabetical order"
    )
    (item,) = found["items"]
    assert item["key"] == "word_sorting" and item["value"]["version"] == 1
    assert item["score"] is not None and item["score"] > 0  # ranked by the index

    # Without a task type, the embedding dispatcher routes with no model call ...
    question = EXAMPLES[40]
    before = len(fake.requests("user"))
    fake.script("user", [user_reply(question["input"])])
    out = client.runs.wait(None, "latm", input={"task": question["input"]})
    assert out["cache_hit"] is True and out["answer"] == question["target"]
    assert out["routing"]["by"] == "embedding" and out["routing"]["asked_model"] is False
    assert len(fake.requests("user")) == before + 1  # the use node's call only
    # ... and the LLM-confirmed one searches the index and lets the user model confirm.
    fake.script("user", ['{"tool": "word_sorting"}', user_reply(question["input"])])
    out = client.runs.wait(
        None,
        "latm",
        input={"task": question["input"]},
        context={"dispatch": "llm"},
    )
    assert out["cache_hit"] is True and out["answer"] == question["target"]
    confirm = fake.requests("user")[before + 1]
    assert "word_sorting" in str(confirm["messages"])
    assert confirm["response_format"]["type"] == "json_schema"


def test_a_bad_request_ends_with_a_readable_error_in_the_output(client, fake, namespace):
    out = client.runs.wait(None, "latm", input={"task": "x", "make": True})
    assert out["error"] == "invalid request: 'make' needs 'examples' to make a tool from"
    assert out["answer"] is None
    assert fake.requests("maker") == [] and fake.requests("user") == []


def approval_run(
    client: SyncLangGraphClient, fake: FakeOpenAI, namespace: str
) -> tuple[str, dict[str, Any]]:
    fake.script("maker", [maker_reply(SORT_CODE, VALIDATION_QS)])
    thread = client.threads.create()
    out = client.runs.wait(
        thread["thread_id"],
        "latm",
        input={
            "task": HELD_OUT["input"],
            "examples": DEMOS_AND_VALIDATION,
            "task_type": "word_sorting",
        },
        context={"require_approval": True},
    )
    return thread["thread_id"], out


def stored_tools(client: SyncLangGraphClient, namespace: str) -> list[dict[str, Any]]:
    return list(client.store.search_items(("latm", namespace, "tools"))["items"])


def test_human_approval_pauses_the_run_and_approve_resumes_it(client, fake, namespace):
    thread_id, out = approval_run(client, fake, namespace)

    (pending,) = out["__interrupt__"]
    ask = pending["value"]
    assert ask["type"] == "latm.approve_tool" and ask["task_type"] == "word_sorting"
    assert ask["code"].strip() == SORT_CODE.strip() and ask["passed"] == ask["cases"] == 3
    state = client.threads.get_state(thread_id)
    assert state["next"] == ["review"] and state["interrupts"][0]["value"] == ask
    assert stored_tools(client, namespace) == []
    assert fake.requests("user") == []

    fake.script("user", [user_reply(HELD_OUT["input"])])
    out = client.runs.wait(
        thread_id,
        "latm",
        command={"resume": {"action": "approve"}},
        context={"require_approval": True},
    )

    assert out["error"] is None and out["answer"] == HELD_OUT["target"]
    (tool,) = stored_tools(client, namespace)
    assert tool["value"]["code"].strip() == SORT_CODE.strip()
    assert client.threads.get_state(thread_id)["next"] == []


def test_human_approval_edit_is_reverified_and_reject_stores_nothing(
    client, fake, namespace, langgraph_server
):
    edited = SORT_CODE.replace("sorted(words)", "sorted(words, key=str.lower)")
    thread_id, _ = approval_run(client, fake, namespace)
    custom = []
    for part in client.runs.stream(
        thread_id,
        "latm",
        command={"resume": {"action": "edit", "code": edited}},
        context={"require_approval": True},
        stream_mode=["custom"],
    ):
        if part.event == "custom":
            custom.append(part.data)
    # The user model has no scripted reply: the edit is stored, then `use` fails clearly.
    assert [e["passed"] for e in custom if e["event"] == "recheck"] == [True, True, True]
    (tool,) = stored_tools(client, namespace)
    assert tool["value"]["code"] == edited
    assert tool["value"]["maker_model"] == "scripted-maker, edited by a reviewer"

    other, key = langgraph_server.new_tenant()
    client = get_sync_client(url=langgraph_server.url, api_key=key, timeout=120)
    thread_id, _ = approval_run(client, fake, other)
    out = client.runs.wait(
        thread_id,
        "latm",
        command={"resume": {"action": "reject", "reason": "not needed"}},
        context={"require_approval": True},
    )
    assert out["error"] == (
        "the reviewer rejected tool 'word_sorting': not needed. Nothing was stored."
    )
    assert stored_tools(client, other) == []
