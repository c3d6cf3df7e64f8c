"""``latm serve`` and the LangServe app factory, in process (no sockets)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from latm.cli import main
from latm.graph import Context
from latm.graph.context import paper_context
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
