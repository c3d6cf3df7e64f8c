"""The ``latm`` command line.

Each sub-command lives in its own module of this package, which exposes
``register(subparsers)``: it adds its parser and sets ``func`` to a handler
``(args) -> int``. Add the command to ``COMMANDS`` to enable it.

Only the module of the command being run is imported (and with it whatever it
needs); ``latm --help`` lists the commands from ``COMMANDS`` alone, so it
starts without loading LangGraph, the models or the sandbox.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from latm.cli.common import UserError, console, err_console

COMMANDS: dict[str, tuple[str, str]] = {
    "make": ("latm.cli.make", "make a tool from worked examples"),
    "solve": ("latm.cli.solve", "answer a question with a cached tool"),
    "tools": ("latm.cli.tools", "inspect and manage the tool repository"),
    "demo": ("latm.cli.demo", "make a tool for a shipped task and answer held-out questions"),
    "local": ("latm.cli.local", "install and run the key-less local models (llama.cpp)"),
    "doctor": ("latm.cli.doctor", "report the sandbox: which isolation tier runs generated code"),
    "bench": ("latm.cli.bench", "run the paper's benchmark: accuracy, tokens, cost and time"),
    "serve": ("latm.cli.serve", "serve the graph over HTTP (LangServe)"),
    "mcp": ("latm.cli.mcp", "serve the verified tools of a namespace to MCP clients"),
}
"""Each command's module and its one-line help, in the order ``--help`` lists them."""

COMMAND_MODULES = tuple(module for module, _ in COMMANDS.values())

_GLOBAL_WITH_VALUE = ("--store", "--namespace")


def command_in(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (after the global options), if any."""
    skip = False
    for token in argv:
        if skip:
            skip = False
            continue
        if token in _GLOBAL_WITH_VALUE:
            skip = True
            continue
        if token == "--":
            return None
        if not token.startswith("-"):
            return token if token in COMMANDS else None
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Build the top-level parser.

    Args:
        argv: The arguments to be parsed: only the command they name is loaded
            in full; the others get a placeholder that only lists them. ``None``
            loads every command.
    """
    parser = argparse.ArgumentParser(
        prog="latm",
        description="LATM: a strong model makes reusable tools, a cheap model uses them.",
    )
    parser.add_argument(
        "--store",
        metavar="PATH",
        help="tool repository file (SQLite); default: $LATM_STORE_PATH or the user data dir",
    )
    parser.add_argument(
        "--namespace",
        metavar="NAME",
        help="repository namespace (tenant/app); default: $LATM_NAMESPACE or 'default'",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = None if argv is None else command_in(argv)
    for name, (module, summary) in COMMANDS.items():
        if argv is None or name == wanted:
            importlib.import_module(module).register(subparsers)
        else:
            subparsers.add_parser(name, help=summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status (0 ok, 1 failed, 2 usage)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except UserError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__ = ["console", "main"]
