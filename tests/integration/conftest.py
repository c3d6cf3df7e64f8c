"""Fixtures for integration tests: real servers on free ports of 127.0.0.1.

Models: a scripted OpenAI-compatible server (:mod:`.fake_openai`) in the test
process; the servers under test reach it over HTTP through
``LATM_MAKER_BASE_URL``/``LATM_USER_BASE_URL``. Generated code runs in LATM's
real sandbox. Every server is started and stopped by its fixture.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def executable(name: str) -> str:
    """A console script of this environment (next to the running Python first)."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: install the project with its 'server' extra")
    return found


def server_env(fake: FakeOpenAI, tmp: Path) -> dict[str, str]:
    """The environment of a server under test: scripted models, no key, no telemetry."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LATM_", "LANGSMITH_", "LANGCHAIN_", "OPENAI_"))
    }
    env.update(
        LATM_MAKER_BASE_URL=fake.base_url("maker"),
        LATM_USER_BASE_URL=fake.base_url("user"),
        LATM_MAKER_MODEL="scripted-maker",
        LATM_USER_MODEL="scripted-user",
        LATM_MAX_RETRIES="0",
        # The paper's settings (latm.graph.context.PAPER): one proposal per round and the
        # user model writing every call, so that the scripted replies line up.
        LATM_N_CANDIDATES="1",
        LATM_DIRECT_ENTRY="0",
        LATM_REJECT_HARDCODED="0",
        LATM_TWO_STEP="0",
        LATM_REQUEST_TIMEOUT_S="30",
        LATM_ROUTE_EMBEDDINGS="hash",  # the same whether or not the local model is installed
        LATM_STORE_PATH=str(tmp / "tools.sqlite"),
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGGRAPH_NO_VERSION_CHECK="true",
        LANGSMITH_TRACING="false",
        NO_PROXY="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
    )
    # The servers import the checkout under test, whichever way it is installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


TENANTS = 32
"""API keys the LangGraph server under test accepts: one tenant per test that needs one."""


def tenant_keys(n: int = TENANTS) -> dict[str, str]:
    """``n`` fresh tenants and their API keys."""
    return {f"tenant{i:02d}-{secrets.token_hex(3)}": secrets.token_urlsafe(24) for i in range(n)}


class ServerProcess:
    """A server started as its own process group, with its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, url: str) -> None:
        self.url = url
        self.env = env
        self._tenants = iter(
            entry.split(":", 1) for entry in filter(None, env.get("LATM_API_KEYS", "").split(","))
        )
        self.store_path = cwd / "tools.sqlite"
        self.log = cwd / "server.log"
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, path: str, timeout_s: float = 90.0) -> None:
        """Poll ``path`` until it answers 200; fail with the log if the server dies or hangs."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        pytest.fail(f"the server did not answer {path} within {timeout_s} s:\n{self.tail()}")

    def new_tenant(self) -> tuple[str, str]:
        """A tenant no other test has used, and its API key."""
        tenant, key = next(self._tenants)
        return tenant, key

    def tail(self, n: int = 60) -> str:
        """The last lines the server printed."""
        if not self._out.closed:
            self._out.flush()
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after 15 s."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._out.close()


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(fake_openai: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """The scripted model server, emptied before and after each test."""
    fake_openai.reset()
    yield fake_openai
    fake_openai.reset()


def _here(spec: str | dict[str, Any]) -> str | dict[str, Any]:
    """A graph entry of ``langgraph.json`` with its path made absolute (into this checkout)."""
    if isinstance(spec, str):
        return str(ROOT / spec.removeprefix("./"))
    return {**spec, "path": str(ROOT / spec["path"].removeprefix("./"))}


@pytest.fixture(scope="session")
def langgraph_server(
    fake_openai: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """``langgraph dev`` serving the repository's ``langgraph.json``.

    It runs in a scratch directory (its ``.langgraph_api/`` goes there) with a
    copy of the config whose paths point at this checkout, plus a semantic
    index over the tool repository built on a small local embedding function
    (``hash_embed.py``), as a user would configure one. Its authentication is
    the repository's example (``latm.server.auth``) with :data:`TENANTS` API
    keys in ``LATM_API_KEYS``; each test takes its own tenant (``new_tenant``).
    """
    work = tmp_path_factory.mktemp("langgraph-dev")
    config = json.loads((ROOT / "langgraph.json").read_text())
    config["dependencies"] = [str(ROOT)]
    config["graphs"] = {name: _here(spec) for name, spec in config["graphs"].items()}
    config["store"] = {
        "index": {
            "embed": f"{Path(__file__).parent / 'hash_embed.py'}:embed",
            "dims": 64,
            "fields": ["search_text"],
        }
    }
    (work / "langgraph.json").write_text(json.dumps(config, indent=2))
    port = free_port()
    argv = [
        executable("langgraph"),
        "dev",
        "--no-browser",
        "--no-reload",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--config",
        str(work / "langgraph.json"),
    ]
    env = server_env(fake_openai, work)
    env["LATM_API_KEYS"] = ",".join(f"{t}:{k}" for t, k in tenant_keys().items())
    server = ServerProcess(argv, env, work, f"http://127.0.0.1:{port}")
    try:
        server.wait_ready("/ok")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def langserve_server(
    fake_openai: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """``latm serve --langserve`` (uvicorn) with its own SQLite tool repository."""
    work = tmp_path_factory.mktemp("langserve")
    port = free_port()
    argv = [
        executable("latm"),
        "--store",
        str(work / "tools.sqlite"),
        "serve",
        "--langserve",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    server = ServerProcess(argv, server_env(fake_openai, work), work, f"http://127.0.0.1:{port}")
    try:
        server.wait_ready("/healthz")
        yield server
    finally:
        server.stop()


# --- PostgreSQL for the persistence tests (tests/integration/pgcluster.py) ---------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """A PostgreSQL server (with pgvector when installed) on a free port of 127.0.0.1.

    Skips only when the server binaries are absent (``.ci/postgres-setup.sh`` installs them).
    """
    from .pgcluster import PgCluster, find_bin

    bin_dir = find_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries are not installed (run .ci/postgres-setup.sh)")
    cluster = PgCluster(bin_dir).start()
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def pg_url(postgres: Any) -> str:
    """The URL of a fresh database on the session's PostgreSQL server."""
    return str(postgres.new_database())
