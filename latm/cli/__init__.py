"""The ``latm`` command line.

Each sub-command lives in its own module of this package, which exposes
``register(subparsers)``: it adds its parser and sets ``func`` to a handler
``(args) -> int``. Add a module's name to ``COMMAND_MODULES`` to enable it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from latm.cli.common import UserError, console, err_console

COMMAND_MODULES = (
    "latm.cli.make",
    "latm.cli.solve",
    "latm.cli.tools",
    "latm.cli.demo",
    "latm.cli.local",
    "latm.cli.doctor",
    "latm.cli.bench",
    "latm.cli.serve",
    "latm.cli.mcp",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every registered sub-command."""
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
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status (0 ok, 1 failed, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except UserError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__ = ["console", "main"]
