"""Backends by configuration, the offline embedding, and a checkpointed SQLite run."""

from __future__ import annotations

import math
import sqlite3
from typing import Any

import pytest
from langgraph.store.sqlite import SqliteStore

from latm.backends import BackendError, backend_kind, open_backend, redact
from latm.embeddings import HashEmbeddings, load_embeddings
from latm.graph import Context
from latm.graph.builder import build_graph
from latm.graph.context import PAPER
from latm.repository import ToolRepository

from .scripted import SORT_CODE, bbh, maker_reply, scripted, user_reply

EXAMPLES = bbh("word_sorting")
VALIDATION_QS = [e["input"] for e in EXAMPLES[3:6]]


def ctx(maker: Any = None, user: Any = None, **kwargs: Any) -> Context:
    settings = {**PAPER, "exec_timeout_s": 2.0, "max_retries": 0, **kwargs}
    return Context(maker_llm=maker or scripted([]), user_llm=user or scripted([]), **settings)


def test_the_url_picks_the_backend():
    assert backend_kind("") == backend_kind(None) == backend_kind("sqlite:///x.db") == "sqlite"
    assert backend_kind("postgresql://u@h/db") == backend_kind("postgres://h/db") == "postgres"
    with pytest.raises(BackendError, match=r"unsupported database URL 'mysql://u:\*\*\*@h/db'"):
        backend_kind("mysql://u:pw@h/db")
    assert redact("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact("postgresql://h/db") == "postgresql://h/db"


def test_context_reads_the_database_url_and_lifecycle_settings(monkeypatch):
    monkeypatch.setenv("LATM_DATABASE_URL", "postgresql://h/db")
    monkeypatch.setenv("LATM_MAX_TOOL_FAILURES", "7")
    monkeypatch.setenv("LATM_LEASE_WAIT", "12.5")
    c = Context()
    assert c.database_url == "postgresql://h/db" and c.max_tool_failures == 7
    assert c.lease_wait_s == 12.5 and c.embeddings == ""
    with pytest.raises(ValueError, match="must not be negative"):
        Context(max_tool_failures=-1)


def test_hash_embeddings_are_deterministic_unit_vectors_that_match_shared_words():
    emb = HashEmbeddings(128)
    a, b, c = emb.embed_documents(
        [
            "sort the following words alphabetically",
            "Sort these words alphabetically please",
            "how many penguins are left",
        ]
    )
    assert len(a) == 128 and math.isclose(sum(v * v for v in a), 1.0)
    assert emb.embed_query("sort the following words alphabetically") == a
    cos = lambda x, y: sum(p * q for p, q in zip(x, y, strict=True))  # noqa: E731
    assert cos(a, b) > 0.3 > cos(a, c)
    assert math.isclose(sum(v * v for v in emb.embed_query("")), 1.0)  # defined for no words


def test_embeddings_settings():
    assert load_embeddings("") is None and load_embeddings("none") is None
    model, dims = load_embeddings("hash:64")
    assert isinstance(model, HashEmbeddings) and dims == 64
    assert load_embeddings("hash")[1] == 256
    for bad in ("hash:x", "openai", "hash:4"):
        with pytest.raises(ValueError):
            load_embeddings(bad)
    with pytest.raises(ValueError, match="need the 'langchain' package"):
        load_embeddings("someprovider:some-model")


def test_unreachable_postgres_is_a_clear_error_and_hides_the_password():
    with pytest.raises(BackendError) as caught:
        open_backend("postgresql://u:secret@127.0.0.1:9/db")
    message = str(caught.value)
    assert message.startswith("cannot connect to PostgreSQL at postgresql://u:***@127.0.0.1:9/db")
    assert "secret" not in message


def test_a_run_without_a_store_uses_the_configured_backend(tmp_path):
    path = tmp_path / "tools.sqlite"
    out = build_graph().invoke(
        {"examples": EXAMPLES[:6], "task_type": "word_sorting"},
        context=ctx(scripted([maker_reply(SORT_CODE, VALIDATION_QS)]), store_path=str(path)),
    )
    assert out["error"] is None
    backend = open_backend(store_path=str(path))
    assert backend is open_backend(store_path=str(path))  # opened once per process
    assert backend.kind == "sqlite" and not backend.semantic
    assert ToolRepository(backend.store, "default").get("word_sorting") is not None


def test_a_bad_database_url_ends_the_run_with_a_clear_error():
    out = build_graph().invoke(
        {"task": "Sort: b a", "task_type": "word_sorting"},
        context=ctx(database_url="mysql://h/db"),
    )
    assert out["error"].startswith("the tool repository is unavailable: unsupported database URL")


def test_sqlite_with_a_semantic_index_scores_search_results(tmp_path):
    if not hasattr(sqlite3.Connection, "enable_load_extension"):
        with pytest.raises(BackendError, match="cannot load extensions"):
            open_backend(store_path=str(tmp_path / "v.sqlite"), embeddings="hash:64")
        return
    backend = open_backend(store_path=str(tmp_path / "v.sqlite"), embeddings="hash:64")
    assert isinstance(backend.store, SqliteStore) and backend.semantic
    repo = ToolRepository(backend.store, "default")
    for name, text in (("word_sorting", "Sort words alphabetically"), ("count", "Count penguins")):
        out = build_graph(store=backend.store).invoke(
            {"examples": EXAMPLES[:6], "task_type": name},
            context=ctx(scripted([maker_reply(SORT_CODE, VALIDATION_QS)])),
        )
        assert out["error"] is None
        record = repo.get(name)
        repo.put(record.model_copy(update={"description": text, "demos": []}))
    items = backend.store.search(repo.namespace, query="sort these words", limit=2)
    assert all(item.score is not None for item in items)
    found = repo.search("please sort these words alphabetically", limit=2)
    assert found[0][0].task_type == "word_sorting" and found[0][1] > found[1][1]


def test_sqlite_checkpointer_resumes_a_thread(tmp_path):
    backend = open_backend(store_path=str(tmp_path / "c.sqlite"))
    app = build_graph(store=backend.store, checkpointer=backend.checkpointer())
    assert backend.checkpointer() is backend.checkpointer()
    config = {"configurable": {"thread_id": "t1"}}
    question = EXAMPLES[20]
    out = app.invoke(
        {"task": question["input"], "examples": EXAMPLES[:6], "task_type": "word_sorting"},
        config,
        context=ctx(
            scripted([maker_reply(SORT_CODE, VALIDATION_QS)]),
            scripted([user_reply(question["input"])]),
        ),
    )
    assert out["answer"] == question["target"]
    reopened = build_graph(store=backend.store, checkpointer=backend.checkpointer())
    state = reopened.get_state(config)
    assert state.values["answer"] == question["target"] and state.next == ()
