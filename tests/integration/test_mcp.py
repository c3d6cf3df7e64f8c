"""``latm mcp`` with the real MCP client library: over stdio and over streamable HTTP.

The server runs as a subprocess on a SQLite repository that holds verified tools
(stored directly), and calls run in LATM's real sandbox.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from latm.backends import open_local_store
from latm.repository import ToolRepository

from ..unit.made_tools import SCALE_CODE, store_examples, store_tool
from .conftest import ROOT, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mcp") / "tools.sqlite"
    store = open_local_store(path)
    store_examples(ToolRepository(store, "acme"))
    store_tool(ToolRepository(store, "other"), "their_tool", SCALE_CODE, "scale")
    return path


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LATM_", "OPENAI_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["LATM_EXEC_TIMEOUT_S"] = "1"
    return env


def argv(store_file: Path, *extra: str) -> list[str]:
    return ["-m", "latm", "--store", str(store_file), "--namespace", "acme", "mcp", *extra]


async def exercise(session: ClientSession) -> dict[str, Any]:
    """List the tools and make a good, a failing and an invalid call."""
    await session.initialize()
    listed = await session.list_tools()
    tools = {t.name: t for t in listed.tools}
    good = await session.call_tool("word_sorting", {"words": ["pear", "fig", "apple"]})
    raising = await session.call_tool("hostile", {"action": "raise"})
    looping = await session.call_tool("hostile", {"action": "loop"})
    invalid = await session.call_tool("word_sorting", {"words": 3})
    unknown = await session.call_tool("their_tool", {"values": [1], "factor": 2})
    pid = await session.call_tool("hostile", {"action": "pid"})
    return {
        "tools": tools,
        "good": good,
        "raising": raising,
        "looping": looping,
        "invalid": invalid,
        "unknown": unknown,
        "pid": pid,
    }


def check(out: dict[str, Any], server_pid: int | None = None) -> None:
    tools = out["tools"]
    assert sorted(tools) == ["hostile", "scaling", "word_sorting"]  # verified, this namespace
    sort = tools["word_sorting"]
    assert sort.input_schema["properties"]["words"]["items"] == {"type": "string"}
    assert sort.input_schema["required"] == ["words"]
    assert "sort_words(['pear', 'apple'])" in (sort.description or "")
    assert tools["scaling"].input_schema["properties"]["factor"]["description"]

    good = out["good"]
    assert not good.is_error and good.content[0].text == "apple fig pear"
    raising = out["raising"]
    assert raising.is_error and "ValueError: the tool refuses" in raising.content[0].text
    assert out["looping"].is_error and "timeout" in out["looping"].content[0].text
    invalid = out["invalid"]
    assert invalid.is_error and "invalid arguments for tool word_sorting" in invalid.content[0].text
    unknown = out["unknown"]
    assert unknown.is_error and "no verified tool named 'their_tool'" in unknown.content[0].text
    pid = out["pid"]
    assert not pid.is_error and int(pid.content[0].text) != server_pid


def test_stdio_lists_and_calls_the_namespaces_tools(store_file: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=argv(store_file), env=server_env(), cwd=str(ROOT)
    )

    async def main() -> dict[str, Any]:
        with open(os.devnull, "w") as errlog:
            async with (
                stdio_client(params, errlog=errlog) as (read, write),
                ClientSession(read, write) as session,
            ):
                return await exercise(session)

    check(anyio.run(main))


@pytest.fixture
def http_server(store_file: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, *argv(store_file, "--transport", "http", "--port", str(port))],
        env=server_env(),
        cwd=str(ROOT),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"latm mcp exited: {err}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("latm mcp did not listen in 60 s")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp", proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def test_streamable_http_lists_and_calls_the_namespaces_tools(http_server) -> None:
    url, proc = http_server

    async def main() -> dict[str, Any]:
        async with (
            streamable_http_client(url) as (read, write),
            ClientSession(read, write) as session,
        ):
            return await exercise(session)

    check(anyio.run(main), server_pid=proc.pid)


def test_http_refuses_another_sites_origin(http_server) -> None:
    """DNS-rebinding protection: a browser page of another origin cannot call the tools."""
    url, _ = http_server
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Accept": "application/json, text/event-stream", "Origin": "http://evil.example"}
    response = httpx.post(url, json=body, headers=headers, timeout=10)
    assert response.status_code in (400, 403), response.text


def test_http_refuses_a_non_loopback_address(store_file: Path) -> None:
    proc = subprocess.run(
        [sys.executable, *argv(store_file, "--transport", "http", "--host", "0.0.0.0")],
        env=server_env(),
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "loopback address only" in " ".join(proc.stderr.split())
