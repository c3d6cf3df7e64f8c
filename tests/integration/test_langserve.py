"""``latm serve --langserve`` driven by LangServe's ``RemoteRunnable`` over HTTP.

The server is the real command (uvicorn on a free loopback port) with its own
SQLite repository; its models are the scripted server of ``fake_openai``.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from langserve import RemoteRunnable

import latm.graph  # noqa: F401  (first: importing latm.repository alone is circular)
from latm.backends import open_local_store
from latm.graph.state import OutputState
from latm.repository import ToolRepository

from ..unit.scripted import SORT_CODE, bbh, maker_reply, user_reply
from .conftest import ServerProcess
from .fake_openai import FakeOpenAI

pytestmark = pytest.mark.integration

EXAMPLES = bbh("word_sorting")
DEMOS_AND_VALIDATION = EXAMPLES[:6]
VALIDATION_QS = [e["input"] for e in EXAMPLES[3:6]]
OUTPUT_KEYS = set(OutputState.__annotations__)


@pytest.fixture
def remote(langserve_server: ServerProcess) -> RemoteRunnable:
    return RemoteRunnable(f"{langserve_server.url}/latm", timeout=120)


@pytest.fixture
def word_sorting(remote: RemoteRunnable, fake: FakeOpenAI) -> dict[str, Any]:
    """A word_sorting tool (re)made through the server, as version n."""
    fake.script("maker", [maker_reply(SORT_CODE, VALIDATION_QS)])
    out = remote.invoke(
        {"examples": DEMOS_AND_VALIDATION, "task_type": "word_sorting", "make": True}
    )
    assert out["error"] is None, out
    fake.reset()
    return dict(out["tool"])


def answering(*questions: str) -> Any:
    """A user-model reply for whichever of ``questions`` the request is about."""

    def reply(body: dict[str, Any]) -> str:
        prompt = str(body["messages"][-1]["content"])
        (question,) = [q for q in questions if q in prompt]
        return user_reply(question)

    return reply


def test_health(langserve_server):
    reply = httpx.get(f"{langserve_server.url}/healthz", timeout=10)
    assert reply.status_code == 200
    assert reply.json() == {"ok": True, "graph": "LATM", "namespace": "default"}


def test_invoke_makes_a_tool_into_the_local_repository_and_answers_with_it(
    remote, fake, langserve_server, word_sorting
):
    record = ToolRepository(open_local_store(langserve_server.store_path)).get("word_sorting")
    assert record is not None and record.version == word_sorting["version"]
    assert record.maker_model == "scripted-maker"

    question = EXAMPLES[30]
    fake.script("user", [user_reply(question["input"])])
    out = remote.invoke({"task": question["input"], "task_type": "word_sorting"})

    assert set(out) == OUTPUT_KEYS
    assert out["cache_hit"] is True and out["error"] is None
    assert out["answer"] == question["target"]
    assert out["usage"] == {
        "user": {"input_tokens": 100, "output_tokens": 20, "total_tokens": 120, "calls": 1}
    }
    assert fake.requests("maker") == []


def test_batch_answers_each_input_and_reports_errors_per_input(remote, fake, word_sorting):
    first, second = EXAMPLES[31], EXAMPLES[32]
    fake.script("user", [answering(first["input"], second["input"])] * 2)

    outs = remote.batch(
        [
            {"task": first["input"], "task_type": "word_sorting"},
            {"task": second["input"], "task_type": "word_sorting"},
            {"task": "What is 2 + 2?", "task_type": "arithmetic"},
        ]
    )

    assert [o["answer"] for o in outs] == [first["target"], second["target"], None]
    assert outs[2]["error"] == "no tool for task type 'arithmetic' and no examples to make one"
    assert len(fake.requests("user")) == 2


def test_stream_sends_progress_events_then_the_output(remote, fake, word_sorting):
    fake.script("maker", [maker_reply(SORT_CODE, VALIDATION_QS)])
    question = EXAMPLES[33]
    fake.script("user", [user_reply(question["input"])])

    chunks = list(
        remote.stream(
            {
                "task": question["input"],
                "examples": DEMOS_AND_VALIDATION,
                "task_type": "word_sorting",
                "make": True,
            }
        )
    )

    *events, last = chunks
    assert all(set(c) == {"event"} for c in events)
    kinds = [(c["event"]["node"], c["event"]["event"]) for c in events]
    assert kinds[0] == ("dispatcher", "miss") and kinds[-1] == ("use", "answer")
    assert kinds.count(("verify", "case")) == 3 and ("wrap", "stored") in kinds
    output = last["output"]
    assert set(output) == OUTPUT_KEYS
    assert output["answer"] == question["target"] and output["error"] is None
    assert output["tool"]["version"] == word_sorting["version"] + 1


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"task": 42}, "invalid input: task: Input should be a valid string"),
        ({"task": "x", "make": "maybe"}, "invalid input: make: Input should be a valid boolean"),
        ({"task": "x", "examples": [{"input": "q"}]}, "examples[0].target: Field required"),
        ("sort these words", "invalid input: Input should be a valid dictionary"),
    ],
)
def test_bad_input_is_http_422_with_a_readable_message(
    remote, langserve_server, fake, bad, message
):
    for endpoint, body in (
        ("invoke", {"input": bad}),
        ("stream", {"input": bad}),
        ("batch", {"inputs": [{"task": "fine"}, bad]}),
    ):
        reply = httpx.post(f"{langserve_server.url}/latm/{endpoint}", json=body, timeout=30)
        assert reply.status_code == 422, (endpoint, reply.text)
        assert message in reply.json()["message"], endpoint

    with pytest.raises(httpx.HTTPStatusError) as raised:
        remote.invoke(bad)
    assert raised.value.response.status_code == 422 and message in str(raised.value)
    assert fake.requests("maker") == [] and fake.requests("user") == []


def test_a_well_formed_request_latm_cannot_serve_is_http_200_with_an_error(langserve_server):
    reply = httpx.post(
        f"{langserve_server.url}/latm/invoke", json={"input": {"tasks": "typo"}}, timeout=30
    )
    assert reply.status_code == 200
    assert reply.json()["output"]["error"] == (
        "invalid request: the request has no 'task' (and no 'examples' to make a tool from)"
    )
