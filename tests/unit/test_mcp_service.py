"""The MCP server's tool service, through the real MCP client connected in process."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from langgraph.store.memory import InMemoryStore
from mcp import Client

from latm.graph.context import Context
from latm.integrations.mcp import MCPSetupError, ToolService, build_server, check_loopback
from latm.repository import ToolRepository

from .made_tools import SCALE_CODE, store_examples, store_tool


@pytest.fixture
def repo() -> ToolRepository:
    repository = ToolRepository(InMemoryStore(), "acme")
    store_examples(repository)
    return repository


def session_run(service: ToolService, steps: Any) -> Any:
    async def main() -> Any:
        async with Client(build_server(service)) as client:
            return await steps(client)

    return anyio.run(main)


def test_listing_follows_the_repository(repo):
    service = ToolService(repo, context=Context(exec_timeout_s=2.0, max_tool_failures=1))

    async def steps(client: Any) -> list[list[str]]:
        seen = [sorted(t.name for t in (await client.list_tools()).tools)]
        store_tool(repo, "new_scaling", SCALE_CODE, "scale")  # made since: listed
        repo.record_use(repo.get("hostile"), "error", "boom")  # retired: gone
        seen.append(sorted(t.name for t in (await client.list_tools()).tools))
        return seen

    first, second = session_run(service, steps)
    assert first == ["hostile", "scaling", "word_sorting"]
    assert second == ["new_scaling", "scaling", "word_sorting"]


def test_calls_run_sandboxed_and_fail_as_tool_errors(repo):
    service = ToolService(repo, context=Context(exec_timeout_s=2.0))

    async def steps(client: Any) -> list[Any]:
        return [
            await client.call_tool("scaling", {"values": [2], "factor": 3, "label": "x"}),
            await client.call_tool("hostile", {"action": "die"}),
            await client.call_tool("scaling", {"values": [2]}),
            await client.call_tool("unverified", {"words": ["a"]}),
        ]

    ok, died, missing, unverified = session_run(service, steps)
    assert not ok.is_error and ok.content[0].text == "x: 6.0"
    assert died.is_error and "tool hostile (v1) failed" in died.content[0].text
    assert missing.is_error and "factor: Field required" in missing.content[0].text
    assert (
        unverified.is_error and "no verified tool named 'unverified'" in unverified.content[0].text
    )


class FailingStore(InMemoryStore):
    """A store whose every operation fails once ``broken`` is set (the database went away)."""

    broken = False

    def batch(self, ops: Any) -> Any:
        if self.broken:
            raise RuntimeError("database is gone")
        return super().batch(ops)


def test_a_failing_store_is_a_tool_error():
    store = FailingStore()
    repo = ToolRepository(store, "acme")
    store_examples(repo)
    service = ToolService(repo, context=Context(exec_timeout_s=2.0))
    assert not service.call_tool("word_sorting", {"words": ["b", "a"]}).is_error
    store.broken = True
    result = service.call_tool("word_sorting", {"words": ["a"]})
    assert result.is_error and "cannot read the tool repository" in result.content[0].text


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_hosts_are_accepted(host):
    check_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::"])
def test_other_hosts_are_refused(host):
    with pytest.raises(MCPSetupError, match="no authentication"):
        check_loopback(host)


def test_the_cli_loads_no_mcp_code_until_the_command_runs():
    import subprocess
    import sys

    code = (
        "import sys; from latm.cli import build_parser; build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mcp', 'mcp_types') "
        "or m.startswith('latm.integrations')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
