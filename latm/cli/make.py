"""``latm make``: make (propose, verify, wrap) a tool from a file of worked examples."""

from __future__ import annotations

import argparse
from typing import Any

from latm.cli.common import (
    UserError,
    context_from_args,
    load_examples,
    repository_from_args,
    task_type_from_path,
)


def register(subparsers: Any) -> None:
    """Add the ``make`` sub-command."""
    parser = subparsers.add_parser(
        "make",
        help="make a tool from worked examples",
        description="Make a verified tool from a JSON/JSONL file of {input, target} examples: "
        "the first 3 are shown to the maker, the next 3 verify its tool.",
    )
    parser.add_argument("--examples", required=True, metavar="FILE", help="examples file")
    parser.add_argument(
        "--task-type", metavar="NAME", help="name of the task type (default: the file's name)"
    )
    parser.add_argument(
        "--force", action="store_true", help="make a new version even if the task type has a tool"
    )
    parser.add_argument("--max-attempts", type=int, metavar="N", help="maker attempts (default 3)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Make the tool and report what happened."""
    # lazy: `latm --help` loads no graph, store or model code
    from latm.cli import run as cli_run
    from latm.nodes.dispatcher import check_task_type
    from latm.repository import RepositoryError

    examples = load_examples(args.examples)
    task_type = args.task_type or task_type_from_path(args.examples)
    if problem := check_task_type(task_type):
        raise UserError(f"task type {task_type!r}: " + problem.replace("'task_type' ", ""))
    try:
        existing = repository_from_args(args).get(task_type)
    except RepositoryError as exc:
        raise UserError(str(exc)) from exc
    if existing and not args.force:
        raise UserError(
            f"a tool for {task_type!r} exists (v{existing.version}); "
            "pass --force to make a new version"
        )
    overrides = {"max_attempts": args.max_attempts} if args.max_attempts is not None else {}
    ctx = cli_run.configure_models(context_from_args(args, **overrides))
    output = cli_run.run_graph({"examples": examples, "task_type": task_type, "make": True}, ctx)
    return cli_run.print_result(output, as_json=args.json)
