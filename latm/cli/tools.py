"""``latm tools``: list, show, remove and export the repository's tools."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from latm.cli.common import UserError, console, repository_from_args


def register(subparsers: Any) -> None:
    """Add the ``tools`` sub-command group."""
    parser = subparsers.add_parser("tools", help="inspect and manage the tool repository")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="list the tools").set_defaults(func=list_tools)
    show = actions.add_parser("show", help="show one tool: docs, demos, code, verification")
    show.add_argument("task_type")
    show.set_defaults(func=show_tool)
    rm = actions.add_parser("rm", help="remove a tool")
    rm.add_argument("task_type")
    rm.set_defaults(func=remove_tool)
    export = actions.add_parser("export", help="export tools as JSON")
    export.add_argument("task_type", nargs="*", help="tools to export (default: all)")
    export.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    export.set_defaults(func=export_tools)


def list_tools(args: argparse.Namespace) -> int:
    """Print a table of the tools."""
    records = repository_from_args(args).records()
    if not records:
        console.print("no tools yet: make one with 'latm make --examples FILE'")
        return 0
    table = Table()
    table.add_column("task type", no_wrap=True)
    for column in ("version", "function", "maker", "created", "description"):
        table.add_column(column)
    for r in records:
        table.add_row(
            r.task_type,
            str(r.version),
            r.name,
            r.maker_model,
            r.created_at,
            escape(r.description[:80]),
        )
    console.print(table)
    return 0


def _get(args: argparse.Namespace) -> Any:
    record = repository_from_args(args).get(args.task_type)
    if record is None:
        raise UserError(f"no tool named {args.task_type!r} (see 'latm tools list')")
    return record


def show_tool(args: argparse.Namespace) -> int:
    """Print one tool in full."""
    r = _get(args)
    console.print(f"[bold]{r.task_type}[/] v{r.version} — {escape(r.description)}")
    console.print(f"[dim]made by {r.maker_model} at {r.created_at}[/]\n")
    console.print(Syntax(r.code, "python", line_numbers=False))
    console.print("[bold]Usage demos[/]")
    for d in r.demos:
        console.print(
            f"  Q: {escape(d.question[:200])}\n  → {escape(d.call[:200])} = {escape(d.answer)!r}"
        )
    passed = sum(c["passed"] for c in r.verification)
    console.print(f"[bold]Verification[/]: {passed}/{len(r.verification)} passed")
    return 0


def remove_tool(args: argparse.Namespace) -> int:
    """Delete one tool."""
    if not repository_from_args(args).delete(args.task_type):
        raise UserError(f"no tool named {args.task_type!r} (see 'latm tools list')")
    console.print(f"removed {args.task_type}")
    return 0


def export_tools(args: argparse.Namespace) -> int:
    """Write tools as a JSON document ``{"tools": [...]}``."""
    repo = repository_from_args(args)
    if args.task_type:
        records = []
        for name in args.task_type:
            record = repo.get(name)
            if record is None:
                raise UserError(f"no tool named {name!r} (see 'latm tools list')")
            records.append(record)
    else:
        records = repo.records()
    text = json.dumps({"tools": [r.model_dump(mode="json") for r in records]}, indent=2)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
        except OSError as exc:
            raise UserError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
        console.print(f"exported {len(records)} tool(s) to {args.output}")
    else:
        sys.stdout.write(text + "\n")
    return 0
