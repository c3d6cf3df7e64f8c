"""Token usage is counted when a caller streams against an OpenAI-compatible server.

The scripted server (:mod:`.fake_openai`) behaves like OpenAI, vLLM and llama.cpp:
a streamed completion carries usage only when the request asks for it
(``stream_options: {"include_usage": true}``), which langchain-openai does not
do by default for a custom base URL.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from langgraph.store.memory import InMemoryStore

from latm.graph.builder import build_graph
from latm.graph.context import PAPER, Context
from latm.llm import build_model

from ..unit.scripted import SORT_CODE, bbh, maker_reply, user_reply
from .fake_openai import FakeOpenAI

pytestmark = pytest.mark.integration

EXAMPLES = bbh("word_sorting")
QUESTION = EXAMPLES[20]


def context(fake: FakeOpenAI) -> Context:
    return Context(
        maker_base_url=fake.base_url("maker"),
        user_base_url=fake.base_url("user"),
        maker_model="scripted-maker",
        user_model="scripted-user",
        max_retries=0,
        exec_timeout_s=5.0,
        **PAPER,
    )


def test_the_server_streams_usage_only_when_asked(fake: FakeOpenAI) -> None:
    """The control: without the fix's request option, a stream reports no usage."""
    fake.script("user", ["hello", "hello"])
    plain = ChatOpenAI(model="m", base_url=fake.base_url("user"), api_key="k", max_retries=0)  # type: ignore[arg-type]
    chunks = list(plain.stream([HumanMessage("hi")]))
    assert all(not c.usage_metadata for c in chunks)
    assert "stream_options" not in fake.requests("user")[0]

    model = build_model(context(fake), "user")
    total = None
    for chunk in model.stream([HumanMessage("hi")]):
        total = chunk if total is None else total + chunk
    assert total is not None and total.usage_metadata is not None
    assert total.usage_metadata["total_tokens"] == 120
    assert fake.requests("user")[1]["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("mode", ["messages", "values"])
def test_a_streamed_run_counts_every_models_tokens(fake: FakeOpenAI, mode: str) -> None:
    validation = [e["input"] for e in EXAMPLES[3:6]]
    fake.script("maker", [maker_reply(SORT_CODE, validation)])
    fake.script("user", [user_reply(QUESTION["input"])])
    graph = build_graph(store=InMemoryStore())
    inputs: dict[str, Any] = {
        "task": QUESTION["input"],
        "examples": EXAMPLES[:6],
        "task_type": "word_sorting",
    }
    final: dict[str, Any] = {}
    streamed_tokens = 0
    for kind, chunk in graph.stream(inputs, context=context(fake), stream_mode=[mode, "values"]):
        if kind == "values":
            final = chunk
        elif kind == "messages":
            streamed_tokens += 1
    assert final.get("error") is None, final.get("error")
    assert final["answer"] == QUESTION["target"]
    assert final["usage"]["maker"]["total_tokens"] == 120
    assert final["usage"]["user"]["total_tokens"] == 120
    if mode == "messages":  # the models really streamed, and still counted
        assert streamed_tokens > 0
        assert all(r.get("stream") for r in fake.requests("maker") + fake.requests("user"))
