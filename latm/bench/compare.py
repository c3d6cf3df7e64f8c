"""Compare finished ``latm bench`` runs side by side, one markdown table per task.

Usage::

    python -m latm.bench.compare RUN_DIR [RUN_DIR ...] [--label RUN_DIR=NAME ...]

Each run directory is summarized exactly as its own report is
(:func:`latm.bench.report.build_results`, from ``config.json``, ``make.jsonl`` and
``items.jsonl``); the table then has, per task, for every run that ran LATM: whether
the tool was made (rounds used x candidates per round), the making time, LATM's
accuracy, how the tool's hits were answered (the tool's ``solve`` entry directly,
or the user model writing the call) and the user model's tokens per answered item;
and once, from the first run that has them, the accuracy of chain of thought by the
user and by the maker model. A last row sums over the tasks.

A run is labelled ``paper`` when its graph settings are the paper's
(:data:`latm.graph.context.PAPER`), else ``default``; ``--label`` names a run.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latm.bench.records import CONFIG, RunDir
from latm.bench.report import build_results
from latm.bench.runner import METHODS, BenchOptions
from latm.bench.tasks import TASKS
from latm.graph.context import PAPER

MISSING = "—"
"""The cell of a task a run did not record."""

NO_TOOL = "-"
"""The cell of how a task without a tool was answered (it was not)."""

COT_TITLES = {"cot_user": "CoT user", "cot_maker": "CoT maker"}


class CompareError(ValueError):
    """A run directory cannot be compared; the message says why."""


@dataclass(frozen=True)
class Run:
    """One run directory, summarized.

    Attributes:
        path: The directory, as given.
        label: The run's name in the table's headers.
        settings: The graph settings the run was made with (``config.json``).
        methods: The methods the run has, in the order of :data:`METHODS`.
        results: The run's results document (what ``results.json`` would hold).
    """

    path: Path
    label: str
    settings: dict[str, Any]
    methods: tuple[str, ...]
    results: dict[str, Any]


def settings_label(settings: dict[str, Any]) -> str:
    """``paper`` when the settings are the paper's (:data:`PAPER`), else ``default``.

    A setting the run does not record counts as the paper's: it is an option
    added after the run was made, which the run could not have used.
    """
    paper = all(settings.get(key, value) == value for key, value in PAPER.items())
    return "paper" if paper else "default"


def load_run(path: str | Path, label: str | None = None) -> Run:
    """Read and summarize a run directory.

    The tasks, test-item limit and methods are those of the run's latest options
    (``config.json``), plus any task or method found in its records.

    Args:
        path: A directory written by ``latm bench``.
        label: The run's name; by default :func:`settings_label` of its settings.

    Raises:
        CompareError: ``path`` is not a run directory, or records nothing to compare.
    """
    path = Path(path)
    if not (path / CONFIG).is_file():
        raise CompareError(f"{path}: not a latm bench run directory (no {CONFIG})")
    run_dir = RunDir(path)
    identity = run_dir.identity()
    options = run_dir.last_options()
    makes = run_dir.make_records()
    items = run_dir.item_records()
    seen_tasks = set(options.get("tasks") or []) | set(makes) | {k[0] for k in items}
    seen_methods = set(options.get("methods") or []) | {k[1] for k in items}
    if makes:
        seen_methods.add("latm")
    tasks = tuple(t for t in TASKS if t in seen_tasks)
    methods = tuple(m for m in METHODS if m in seen_methods)
    if not tasks or not methods:
        raise CompareError(f"{path}: the run records no task or no method")
    bench_options = BenchOptions(
        tasks=tasks,
        limit=options.get("limit"),
        methods=methods,
        dyck_strip_spaces=bool(identity.get("dyck_strip_spaces")),
        rationales=bool(identity.get("rationales")),
    )
    settings: dict[str, Any] = identity.get("settings") or {}
    results = build_results(run_dir, bench_options, {}, "")
    return Run(path, label or settings_label(settings), settings, methods, results)


def load_runs(paths: Sequence[str | Path], labels: dict[str, str] | None = None) -> list[Run]:
    """Read the runs; labels that repeat get their directory's name added.

    Args:
        paths: The run directories, in the order of the table's columns.
        labels: Names of runs by directory (as given, or any path to the same one).

    Raises:
        CompareError: A directory cannot be read, or a label names no given run.
    """
    named: dict[Path, str] = {}
    for where, name in (labels or {}).items():
        named[Path(where).resolve()] = name
    unknown = set(named) - {Path(p).resolve() for p in paths}
    if unknown:
        listed = ", ".join(sorted(str(u) for u in unknown))
        raise CompareError(f"--label names a directory that is not compared: {listed}")
    runs = [load_run(p, named.get(Path(p).resolve())) for p in paths]
    counts = Counter(r.label for r in runs)
    return [
        Run(r.path, f"{r.label} ({r.path.name})", r.settings, r.methods, r.results)
        if counts[r.label] > 1
        else r
        for r in runs
    ]


# --- cells ---------------------------------------------------------------------------------


def _fraction(correct: int, answered: int) -> str:
    return f"{correct}/{answered}" if answered else MISSING


def _total_fraction(correct: int, answered: int) -> str:
    return f"{correct}/{answered} ({correct / answered:.0%})" if answered else MISSING


def _user_tokens(summary: dict[str, Any]) -> int:
    user = summary["usage"].get("user", {})
    return int(user.get("input_tokens", 0)) + int(user.get("output_tokens", 0))


def _hit_counts(summary: dict[str, Any]) -> Counter[str]:
    """How the tool's hits of one task were answered: direct, llm, or none (no answer)."""
    paths: Counter[str] = Counter(summary["paths"])
    unanswered = summary["answered"] - sum(paths.values())
    if unanswered > 0:
        paths["none"] += unanswered
    return paths


def _hits_text(paths: Counter[str]) -> str:
    order = ["direct", "llm", *sorted(set(paths) - {"direct", "llm", "none"}), "none"]
    parts = [f"{paths[p]} {p}" for p in order if paths[p]]
    return ", ".join(parts) or MISSING


def _candidates(run: Run) -> str:
    n = run.settings.get("n_candidates")
    return str(n) if n is not None else "?"


def _latm_cells(run: Run, task: str) -> list[str]:
    """Tool, making time, accuracy, hits and user tokens per item of one task in one run."""
    result = run.results["tasks"].get(task)
    make = result["make"] if result else None
    summary = result["methods"].get("latm") if result else None
    if make is None or summary is None:
        return [MISSING] * 5
    tool = f"{'yes' if make['ok'] else 'no'} {make['attempts']}x{_candidates(run)}"
    if summary["no_tool"]:
        return [tool, f"{make['seconds']:.0f}", _fraction(0, summary["answered"]), NO_TOOL, NO_TOOL]
    answered = summary["answered"]
    per_item = f"{_user_tokens(summary) / answered:.0f}" if answered else MISSING
    return [
        tool,
        f"{make['seconds']:.0f}",
        _fraction(summary["correct"], answered),
        _hits_text(_hit_counts(summary)),
        per_item,
    ]


def _latm_totals(run: Run) -> list[str]:
    overall = run.results["overall"]
    make = overall["make"]
    latm = overall["latm"]
    hits: Counter[str] = Counter()
    tokens = answered = 0
    for result in run.results["tasks"].values():
        summary = result["methods"]["latm"]
        if result["make"] is None or summary["no_tool"]:
            continue
        hits.update(_hit_counts(summary))
        tokens += _user_tokens(summary)
        answered += summary["answered"]
    return [
        f"{make['tools_made']} of {make['tasks']}",
        f"{make['seconds']:.0f}",
        _total_fraction(latm["correct"], latm["answered"]),
        _hits_text(hits),
        f"{tokens / answered:.0f}" if answered else MISSING,
    ]


def _cot_cell(run: Run | None, method: str, task: str) -> str:
    if run is None:
        return MISSING
    result = run.results["tasks"].get(task)
    summary = result["methods"].get(method) if result else None
    if summary is None:
        return MISSING
    return _fraction(summary["correct"], summary["answered"])


# --- table ---------------------------------------------------------------------------------


def _render(header: list[str], right: list[bool], rows: list[list[str]]) -> str:
    """A markdown table padded to aligned columns (numbers right-aligned)."""
    widths = [max(3, len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        padded = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + ":" if r else "-" * w for w, r in zip(widths, right, strict=True)]
    return "\n".join([line(header), line(rule), *(line(r) for r in rows)])


def compare_table(runs: Sequence[Run]) -> str:
    """The comparison: one markdown table of the tasks of all runs, a totals row, a legend.

    Args:
        runs: The runs, in the order of their columns.
    """
    latm_runs = [r for r in runs if "latm" in r.methods]
    cot_runs = {m: next((r for r in runs if m in r.methods), None) for m in COT_TITLES}
    cot_methods = [m for m, r in cot_runs.items() if r is not None]
    tasks = [t for t in TASKS if any(t in r.results["tasks"] for r in runs)]

    header = ["task"]
    right = [False]
    for run in latm_runs:
        header += [
            f"{run.label} tool",
            f"{run.label} s",
            f"{run.label} LATM",
            f"{run.label} via",
            f"{run.label} tok",
        ]
        right += [False, True, True, False, True]
    header += [COT_TITLES[m] for m in cot_methods]
    right += [True] * len(cot_methods)

    rows = []
    for task in tasks:
        row = [task]
        for run in latm_runs:
            row += _latm_cells(run, task)
        row += [_cot_cell(cot_runs[m], m, task) for m in cot_methods]
        rows.append(row)
    total = ["**total**"]
    for run in latm_runs:
        total += _latm_totals(run)
    for method in cot_methods:
        source = cot_runs[method]
        overall = source.results["overall"][method] if source else None
        total.append(_total_fraction(overall["correct"], overall["answered"]) if overall else "")
    rows.append(total)

    legend = [
        "Runs: " + "; ".join(f"{r.label} = {r.path}" for r in runs) + ".",
    ]
    if latm_runs:
        legend.append(
            "tool: made (yes/no), rounds used x candidates per round; s: tool-making seconds; "
            "LATM: correct/items (a task without a tool scores 0); via: how the tool's hits "
            "were answered (direct = its solve entry, llm = the user model wrote the call, "
            "none = no answer); tok: user-model tokens (in + out) per answered item; "
            f"A dash ({NO_TOOL}) in via and tok: no tool."
        )
    if cot_methods:
        sources = ", ".join(
            f"{COT_TITLES[m]} from {run.label}" for m, run in cot_runs.items() if run is not None
        )
        legend.append(f"Chain-of-thought accuracy (correct/items): {sources}.")
    missing = f"{MISSING}: not recorded in that run."
    notes = textwrap.fill(" ".join([*legend, missing]), width=100, break_on_hyphens=False)
    return _render(header, right, rows) + "\n\n" + notes + "\n"


# --- command line ----------------------------------------------------------------------------


def _label_pair(text: str) -> tuple[str, str]:
    where, sep, name = text.rpartition("=")
    if not sep or not where or not name.strip():
        raise argparse.ArgumentTypeError(f"expected RUN_DIR=NAME, got {text!r}")
    return where, name.strip()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line's arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m latm.bench.compare",
        description="Compare finished `latm bench` runs in one markdown table per task.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="a run directory")
    parser.add_argument(
        "--label",
        action="append",
        type=_label_pair,
        default=[],
        metavar="RUN_DIR=NAME",
        help="name a run in the headers (default: paper or default, from its settings)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the comparison of the run directories on the command line.

    Returns:
        0, or 2 when a directory cannot be compared.
    """
    args = parse_args(argv)
    try:
        runs = load_runs(args.runs, dict(args.label))
    except CompareError as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(compare_table(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
