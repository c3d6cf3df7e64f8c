"""``latm mcp``: serve the verified tools of a namespace to MCP clients (stdio or HTTP)."""

from __future__ import annotations

import argparse
from typing import Any

from latm.cli.common import UserError, context_from_args, err_console, repository_from_args

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def register(subparsers: Any) -> None:
    """Add the ``mcp`` sub-command."""
    parser = subparsers.add_parser(
        "mcp",
        help="serve the verified tools of a namespace to MCP clients (stdio or HTTP)",
        description="An MCP server that lists the verified tools of the repository namespace "
        "(--namespace) and runs their calls in the sandbox. With --transport stdio (the "
        "default) an MCP client starts it and talks over stdin/stdout; with --transport http it "
        "serves streamable HTTP at http://HOST:PORT/mcp on a loopback address (there is no "
        "authentication). Needs the 'mcp' extra.",
    )
    parser.add_argument(
        "--transport",
        choices=("stdio", "http"),
        default="stdio",
        help="stdio (default) or http (streamable HTTP)",
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"loopback address for http (default {DEFAULT_HOST})"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port for http (default {DEFAULT_PORT})"
    )
    parser.add_argument("--path", default="/mcp", help="endpoint path for http (default /mcp)")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Start the server and serve until the client leaves (stdio) or interrupted (http)."""
    if not 0 < args.port < 65536:
        raise UserError("--port must be between 1 and 65535")
    if not str(args.path).startswith("/"):
        raise UserError("--path must start with '/'")
    try:
        import anyio

        # lazy: `latm --help` loads no graph, store or model code
        from latm.integrations import mcp as latm_mcp
    except ImportError as exc:
        raise UserError(
            f"the MCP server needs the 'mcp' extra: pip install 'latm[mcp]' ({exc})"
        ) from exc
    if args.transport == "http":
        try:
            latm_mcp.check_loopback(args.host)
        except latm_mcp.MCPSetupError as exc:
            raise UserError(str(exc)) from exc
    ctx = context_from_args(args)
    repository = repository_from_args(args)
    server = latm_mcp.build_server(latm_mcp.ToolService(repository, context=ctx))
    if args.transport == "stdio":
        err_console.print(f"[bold]LATM[/] MCP server on stdio, namespace {ctx.namespace!r}")
        anyio.run(latm_mcp.serve_stdio, server)
        return 0
    host = f"[{args.host}]" if ":" in args.host else args.host
    err_console.print(
        f"[bold]LATM[/] MCP server at http://{host}:{args.port}{args.path}, "
        f"namespace {ctx.namespace!r}"
    )
    anyio.run(latm_mcp.serve_http, server, args.host, args.port, args.path)
    return 0
