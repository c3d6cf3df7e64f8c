"""Run settings a client may send versus deployment settings only the deployment sets."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from langgraph.store.memory import InMemoryStore

from latm.graph.builder import build_graph
from latm.graph.context import (
    DEPLOYMENT,
    RUN,
    Context,
    RunSettings,
    SettingsError,
    run_settings_table,
)
from latm.nodes.common import get_context

from .scripted import SORT_CODE, bbh, maker_reply, scripted

EXAMPLES = bbh("word_sorting")
VALIDATION_QS = [e["input"] for e in EXAMPLES[3:6]]

ATTACKS = [
    {"executor": "subprocess", "allow_unsandboxed": True},
    {"maker_base_url": "http://attacker.invalid/v1", "maker_api_key_env": "ANY_SERVER_VAR"},
    {"user_base_url": "http://attacker.invalid/v1"},
    {"database_url": "postgresql://x/y"},
    {"store_path": "/tmp/elsewhere.sqlite"},
    {"lease_ttl_s": 0.001},
    {"review_ttl_s": 1.0},
    {"limits": {"max_attempts": 1000}},
]


def kinds() -> dict[str, str]:
    return {f.name: f.metadata.get("kind", "") for f in dataclasses.fields(Context)}


def test_every_context_field_is_either_a_run_or_a_deployment_setting():
    assert set(kinds().values()) == {RUN, DEPLOYMENT}
    run = {n for n, k in kinds().items() if k == RUN}
    assert run == {f.name for f in dataclasses.fields(RunSettings)}
    # what the issue names as deployment settings
    for name in (
        "maker_base_url",
        "maker_api_key_env",
        "user_base_url",
        "user_api_key_env",
        "executor",
        "allow_unsandboxed",
        "database_url",
        "store_path",
        "namespace",
        "lease_ttl_s",
        "review_ttl_s",
        "maker_llm",
        "user_llm",
    ):
        assert kinds()[name] == DEPLOYMENT, name
    for name in ("max_attempts", "n_candidates", "require_approval", "exec_timeout_s"):
        assert kinds()[name] == RUN, name


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: next(iter(a)))
def test_a_client_cannot_send_a_deployment_setting(attack):
    with pytest.raises(SettingsError, match="is a deployment setting") as err:
        RunSettings.from_client(attack)
    assert err.value.forbidden
    assert next(iter(attack)) in str(err.value)


def test_a_client_cannot_name_a_namespace():
    with pytest.raises(SettingsError, match="comes from the caller's identity") as err:
        RunSettings.from_client({"namespace": "other-team"})
    assert err.value.forbidden


def test_a_typo_is_refused_with_the_settings_a_run_may_set():
    with pytest.raises(SettingsError, match=r"unknown setting 'max_attempt'.*max_attempts"):
        RunSettings.from_client({"max_attempt": 2})


@pytest.mark.parametrize(
    ("sent", "message"),
    [
        ({"max_attempts": 11}, "above this deployment's bound 10 .*LATM_MAX_ATTEMPTS_MAX"),
        ({"n_candidates": 0}, "must be at least 1"),
        ({"exec_timeout_s": 0}, "must be above 0"),
        ({"exec_timeout_s": 3600}, "above this deployment's bound 60"),
        ({"exec_memory_mb": 10**6}, "bound 4096"),
        ({"max_attempts": "3"}, "must be a whole number"),
        ({"max_attempts": True}, "must be a whole number"),
        ({"direct_entry": "yes"}, "must be a bool"),
        ({"lease_wait_s": -1}, "must be at least 0"),
    ],
)
def test_a_value_out_of_bounds_or_of_the_wrong_type_is_refused(sent, message):
    with pytest.raises(SettingsError, match=message) as err:
        RunSettings.from_client(sent)
    assert not err.value.forbidden


def test_values_within_bounds_are_kept():
    run = RunSettings.from_client({"max_attempts": 10, "exec_timeout_s": 2, "two_step": True})
    assert (run.max_attempts, run.exec_timeout_s, run.two_step) == (10, 2, True)
    assert RunSettings.from_client(None) == RunSettings()
    with pytest.raises(SettingsError, match="must be an object"):
        RunSettings.from_client(["max_attempts"])


def test_the_deployment_sets_defaults_and_bounds(monkeypatch):
    monkeypatch.setenv("LATM_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("LATM_MAX_ATTEMPTS_MAX", "4")
    assert RunSettings.from_client({}).max_attempts == 2
    assert RunSettings.from_client({"max_attempts": 4}).max_attempts == 4
    with pytest.raises(SettingsError, match="bound 4 "):
        RunSettings.from_client({"max_attempts": 5})
    # the in-process library keeps full control: its own limits
    assert Context(max_attempts=50, limits={"max_attempts": 100}).max_attempts == 50
    with pytest.raises(SettingsError):
        Context(max_attempts=5)


def test_a_run_cannot_turn_off_the_deployments_approval(monkeypatch):
    monkeypatch.setenv("LATM_REQUIRE_APPROVAL", "1")
    with pytest.raises(SettingsError, match="a run cannot turn it off") as err:
        RunSettings.from_client({"require_approval": False})
    assert err.value.forbidden
    assert RunSettings.from_client({}).require_approval is True
    # in-process code decides for itself
    assert Context(require_approval=False).require_approval is False
    monkeypatch.setenv("LATM_REQUIRE_APPROVAL", "0")
    assert RunSettings.from_client({"require_approval": True}).require_approval is True


def test_the_graph_schema_offers_run_settings_only_with_descriptions():
    schema = build_graph().get_context_jsonschema()
    props = schema["properties"]
    assert set(props) == {f.name for f in dataclasses.fields(RunSettings)}
    assert not {"executor", "maker_base_url", "namespace", "allow_unsandboxed"} & set(props)
    assert props["max_attempts"]["description"].startswith("Rounds of proposals")
    table = {row[0]: row for row in run_settings_table()}
    assert table["max_attempts"][1:4] == ("LATM_MAX_ATTEMPTS", 3, 10)


class FakeRuntime:
    def __init__(self, context: Any) -> None:
        self.context = context
        self.server_info = None
        self.store = None


def test_nodes_see_the_clients_run_settings_over_the_deployments(monkeypatch):
    monkeypatch.setenv("LATM_MAKER_BASE_URL", "http://deployment.invalid/v1")
    monkeypatch.setenv("LATM_EXECUTOR", "sandbox")
    ctx = get_context(FakeRuntime(RunSettings(max_attempts=2)))  # type: ignore[arg-type]
    assert isinstance(ctx, Context)
    assert ctx.max_attempts == 2
    assert ctx.maker_base_url == "http://deployment.invalid/v1" and ctx.executor == "sandbox"
    with pytest.raises(SettingsError, match="deployment setting"):
        get_context(FakeRuntime({"executor": "subprocess"}))  # type: ignore[arg-type]
    full = Context(executor="subprocess", allow_unsandboxed=True)
    assert get_context(FakeRuntime(full)) is full  # type: ignore[arg-type]


def test_a_dict_context_in_process_is_a_client_context(store):
    graph = build_graph(store=InMemoryStore())
    with pytest.raises(SettingsError, match="'maker_base_url' is a deployment setting"):
        graph.invoke({"task": "x"}, context={"maker_base_url": "http://attacker.invalid/v1"})
    with pytest.raises(SettingsError, match="bound 10"):
        graph.invoke({"task": "x"}, context={"max_attempts": 99})


def test_in_process_callers_inject_models_and_deployment_settings(store):
    maker = scripted([maker_reply(SORT_CODE, VALIDATION_QS)])
    ctx = Context(
        maker_llm=maker,
        user_llm=scripted([]),
        n_candidates=1,
        direct_entry=False,
        reject_hardcoded=False,
        namespace="library-tenant",
    )
    out = build_graph(store=store).invoke(
        {"examples": EXAMPLES[:6], "task_type": "word_sorting"}, context=ctx
    )
    assert out["error"] is None and out["tool"]["version"] == 1
    assert store.get(("latm", "library-tenant", "tools"), "word_sorting") is not None
    assert len(maker.received) == 1


def test_the_readme_tables_name_every_setting():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Settings") : readme.index("## Key-less local default")]
    for name, env, _, upper, _ in run_settings_table():
        assert f"`{name}`" in section and env in section, name
        if upper is not None:
            assert f"{env}_MAX" in section or "<RUN SETTING VARIABLE>_MAX" in section
    for f in dataclasses.fields(Context):
        env = f.metadata.get("env")
        if f.metadata.get("kind") == DEPLOYMENT and env:
            assert env in section, env


def test_verification_strength_may_only_be_made_stricter_by_a_run(monkeypatch):
    assert RunSettings.from_client({"lucky_pass_max": 0.001}).lucky_pass_max == 0.001
    assert RunSettings.from_client({"agreement_probes": 2}).agreement_probes == 2
    assert RunSettings.from_client({"weak_tools": "reject"}).weak_tools == "reject"
    for looser in ({"lucky_pass_max": 0.5}, {"agreement_probes": 7}, {"weak_tools": "store"}):
        with pytest.raises(SettingsError, match="looser than this deployment's") as err:
            RunSettings.from_client(looser)
        assert err.value.forbidden
    with pytest.raises(SettingsError, match="must be one of 'reject', 'store'"):
        RunSettings.from_client({"weak_tools": "maybe"})
    monkeypatch.setenv("LATM_WEAK_TOOLS", "store")
    assert RunSettings.from_client({"weak_tools": "reject"}).weak_tools == "reject"
    assert RunSettings.from_client({}).weak_tools == "store"
    # in process: full control
    assert Context(lucky_pass_max=0.5, agreement_probes=20).lucky_pass_max == 0.5


def test_an_in_process_deployment_checks_its_clients_against_itself():
    served = Context(weak_tools="store", require_approval=True, limits={"max_attempts": 4})
    assert served.with_client_settings({"weak_tools": "store"}).weak_tools == "store"
    assert served.with_client_settings({"max_attempts": 4}).max_attempts == 4
    with pytest.raises(SettingsError, match="bound 4"):
        served.with_client_settings({"max_attempts": 5})
    with pytest.raises(SettingsError, match="a run cannot turn it off"):
        served.with_client_settings({"require_approval": False})
    with pytest.raises(SettingsError, match="deployment setting"):
        served.with_client_settings({"executor": "subprocess"})
    strict = Context(weak_tools="reject")
    with pytest.raises(SettingsError, match="looser than this deployment's 'reject'"):
        strict.with_client_settings({"weak_tools": "store"})


def test_a_run_may_shorten_the_deadline_but_not_lift_it(monkeypatch):
    assert RunSettings.from_client({"run_deadline_s": 30}).run_deadline_s == 30
    for looser in ({"run_deadline_s": 0}, {"run_deadline_s": 901}):
        with pytest.raises(SettingsError, match="looser than this deployment's"):
            RunSettings.from_client(looser)
    monkeypatch.setenv("LATM_RUN_DEADLINE", "0")  # the deployment sets none: any is stricter
    assert RunSettings.from_client({"run_deadline_s": 5000}).run_deadline_s == 5000
    for size in ("max_request_chars", "max_examples", "max_reply_chars"):
        with pytest.raises(SettingsError, match="is a deployment setting"):
            RunSettings.from_client({size: 10**9})
