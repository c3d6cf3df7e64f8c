"""``latm solve``: answer a question with a cached tool (or make one from examples)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from latm.cli.common import context_from_args, load_examples, task_type_from_path

if TYPE_CHECKING:
    from latm.graph.state import InputState


def register(subparsers: Any) -> None:
    """Add the ``solve`` sub-command."""
    parser = subparsers.add_parser(
        "solve",
        help="answer a question with a cached tool",
        description="Answer a question: the dispatcher picks a cached tool and the user "
        "model calls it; with --examples, a tool is made when none fits.",
    )
    parser.add_argument("question", help="the question to answer")
    parser.add_argument(
        "--task-type",
        metavar="NAME",
        help="use the tool of this task type (default with --examples: the file's name)",
    )
    parser.add_argument(
        "--examples", metavar="FILE", help="worked examples to make a tool from if none fits"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Answer the question and print the answer."""
    # lazy: `latm --help` loads no graph, store or model code
    from latm.cli import run as cli_run

    inputs: InputState = {"task": args.question}
    if args.task_type:
        inputs["task_type"] = args.task_type
    if args.examples:
        inputs["examples"] = load_examples(args.examples)
        inputs.setdefault("task_type", task_type_from_path(args.examples))
    ctx = cli_run.configure_models(context_from_args(args))
    return cli_run.print_result(cli_run.run_graph(inputs, ctx), as_json=args.json)
