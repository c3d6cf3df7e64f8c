"""The maker and user models are built from the deployment's settings only."""

from __future__ import annotations

import pytest

from latm.graph.context import Context, RunSettings
from latm.llm import NO_KEY, ModelError, build_model

from .scripted import scripted


def test_a_model_is_built_from_its_roles_deployment_settings(monkeypatch):
    monkeypatch.setenv("LATM_MAKER_BASE_URL", "http://127.0.0.1:9/maker/v1")
    monkeypatch.setenv("LATM_MAKER_MODEL", "big")
    monkeypatch.setenv("LATM_MAKER_API_KEY_ENV", "MAKER_KEY")
    monkeypatch.setenv("MAKER_KEY", "sk-maker")
    monkeypatch.setenv("LATM_USER_BASE_URL", "http://127.0.0.1:9/user/v1")
    # the run's settings (what a client sends) change neither endpoint nor key
    ctx = Context.for_run(RunSettings(max_attempts=2))
    maker, user = build_model(ctx, "maker"), build_model(ctx, "user", temperature=0.5)
    assert (maker.model_name, str(maker.openai_api_base)) == ("big", "http://127.0.0.1:9/maker/v1")  # type: ignore[attr-defined]
    assert maker.openai_api_key.get_secret_value() == "sk-maker"  # type: ignore[attr-defined]
    assert user.openai_api_key.get_secret_value() == NO_KEY  # type: ignore[attr-defined]
    assert user.temperature == 0.5 and user.max_tokens == 512  # type: ignore[attr-defined]


def test_no_key_and_no_endpoint_is_a_clear_error_and_an_injected_model_wins():
    with pytest.raises(ModelError, match="no maker model is configured: set OPENAI_API_KEY"):
        build_model(Context(), "maker")
    model = scripted([])
    assert build_model(Context(user_llm=model), "user") is model
    assert Context(user_llm=model).model("user").llm is model
