"""``latm demo``: the main job end to end on a shipped task.

Makes a tool from three worked examples (verified on three more) and stores it
in the tool repository (the same one ``latm tools`` shows; ``--temp`` uses a
throwaway one), then answers held-out questions through the cache-hit path and
reports accuracy and time.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from typing import Any

from rich.markup import escape

from latm.cli.common import UserError, console, context_from_args
from latm.data import BBH_TASKS


def register(subparsers: Any) -> None:
    """Add the ``demo`` sub-command."""
    parser = subparsers.add_parser(
        "demo",
        help="make a tool for a shipped task and answer held-out questions with it",
        description="Make a tool from 3 worked examples of a BIG-Bench Hard task (verified on "
        "3 more) and store it in the tool repository (--store, $LATM_STORE_PATH or the user "
        "data dir: 'latm tools show TASK' shows it), then answer held-out test questions "
        "with it; prints every node's progress, the accuracy and the time.",
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
        "--temp",
        action="store_true",
        help="use a temporary repository, deleted afterwards, instead of the configured one",
    )
    parser.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)  # the default now
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Run the demo."""
    # lazy: `latm --help` loads no graph, store or model code
    from latm.answers import is_correct
    from latm.backends import default_store_path
    from latm.cli import run as cli_run
    from latm.data import load_task, paper_split

    if args.questions < 1:
        raise UserError("--questions must be at least 1")
    split = paper_split(load_task(args.task))
    with contextlib.ExitStack() as stack:
        overrides = {}
        if args.temp:
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="latm-demo-"))
            overrides["store_path"] = f"{scratch}/tools.sqlite"
        ctx = cli_run.configure_models(context_from_args(args, **overrides))
        console.rule(f"[bold]making a tool for {args.task}")
        made = cli_run.run_graph(
            {
                "examples": split["demos"] + split["validation"],
                "task_type": args.task,
                "make": True,
            },
            ctx,
        )
        if made.get("error"):
            return cli_run.print_result(made, as_json=False)
        tool = made.get("tool") or {}
        console.print(
            f"tool {tool.get('name', '?')}() v{tool.get('version', '?')} made in "
            f"{made['seconds']:.1f} s\n",
            soft_wrap=True,
        )
        correct = 0
        paths: dict[str, int] = {}
        started = time.perf_counter()
        for i, example in enumerate(split["test"][: args.questions], 1):
            console.rule(f"[bold]question {i}/{args.questions}")
            console.print(escape(example["input"]), soft_wrap=True)
            out = cli_run.run_graph({"task": example["input"], "task_type": args.task}, ctx)
            ok = is_correct(out.get("answer"), example["target"], example["input"])
            correct += ok
            path = str(out.get("path") or "error")
            paths[path] = paths.get(path, 0) + 1
            verdict = (
                "[green]correct[/]" if ok else f"[red]wrong[/] (expected {example['target']!r})"
            )
            shown = out.get("error") or out.get("answer")
            console.print(f"→ {escape(str(shown))}  {verdict}", soft_wrap=True)
        elapsed = time.perf_counter() - started
        console.rule("[bold]result")
        how = ", ".join(f"{n} {path}" for path, n in sorted(paths.items()))
        console.print(
            f"accuracy {correct}/{args.questions} = {correct / args.questions:.0%} ({how}); "
            f"tool making {made['seconds']:.1f} s; answering {elapsed:.1f} s "
            f"({elapsed / args.questions:.1f} s per question)",
            soft_wrap=True,
        )
        if args.temp:
            console.print("the tool was made in a temporary repository and is gone now")
        else:
            where = ctx.store_path or default_store_path()
            console.print(
                f"the tool is stored in {where}: see it with 'latm tools show {args.task}'",
                soft_wrap=True,
            )
    return 0
