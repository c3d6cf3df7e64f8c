"""Running the benchmark: tool making, then answering the test items by every method.

For each task the tool is made through the graph (``make: True`` with demos and
validation examples; each node timed on the ``updates`` stream), then every test
item is answered by each method on a thread pool:

* ``latm``: the graph's cache-hit path (``{"task": question, "task_type": task}``);
* ``cot_user`` / ``cot_maker``: few-shot chain of thought by the user / maker model.

Every record is appended to the run directory as soon as it exists, so a run
that stops (a crash, Ctrl-C) continues where it stopped when started again.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from latm.backends import open_local_store
from latm.bench.cot import answer_cot, cot_context, cot_prompt_version
from latm.bench.records import ITEMS, MAKE, STORE, UNEXPECTED, RunDir, is_infra_error
from latm.bench.scoring import score
from latm.bench.tasks import TASKS, BenchItem, BenchTask, prepare_task, read_task_file
from latm.graph.builder import LATMGraph, build_graph
from latm.graph.context import Context
from latm.graph.state import InputState, Role
from latm.repository import ToolRepository

METHODS = ("latm", "cot_user", "cot_maker")
"""The methods compared: LATM's cache-hit path, CoT by the user model, CoT by the maker."""

METHOD_ROLE: dict[str, Role] = {"cot_user": "user", "cot_maker": "maker"}

_NOT_IDENTITY = {
    "maker_llm",
    "user_llm",
    "maker_base_url",
    "user_base_url",
    "maker_api_key_env",
    "user_api_key_env",
    "store_path",
    "namespace",
    "request_timeout_s",
    "max_retries",
    "executor",
    "allow_unsandboxed",
}


@dataclass(frozen=True)
class BenchOptions:
    """What to run.

    Attributes:
        tasks: Task names (default: the paper's six).
        limit: Test items per task (the first ``limit`` of 10-249); ``None`` for all 240.
        methods: Which of :data:`METHODS` to run.
        concurrency: Items answered at once.
        dyck_strip_spaces: The paper's Dyck preparation (no spaces in sequence and target).
        rationales: The demos carry their shipped reasoning (maker and CoT shots alike);
            the paper showed its maker questions and answers only.
        cot_max_tokens: Cap on a chain-of-thought reply (``None``: the role's own cap).
        task_file: A user's ``{input, target}`` file to run instead of the shipped
            tasks; ``tasks`` then holds the one name its results go under.
    """

    tasks: tuple[str, ...] = TASKS
    limit: int | None = None
    methods: tuple[str, ...] = METHODS
    concurrency: int = 2
    dyck_strip_spaces: bool = False
    rationales: bool = True
    cot_max_tokens: int | None = 1024
    task_file: str | None = None

    def __post_init__(self) -> None:
        """Check the options."""
        if self.task_file is not None and len(self.tasks) != 1:
            raise ValueError("a task file is run as exactly one task")
        unknown = [t for t in self.tasks if t not in TASKS and self.task_file is None]
        if unknown:
            raise ValueError(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ValueError(f"unknown method(s) {', '.join(bad)}; known: {', '.join(METHODS)}")
        if not self.tasks or not self.methods:
            raise ValueError("nothing to run: no task or no method")
        if self.limit is not None and self.limit < 1:
            raise ValueError("--limit must be at least 1")
        if self.concurrency < 1:
            raise ValueError("--concurrency must be at least 1")
        if self.cot_max_tokens is not None and self.cot_max_tokens < 16:
            raise ValueError("--cot-max-tokens must be at least 16")


def model_label(ctx: Context, role: Role) -> str:
    """The name of a role's model: its configured name, or the injected object's class."""
    return ctx.model(role).label


def graph_settings(ctx: Context) -> dict[str, Any]:
    """The context's settings that shape the results (models, limits, graph options)."""
    settings: dict[str, Any] = {}
    for f in dataclasses.fields(ctx):
        value = getattr(ctx, f.name)
        if f.name not in _NOT_IDENTITY and isinstance(value, str | int | float | bool | None):
            settings[f.name] = value
    return settings


def run_identity(ctx: Context, options: BenchOptions) -> dict[str, Any]:
    """What a continued run must share with the run it continues."""
    identity: dict[str, Any] = {
        "maker": model_label(ctx, "maker"),
        "user": model_label(ctx, "user"),
        "dyck_strip_spaces": options.dyck_strip_spaces,
        "rationales": options.rationales,
        "cot_max_tokens": options.cot_max_tokens,
        "cot_prompt": cot_prompt_version(),
        "settings": graph_settings(ctx),
    }
    if options.task_file is not None:  # a run continues only on the same file's content
        identity["task_file_sha256"] = read_task_file(options.task_file)[0]
    return identity


def unexpected(exc: Exception) -> str:
    """The error recorded for an exception the graph did not turn into an error."""
    return f"{UNEXPECTED}{type(exc).__name__}: {exc}"


def _plain_usage(value: Any) -> dict[str, dict[str, int]]:
    if not isinstance(value, dict):
        return {}
    # a run's first update names a role that spent nothing yet as None
    return {str(role): {k: int(v) for k, v in u.items()} for role, u in value.items() if u}


def run_timed(
    graph: LATMGraph,
    inputs: InputState,
    ctx: Context,
    on_node: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], float]:
    """Run the graph once, timing each node on the ``updates`` stream.

    Returns:
        The final state, one ``{node, seconds, usage}`` per node run (nodes of
        one parallel step share that step's time) and the total seconds.
    """
    started = last = time.perf_counter()
    nodes: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    for mode, chunk in graph.stream(inputs, context=ctx, stream_mode=["updates", "values"]):
        if mode == "values" and isinstance(chunk, dict):
            final = dict(chunk)
        elif mode == "updates" and isinstance(chunk, dict):
            now = time.perf_counter()
            for node, update in chunk.items():
                if node.startswith("__"):
                    continue
                usage = _plain_usage(update.get("usage")) if isinstance(update, dict) else {}
                nodes.append({"node": node, "seconds": round(now - last, 3), "usage": usage})
                if on_node:
                    on_node(node)
            last = now
    return final, nodes, round(time.perf_counter() - started, 3)


def make_tool(
    graph: LATMGraph,
    ctx: Context,
    task: BenchTask,
    store: Any,
    on_node: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Make the task's tool through the graph and describe how it went.

    An unexpected exception is recorded as a failure of the machinery (``infra``),
    to be retried when the run is continued.
    """
    inputs: InputState = {
        "examples": task.demos + task.validation,
        "task_type": task.name,
        "make": True,
    }
    started = time.perf_counter()
    try:
        final, nodes, seconds = run_timed(graph, inputs, ctx, on_node)
    except Exception as exc:
        final, nodes = {"error": unexpected(exc)}, []
        seconds = round(time.perf_counter() - started, 3)
    error = final.get("error")
    tool = final.get("tool")
    code = None
    if tool and not error:
        record = ToolRepository(store, ctx.namespace).get(task.name)
        code = record.code if record is not None else None
    return {
        "task": task.name,
        "ok": bool(tool) and not error,
        "error": error,
        "infra": is_infra_error(error),
        "attempts": int((final.get("making") or {}).get("attempts") or 0),
        "tool": tool,
        "usage": _plain_usage(final.get("usage")),
        "seconds": seconds,
        "nodes": nodes,
        "code": code,
    }


def answer_item(
    graph: LATMGraph, ctx: Context, cot_ctx: Context, task: BenchTask, item: BenchItem, method: str
) -> dict[str, Any]:
    """Answer one test item by one method and score it."""
    record: dict[str, Any] = {"task": task.name, "method": method, "index": item.index}
    if method == "latm":
        inputs: InputState = {"task": item.input, "task_type": task.name}
        started = time.perf_counter()
        try:
            final, nodes, seconds = run_timed(graph, inputs, ctx)
        except Exception as exc:
            final, nodes = {"error": unexpected(exc)}, []
            seconds = round(time.perf_counter() - started, 3)
        answer, error = final.get("answer"), final.get("error")
        record.update(
            answer=answer,
            usage=_plain_usage(final.get("usage")),
            cache_hit=bool(final.get("cache_hit")),
            path=final.get("path"),
            nodes=nodes,
        )
    else:
        started = time.perf_counter()
        cot = answer_cot(cot_ctx, METHOD_ROLE[method], task.demos, item.input)
        seconds = round(time.perf_counter() - started, 3)
        answer, error = cot.answer, cot.error
        record.update(answer=answer, usage=cot.usage, reply=cot.reply)
    record.update(
        target=item.target,
        correct=score(answer, item.target, item.input),
        error=error,
        infra=is_infra_error(error),
        seconds=seconds,
    )
    return record


@dataclass
class RunStats:
    """What a call of :func:`run_bench` did.

    Attributes:
        made: Tasks whose tool making ran now.
        answered: Item records written now.
        skipped: Items already done by an earlier call.
        infra_errors: Records written now that failed for model or sandbox reasons.
        no_tool: Tasks without a tool (their LATM items are not run).
        interrupted: Whether the run was stopped early.
    """

    made: list[str] = field(default_factory=list)
    answered: int = 0
    skipped: int = 0
    infra_errors: int = 0
    no_tool: list[str] = field(default_factory=list)
    interrupted: bool = False


@contextmanager
def _progress(console: Console | None) -> Iterator[Progress | None]:
    if console is None:
        yield None
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        console=console,
    )
    with progress:
        yield progress


def run_bench(
    ctx: Context,
    options: BenchOptions,
    run_dir: RunDir,
    *,
    console: Console | None = None,
) -> RunStats:
    """Run (or continue) a benchmark in ``run_dir``.

    Args:
        ctx: The run's context (models, graph settings).
        options: Tasks, limit, methods, concurrency, task preparation.
        run_dir: Where the records are (and go).
        console: Where progress bars go; ``None`` for none.

    Returns:
        What this call did.

    Raises:
        RunDirError: ``run_dir`` holds a run with other settings.
    """
    run_dir.check_config(run_identity(ctx, options))
    saved: dict[str, Any] = {
        "tasks": list(options.tasks),
        "limit": options.limit,
        "methods": list(options.methods),
    }
    if options.task_file is not None:
        saved["task_file"] = options.task_file
    run_dir.save_options(saved)
    store = open_local_store(run_dir.file(STORE))
    graph = build_graph(store=store)
    cot_ctx = cot_context(ctx, options.cot_max_tokens)
    tasks = [
        prepare_task(
            name,
            limit=options.limit,
            dyck_strip_spaces=options.dyck_strip_spaces,
            rationales=options.rationales,
            task_file=options.task_file,
        )
        for name in options.tasks
    ]
    stats = RunStats()
    made = {t: r for t, r in run_dir.make_records().items() if not r.get("infra")}
    with _progress(console) as progress:
        try:
            if "latm" in options.methods:
                _make_phase(graph, ctx, tasks, made, store, run_dir, stats, progress)
            _answer_phase(graph, ctx, cot_ctx, tasks, made, options, run_dir, stats, progress)
        except KeyboardInterrupt:
            stats.interrupted = True
    return stats


def _make_phase(
    graph: LATMGraph,
    ctx: Context,
    tasks: list[BenchTask],
    made: dict[str, dict[str, Any]],
    store: Any,
    run_dir: RunDir,
    stats: RunStats,
    progress: Progress | None,
) -> None:
    todo = [t for t in tasks if t.name not in made]
    bar: TaskID | None = None
    if progress is not None and todo:
        bar = progress.add_task("making tools", total=len(todo), note="")
    for task in todo:

        def show(node: str, name: str = task.name) -> None:
            if progress is not None and bar is not None:
                progress.update(bar, note=f"{name}: {node} done")

        if progress is not None and bar is not None:
            progress.update(bar, note=f"{task.name}: started")
        record = make_tool(graph, ctx, task, store, show)
        run_dir.append(MAKE, record)
        stats.made.append(task.name)
        stats.infra_errors += int(record["infra"])
        if not record["infra"]:
            made[task.name] = record
        if progress is not None and bar is not None:
            verdict = "tool made" if record["ok"] else "no tool"
            progress.update(bar, advance=1, note=f"{task.name}: {verdict}")


def _answer_phase(
    graph: LATMGraph,
    ctx: Context,
    cot_ctx: Context,
    tasks: list[BenchTask],
    made: dict[str, dict[str, Any]],
    options: BenchOptions,
    run_dir: RunDir,
    stats: RunStats,
    progress: Progress | None,
) -> None:
    done = {k: r for k, r in run_dir.item_records().items() if not r.get("infra")}
    work: list[tuple[BenchTask, BenchItem, str]] = []
    bars: dict[str, TaskID] = {}
    for task in tasks:
        has_tool = bool(made.get(task.name, {}).get("ok"))
        if "latm" in options.methods and not has_tool:
            stats.no_tool.append(task.name)
        todo = [
            (task, item, method)
            for item in task.test
            for method in options.methods
            if (method != "latm" or has_tool) and (task.name, method, item.index) not in done
        ]
        stats.skipped += sum(
            (task.name, m, item.index) in done for item in task.test for m in options.methods
        )
        work.extend(todo)
        if progress is not None and todo:
            bars[task.name] = progress.add_task(task.name, total=len(todo), note="")
    if not work:
        return
    # Item by item across the tasks, so that a run stopped early is balanced over the tasks.
    work.sort(key=lambda w: w[1].index)
    correct: dict[str, list[int]] = {}
    pool = ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="latm-bench")
    queue = iter(work)
    running: dict[Future[dict[str, Any]], tuple[BenchTask, BenchItem, str]] = {}
    try:
        while True:
            while len(running) < options.concurrency:
                nxt = next(queue, None)
                if nxt is None:
                    break
                task, item, method = nxt
                future = pool.submit(answer_item, graph, ctx, cot_ctx, task, item, method)
                running[future] = nxt
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                task, _item, method = running.pop(future)
                record = future.result()
                run_dir.append(ITEMS, record)
                stats.answered += 1
                stats.infra_errors += int(record["infra"])
                tally = correct.setdefault(f"{task.name}/{method}", [0, 0])
                tally[0] += int(record["correct"])
                tally[1] += 1
                if progress is not None and task.name in bars:
                    note = "  ".join(
                        f"{key.split('/')[1]} {c}/{n}"
                        for key, (c, n) in correct.items()
                        if key.startswith(f"{task.name}/")
                    )
                    progress.update(bars[task.name], advance=1, note=note)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
