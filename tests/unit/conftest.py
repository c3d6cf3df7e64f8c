from __future__ import annotations

from typing import Any

import pytest
from langgraph.store.memory import InMemoryStore

from latm.graph import Context
from latm.graph.context import PAPER


@pytest.fixture
def store() -> InMemoryStore:
    return InMemoryStore()


@pytest.fixture
def make_context():
    def make(maker: Any = None, user: Any = None, **kwargs: Any) -> Context:
        """A context with the paper's settings (one candidate, the user model calls)."""
        kwargs.setdefault("exec_timeout_s", 2.0)
        kwargs.setdefault("max_retries", 0)
        return Context(maker_llm=maker, user_llm=user, **{**PAPER, **kwargs})

    return make


@pytest.fixture(autouse=True)
def _clean_latm_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Unit tests see no LATM_* settings of the developer's shell, and no real key."""
    import os

    for name in list(os.environ):
        if name.startswith("LATM_") or name == "OPENAI_API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.setenv("LATM_STORE_PATH", str(tmp_path / "tools.sqlite"))
    # the dispatcher's embeddings must not depend on whether the local model is installed
    monkeypatch.setenv("LATM_ROUTE_EMBEDDINGS", "hash")
