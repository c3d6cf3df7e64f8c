"""The context schema Studio renders, env names derived from fields, and parent contexts."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.store.memory import InMemoryStore

from latm.graph.builder import build_graph
from latm.graph.context import (
    RUN,
    Context,
    RunSettings,
    SettingsError,
    context_of,
    default_of,
    deployment_bounds,
    env_name,
)
from latm.llm import build_model

from .scripted import SORT_CODE, bbh, maker_reply, scripted, user_reply

EXAMPLES = bbh("word_sorting")
VALIDATION_QS = [e["input"] for e in EXAMPLES[3:6]]

# field -> the older environment variable still read for it
ALIASES = {
    "exec_timeout_s": "LATM_EXEC_TIMEOUT",
    "exec_max_output_bytes": "LATM_EXEC_MAX_OUTPUT",
    "dispatch_candidates": "LATM_DISPATCH_K",
    "lease_wait_s": "LATM_LEASE_WAIT",
    "run_deadline_s": "LATM_RUN_DEADLINE",
    "request_timeout_s": "LATM_REQUEST_TIMEOUT",
    "lease_ttl_s": "LATM_LEASE_TTL",
    "review_ttl_s": "LATM_REVIEW_TTL",
}
# a value for each that differs from its default and passes its checks; then another
VALUES = {
    "exec_timeout_s": ("7.5", "9.0"),
    "exec_max_output_bytes": ("1000", "2000"),
    "dispatch_candidates": ("5", "7"),
    "lease_wait_s": ("12.5", "20.0"),
    "run_deadline_s": ("60.0", "30.0"),
    "request_timeout_s": ("45.0", "50.0"),
    "lease_ttl_s": ("30.0", "40.0"),
    "review_ttl_s": ("99.0", "98.0"),
}


def settings() -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(Context) if "aliases" in f.metadata]


def readme_settings() -> str:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    return readme[readme.index("### Settings") : readme.index("## Key-less local default")]


# ---------------------------------------------------------------- JSON schema


def test_studio_schema_shows_each_run_settings_description_and_default() -> None:
    props = build_graph().get_context_jsonschema()["properties"]
    fields = [f for f in dataclasses.fields(RunSettings) if f.metadata.get("kind") == RUN]
    assert set(props) == {f.name for f in fields}
    for f in fields:
        assert props[f.name]["description"] == f.metadata["description"], f.name
        assert props[f.name]["default"] == default_of(f), f.name
    assert props["max_attempts"]["default"] == 3
    assert (props["max_attempts"]["minimum"], props["max_attempts"]["maximum"]) == (1, 10)
    assert props["dispatch"]["default"] == "embedding"
    assert props["dispatch"]["enum"] == ["embedding", "llm"]
    assert "maximum" not in props["run_deadline_s"]  # bounded by the deployment's value
    assert props["require_approval"]["default"] is False


def test_studio_schema_default_is_the_deployments_current_one(monkeypatch) -> None:
    monkeypatch.setenv("LATM_MAX_ATTEMPTS", "5")
    monkeypatch.setenv("LATM_DISPATCH_K", "4")  # an alias counts as well
    props = build_graph().get_context_jsonschema()["properties"]
    assert props["max_attempts"]["default"] == 5
    assert props["dispatch_candidates"]["default"] == 4
    monkeypatch.setenv("LATM_MAX_ATTEMPTS_MAX", "6")
    props = build_graph().get_context_jsonschema()["properties"]
    assert props["max_attempts"]["maximum"] == 6  # the deployment's bound


# ------------------------------------------------------------------ env names


def test_every_setting_reads_the_variable_named_after_its_field(monkeypatch) -> None:
    for f in settings():
        assert f.metadata["env"] == env_name(f.name) == f"LATM_{f.name.upper()}"
    monkeypatch.setenv("LATM_EXEC_TIMEOUT_S", "3.5")
    monkeypatch.setenv("LATM_REVIEW_TTL_S", "77")
    monkeypatch.setenv("LATM_MAKER_MODEL", "m")
    ctx = Context()
    assert (ctx.exec_timeout_s, ctx.review_ttl_s, ctx.maker_model) == (3.5, 77.0, "m")


def test_exactly_the_older_names_are_aliases() -> None:
    found = {f.name: f.metadata["aliases"] for f in settings() if f.metadata["aliases"]}
    assert found == {name: (alias,) for name, alias in ALIASES.items()}


@pytest.mark.parametrize("name", sorted(ALIASES))
def test_an_older_name_is_still_read_and_the_fields_own_name_wins(name, monkeypatch) -> None:
    alias, own = ALIASES[name], env_name(name)
    old_value, new_value = VALUES[name]
    f = {f.name: f for f in settings()}[name]
    like = f.metadata["type"]
    monkeypatch.setenv(alias, old_value)
    assert getattr(Context(), name) == like(old_value)
    monkeypatch.setenv(own, new_value)
    assert getattr(Context(), name) == like(new_value)
    assert f"`{alias}`" in readme_settings() and f"`{own}`" in readme_settings()


@pytest.mark.parametrize("name", [n for n in sorted(ALIASES) if n in deployment_bounds()], ids=str)
def test_an_upper_bound_follows_the_derived_name_and_its_alias(name, monkeypatch) -> None:
    alias, own = ALIASES[name], env_name(name)
    monkeypatch.setenv(f"{alias}_MAX", "11")
    assert deployment_bounds()[name] == 11
    monkeypatch.setenv(f"{own}_MAX", "13")
    assert deployment_bounds()[name] == 13
    with pytest.raises(SettingsError, match=f"{own}_MAX"):
        RunSettings.from_client({name: 14})


def test_a_refusal_names_the_derived_variable(monkeypatch) -> None:
    with pytest.raises(SettingsError, match="LATM_REQUEST_TIMEOUT_S"):
        RunSettings.from_client({"request_timeout_s": 1})
    monkeypatch.setenv("LATM_RUN_DEADLINE", "60")
    with pytest.raises(SettingsError, match="LATM_RUN_DEADLINE_S"):
        RunSettings.from_client({"run_deadline_s": 120})


# -------------------------------------------------------------- one role view


def test_one_role_accessor_gives_each_roles_model_settings(monkeypatch) -> None:
    monkeypatch.setenv("LATM_USER_BASE_URL", "http://user.invalid/v1")
    user = scripted([])
    ctx = Context(maker_model="big", maker_temperature=0.3, user_max_tokens=64, user_llm=user)
    maker = ctx.model("maker")
    assert (maker.name, maker.base_url, maker.temperature, maker.llm) == ("big", None, 0.3, None)
    assert maker.label == "big"
    view = ctx.model("user")
    assert (view.base_url, view.max_tokens, view.llm) == ("http://user.invalid/v1", 64, user)
    assert view.label == "ScriptedChatModel"
    assert build_model(ctx, "user") is user
    with pytest.raises(ValueError, match="roles are 'maker' and 'user'"):
        ctx.model("judge")  # type: ignore[arg-type]


# ------------------------------------------------------------- parent context


@dataclasses.dataclass
class ParentContext:
    """A parent agent's own context type, carrying LATM's settings under ``latm``."""

    user_id: str = "someone"
    latm: Context | RunSettings | None = None


@dataclasses.dataclass
class ForeignContext:
    """A parent agent's own context type that carries no LATM settings."""

    user_id: str = "someone"


@dataclasses.dataclass(kw_only=True)
class ParentOfContext(Context):
    """A parent agent whose context type extends LATM's."""

    user_id: str = "someone"


class TypedParentContext(TypedDict, total=False):
    user_id: str
    latm: Context


class Shared(TypedDict, total=False):
    """A parent's state sharing LATM's input and output keys."""

    task_type: str | None
    examples: list[dict[str, str]]
    answer: str | None
    error: str | None
    tool: dict[str, Any] | None


class Own(TypedDict, total=False):
    """A parent's own state, mapped into LATM inside a node."""

    skill: str
    result: str


def latm_context(namespace: str) -> Context:
    return Context(
        maker_llm=scripted([maker_reply(SORT_CODE, VALIDATION_QS)]),
        user_llm=scripted([]),
        n_candidates=1,
        direct_entry=False,
        reject_hardcoded=False,
        namespace=namespace,
    )


def embedded_as_node(schema: type, store: InMemoryStore) -> Any:
    parent = StateGraph(Shared, context_schema=schema)
    parent.add_node("latm", build_graph())
    parent.add_edge(START, "latm")
    parent.add_edge("latm", END)
    return parent.compile(store=store)


def called_in_a_node(schema: type, store: InMemoryStore) -> Any:
    latm = build_graph()

    def delegate(state: Own, runtime: Runtime[Any]) -> dict[str, Any]:
        out = latm.invoke({"task_type": state["skill"], "examples": EXAMPLES[:6]})
        return {"result": out["error"] or f"made v{out['tool']['version']}"}

    parent = StateGraph(Own, context_schema=schema)
    parent.add_node("delegate", delegate)
    parent.add_edge(START, "delegate")
    parent.add_edge("delegate", END)
    return parent.compile(store=store)


def stored(store: InMemoryStore, namespace: str) -> bool:
    return store.get(("latm", namespace, "tools"), "word_sorting") is not None


def test_a_parent_with_its_own_context_passes_latms_under_latm(store) -> None:
    app = embedded_as_node(ParentContext, store)
    out = app.invoke(
        {"task_type": "word_sorting", "examples": EXAMPLES[:6]},
        context=ParentContext(latm=latm_context("parent-tenant")),
    )
    assert out["error"] is None and out["tool"]["version"] == 1
    assert stored(store, "parent-tenant") and not stored(store, "default")


def test_a_parent_calling_latm_inside_a_node_passes_its_context_on(store) -> None:
    app = called_in_a_node(ParentContext, store)
    out = app.invoke({"skill": "word_sorting"}, context=ParentContext(latm=latm_context("in-node")))
    assert out["result"] == "made v1"
    assert stored(store, "in-node") and not stored(store, "default")


def test_a_parent_whose_context_extends_latms_is_read_as_it_is(store) -> None:
    ctx = latm_context("subclass-tenant")
    parent_ctx = ParentOfContext(
        user_id="u1",
        maker_llm=ctx.maker_llm,
        user_llm=ctx.user_llm,
        n_candidates=1,
        direct_entry=False,
        reject_hardcoded=False,
        namespace="subclass-tenant",
    )
    out = embedded_as_node(ParentOfContext, store).invoke(
        {"task_type": "word_sorting", "examples": EXAMPLES[:6]}, context=parent_ctx
    )
    assert out["error"] is None and stored(store, "subclass-tenant")


def test_a_typed_dict_parent_context_passes_latms_under_the_latm_key(store) -> None:
    out = called_in_a_node(TypedParentContext, store).invoke(
        {"skill": "word_sorting"},
        context={"user_id": "u1", "latm": latm_context("typed-tenant")},
    )
    assert out["result"] == "made v1" and stored(store, "typed-tenant")


@pytest.mark.parametrize("build", [embedded_as_node, called_in_a_node], ids=["node", "inside"])
def test_a_foreign_parent_context_is_refused_never_run_on_defaults(build, store) -> None:
    app = build(ForeignContext, store)
    state = {"skill": "word_sorting", "task_type": "word_sorting", "examples": EXAMPLES[:6]}
    with pytest.raises(SettingsError, match=r"ForeignContext.*'latm' field"):
        app.invoke(state, context=ForeignContext())
    assert list(store.search(("latm",), limit=5)) == []


def test_a_parent_dict_context_without_latm_key_says_where_latms_go(store) -> None:
    app = called_in_a_node(TypedParentContext, store)
    with pytest.raises(SettingsError, match=r"unknown setting 'user_id'.*'latm' key"):
        app.invoke({"skill": "word_sorting"}, context={"user_id": "u1"})


def test_the_mapping_rule() -> None:
    ctx = Context(namespace="n1")
    assert context_of(ctx) is ctx
    assert context_of(None).namespace == "default"
    assert context_of(ParentContext(latm=ctx)) is ctx
    assert context_of({"latm": ctx, "user_id": "u"}) is ctx
    assert context_of(ParentContext(latm=RunSettings(max_attempts=2))).max_attempts == 2
    assert context_of(ParentContext(latm=None)).namespace == "default"  # declared: defaults
    assert context_of({"latm": {"max_attempts": 4}}).max_attempts == 4
    with pytest.raises(SettingsError, match=r"must be a latm\.graph\.Context"):
        context_of(ParentContext(latm="n1"))  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match="deployment setting"):
        context_of({"latm": {"executor": "subprocess"}})
    nested_typo = r"unknown setting 'max_attempt'; a run may set: [^(]*$"  # no 'latm' hint
    with pytest.raises(SettingsError, match=nested_typo):
        context_of({"latm": {"max_attempt": 2}})


def test_the_readmes_embedding_snippet_runs_with_the_parents_context(store, monkeypatch) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Embedding LATM in your agent: context", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    module = ModuleType("readme_snippet")  # not __main__: it defines, it does not run
    monkeypatch.setitem(sys.modules, module.__name__, module)  # its annotations resolve
    exec(compile(code, "README.md", "exec"), module.__dict__)
    namespace = module.__dict__
    first = EXAMPLES[20]
    ctx = namespace["AgentContext"](user_id="u1", latm=latm_context("u1"))
    ctx.latm.user_llm = scripted([user_reply(first["input"])])
    out = namespace["app"].invoke(
        {"question": first["input"], "examples": EXAMPLES[:6]}, context=ctx
    )
    assert out["reply"] == first["target"]
    with pytest.raises(SettingsError, match="AgentContext"):
        namespace["app"].invoke(
            {"question": first["input"], "examples": EXAMPLES[:6]},
            context=namespace["AgentContext"](latm="not LATM's"),
        )
