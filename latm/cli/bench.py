"""``latm bench``: the paper's benchmark, with accuracy, tokens, cost and time per method.

For each task a tool is made through the graph, then the test items are
answered by LATM's cache-hit path and by few-shot chain of thought with the user
and with the maker model. Results go to a run directory (continued when run
again) as ``results.json``, ``results.md`` and ``cost_vs_n.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from rich.markup import escape

from latm.bench.costs import PriceError, load_prices
from latm.bench.records import RESULTS_MD, RunDir, RunDirError
from latm.bench.runner import METHODS, BenchOptions, RunStats, run_bench
from latm.cli import run as cli_run
from latm.cli.common import UserError, context_from_args, err_console
from latm.data import TASKS

DEFAULT_OUT = "bench-results/run"


def register(subparsers: Any) -> None:
    """Add the ``bench`` sub-command."""
    parser = subparsers.add_parser(
        "bench",
        help="run the paper's benchmark: accuracy, tokens, cost and time per method",
        description="Make a tool per task through the graph (demos 0-2, validation 5-7), answer "
        "the test items (10-249) with it and with few-shot chain of thought by the user and the "
        "maker model, and report accuracy, tokens, cost and time. Running it again with the same "
        "--out continues an unfinished run.",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=TASKS,
        default=None,
        metavar="TASK",
        help=f"tasks to run (default: all six: {', '.join(TASKS)})",
    )
    parser.add_argument(
        "--task-file",
        metavar="FILE",
        help="bench your own task instead: a JSON/JSONL file of {input, target} examples "
        "(optionally a rationale each), split as the shipped tasks are: demos 0-2, "
        "validation 5-7, test items from 10 on (at least 11 examples)",
    )
    parser.add_argument(
        "--task-name",
        metavar="NAME",
        help="the name the task file's results (and its tool) go under "
        "(default: the file's name, e.g. my_task.jsonl -> my_task)",
    )
    parser.add_argument(
        "--limit", type=int, metavar="N", help="test items per task: the first N (default: all 240)"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=None,
        metavar="METHOD",
        help=f"methods to run (default: {' '.join(METHODS)})",
    )
    parser.add_argument("--maker", metavar="MODEL", help="maker model (default: $LATM_MAKER_MODEL)")
    parser.add_argument("--maker-url", metavar="URL", help="maker's OpenAI-compatible base URL")
    parser.add_argument("--user", metavar="MODEL", help="user model (default: $LATM_USER_MODEL)")
    parser.add_argument("--user-url", metavar="URL", help="user's OpenAI-compatible base URL")
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"run directory (default: {DEFAULT_OUT}); an unfinished run there is continued",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="delete the earlier results in --out first"
    )
    parser.add_argument(
        "--concurrency", type=int, default=2, metavar="N", help="items answered at once (default 2)"
    )
    parser.add_argument(
        "--pricing",
        default="paper-2023",
        metavar="PRESET",
        help="price preset of the table and the plot (default: paper-2023)",
    )
    parser.add_argument(
        "--prices", metavar="FILE", help="price table (TOML) instead of the shipped one"
    )
    parser.add_argument(
        "--dyck-strip-spaces",
        action="store_true",
        help="the paper's Dyck preparation: no spaces in the sequences and targets",
    )
    parser.add_argument(
        "--no-rationales",
        action="store_true",
        help="show the demos as questions and answers only, without their shipped "
        "reasoning (as the paper did; implied by --paper)",
    )
    parser.add_argument(
        "--cot-max-tokens",
        type=int,
        default=1024,
        metavar="N",
        help="cap on a chain-of-thought reply (default 1024)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        dest="settings",
        help="a graph setting (a latm.graph.Context field), e.g. --set max_attempts=5",
    )
    parser.add_argument(
        "--paper",
        action="store_true",
        help="the paper's graph settings (one proposal per round, the user model writes "
        "every call, demos without reasoning), where this build goes beyond the paper",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="rebuild the report from --out; run nothing"
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    parser.set_defaults(func=handle)


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """``FIELD=VALUE`` pairs as context overrides, each value typed like its field.

    Raises:
        UserError: A pair is malformed or names no setting.
    """
    # lazy: `latm --help` loads no graph, store or model code
    from latm.graph.context import Context

    defaults = Context()
    names = {f.name for f in dataclasses.fields(Context)} - {"maker_llm", "user_llm"}
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in names:
            raise UserError(f"--set {pair!r}: expected FIELD=VALUE with FIELD one of the settings")
        current = getattr(defaults, name)
        try:
            if isinstance(current, bool):
                value: Any = raw.strip().lower() in ("1", "true", "yes", "on")
            elif isinstance(current, int):
                value = int(raw)
            elif isinstance(current, float):
                value = float(raw)
            else:
                value = raw or None
        except ValueError as exc:
            raise UserError(f"--set {pair!r}: {exc}") from exc
        out[name] = value
    return out


def paper_settings() -> dict[str, Any]:
    """The graph settings that reproduce the paper (empty when the defaults already do)."""
    # lazy: `latm --help` loads no graph, store or model code
    from latm.graph import context

    paper: dict[str, Any] = dict(getattr(context, "PAPER", {}))
    return paper


def file_task(
    args: argparse.Namespace, task_file: str, last: dict[str, Any], ran: dict[str, Any]
) -> list[str]:
    """The one task name of a ``--task-file`` run, after checking that the file is usable.

    Args:
        args: The command line.
        task_file: The file given, or the one the reported run used.
        last: The options of the run in ``--out`` (with ``--report-only``).
        ran: The identity of the run in ``--out`` (with ``--report-only``).

    Raises:
        UserError: ``--tasks`` was given too, the file cannot be used, or (for a
            report) it changed since the run.
    """
    # lazy: `latm --help` loads no graph, store or model code
    from latm.bench.tasks import TaskFileError, read_task_file
    from latm.cli.common import task_type_from_path

    if args.tasks:
        raise UserError("--task-file and --tasks exclude each other: bench one or the other")
    try:
        digest, _ = read_task_file(task_file)
    except TaskFileError as exc:
        raise UserError(str(exc)) from exc
    recorded = ran.get("task_file_sha256")
    if recorded is not None and recorded != digest:
        raise UserError(
            f"{task_file} changed since the run in --out was made: its report would "
            "mismatch the items (run it again with --fresh)"
        )
    if args.task_name:
        name = str(args.task_name)
    elif last.get("task_file") and last.get("tasks"):  # --report-only of a task-file run
        name = str(last["tasks"][0])
    else:
        name = task_type_from_path(task_file)
    if not name.replace("_", "").replace("-", "").isalnum() or len(name) > 64:
        raise UserError(f"--task-name {name!r}: use letters, digits, '_' and '-' (at most 64)")
    return [name]


def handle(args: argparse.Namespace) -> int:
    """Run (or continue) the benchmark and write its report."""
    try:
        prices = load_prices(args.prices)
    except PriceError as exc:
        raise UserError(str(exc)) from exc
    if args.pricing not in prices:
        raise UserError(f"no price preset {args.pricing!r}; presets: {', '.join(prices)}")
    run_dir = RunDir(Path(args.out))
    if args.fresh and not args.report_only:
        run_dir.clear()
    # A report of an earlier run defaults to that run's tasks, limit and methods, and
    # takes its task preparation from the run itself.
    last = run_dir.last_options() if args.report_only else {}
    ran = run_dir.identity() if args.report_only else {}
    task_file = args.task_file or (last.get("task_file") if not args.tasks else None)
    if task_file is not None:
        tasks = file_task(args, task_file, last, ran)
    else:
        tasks = args.tasks or last.get("tasks") or list(TASKS)
    methods = args.methods or last.get("methods") or list(METHODS)
    limit = args.limit if args.limit is not None or not args.report_only else last.get("limit")
    try:
        options = BenchOptions(
            tasks=tuple(dict.fromkeys(tasks)),
            limit=limit,
            methods=tuple(m for m in METHODS if m in methods),
            concurrency=args.concurrency,
            dyck_strip_spaces=bool(ran.get("dyck_strip_spaces")) if ran else args.dyck_strip_spaces,
            rationales=bool(ran.get("rationales"))
            if ran
            else not (args.no_rationales or args.paper),
            cot_max_tokens=args.cot_max_tokens,
            task_file=task_file,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from exc

    # lazy: `latm --help` loads no graph, store or model code
    from latm.bench.report import build_results, write_report

    stats: RunStats | None = None
    if not args.report_only:
        overrides = {**(paper_settings() if args.paper else {}), **parse_settings(args.settings)}
        for flag, name in (
            ("maker", "maker_model"),
            ("maker_url", "maker_base_url"),
            ("user", "user_model"),
            ("user_url", "user_base_url"),
        ):
            if getattr(args, flag):
                overrides[name] = getattr(args, flag)
        ctx = cli_run.configure_models(context_from_args(args, **overrides))
        try:
            stats = run_bench(ctx, options, run_dir, console=err_console)
        except RunDirError as exc:
            raise UserError(str(exc)) from exc
        if stats.interrupted:
            err_console.print(
                f"[yellow]interrupted[/]: {stats.answered} item(s) recorded; run the same command "
                "again to continue"
            )
        if stats.no_tool:
            err_console.print(f"no tool for: {', '.join(stats.no_tool)} (LATM counts 0 there)")
        if stats.infra_errors:
            err_console.print(
                f"[yellow]{stats.infra_errors} model/sandbox failure(s)[/]: run the same command "
                "again to retry them"
            )
    results = build_results(run_dir, options, prices, args.pricing)
    try:
        written = write_report(results, run_dir, with_plot=not args.no_plot)
    except ImportError as exc:
        written = write_report(results, run_dir, with_plot=False)
        err_console.print(f"[yellow]no plot[/]: {exc} (install the 'bench' extra: matplotlib)")
    sys.stdout.write(run_dir.file(RESULTS_MD).read_text(encoding="utf-8"))
    sys.stdout.flush()
    err_console.print("[dim]wrote " + escape(", ".join(str(p) for p in written)) + "[/]")
    return 130 if stats is not None and stats.interrupted else 0
