"""``latm serve`` and the LangServe app factory, in process (no sockets)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from latm.cli import main
from latm.graph import Context
from latm.graph.context import paper_context
from latm.graph.state import OutputState
from latm.server import create_app, describe_errors

from .scripted import SORT_CODE, bbh, maker_reply, scripted

EXAMPLES = bbh("word_sorting")


@pytest.fixture
def endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    """Model endpoints configured, so the CLI does not start the local model server."""
    monkeypatch.setenv("LATM_MAKER_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("LATM_USER_BASE_URL", "http://127.0.0.1:9/v1")


def test_serve_needs_the_langserve_flag(capsys):
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "latm serve --langserve" in err and "langgraph dev" in err


def test_serve_runs_uvicorn_on_loopback_with_the_app(monkeypatch, endpoints, tmp_path):
    import uvicorn

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    store = tmp_path / "served.sqlite"

    assert main(["--store", str(store), "--namespace", "team", "serve", "--langserve"]) == 0

    assert seen["host"] == "127.0.0.1" and seen["port"] == 8000
    health = TestClient(seen["app"]).get("/healthz")
    assert health.json() == {"ok": True, "graph": "LATM", "namespace": "team"}
    assert store.exists()  # the graph is compiled with this SQLite repository


def test_serve_names_the_tenants_when_api_keys_decide_the_namespace(
    monkeypatch, endpoints, tmp_path, capsys
):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    store = str(tmp_path / "served.sqlite")
    assert main(["--store", store, "serve", "--langserve"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "namespace 'default' (no LATM_API_KEYS: every caller shares it)" in err

    monkeypatch.setenv("LATM_API_KEYS", f"alice:{'a' * 32},bob:{'b' * 32}")
    assert main(["--store", store, "serve", "--langserve"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "one namespace per API key's tenant ('alice', 'bob')" in err
    assert "'default'" not in err


def test_serve_refuses_human_approval(monkeypatch, endpoints, capsys):
    monkeypatch.setenv("LATM_REQUIRE_APPROVAL", "1")
    assert main(["serve", "--langserve"]) == 2
    assert "LangServe is stateless" in capsys.readouterr().err
    with pytest.raises(ValueError, match="human approval"):
        create_app(Context(require_approval=True))


@pytest.mark.parametrize("port", ["0", "70000"])
def test_serve_rejects_a_bad_port(port, capsys):
    assert main(["serve", "--langserve", "--port", port]) == 2
    assert "--port must be between 1 and 65535" in capsys.readouterr().err


def test_app_runs_the_graph_with_its_context_and_answers_422_for_bad_input(tmp_path):
    maker = scripted([maker_reply(SORT_CODE, [e["input"] for e in EXAMPLES[3:6]])])
    ctx = paper_context(
        maker_llm=maker, user_llm=scripted([]), store_path=str(tmp_path / "t.sqlite")
    )
    client = TestClient(create_app(ctx))

    made = client.post(
        "/latm/invoke", json={"input": {"examples": EXAMPLES[:6], "task_type": "word_sorting"}}
    )
    assert made.status_code == 200
    assert made.json()["output"]["tool"]["version"] == 1 and len(maker.received) == 1

    bad = client.post("/latm/invoke", json={"input": {"task": ["not", "text"]}})
    assert bad.status_code == 422
    assert bad.json()["message"] == "invalid input: task: Input should be a valid string"
    assert bad.json()["detail"][0]["loc"] == ["task"]


def test_describe_errors_reads_like_a_sentence():
    errors = [
        {"loc": ["examples", 0, "target"], "msg": "Field required"},
        {"loc": [], "msg": "Input should be a valid dictionary"},
        "Invalid JSON body",
    ]
    assert describe_errors(errors) == (
        "invalid input: examples[0].target: Field required; "
        "Input should be a valid dictionary; Invalid JSON body"
    )
    assert describe_errors([]) == "invalid input: the request does not fit the input schema"


KEY_A, KEY_B = "alice-key-0123456789", "bob-key-0123456789ab"


def served(tmp_path: Any, maker: Any, user: Any = None, **keys: str) -> TestClient:
    ctx = paper_context(
        maker_llm=maker, user_llm=user or scripted([]), store_path=str(tmp_path / "t.sqlite")
    )
    return TestClient(create_app(ctx, api_keys={v: k for k, v in keys.items()}))


def make_request(**configurable: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"input": {"examples": EXAMPLES[:6], "task_type": "word_sorting"}}
    if configurable:
        body["config"] = {"configurable": configurable}
    return body


def test_langserve_tenants_come_from_api_keys_and_see_only_their_tools(tmp_path):
    qs = [e["input"] for e in EXAMPLES[3:6]]
    maker = scripted([maker_reply(SORT_CODE, qs)])
    client = served(tmp_path, maker, alice=KEY_A, bob=KEY_B)

    assert client.get("/healthz").json() == {"ok": True, "graph": "LATM", "namespace": None}
    anonymous = client.post("/latm/invoke", json=make_request())
    assert anonymous.status_code == 401 and "API key" in anonymous.json()["message"]

    made = client.post("/latm/invoke", json=make_request(), headers={"x-api-key": KEY_A})
    assert made.status_code == 200 and made.json()["output"]["error"] is None
    ask = {"input": {"task": EXAMPLES[20]["input"], "task_type": "word_sorting"}}
    bob = client.post("/latm/invoke", json=ask, headers={"Authorization": f"Bearer {KEY_B}"})
    assert "no tool for task type 'word_sorting'" in bob.json()["output"]["error"]
    from latm.backends import open_local_store
    from latm.repository import ToolRepository

    store = open_local_store(str(tmp_path / "t.sqlite"))
    assert ToolRepository(store, "alice").get("word_sorting") is not None
    assert ToolRepository(store, "bob").get("word_sorting") is None
    assert ToolRepository(store, "default").get("word_sorting") is None


@pytest.mark.parametrize(
    ("configurable", "status", "message"),
    [
        ({"executor": "subprocess", "allow_unsandboxed": True}, 403, "deployment setting"),
        ({"maker_base_url": "http://x/v1", "maker_api_key_env": "HOME"}, 403, "deployment"),
        ({"namespace": "other-team"}, 403, "caller's identity"),
        ({"max_attempts": 1000}, 422, "above this deployment's bound"),
        ({"latm_tenant": "bob"}, 422, "unknown setting 'latm_tenant'"),
    ],
)
def test_langserve_refuses_settings_a_run_may_not_choose(tmp_path, configurable, status, message):
    maker = scripted([])
    client = served(tmp_path, maker, alice=KEY_A)
    for endpoint, body in [
        ("/latm/invoke", make_request(**configurable)),
        ("/latm/stream", make_request(**configurable)),
        (
            "/latm/batch",
            {"inputs": [make_request()["input"]], "config": [{"configurable": configurable}]},
        ),
    ]:
        reply = client.post(endpoint, json=body, headers={"x-api-key": KEY_A})
        assert reply.status_code == status, (endpoint, reply.text)
        assert message in reply.json()["message"]
    assert maker.received == []


def test_langserve_applies_run_settings_within_bounds(tmp_path):
    from .scripted import BUGGY_SORT_CODE

    qs = [e["input"] for e in EXAMPLES[3:6]]
    maker = scripted([maker_reply(BUGGY_SORT_CODE, qs)] * 3)
    client = served(tmp_path, maker)
    out = client.post("/latm/invoke", json=make_request(max_attempts=1)).json()["output"]
    assert out["error"].startswith("could not make a verified tool in 1 attempt(s)")
    assert len(maker.received) == 1  # the deployment default (3) would have asked three times


# --- the playground's schemas, the stream's schema, configurable keys, the backend ------


def schema_types(node: Any) -> list[Any]:
    """Every ``type`` in a JSON schema, nested ones included."""
    if isinstance(node, dict):
        return [node.get("type"), *(t for v in node.values() for t in schema_types(v))]
    if isinstance(node, list):
        return [t for v in node for t in schema_types(v)]
    return []


def test_input_schema_has_no_nullable_field_and_reads_null_as_empty():
    from latm.server.schema import ServedInput, graph_input

    assert "null" not in schema_types(ServedInput.model_json_schema())
    assert graph_input({"task": "sort: b a", "task_type": None}) == {
        "task": "sort: b a",
        "make": False,
    }
    examples = [{"input": "q", "target": "a"}, {"input": "r", "target": "b", "rationale": "why"}]
    assert graph_input({"examples": examples, "task_type": "t", "make": True}) == {
        "task": "",
        "make": True,
        "examples": examples,
        "task_type": "t",
    }


def test_every_stream_chunk_fits_the_output_schema_the_output_last(tmp_path):
    qs = [e["input"] for e in EXAMPLES[3:6]]
    ctx = paper_context(
        maker_llm=scripted([maker_reply(SORT_CODE, qs)]),
        user_llm=scripted([]),
        store_path=str(tmp_path / "t.sqlite"),
    )
    from latm.server import ServedGraph, compile_for_langserve

    served = ServedGraph(compile_for_langserve(ctx), ctx)
    model = served.get_output_schema()
    request = {"examples": EXAMPLES[:6], "task_type": "word_sorting"}
    chunks = list(served.stream(request))

    assert len(chunks) > 3 and all(set(c) == {"event"} for c in chunks[:-1])
    for chunk in chunks:
        model.model_validate(chunk, strict=False)
        assert set(chunk) <= set(model.model_fields)
    assert set(chunks[-1]) == set(OutputState.__annotations__)
    with pytest.raises(ValidationError):  # the check can fail
        model.model_validate({"event": {"node": "use"}})
    assert chunks[-1]["tool"]["version"] == 1 and chunks[-1]["error"] is None


@pytest.mark.parametrize("key", ["thread_id", "checkpoint_ns", "require_approval"])
def test_thread_and_approval_keys_are_refused_on_every_route(tmp_path, key):
    from langserve.lzstring import LZString

    maker = scripted([])
    client = served(tmp_path, maker)
    config = {"configurable": {key: True if key == "require_approval" else "t1"}}
    hashed = LZString.compressToEncodedURIComponent(json.dumps(config))
    ask = {"task": "sort: b a"}
    for endpoint, body in [
        ("/latm/invoke", {"input": ask, "config": config}),
        ("/latm/stream", {"input": ask, "config": config}),
        ("/latm/stream_log", {"input": ask, "config": config}),
        ("/latm/batch", {"inputs": [ask], "config": [config]}),
        (f"/latm/c/{hashed}/invoke", {"input": ask}),
        (f"/latm/c/{hashed}/stream_log", {"input": ask}),
    ]:
        reply = client.post(endpoint, json=body)
        assert reply.status_code == 422, (endpoint, reply.text)
        assert f"configurable: {key!r} is not honoured" in reply.json()["message"], endpoint
    assert maker.received == []


def test_config_schema_lists_exactly_the_settings_a_run_may_send(tmp_path):
    from latm.server import RUN_FIELDS

    schema = served(tmp_path, scripted([])).get("/latm/config_schema").json()
    fields = schema["$defs"]["Configurable"]["properties"]
    assert set(fields) == {f.name for f in RUN_FIELDS} and "max_attempts" in fields
    assert "require_approval" not in fields and "thread_id" not in fields
    assert "null" not in schema_types(schema)
    # types, choices and ranges as the deployment has them (paper_context: the defaults)
    assert fields["max_attempts"] | {"description": ""} == {
        "default": 3,
        "description": "",
        "minimum": 1,
        "maximum": 10,
        "title": "max_attempts",
        "type": "integer",
    }
    assert fields["dispatch"]["enum"] == ["embedding", "llm"]
    assert fields["direct_entry"]["type"] == "boolean" and "maximum" not in fields["direct_entry"]


def test_an_unreadable_config_in_the_url_is_a_client_error(tmp_path):
    reply = served(tmp_path, scripted([])).post(
        "/latm/c/%E2%98%83not-lz/invoke", json={"input": {"task": "x"}}
    )
    assert 400 <= reply.status_code < 500, reply.text


def test_the_app_stores_tools_where_the_database_url_says(tmp_path):
    qs = [e["input"] for e in EXAMPLES[3:6]]
    url_file = tmp_path / "from-url.sqlite"
    ctx = paper_context(
        maker_llm=scripted([maker_reply(SORT_CODE, qs)]),
        user_llm=scripted([]),
        store_path=str(tmp_path / "store-path.sqlite"),
        database_url=f"sqlite:///{url_file}",
    )
    reply = TestClient(create_app(ctx)).post("/latm/invoke", json=make_request())
    assert reply.json()["output"]["error"] is None, reply.text

    from latm.backends import open_local_store
    from latm.repository import ToolRepository

    assert ToolRepository(open_local_store(str(url_file))).get("word_sorting") is not None
    assert not (tmp_path / "store-path.sqlite").exists()


def test_serve_says_why_when_the_database_cannot_be_used(monkeypatch, endpoints, capsys):
    monkeypatch.setenv("LATM_DATABASE_URL", "mysql://db.invalid/tools")
    assert main(["serve", "--langserve"]) == 2
    err = capsys.readouterr().err
    assert "cannot open the tool repository" in err and "unsupported database URL" in err
