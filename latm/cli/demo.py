"""``latm demo``: the main job end to end on a shipped task.

Makes a tool from three worked examples (verified on three more), then answers
held-out questions through the cache-hit path and reports accuracy and time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

from rich.markup import escape

from latm.answers import is_correct
from latm.cli import run as cli_run
from latm.cli.common import UserError, console, context_from_args
from latm.cli.run import print_result, run_graph
from latm.data import BBH_TASKS, load_task, paper_split


def register(subparsers: Any) -> None:
    """Add the ``demo`` sub-command."""
    parser = subparsers.add_parser(
        "demo",
        help="make a tool for a shipped task and answer held-out questions with it",
        description="Make a tool from 3 worked examples of a BIG-Bench Hard task (verified on "
        "3 more), then answer held-out test questions with it; prints every node's "
        "progress, the accuracy and the time.",
    )
    parser.add_argument("--task", default="word_sorting", choices=BBH_TASKS)
    parser.add_argument(
        "-n",
        "--questions",
        type=int,
        default=5,
        metavar="N",
        help="held-out questions to answer (default 5)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="use the configured repository instead of a temporary one",
    )
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Run the demo."""
    if args.questions < 1:
        raise UserError("--questions must be at least 1")
    split = paper_split(load_task(args.task))
    with tempfile.TemporaryDirectory(prefix="latm-demo-") as scratch:
        overrides = {} if args.keep else {"store_path": f"{scratch}/tools.sqlite"}
        ctx = cli_run.configure_models(context_from_args(args, **overrides))
        console.rule(f"[bold]making a tool for {args.task}")
        made = run_graph(
            {
                "examples": split["demos"] + split["validation"],
                "task_type": args.task,
                "make": True,
            },
            ctx,
        )
        if made.get("error"):
            return print_result(made, as_json=False)
        console.print(f"tool made in {made['seconds']:.1f} s\n")
        correct = 0
        started = time.perf_counter()
        for i, example in enumerate(split["test"][: args.questions], 1):
            console.rule(f"[bold]question {i}/{args.questions}")
            console.print(escape(example["input"]))
            out = run_graph({"task": example["input"], "task_type": args.task}, ctx)
            ok = is_correct(out.get("answer"), example["target"], example["input"])
            correct += ok
            verdict = (
                "[green]correct[/]" if ok else f"[red]wrong[/] (expected {example['target']!r})"
            )
            shown = out.get("error") or out.get("answer")
            console.print(f"→ {escape(str(shown))}  {verdict}")
        elapsed = time.perf_counter() - started
        console.rule("[bold]result")
        console.print(
            f"accuracy {correct}/{args.questions} = {correct / args.questions:.0%}; "
            f"tool making {made['seconds']:.1f} s; answering {elapsed:.1f} s "
            f"({elapsed / args.questions:.1f} s per question)"
        )
    return 0
