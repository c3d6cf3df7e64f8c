"""``latm serve --langserve``: the graph as a REST API (LangServe on FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
from typing import Any

from latm.cli.common import UserError, context_from_args, err_console

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def register(subparsers: Any) -> None:
    """Add the ``serve`` sub-command."""
    parser = subparsers.add_parser(
        "serve",
        help="serve the graph over HTTP (LangServe)",
        description="Serve LATM as a stateless REST API with LangServe: POST /latm/invoke, "
        "/latm/batch and /latm/stream (progress events, then the output), a playground at "
        "/latm/playground/ and GET /healthz. Tools are kept in LATM_DATABASE_URL's database, "
        "else the local repository (--store). For threads, human approval and LangGraph "
        "Studio run 'langgraph dev' in the repository instead.",
    )
    parser.add_argument(
        "--langserve",
        action="store_true",
        help="serve with LangServe (FastAPI + uvicorn); the only server this command runs",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address (default {DEFAULT_HOST})")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="uvicorn's log level (default info)",
    )
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Build the app and run uvicorn until interrupted."""
    # lazy: `latm --help` loads no graph, store or model code
    from latm.auth import API_KEYS_ENV, load_api_keys
    from latm.backends import backend_for
    from latm.cli import run as cli_run

    if not args.langserve:
        raise UserError(
            "say which server: 'latm serve --langserve' for the stateless REST API; "
            "for the LangGraph server (threads, streaming, human approval, Studio) run "
            "'langgraph dev' in the repository"
        )
    if not 0 < args.port < 65536:
        raise UserError("--port must be between 1 and 65535")
    try:
        import uvicorn

        # lazy: `latm --help` loads no graph, store or model code
        from latm.server import create_app
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise UserError(
            f"the server needs the 'server' extra: pip install 'latm[server]' ({exc})"
        ) from exc
    ctx = cli_run.configure_models(context_from_args(args))
    try:
        app = create_app(ctx)
    except ImportError as exc:  # fastapi or langserve missing
        raise UserError(
            f"the server needs the 'server' extra: pip install 'latm[server]' ({exc})"
        ) from exc
    except ValueError as exc:  # human approval asked of a stateless server, a dead database
        raise UserError(str(exc)) from exc
    backend = backend_for(ctx)  # opened (once per process) by create_app
    # create_app read LATM_API_KEYS already (a malformed value stopped it)
    tenants = sorted(set(load_api_keys().values()))
    where = (
        f"one namespace per API key's tenant ({', '.join(map(repr, tenants))})"
        if tenants
        else f"namespace {ctx.namespace!r} (no {API_KEYS_ENV}: every caller shares it)"
    )
    err_console.print(
        f"[bold]LATM[/] LangServe at http://{args.host}:{args.port}/latm "
        f"(playground: /latm/playground/, health: /healthz); "
        f"tools in {backend.kind} {backend.where}, {where}"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
