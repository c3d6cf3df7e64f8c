"""``latm serve --langserve`` driven by LangServe's ``RemoteRunnable`` over HTTP.

The server is the real command (uvicorn on a free loopback port) with its own
SQLite repository; its models are the scripted server of ``fake_openai``.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import pytest
from langserve import RemoteRunnable
from langserve.lzstring import LZString

import latm.graph  # noqa: F401  (first: importing latm.repository alone is circular)
from latm.backends import open_local_store
from latm.graph.state import OutputState
from latm.repository import ToolRepository
from latm.server import RUN_FIELDS

from ..unit.scripted import SORT_CODE, bbh, maker_reply, user_reply
from .conftest import ServerProcess
from .fake_openai import FakeOpenAI

pytestmark = pytest.mark.integration

EXAMPLES = bbh("word_sorting")
DEMOS_AND_VALIDATION = EXAMPLES[:6]
VALIDATION_QS = [e["input"] for e in EXAMPLES[3:6]]
OUTPUT_KEYS = set(OutputState.__annotations__)
SERVED_KEYS = OUTPUT_KEYS | {"event"}  # the app's output schema: `event` is set on progress chunks


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

    assert set(out) == SERVED_KEYS and out["event"] is None
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

    *events, output = chunks
    assert all(set(c) == {"event"} for c in events)
    kinds = [(c["event"]["node"], c["event"]["event"]) for c in events]
    assert kinds[0] == ("dispatcher", "miss") and kinds[-1] == ("use", "answer")
    assert kinds.count(("verify", "case")) == 3 and ("wrap", "stored") in kinds
    assert set(output) == OUTPUT_KEYS
    assert output["answer"] == question["target"] and output["error"] is None
    assert output["tool"]["version"] == word_sorting["version"] + 1


def test_every_stream_chunk_and_the_invoke_output_fit_the_advertised_output_schema(
    remote, fake, langserve_server, word_sorting
):
    schema = httpx.get(f"{langserve_server.url}/latm/output_schema", timeout=10).json()
    validator = jsonschema.Draft202012Validator(schema)
    assert schema["properties"]["event"]  # progress chunks are part of the schema
    question = EXAMPLES[34]
    fake.script("maker", [maker_reply(SORT_CODE, VALIDATION_QS)])
    fake.script("user", [user_reply(question["input"])] * 2)
    request = {
        "task": question["input"],
        "examples": DEMOS_AND_VALIDATION,
        "task_type": "word_sorting",
        "make": True,
    }

    chunks = list(remote.stream(request))
    invoked = remote.invoke({"task": question["input"], "task_type": "word_sorting"})

    assert len(chunks) > 5
    for chunk in [*chunks, invoked]:
        errors = [e.message for e in validator.iter_errors(chunk)]
        assert errors == [], (chunk, errors)
    # a chunk that breaks the schema is caught: the check can fail
    assert list(validator.iter_errors({"event": {"node": 1}}))
    assert list(validator.iter_errors({"cache_hit": "yes"}))
    assert invoked["answer"] == chunks[-1]["answer"] == question["target"]


def test_input_and_config_schemas_have_no_nullable_field_and_list_the_honoured_settings(
    langserve_server,
):
    def types(node: Any) -> list[Any]:
        if isinstance(node, dict):
            return [node.get("type"), *(t for v in node.values() for t in types(v))]
        if isinstance(node, list):
            return [t for v in node for t in types(v)]
        return []

    got = {
        name: httpx.get(f"{langserve_server.url}/latm/{name}", timeout=10).json()
        for name in ("input_schema", "config_schema")
    }
    assert "null" not in types(got["input_schema"])
    assert "null" not in types(got["config_schema"])
    assert set(got["input_schema"]["properties"]) == {"task", "examples", "task_type", "make"}
    honoured = set(got["config_schema"]["$defs"]["Configurable"]["properties"])
    assert honoured == {f.name for f in RUN_FIELDS}
    assert "max_attempts" in honoured
    assert not honoured & {"thread_id", "require_approval", "namespace", "maker_base_url"}


@pytest.mark.parametrize("key", ["thread_id", "checkpoint_id", "require_approval"])
def test_thread_and_approval_keys_are_refused_naming_the_key(remote, langserve_server, fake, key):
    config = {"configurable": {key: "t-1" if key != "require_approval" else True}}
    with pytest.raises(httpx.HTTPStatusError) as raised:
        remote.invoke({"task": "sort: b a"}, config=config)
    assert raised.value.response.status_code == 422
    message = raised.value.response.json()["message"]
    assert f"{key!r} is not honoured" in message and "stateless" in message
    # the playground's routes carry the config in the URL: refused the same way
    hashed = LZString.compressToEncodedURIComponent(json.dumps(config))
    reply = httpx.post(
        f"{langserve_server.url}/latm/c/{hashed}/invoke", json={"input": {"task": "x"}}, timeout=30
    )
    assert reply.status_code == 422 and f"{key!r} is not honoured" in reply.json()["message"]
    assert fake.requests("maker") == [] and fake.requests("user") == []


def test_an_honoured_setting_in_the_url_config_is_applied(langserve_server, fake):
    from ..unit.scripted import BUGGY_SORT_CODE

    fake.script("maker", [maker_reply(BUGGY_SORT_CODE, VALIDATION_QS)] * 3)
    hashed = LZString.compressToEncodedURIComponent(
        json.dumps({"configurable": {"max_attempts": 1}})
    )
    reply = httpx.post(
        f"{langserve_server.url}/latm/c/{hashed}/invoke",
        json={"input": {"examples": DEMOS_AND_VALIDATION, "task_type": "buggy", "make": True}},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["output"]["error"].startswith("could not make a verified tool in 1")
    assert len(fake.requests("maker")) == 1


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


def test_the_server_keeps_its_tools_where_the_database_url_says(
    fake_openai, fake, pg_url, tmp_path
):
    """``LATM_DATABASE_URL`` (PostgreSQL here) is the served repository, not ``--store``."""
    from latm.backends import open_backend

    from .conftest import executable, free_port, server_env

    port = free_port()
    env = server_env(fake_openai, tmp_path)
    env["LATM_DATABASE_URL"] = pg_url
    argv = [executable("latm"), "serve", "--langserve", "--port", str(port)]
    argv += ["--log-level", "warning"]
    server = ServerProcess(argv, env, tmp_path, f"http://127.0.0.1:{port}")
    try:
        server.wait_ready("/healthz")
        fake.script("maker", [maker_reply(SORT_CODE, VALIDATION_QS)])
        out = RemoteRunnable(f"{server.url}/latm", timeout=120).invoke(
            {"examples": DEMOS_AND_VALIDATION, "task_type": "word_sorting"}
        )
    finally:
        server.stop()

    assert out["error"] is None, out
    record = ToolRepository(open_backend(pg_url).store).get("word_sorting")
    assert record is not None and record.version == 1
    assert not (tmp_path / "tools.sqlite").exists()  # LATM_STORE_PATH was not used
