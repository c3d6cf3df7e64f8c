"""The benchmark's report: results JSON, a markdown table and a cost-vs-n plot.

Everything here is computed from the run directory's records, so a report can
be rebuilt at any time (``latm bench --report-only``), also for a partial run.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from latm.bench.costs import PricePreset, break_even, cost_at, sum_usage
from latm.bench.records import PLOT, RESULTS_JSON, RESULTS_MD, RunDir
from latm.bench.runner import METHODS, BenchOptions
from latm.bench.tasks import BenchTask, prepare_task

SCHEMA = 1
METHOD_TITLES = {
    "latm": "LATM (tool)",
    "cot_user": "CoT, user model",
    "cot_maker": "CoT, maker model",
}
BASELINES = ("cot_maker", "cot_user")


def _tokens(usage: dict[str, dict[str, int]]) -> dict[str, int]:
    return {
        "input_tokens": sum(u.get("input_tokens", 0) for u in usage.values()),
        "output_tokens": sum(u.get("output_tokens", 0) for u in usage.values()),
        "calls": sum(u.get("calls", 0) for u in usage.values()),
    }


def _node_times(runs: list[list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Per node: how often it ran and its total and mean seconds, over many graph runs."""
    out: dict[str, dict[str, float]] = {}
    for nodes in runs:
        for n in nodes:
            acc = out.setdefault(n["node"], {"runs": 0, "seconds": 0.0})
            acc["runs"] += 1
            acc["seconds"] += float(n.get("seconds", 0.0))
    for acc in out.values():
        acc["seconds"] = round(acc["seconds"], 3)
        acc["mean_seconds"] = round(acc["seconds"] / acc["runs"], 3) if acc["runs"] else 0.0
    return out


def summarize_task(
    task: BenchTask,
    methods: tuple[str, ...],
    make: dict[str, Any] | None,
    items: dict[tuple[str, str, int], dict[str, Any]],
    prices: dict[str, PricePreset],
) -> dict[str, Any]:
    """The results of one task: per method accuracy, tokens, costs and times; break-even n."""
    n_planned = len(task.test)
    result: dict[str, Any] = {
        "n_test": n_planned,
        "n_test_total": task.n_test_total,
        "make": None,
        "methods": {},
        "break_even": {},
    }
    if "latm" in methods and make is not None:
        usage = make.get("usage") or {}
        result["make"] = {
            "ok": bool(make.get("ok")),
            "attempts": int(make.get("attempts") or 0),
            "error": make.get("error"),
            "seconds": float(make.get("seconds") or 0.0),
            "usage": usage,
            "tokens": _tokens(usage),
            "cost": {name: p.cost(usage) for name, p in prices.items()},
            "nodes": make.get("nodes") or [],
            "node_times": _node_times([make.get("nodes") or []]),
            "tool": make.get("tool"),
            "code": make.get("code"),
        }
    for method in methods:
        records = [
            items[key] for item in task.test if (key := (task.name, method, item.index)) in items
        ]
        no_tool = method == "latm" and not (result["make"] or {}).get("ok")
        answered = n_planned if no_tool and result["make"] is not None else len(records)
        usage = sum_usage(r.get("usage") for r in records)
        seconds = sum(float(r.get("seconds") or 0.0) for r in records)
        fixed = result["make"]["cost"] if method == "latm" and result["make"] else {}
        per_item = {
            name: (p.cost(usage) / len(records) if records else 0.0) for name, p in prices.items()
        }
        summary: dict[str, Any] = {
            "answered": answered,
            "correct": sum(bool(r.get("correct")) for r in records),
            "accuracy": None,
            "errors": sum(bool(r.get("error")) for r in records),
            "infra_errors": sum(bool(r.get("infra")) for r in records),
            "no_tool": no_tool,
            "usage": usage,
            "tokens": _tokens(usage),
            "seconds": round(seconds, 3),
            "seconds_per_item": round(seconds / len(records), 3) if records else None,
            "cost": {
                name: {
                    "fixed": fixed.get(name, 0.0),
                    "per_item": per_item[name],
                    "total": cost_at(len(records), fixed.get(name, 0.0), per_item[name]),
                }
                for name in prices
            },
        }
        if answered:
            summary["accuracy"] = summary["correct"] / answered
        if method == "latm":
            summary["node_times"] = _node_times([r.get("nodes") or [] for r in records])
            summary["cache_hits"] = sum(bool(r.get("cache_hit")) for r in records)
            summary["paths"] = dict(Counter(str(r["path"]) for r in records if r.get("path")))
        result["methods"][method] = summary
    latm = result["methods"].get("latm")
    for name in prices:
        entry: dict[str, int | None] = {}
        for baseline in BASELINES:
            other = result["methods"].get(baseline)
            if latm is None or other is None or latm["no_tool"] or not other["answered"]:
                continue
            entry[baseline] = break_even(
                latm["cost"][name]["fixed"],
                latm["cost"][name]["per_item"],
                other["cost"][name]["per_item"],
            )
        result["break_even"][name] = entry
    return result


def overall(tasks: dict[str, dict[str, Any]], methods: tuple[str, ...]) -> dict[str, Any]:
    """Totals over the tasks: micro-averaged accuracy; tokens, cost and seconds summed.

    LATM's totals include tool making.
    """
    out: dict[str, Any] = {}
    makes = [t["make"] for t in tasks.values() if t["make"] is not None]
    for method in methods:
        rows = [t["methods"][method] for t in tasks.values() if method in t["methods"]]
        answered = sum(r["answered"] for r in rows)
        correct = sum(r["correct"] for r in rows)
        extra = makes if method == "latm" else []
        usage = sum_usage([*(r["usage"] for r in rows), *(m["usage"] for m in extra)])
        presets = list(rows[0]["cost"]) if rows else []
        scored = [r["accuracy"] for r in rows if r["accuracy"] is not None]
        out[method] = {
            "answered": answered,
            "correct": correct,
            "accuracy": correct / answered if answered else None,
            "macro_accuracy": sum(scored) / len(scored) if scored else None,
            "usage": usage,
            "tokens": _tokens(usage),
            "cost": {name: sum(r["cost"][name]["total"] for r in rows) for name in presets},
            "seconds": round(sum(r["seconds"] for r in rows) + sum(m["seconds"] for m in extra), 3),
        }
    out["make"] = {
        "tools_made": sum(m["ok"] for m in makes),
        "tasks": len(makes),
        "usage": sum_usage(m["usage"] for m in makes),
        "seconds": round(sum(m["seconds"] for m in makes), 3),
    }
    return out


def build_results(
    run_dir: RunDir,
    options: BenchOptions,
    prices: dict[str, PricePreset],
    pricing: str,
) -> dict[str, Any]:
    """The results document of a run (what ``results.json`` holds)."""
    makes = run_dir.make_records()
    items = run_dir.item_records()
    tasks: dict[str, dict[str, Any]] = {}
    for name in options.tasks:
        task = prepare_task(
            name,
            limit=options.limit,
            dyck_strip_spaces=options.dyck_strip_spaces,
            rationales=options.rationales,
            task_file=options.task_file,
        )
        tasks[name] = summarize_task(task, options.methods, makes.get(name), items, prices)
    identity = run_dir.identity()
    return {
        "schema": SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "models": {"maker": identity.get("maker"), "user": identity.get("user")},
        "options": {
            "tasks": list(options.tasks),
            "limit": options.limit,
            "methods": list(options.methods),
            "concurrency": options.concurrency,
            "dyck_strip_spaces": options.dyck_strip_spaces,
            "rationales": options.rationales,
            "cot_max_tokens": options.cot_max_tokens,
            **({"task_file": options.task_file} if options.task_file is not None else {}),
        },
        "settings": identity.get("settings", {}),
        "pricing": pricing,
        "prices": {name: p.as_dict() for name, p in prices.items()},
        "tasks": tasks,
        "overall": overall(tasks, options.methods),
    }


# --- markdown ----------------------------------------------------------------------------


def _k(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 10_000 else f"{n:,}"


def _usd(x: float) -> str:
    if x == 0:
        return "0"
    return f"{x:.4f}" if x >= 0.001 else f"{x:.2e}"


def _acc(summary: dict[str, Any]) -> str:
    if summary["accuracy"] is None:
        return "—"
    text = f"{summary['correct']}/{summary['answered']} = {summary['accuracy']:.0%}"
    return text + (" (no tool)" if summary.get("no_tool") else "")


def _break_even_text(n: int | None, free: bool) -> str:
    if free:
        return "free"
    return "never" if n is None else f"{n}"


def _method_row(
    task: str, method: str, summary: dict[str, Any], make: dict[str, Any] | None, pricing: str
) -> str:
    tokens = summary["tokens"]
    use = f"{_k(tokens['input_tokens'])} / {_k(tokens['output_tokens'])}"
    cost = summary["cost"][pricing]
    tool = ""
    if method == "latm" and make is not None:
        mt = make["tokens"]
        use = f"make {_k(mt['input_tokens'])} / {_k(mt['output_tokens'])}; use {use}"
        cost_text = f"{_usd(cost['fixed'])} + {_usd(cost['total'] - cost['fixed'])}"
        time_text = f"{make['seconds']:.1f} + {summary['seconds']:.1f}"
        attempts = make["attempts"]
        plural = "s" if attempts != 1 else ""
        tool = f"{'yes' if make['ok'] else 'no'} ({attempts} attempt{plural})"
    else:
        cost_text = _usd(cost["total"])
        time_text = f"{summary['seconds']:.1f}"
    per_item = summary["seconds_per_item"]
    if per_item is not None:
        time_text += f" ({per_item:.1f}/item)"
    return (
        f"| {task} | {METHOD_TITLES[method]} | {_acc(summary)} | {use} | {cost_text} | "
        f"{time_text} | {tool} |"
    )


def markdown(results: dict[str, Any]) -> str:
    """The results as a markdown report: the task x method table and the break-even table."""
    pricing = results["pricing"]
    preset = results["prices"][pricing]
    opts = results["options"]
    limit = opts["limit"]
    any_task = next(iter(results["tasks"].values()), None)
    total = any_task["n_test_total"] if any_task else 240
    n_text = f"first {limit} of {total} (--limit {limit})" if limit else f"all {total}"
    demos = "with their reasoning" if opts.get("rationales") else "questions and answers (paper)"
    lines = [
        "# LATM benchmark",
        "",
        f"- maker: `{results['models']['maker']}`, user: `{results['models']['user']}`",
        f"- test items per task: {n_text}; Dyck spaces "
        f"{'stripped (paper)' if opts['dyck_strip_spaces'] else 'kept'}; demos "
        f"{demos}",
        f"- costs in USD under the price preset `{pricing}` ({preset['note']}): maker "
        f"${preset['maker']['input']:g}/${preset['maker']['output']:g}, user "
        f"${preset['user']['input']:g}/${preset['user']['output']:g} per 1M input/output tokens",
        "",
        "| task | method | accuracy | tokens in / out | cost (USD) | time (s) | tool made |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, task in results["tasks"].items():
        for method, summary in task["methods"].items():
            lines.append(_method_row(name, method, summary, task["make"], pricing))
    lines += [
        "",
        "| all tasks | method | accuracy | tokens in / out | cost (USD) | time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        row = results["overall"].get(method)
        if row is None:
            continue
        acc = "—"
        if row["answered"]:
            acc = f"{row['correct']}/{row['answered']} = {row['accuracy']:.0%}"
        tokens = row["tokens"]
        lines.append(
            f"| all | {METHOD_TITLES[method]} | {acc} | {_k(tokens['input_tokens'])} / "
            f"{_k(tokens['output_tokens'])} | {_usd(row['cost'][pricing])} | "
            f"{row['seconds']:.0f} |"
        )
    make = results["overall"]["make"]
    if make["tasks"]:
        lines.append(
            f"\nTools made: {make['tools_made']} of {make['tasks']} tasks; tool making took "
            f"{make['seconds']:.0f} s in all."
        )
    lines += [
        "",
        f"## Amortization (`{pricing}` prices)",
        "",
        "LATM costs `make + n * use`, direct answering `n * CoT`; break-even is the smallest n "
        "from which LATM is not dearer.",
        "",
        "| task | LATM make | LATM per item | CoT maker per item | CoT user per item "
        "| break-even vs CoT maker | vs CoT user |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, task in results["tasks"].items():
        methods = task["methods"]
        if "latm" not in methods:
            continue
        latm = methods["latm"]["cost"][pricing]
        cells = [name, _usd(latm["fixed"]), _usd(latm["per_item"])]
        for baseline in BASELINES:
            cells.append(
                _usd(methods[baseline]["cost"][pricing]["per_item"]) if baseline in methods else "—"
            )
        for baseline in BASELINES:
            if methods["latm"]["no_tool"]:
                cells.append("no tool")
            elif baseline not in methods:
                cells.append("—")
            else:
                free = (
                    latm["fixed"] == 0
                    and latm["per_item"] == 0
                    and methods[baseline]["cost"][pricing]["per_item"] == 0
                )
                cells.append(_break_even_text(task["break_even"][pricing].get(baseline), free))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- plot ----------------------------------------------------------------------------------


def _curves(task: dict[str, Any], pricing: str) -> dict[str, tuple[float, float]]:
    """(fixed, per item) cost of each method that has a cost model."""
    out = {}
    for method, summary in task["methods"].items():
        if method == "latm" and summary["no_tool"]:
            continue
        if not summary["answered"] and method != "latm":
            continue
        cost = summary["cost"][pricing]
        out[method] = (cost["fixed"], cost["per_item"])
    return out


def plot(results: dict[str, Any], path: str | Path) -> Path:
    """Draw the total cost of each method as n grows, one panel per task plus all tasks.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'latm[bench]'``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pricing = results["pricing"]
    panels = list(results["tasks"].items())
    combined: dict[str, tuple[float, float]] = {}
    complete = True
    for _, task in panels:
        curves = _curves(task, pricing)
        if set(curves) != set(task["methods"]):
            complete = False
        for method, (fixed, per_item) in curves.items():
            f0, p0 = combined.get(method, (0.0, 0.0))
            combined[method] = (f0 + fixed, p0 + per_item)
    all_panel = len(panels) > 1 and complete
    count = len(panels) + int(all_panel)
    cols = min(4, count)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    colors = {"latm": "tab:green", "cot_user": "tab:blue", "cot_maker": "tab:red"}
    jobs: list[tuple[str, dict[str, tuple[float, float]], dict[str, int | None], int]] = [
        (
            name + (" (no tool)" if task["methods"].get("latm", {}).get("no_tool") else ""),
            _curves(task, pricing),
            task["break_even"].get(pricing, {}),
            task["n_test_total"],
        )
        for name, task in panels
    ]
    if all_panel:
        total_be: dict[str, int | None] = {}
        if "latm" in combined:
            for baseline in BASELINES:
                if baseline in combined:
                    total_be[baseline] = break_even(
                        combined["latm"][0], combined["latm"][1], combined[baseline][1]
                    )
        jobs.append(("all tasks (n per task)", combined, total_be, jobs[0][3]))
    for ax, (title, curves, be, n_total) in zip(axes.flat, jobs, strict=False):
        finite = [n for n in be.values() if n is not None]
        n_max = max(n_total, 2 * max(finite) if finite else 0)
        xs = sorted({round(1 * (n_max ** (k / 200))) for k in range(201)} | {1, n_max})
        ys = {m: [cost_at(n, f, p) for n in xs] for m, (f, p) in curves.items()}
        log = bool(ys) and all(y > 0 for series in ys.values() for y in series)
        for method, series in ys.items():
            ax.plot(xs, series, label=METHOD_TITLES[method], color=colors[method])
        for baseline in BASELINES:
            n_be = be.get(baseline)
            if n_be is not None and n_be <= n_max:
                ax.axvline(n_be, color=colors[baseline], linestyle=":", linewidth=1)
                ax.annotate(
                    f"n={n_be}",
                    (n_be, 0.02 if baseline == "cot_maker" else 0.12),
                    xycoords=("data", "axes fraction"),
                    xytext=(3, 0),
                    textcoords="offset points",
                    fontsize=7,
                    color=colors[baseline],
                )
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("requests n" + (" (log)" if log else ""), fontsize=8)
        ax.set_ylabel("total cost, USD" + (" (log)" if log else ""), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(jobs) :]:
        ax.axis("off")
    legend: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    labels = [METHOD_TITLES[m] for m in METHODS if METHOD_TITLES[m] in legend]
    handles = [legend[label] for label in labels]
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(handles), fontsize=8)
    fig.suptitle(
        f"Total cost as requests grow ({pricing} prices)\n"
        f"maker {results['models']['maker']}, user {results['models']['user']}; "
        "dotted: break-even n",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 0.93))
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def write_report(results: dict[str, Any], run_dir: RunDir, *, with_plot: bool = True) -> list[Path]:
    """Write ``results.json``, ``results.md`` and (if asked) the plot; return their paths."""
    written = []
    path = run_dir.file(RESULTS_JSON)
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    written.append(path)
    path = run_dir.file(RESULTS_MD)
    path.write_text(markdown(results), encoding="utf-8")
    written.append(path)
    if with_plot:
        written.append(plot(results, run_dir.file(PLOT)))
    return written
