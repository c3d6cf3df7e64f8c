"""An MCP server that lists and calls the verified tools of one repository namespace.

``latm mcp`` serves it over stdio (for desktop assistants that start it) or
streamable HTTP on a loopback address. Each ``tools/list`` reads the repository
afresh (a tool made since is listed; a retired one is not), each ``tools/call``
validates the arguments against the tool's signature and runs the call in the
sandbox executor, off the event loop. Failures come back as tool results with
``isError: true`` and a clear message, never as protocol errors that leak
generated code's output. Needs the ``mcp`` extra.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server
from pydantic import ValidationError

from latm import __version__
from latm.graph.context import Context
from latm.integrations.tools import (
    ToolRunner,
    ToolSpec,
    build_specs,
    exposed_records,
    is_verified,
    tool_name,
)
from latm.repository import ToolRepository
from latm.sandbox import ExecLimits, Executor
from latm.usage import retired

LOOPBACK_NAMES = ("localhost",)
"""Host names accepted as loopback besides loopback IP addresses."""


class MCPSetupError(ValueError):
    """The server cannot be started as asked (the message says why)."""


def check_loopback(host: str) -> None:
    """Refuse a non-loopback address: the server has no authentication.

    Raises:
        MCPSetupError: ``host`` is not a loopback address.
    """
    if host in LOOPBACK_NAMES:
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise MCPSetupError(
        f"refusing to serve MCP on {host!r}: the server has no authentication, so it listens on "
        "a loopback address only (127.0.0.1, ::1 or localhost); put an authenticating proxy in "
        "front of it to reach it from elsewhere"
    )


class ToolService:
    """The verified tools of a namespace, listed and called for MCP clients."""

    def __init__(
        self,
        repository: ToolRepository,
        *,
        context: Context | None = None,
        executor: Executor | None = None,
        limits: ExecLimits | None = None,
    ) -> None:
        """Set the service up.

        Args:
            repository: The repository; only its namespace's tools are served.
            context: Settings (executor, limits, retirement); default: the environment's.
            executor: The executor that runs calls (default: the context's sandbox).
            limits: Limits of one call (default: the context's).
        """
        self.repository = repository
        self.context = context or Context()
        self.runner = ToolRunner(self.context, executor, limits)

    def specs(self) -> list[ToolSpec]:
        """The tools served right now (read from the repository)."""
        return build_specs(exposed_records(self.repository, self.context), self.repository.tenant)

    def list_tools(self) -> list[types.Tool]:
        """The MCP descriptions of the tools served."""
        return [
            types.Tool(
                name=spec.name,
                title=spec.record.task_type.replace("_", " "),
                description=spec.description,
                input_schema=spec.json_schema(),
                annotations=types.ToolAnnotations(
                    read_only_hint=True,
                    destructive_hint=False,
                    idempotent_hint=True,
                    open_world_hint=False,
                ),
            )
            for spec in self.specs()
        ]

    def find(self, name: str) -> ToolSpec | None:
        """The served tool of that name (the latest verified, unretired version), or ``None``.

        Raises:
            RepositoryError: The store failed.
        """
        record = self.repository.get(name)  # a tool is named after its task type
        if (
            record is not None
            and record.task_type == name == tool_name(record)  # it keeps its own name
            and is_verified(record)
            and retired(self.repository, record, self.context) is None
        ):
            found = build_specs([record], self.repository.tenant)
            return found[0] if found else None
        return next((s for s in self.specs() if s.name == name), None)

    def call_tool(self, name: str, arguments: dict[str, Any] | None) -> types.CallToolResult:
        """Validate and run one call; every failure is a result with ``is_error``."""
        try:
            spec = self.find(name)
        except Exception as exc:  # the store failed
            return _error(f"cannot read the tool repository: {type(exc).__name__}: {exc}")
        if spec is None:
            return _error(
                f"no verified tool named {name!r} in namespace {self.repository.tenant!r}"
            )
        try:
            model = spec.args_model.model_validate(arguments or {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
                for err in exc.errors()[:5]
            )
            return _error(f"invalid arguments for tool {name}: {problems}")
        given = {field: getattr(model, field) for field in model.model_fields_set}
        outcome = self.runner.call(spec, given)
        text = types.TextContent(text=outcome.text)
        return types.CallToolResult(content=[text], is_error=not outcome.ok)


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=message)], is_error=True)


def build_server(service: ToolService, *, name: str = "latm") -> Server[Any]:
    """The MCP server (low-level API) over a tool service.

    Repository reads and tool calls run in worker threads, so one slow tool
    does not hold up other requests.
    """

    async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> Any:
        tools = await anyio.to_thread.run_sync(service.list_tools)
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> Any:
        return await anyio.to_thread.run_sync(service.call_tool, params.name, params.arguments)

    return Server(
        name,
        version=__version__,
        instructions=(
            "Tools made and verified by LATM for the namespace "
            f"{service.repository.tenant!r}. Each tool solves one kind of task; its description "
            "shows example questions and calls. Tools run sandboxed and change nothing."
        ),
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def serve_stdio(server: Server[Any]) -> None:
    """Serve over the process's stdin and stdout until the client closes them."""
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def http_app(server: Server[Any], host: str = "127.0.0.1", path: str = "/mcp") -> Any:
    """The streamable-HTTP ASGI app (DNS-rebinding protection on for loopback hosts).

    Raises:
        MCPSetupError: ``host`` is not a loopback address.
    """
    check_loopback(host)
    return server.streamable_http_app(streamable_http_path=path, host=host)


async def serve_http(
    server: Server[Any], host: str = "127.0.0.1", port: int = 8765, path: str = "/mcp"
) -> None:
    """Serve streamable HTTP with uvicorn on a loopback address until stopped.

    Raises:
        MCPSetupError: ``host`` is not a loopback address.
    """
    import uvicorn

    app = http_app(server, host, path)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve()


__all__ = [
    "MCPSetupError",
    "ToolService",
    "build_server",
    "check_loopback",
    "http_app",
    "serve_http",
    "serve_stdio",
]
