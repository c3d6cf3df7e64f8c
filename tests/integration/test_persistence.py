"""Persistence and scale-out on real backends: SQLite files and a PostgreSQL server.

Concurrent makers and crash recovery run in real child processes
(:mod:`.persistence_child`); PostgreSQL runs on a free loopback port (``postgres``
fixture). Models are scripted; generated code runs in LATM's sandbox.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from latm.backends import open_backend
from latm.graph import Context
from latm.graph.builder import build_graph
from latm.graph.context import PAPER
from latm.repository import ToolRepository
from tests.unit.scripted import SORT_CODE, bbh, maker_reply, scripted, user_reply

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = bbh("word_sorting")
VALIDATION_QS = [e["input"] for e in EXAMPLES[3:6]]


def child(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LATM_", "OPENAI_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.persistence_child", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """``(database_url, store_path)`` of an empty repository on each backend."""
    if request.param == "sqlite":
        return "", str(tmp_path / "tools.sqlite")
    return request.getfixturevalue("pg_url"), str(tmp_path / "unused.sqlite")


def repository(url: str, path: str) -> ToolRepository:
    backend = open_backend(url, store_path=path, embeddings="hash:64" if url else "")
    return ToolRepository(backend.store, "default")


def ctx(maker: Any = None, user: Any = None, **kwargs: Any) -> Context:
    settings = {
        **PAPER,
        "exec_timeout_s": 5.0,
        "max_retries": 0,
        "route_embeddings": "hash",  # the same whether or not the local model is installed
        **kwargs,
    }
    return Context(maker_llm=maker or scripted([]), user_llm=user or scripted([]), **settings)


def test_eight_concurrent_processes_make_exactly_one_tool(backend_url):
    url, path = backend_url
    procs = [child("make", url, path, "8") for _ in range(8)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    calls = Path(path + ".calls").read_text().splitlines()
    assert len(calls) == 1, "the maker was called by more than one process"
    assert [r["error"] for r in results] == [None] * 8
    assert {r["answer"] for r in results} == {EXAMPLES[20]["target"]}
    assert sum(not r["cache_hit"] for r in results) == 1
    repo = repository(url, path)
    assert [r.version for r in repo.versions("word_sorting")] == [1]
    assert repo.store.search(("latm", "default", "leases"), limit=10) == []


def test_a_run_killed_between_verify_and_wrap_resumes_without_the_maker(backend_url):
    url, path = backend_url
    proc = child("durable", url, path, "thread-1")
    assert proc.stdout is not None
    deadline = time.monotonic() + 180
    line = ""
    while time.monotonic() < deadline and proc.poll() is None:
        line = proc.stdout.readline().strip()
        if line == "VERIFIED":
            break
    assert line == "VERIFIED", proc.stderr.read() if proc.stderr else ""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    repo = repository(url, path)
    assert repo.get("word_sorting") is None  # killed before wrap stored anything
    assert len(repo.store.search(("latm", "default", "leases"), limit=10)) == 1  # still held

    resumed = child("resume", url, path, "thread-1")
    out, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["error"] is None and result["answer"] == EXAMPLES[20]["target"]
    assert result["maker_calls"] == 0
    assert result["nodes"] == ["wrap", "use"]  # from the last finished node on
    assert [r.version for r in repo.versions("word_sorting")] == [1]
    assert repo.store.search(("latm", "default", "leases"), limit=10) == []  # released by wrap


def test_pgvector_index_drives_the_dispatchers_search(pg_url, postgres):
    if not postgres.has_vector:
        pytest.fail("pgvector is not installed on the PostgreSQL server: run .ci/postgres-setup.sh")
    backend = open_backend(pg_url, embeddings="hash:64")
    assert backend.kind == "postgres" and backend.semantic
    app = build_graph(store=backend.store)
    out = app.invoke(
        {"examples": EXAMPLES[:6], "task_type": "word_sorting"},
        context=ctx(scripted([maker_reply(SORT_CODE, VALIDATION_QS)])),
    )
    assert out["error"] is None
    repo = ToolRepository(backend.store, "default")
    items = backend.store.search(repo.namespace, query="sort these words", limit=3)
    assert items and all(item.score is not None for item in items)  # scored by pgvector
    question = EXAMPLES[40]
    user = scripted(['{"tool": "word_sorting"}', user_reply(question["input"])])
    out = app.invoke({"task": question["input"]}, context=ctx(user=user, dispatch="llm"))
    assert out["cache_hit"] is True and out["answer"] == question["target"]
    assert "word_sorting" in user.prompts[0]


def test_the_embedding_dispatcher_keeps_its_vectors_in_postgres(pg_url):
    backend = open_backend(pg_url, embeddings="hash:64")
    app = build_graph(store=backend.store)
    out = app.invoke(
        {"examples": EXAMPLES[:6], "task_type": "word_sorting"},
        context=ctx(scripted([maker_reply(SORT_CODE, VALIDATION_QS)])),
    )
    assert out["error"] is None
    question = EXAMPLES[41]
    user = scripted([user_reply(question["input"])])  # the use node's call only
    out = app.invoke({"task": question["input"]}, context=ctx(user=user))
    assert out["cache_hit"] is True and out["answer"] == question["target"]
    assert out["routing"]["by"] == "embedding" and out["routing"]["asked_model"] is False
    item = ToolRepository(backend.store, "default").route_item("word_sorting")
    assert item is not None and item["embedder"] == "hash:256" and item["count"] == 3


def test_threads_on_postgres_make_one_tool_and_count_every_use(pg_url):
    from concurrent.futures import ThreadPoolExecutor

    backend = open_backend(pg_url, embeddings="hash:64")
    app = build_graph(store=backend.store, checkpointer=backend.checkpointer())
    maker = scripted([maker_reply(SORT_CODE, VALIDATION_QS)])
    questions = [EXAMPLES[50 + i] for i in range(8)]
    user = scripted([user_reply(q["input"]) for q in questions] * 2)
    context = ctx(maker, user, lease_wait_s=120)

    def run(i: int) -> dict[str, Any]:
        q = questions[i]
        return app.invoke(
            {"task": q["input"], "examples": EXAMPLES[:6], "task_type": "word_sorting"},
            {"configurable": {"thread_id": f"t{i}"}},
            context=context,
        )

    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(run, range(8)))
    assert len(maker.received) == 1
    assert [o["error"] for o in outs] == [None] * 8
    repo = ToolRepository(backend.store, "default")
    assert repo.stats("word_sorting", 1).calls == 8
    assert [r.version for r in repo.versions("word_sorting")] == [1]


def test_a_database_that_goes_away_mid_run_ends_it_cleanly_and_comes_back(postgres):
    from .pgcluster import PgCluster

    cluster = PgCluster(postgres.bin).start()
    try:
        url = cluster.new_database()
        backend = open_backend(url, embeddings="hash:64")
        app = build_graph(store=backend.store)
        assert (
            app.invoke(
                {"examples": EXAMPLES[:6], "task_type": "word_sorting"},
                context=ctx(scripted([maker_reply(SORT_CODE, VALIDATION_QS)])),
            )["error"]
            is None
        )
        # The server dies while the maker writes a new version.
        maker = scripted([maker_reply(SORT_CODE, VALIDATION_QS)])
        reply = maker._generate

        def crash_then_reply(*args: Any, **kwargs: Any) -> Any:
            cluster.stop("immediate")
            return reply(*args, **kwargs)

        object.__setattr__(maker, "_generate", crash_then_reply)
        started = time.monotonic()
        out = app.invoke(
            {"examples": EXAMPLES[:6], "task_type": "word_sorting", "make": True},
            context=ctx(maker),
        )
        assert out["error"].startswith("the tool repository is unavailable")
        assert time.monotonic() - started < 60
        # A request while it is down: a clear error, not a traceback.
        out = app.invoke(
            {"task": EXAMPLES[20]["input"], "task_type": "word_sorting"}, context=ctx()
        )
        assert out["error"].startswith("the tool repository is unavailable (reading tool")
        # Back up: the stored tool answers again, once the connection pool has
        # reconnected (psycopg's pool backs off up to 10 s between attempts).
        cluster.start()
        q = EXAMPLES[21]
        deadline = time.monotonic() + 60
        while True:
            out = app.invoke(
                {"task": q["input"], "task_type": "word_sorting"},
                context=ctx(user=scripted([user_reply(q["input"])])),
            )
            if out["error"] is None or time.monotonic() > deadline:
                break
            assert out["error"].startswith("the tool repository is unavailable")
            time.sleep(1)
        assert out["error"] is None and out["answer"] == q["target"]
        backend.close()
    finally:
        cluster.remove()


def test_the_load_script_drives_the_langgraph_server_without_losses(capsys):
    from latm.bench import load

    argv = ["--requests", "24", "--concurrency", "8", "--makers", "4", "--llm", "4"]
    assert load.main(argv) == 0
    out = capsys.readouterr().out
    assert "hit/direct" in out and "p99 ms" in out and "FAIL" not in out
    assert "ok  maker called once (1)" in out
    assert "ok  every request answered (32/32)" in out
