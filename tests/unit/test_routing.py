"""The dispatcher in an embedding space: index, calibrated regions, parser signal, model."""

from __future__ import annotations

import importlib
import sqlite3
from typing import Any

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings
from langgraph.store.memory import InMemoryStore
from langgraph.store.sqlite import SqliteStore

from latm import routing
from latm.bench.dispatch import bench_record
from latm.embeddings import HashEmbeddings
from latm.graph import Context
from latm.graph.builder import build_graph
from latm.graph.context import PAPER
from latm.repository import ToolRepository
from latm.routing import MAX_THRESHOLD, MIN_THRESHOLD, Scored, calibrate, decide, route_index

from .scripted import bbh, scripted


class Counting(Embeddings):
    """Hash embeddings that count the texts they embed as documents."""

    def __init__(self) -> None:
        self.inner = HashEmbeddings(64)
        self.documents = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.documents += len(texts)
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.inner.embed_query(text)


def ctx(user: Any = None, **kwargs: Any) -> Context:
    settings = {**PAPER, "direct_entry": True, "exec_timeout_s": 2.0, "max_retries": 0, **kwargs}
    return Context(maker_llm=scripted([]), user_llm=user or scripted([]), **settings)


def test_calibration_learns_a_threshold_from_the_tools_own_questions():
    angles = np.array([0.0, 0.4, 0.8])
    tight = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    loose = np.eye(3, dtype=np.float32)
    assert calibrate(tight) == pytest.approx(np.cos(0.4) - routing.SLACK, abs=1e-5)
    assert calibrate(loose) == pytest.approx(
        MIN_THRESHOLD
    )  # clipped: orthogonal questions accept little
    assert calibrate(tight[:1]) == MAX_THRESHOLD  # one question: nothing to learn, strict


def test_decide_accepts_inside_a_region_with_a_margin_rejects_far_and_flags_the_rest():
    def s(name: str, sim: float, thr: float = 0.8) -> Scored:
        return Scored(name, sim, thr, True)

    assert decide([]).verdict == "none"
    assert decide([s("a", 0.9), s("b", 0.5)]).verdict == "hit"
    assert decide([s("a", 0.9)]).margin == 1.0
    assert decide([s("a", 0.9), s("b", 0.89)]).verdict == "borderline"  # no margin
    assert decide([s("a", 0.75), s("b", 0.3)]).verdict == "borderline"  # just outside
    assert decide([s("a", 0.8 - routing.BAND - 0.01)]).verdict == "none"
    # the closest tool is far from its own (tight) region, the second inside its (loose) one
    mixed = decide([s("tight", 0.66, thr=0.87), s("loose", 0.65, thr=0.59)])
    assert mixed.verdict == "borderline" and [n.task_type for n in mixed.near] == ["loose"]


def test_the_index_stores_each_tools_vectors_and_reuses_them(monkeypatch):
    monkeypatch.setattr(routing, "_INDEXES", type(routing._INDEXES)())
    store = InMemoryStore()
    repo = ToolRepository(store, "t")
    record = bench_record("word_sorting")
    repo.put(record)
    embedder = Counting()
    index = route_index(repo, embedder, "counting")
    questions = routing.route_questions(record)
    assert len(questions) == 7 and embedder.documents == 7  # demos, call and direct checks
    item = repo.route_item("word_sorting")
    assert item is not None and item["embedder"] == "counting" and item["count"] == 7
    assert index.rank(bbh("word_sorting")[30]["input"])[0].task_type == "word_sorting"

    monkeypatch.setattr(routing, "_INDEXES", type(routing._INDEXES)())  # a new process
    fresh = Counting()
    again = route_index(repo, fresh, "counting")
    assert fresh.documents == 0 and set(again.tools) == {"word_sorting"}
    assert np.allclose(
        again.tools["word_sorting"].vectors, index.tools["word_sorting"].vectors, atol=1e-3
    )

    other = Counting()  # another embedding model recomputes (vectors never mix)
    route_index(repo, other, "other-model")
    assert other.documents == 7

    repo.put(record.model_copy(update={"version": 2}))  # a new version is re-embedded
    assert route_index(repo, fresh, "counting").tools["word_sorting"].version == 2
    assert fresh.documents == 7
    repo.delete("word_sorting")
    assert route_index(repo, fresh, "counting").tools == {}


def test_another_process_s_tool_is_seen_after_the_stamp_ttl(tmp_path, monkeypatch):
    monkeypatch.setattr(routing, "STAMP_TTL_S", 0.0)
    path = tmp_path / "tools.sqlite"

    def open_store() -> SqliteStore:
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        store = SqliteStore(conn)
        store.setup()
        return store

    mine, theirs = ToolRepository(open_store(), "t"), ToolRepository(open_store(), "t")
    embedder = HashEmbeddings(64)
    assert route_index(mine, embedder, "h").tools == {}
    theirs.put(bench_record("dyck_languages"))  # the other store object: no local signal
    assert set(route_index(mine, embedder, "h").tools) == {"dyck_languages"}


@pytest.fixture
def sorting_store() -> InMemoryStore:
    store = InMemoryStore()
    ToolRepository(store, "default").put(bench_record("word_sorting"))
    return store


def force_borderline(monkeypatch: pytest.MonkeyPatch) -> None:
    node = importlib.import_module("latm.nodes.dispatcher")

    def borderline(ranked: list[Scored]) -> routing.Decision:
        real = decide(ranked)
        return routing.Decision("borderline", real.ranked, real.margin)

    monkeypatch.setattr(node, "decide", borderline)


def test_a_borderline_request_is_settled_by_the_tools_parser_without_a_model(
    sorting_store, monkeypatch
):
    force_borderline(monkeypatch)
    q = bbh("word_sorting")[40]
    user = scripted([])
    out = build_graph(store=sorting_store).invoke({"task": q["input"]}, context=ctx(user))
    assert out["answer"] == q["target"] and user.received == []
    assert out["routing"]["by"] == "parser" and out["routing"]["parser"] == {"word_sorting": True}
    assert out["routing"]["asked_model"] is False


def test_a_parser_that_rejects_a_borderline_request_makes_it_a_miss(sorting_store, monkeypatch):
    force_borderline(monkeypatch)
    user = scripted([])
    far = "Sort the following numbers: 3 1 2"  # shares words, not the format
    out = build_graph(store=sorting_store).invoke({"task": far}, context=ctx(user))
    assert out["routing"]["by"] == "parser" and out["routing"]["tool"] is None
    assert out["routing"]["parser"] == {"word_sorting": False} and user.received == []
    assert out["cache_hit"] is False and "no cached tool fits" in out["error"]


def test_two_parsers_accepting_a_borderline_request_ask_the_user_model(monkeypatch):
    force_borderline(monkeypatch)
    store = InMemoryStore()
    repo = ToolRepository(store, "default")
    sorting = bench_record("word_sorting")
    repo.put(sorting)
    repo.put(sorting.model_copy(update={"task_type": "alphabetize", "description": "Alphabetize."}))
    q = bbh("word_sorting")[42]
    user = scripted(['{"tool": "alphabetize"}'])
    out = build_graph(store=store).invoke({"task": q["input"]}, context=ctx(user))
    info = out["routing"]
    assert info["parser"] == {"word_sorting": True, "alphabetize": True}
    assert info["by"] == "model" and info["asked_model"] is True and info["tool"] == "alphabetize"
    assert out["answer"] == q["target"] and out["tool"]["task_type"] == "alphabetize"
    assert out["usage"]["user"]["calls"] == 1


def test_disagreeing_signals_ask_the_user_model_and_say_so(monkeypatch):
    force_borderline(monkeypatch)
    store = InMemoryStore()
    record = bench_record("word_sorting")
    ToolRepository(store, "default").put(record.model_copy(update={"direct_entry": None}))
    q = bbh("word_sorting")[41]
    user = scripted(['{"tool": "word_sorting"}', user_reply_solve(q["input"])])
    events = list(
        build_graph(store=store).stream(
            {"task": q["input"]}, context=ctx(user), stream_mode=["custom", "values"]
        )
    )
    route = next(e for kind, e in events if kind == "custom" and e.get("event") == "route")
    out = [e for kind, e in events if kind == "values"][-1]
    assert route["asked_model"] is True and route["by"] == "model"
    assert route["tool"] == "word_sorting" and "distance" in route and "margin" in route
    assert out["answer"] == q["target"] and out["usage"]["user"]["calls"] == 2
    assert "word_sorting" in str(user.received[0][-1].content)  # the candidate was shown


def user_reply_solve(question: str) -> str:
    return f"```python\nsolve({question!r})\n```"


def test_route_embedder_auto_falls_back_to_hash_when_the_local_model_is_absent(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("LATM_LOCAL_DIR", str(tmp_path / "none"))
    monkeypatch.setattr(routing, "_EMBEDDERS", {})
    embedder, name = routing.route_embedder("auto")
    assert isinstance(embedder, HashEmbeddings) and name == "hash:256"
    with pytest.raises(ValueError, match="latm local install"):
        routing.route_embedder("local")
    with pytest.raises(ValueError, match="not 'none'"):
        routing.route_embedder("none")


def test_the_dispatch_benchmark_routes_both_dispatchers_on_the_same_questions(tmp_path):
    from latm.bench.dispatch import FirstCandidateModel, questions_for, render, run_protocol

    known, drawn = questions_for(7, 12)
    assert len(known) == 4 and len(drawn) == 12 and len({q for _, q in drawn}) == 12
    user = {"user_llm": FirstCandidateModel()}
    tallies = run_protocol([7], 12, user, tmp_path, "hash")
    assert tallies["llm"].routes == tallies["embedding"].routes == 12
    assert tallies["llm"].calls > tallies["embedding"].calls  # the old one asks on every hit
    table = render(tallies, tallies, {}, {}, {"user": "u", "embedder": "e", "scale": "s"})
    assert "LLM-confirmed (old)" in table and "embedding (new)" in table
