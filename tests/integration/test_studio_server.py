"""What Studio reads from ``langgraph dev``: described schemas, and usage in streamed runs."""

from __future__ import annotations

from typing import Any

import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient

from ..unit.scripted import SORT_CODE, bbh, maker_reply, user_reply
from ..unit.test_studio_schema import undescribed
from .conftest import ServerProcess
from .fake_openai import FakeOpenAI

pytestmark = pytest.mark.integration

EXAMPLES = bbh("word_sorting")


@pytest.fixture
def client(langgraph_server: ServerProcess) -> SyncLangGraphClient:
    """A client of its own tenant (an API key of the server's ``LATM_API_KEYS``)."""
    _, key = langgraph_server.new_tenant()
    return get_sync_client(url=langgraph_server.url, api_key=key, timeout=120)


def test_the_server_serves_described_input_and_output_schemas(client):
    assistant = client.assistants.search(graph_id="latm")[0]
    schemas = client.assistants.get_schemas(assistant["assistant_id"])
    for side in ("input_schema", "output_schema"):
        assert schemas[side]["properties"], side
        assert undescribed(schemas[side]) == [], side


def test_the_context_form_shows_descriptions_and_the_deployments_defaults(client):
    assistant = client.assistants.search(graph_id="latm")[0]
    context = client.assistants.get_schemas(assistant["assistant_id"])["context_schema"]
    assert context["properties"] and undescribed(context) == []
    assert all("default" in prop for prop in context["properties"].values())
    # the server's environment (server_env) sets these: the form shows its values
    assert context["properties"]["n_candidates"]["default"] == 1
    assert context["properties"]["direct_entry"]["default"] is False
    assert context["properties"]["max_attempts"]["default"] == 3


def test_a_run_streaming_messages_counts_tokens(client, fake: FakeOpenAI):
    """Studio streams messages: the models stream, and their usage still counts."""
    validation = [e["input"] for e in EXAMPLES[3:6]]
    question = EXAMPLES[20]
    fake.script("maker", [maker_reply(SORT_CODE, validation)])
    fake.script("user", [user_reply(question["input"])])
    thread = client.threads.create()
    values: dict[str, Any] = {}
    message_events = 0
    for part in client.runs.stream(
        thread["thread_id"],
        "latm",
        input={"task": question["input"], "examples": EXAMPLES[:6], "task_type": "word_sorting"},
        stream_mode=["messages-tuple", "values"],
    ):
        if part.event == "values":
            values = part.data
        elif part.event.startswith("messages"):
            message_events += 1
    assert values.get("error") is None, values
    assert values["answer"] == question["target"]
    assert message_events > 0
    assert all(r.get("stream") for r in fake.requests("maker") + fake.requests("user"))
    assert values["usage"]["maker"]["total_tokens"] == 120
    assert values["usage"]["user"]["total_tokens"] == 120
