"""Tenancy from identity: API keys, the authorization rules and the namespace a run uses."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langgraph.store.memory import InMemoryStore
from langgraph_sdk import Auth

from latm.auth import (
    AuthConfigError,
    api_key_auth,
    check_run_payload,
    load_api_keys,
    presented_key,
    protect,
    scope_namespace,
    tenant_for,
    tenant_for_key,
    tenant_of_user,
)
from latm.graph import Context
from latm.graph.builder import build_graph

from .scripted import SORT_CODE, bbh, maker_reply, scripted, user_reply

EXAMPLES = bbh("word_sorting")
VALIDATION_QS = [e["input"] for e in EXAMPLES[3:6]]
KEY_A, KEY_B = "a" * 16 + "-alice-key", "b" * 16 + "-bob-key"


class User:
    """A LangGraph user as the server hands it to the graph."""

    def __init__(self, identity: str) -> None:
        self.identity = identity
        self.display_name = identity
        self.is_authenticated = True
        self.permissions: list[str] = []

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


def test_tenant_for_keeps_plain_identities_and_hashes_others():
    assert tenant_for("alice") == "alice" and tenant_for("team_7-x") == "team_7-x"
    hashed = tenant_for("alice@example.com")
    assert (
        hashed.startswith("u-") and "." not in hashed and hashed == tenant_for("alice@example.com")
    )
    assert tenant_for("alice@example.com") != tenant_for("alice@example.org")
    assert tenant_of_user(None) is None
    assert tenant_of_user({"identity": "bob"}) == "bob" and tenant_of_user(User("carol")) == "carol"
    assert tenant_of_user({"identity": ""}) is None


def test_api_keys_come_from_the_environment_and_bad_ones_fail_at_start_up():
    keys = load_api_keys({"LATM_API_KEYS": f"alice:{KEY_A}, bob:{KEY_B}\n"})
    assert keys == {KEY_A: "alice", KEY_B: "bob"}
    assert load_api_keys({}) == {}
    for bad, why in [
        ("alice", "entries are tenant:key"),
        (f"al.ice:{KEY_A}", "must be 1-64 letters"),
        ("alice:short", "shorter than 16"),
        (f"alice:{KEY_A},bob:{KEY_A}", "one key is given to two tenants"),
    ]:
        with pytest.raises(AuthConfigError, match=why):
            load_api_keys({"LATM_API_KEYS": bad})
    assert tenant_for_key(keys, KEY_B) == "bob"
    assert tenant_for_key(keys, KEY_B + "x") is None and tenant_for_key(keys, None) is None
    assert presented_key({b"x-api-key": KEY_A.encode()}) == KEY_A
    assert presented_key({"Authorization": f"Bearer {KEY_B}"}) == KEY_B
    assert presented_key({"authorization": f"Basic {KEY_B}"}) is None


def test_a_tenant_reads_only_its_own_namespaces():
    assert scope_namespace("alice", ("latm", "alice", "tools")) == ("latm", "alice", "tools")
    assert scope_namespace("alice", ()) == ("latm", "alice")
    assert scope_namespace("alice", ("latm",)) == ("latm", "alice")
    assert scope_namespace("alice", None) == ("latm", "alice")
    for other in [("latm", "bob", "tools"), ("latm", "bob"), ("elsewhere",)]:
        with pytest.raises(Auth.exceptions.HTTPException) as err:
            scope_namespace("alice", other)
        assert err.value.status_code == 403 and "not yours" in str(err.value.detail)


def handler(auth: Auth, resource: str, action: str) -> Any:
    handlers = auth._handlers.get((resource, action)) or auth._handlers[(resource, "*")]
    return handlers[-1]


def call(auth: Auth, resource: str, action: str, value: Any, who: str = "alice") -> Any:
    ctx = Auth.types.AuthContext(resource=resource, action=action, user=User(who), permissions=[])  # type: ignore[arg-type]
    return asyncio.run(handler(auth, resource, action)(ctx=ctx, value=value))


@pytest.mark.parametrize(
    ("context", "status", "message"),
    [
        ({"executor": "subprocess", "allow_unsandboxed": True}, 403, "deployment setting"),
        ({"maker_base_url": "http://x/v1", "maker_api_key_env": "HOME"}, 403, "deployment"),
        ({"namespace": "other-team"}, 403, "caller's identity"),
        ({"max_attempts": 1000}, 422, "above this deployment's bound"),
        ({"max_atempts": 2}, 422, "unknown setting"),
    ],
)
def test_a_run_with_a_forbidden_context_is_refused_before_it_starts(context, status, message):
    auth = protect(Auth())
    with pytest.raises(Auth.exceptions.HTTPException) as err:
        call(auth, "threads", "create_run", {"kwargs": {"context": context}, "metadata": {}})
    assert err.value.status_code == status and message in str(err.value.detail)
    # the same through config.configurable, an assistant and a cron
    with pytest.raises(Auth.exceptions.HTTPException):
        check_run_payload({"config": {"configurable": context}})
    with pytest.raises(Auth.exceptions.HTTPException):
        call(auth, "assistants", "create", {"context": context, "metadata": {}})
    with pytest.raises(Auth.exceptions.HTTPException):
        call(auth, "crons", "create", {"payload": {"context": context}, "metadata": {}})


def test_runs_threads_and_assistants_belong_to_their_creator():
    auth = protect(Auth())
    run = {"kwargs": {"context": {"max_attempts": 2}}, "metadata": {}}
    assert call(auth, "threads", "create_run", run) == {"owner": "alice"}
    assert run["metadata"] == {"owner": "alice"}
    thread: dict[str, Any] = {"metadata": None}
    call(auth, "threads", "create", thread, who="bob")
    assert thread["metadata"] == {"owner": "bob"}
    assert call(auth, "threads", "read", {}, who="bob") == {"owner": "bob"}
    assert call(auth, "threads", "search", {}) == {"owner": "alice"}
    # the server's own configurable keys are not settings
    check_run_payload({"config": {"configurable": {"thread_id": "t", "langgraph_auth_user": 1}}})


def test_the_store_api_reads_own_namespaces_and_never_writes():
    auth = protect(Auth())
    search = {"namespace": ("latm",), "query": None}
    call(auth, "store", "search", search)
    assert search["namespace"] == ("latm", "alice")
    with pytest.raises(Auth.exceptions.HTTPException) as err:
        call(auth, "store", "get", {"namespace": ("latm", "bob", "tools"), "key": "k"})
    assert err.value.status_code == 403
    for action in ("put", "delete"):
        with pytest.raises(Auth.exceptions.HTTPException, match="verified tool making"):
            call(auth, "store", action, {"namespace": ("latm", "alice", "tools"), "key": "k"})


def authenticate(auth: Auth, headers: dict[bytes, bytes]) -> Any:
    assert auth._authenticate_handler is not None
    return asyncio.run(auth._authenticate_handler(headers=headers))  # type: ignore[call-arg]


def test_the_example_auth_maps_each_key_to_its_tenant(caplog):
    auth = api_key_auth({"LATM_API_KEYS": f"alice:{KEY_A},bob:{KEY_B}"})
    assert authenticate(auth, {b"x-api-key": KEY_B.encode()})["identity"] == "bob"
    assert "2 API keys" in caplog.text
    for headers in ({}, {b"x-api-key": b"wrong-wrong-wrong-wrong"}):
        with pytest.raises(Auth.exceptions.HTTPException) as err:
            authenticate(auth, headers)
        assert err.value.status_code == 401


def test_without_keys_every_client_is_the_one_tenant_and_the_server_says_so(caplog):
    auth = api_key_auth({"LATM_NAMESPACE": "shop"})
    assert authenticate(auth, {})["identity"] == "shop"
    assert "no API keys are configured" in caplog.text and "'shop'" in caplog.text


def run_as(graph: Any, who: str | None, inputs: dict[str, Any], ctx: Context) -> dict[str, Any]:
    configurable = {"langgraph_auth_user": User(who)} if who else {}
    return dict(graph.invoke(inputs, {"configurable": configurable}, context=ctx))


def test_the_run_namespace_is_the_callers_tenant(make_context):
    store = InMemoryStore()
    graph = build_graph(store=store)
    made = run_as(
        graph,
        "alice",
        {"examples": EXAMPLES[:6], "task_type": "word_sorting"},
        make_context(scripted([maker_reply(SORT_CODE, VALIDATION_QS)]), scripted([])),
    )
    assert made["error"] is None
    assert store.get(("latm", "alice", "tools"), "word_sorting") is not None
    assert store.get(("latm", "default", "tools"), "word_sorting") is None

    question = EXAMPLES[20]["input"]
    ask = {"task": question, "task_type": "word_sorting"}
    mine = run_as(graph, "alice", ask, make_context(scripted([]), scripted([user_reply(question)])))
    assert mine["answer"] == EXAMPLES[20]["target"]
    theirs = run_as(graph, "bob", ask, make_context(scripted([]), scripted([])))
    assert theirs["answer"] is None and "no tool for task type 'word_sorting'" in theirs["error"]
    # without a user (the library, the CLI) the context's namespace is used
    library = make_context(scripted([]), scripted([user_reply(question)]), namespace="alice")
    assert run_as(graph, None, ask, library)["answer"] == EXAMPLES[20]["target"]


def test_two_tenants_with_identical_tools_never_share_a_warm_worker(make_context, monkeypatch):
    """Under one deployment namespace, the authenticated tenant keys the warm worker."""
    import importlib

    from latm.nodes.common import get_tool_executor

    use_module = importlib.import_module("latm.nodes.use")
    keys: list[Any] = []

    class Recorder:
        def __init__(self, inner: Any) -> None:
            self.inner, self.name = inner, inner.name

        def run(self, code: str, calls: Any, limits: Any, *, cache_key: Any = None) -> Any:
            keys.append(cache_key)
            return self.inner.run(code, calls, limits, cache_key=cache_key)

    monkeypatch.setattr(
        use_module, "get_tool_executor", lambda ctx: Recorder(get_tool_executor(ctx))
    )
    graph = build_graph(store=InMemoryStore())
    question = EXAMPLES[20]["input"]
    for who in ("alice", "bob"):
        ctx = make_context(
            scripted([maker_reply(SORT_CODE, VALIDATION_QS)]), scripted([user_reply(question)])
        )
        assert ctx.namespace == "default"
        out = run_as(graph, who, {"task": question, "examples": EXAMPLES[:6]}, ctx)
        assert out["answer"] == EXAMPLES[20]["target"], out["error"]
    assert len(keys) == 2 and keys[0] != keys[1]
    assert str(keys[0]).startswith("alice\0") and str(keys[1]).startswith("bob\0")


def test_the_served_graph_says_when_the_server_has_no_authentication(monkeypatch, caplog):
    import importlib

    import latm.server.app_graph as app_graph

    monkeypatch.delenv("LANGGRAPH_AUTH", raising=False)
    importlib.reload(app_graph)
    assert "no authentication configured" in caplog.text and "'default'" in caplog.text
    caplog.clear()
    monkeypatch.setenv("LANGGRAPH_AUTH", '{"path": "latm.server.auth:auth"}')
    importlib.reload(app_graph)
    assert "no authentication configured" not in caplog.text


def test_a_client_may_resume_a_review_but_not_write_the_graphs_state():
    auth = protect(Auth())
    resume = {
        "kwargs": {"command": {"resume": {"action": "approve"}, "goto": None}},
        "metadata": {},
    }
    assert call(auth, "threads", "create_run", resume) == {"owner": "alice"}
    for command in ({"update": {"code": "def f(x): ..."}}, {"goto": "wrap"}):
        run = {"kwargs": {"command": command}, "metadata": {}}
        with pytest.raises(Auth.exceptions.HTTPException, match="skipped verification") as err:
            call(auth, "threads", "create_run", run)
        assert err.value.status_code == 403
    with pytest.raises(Auth.exceptions.HTTPException, match="skipped verification"):
        call(auth, "threads", "update", {"thread_id": "t"})  # update_state
    assert call(auth, "threads", "update", {"thread_id": "t", "metadata": {"x": 1}}) == {
        "owner": "alice"
    }
