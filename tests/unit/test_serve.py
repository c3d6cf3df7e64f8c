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
