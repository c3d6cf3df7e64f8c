"""What Studio reads from ``langgraph dev``: described schemas, and usage in streamed runs."""

from __future__ import annotations

import uuid
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
    return get_sync_client(url=langgraph_server.url, timeout=120)


def test_the_server_serves_described_input_and_output_schemas(client):
    assistant = client.assistants.search(graph_id="latm")[0]
    schemas = client.assistants.get_schemas(assistant["assistant_id"])
    for side in ("input_schema", "output_schema"):
        assert schemas[side]["properties"], side
        assert undescribed(schemas[side]) == [], side


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
        context={"namespace": f"test-{uuid.uuid4().hex[:12]}"},
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
