"""Dispatcher benchmark: the paper's protocol, a 10 000-tool scale test and the hit cost.

``python -m latm.bench.dispatch`` runs, in one process on one machine:

1. **The paper's dispatcher protocol** over the six shipped tasks: for each seed,
   tools for 4 random tasks are in a SQLite repository and 100 test questions
   (examples 10-249) drawn from all six tasks are routed; a question of a known
   task must reach its tool, one of an unknown task must get no tool. The
   LLM-confirmed dispatcher (``dispatch="llm"``: lexical search, then the user
   model confirms a candidate on every request) and the embedding dispatcher
   (``dispatch="embedding"``) route the same questions, side by side.
2. **The scale test**: 10 000 synthetic tools (each indexed by five generated
   questions) join the known tools in a SQLite store; the same questions are
   routed again, with p50/p99 latency.
3. **The hit cost**: a whole graph run answered by a cached tool's ``solve``
   entry, with ``task_type`` and without it (routed by the embedding dispatcher).

Each benchmark tool is made the way the graph makes one under the default
settings (demos 0-2 for the maker, usage demos and call checks on examples 5-7,
direct checks on examples 3-9), so it is indexed by the 7 questions it was
verified on. Its ``solve`` entry is a format parser written for the benchmark
(it accepts its task's questions and raises on others), standing in for the
maker's: the benchmark measures routing, not answers.

The user model is the local one (``latm local install``) when it is installed
and ``--model local`` (the default) finds it; otherwise a scripted model that
always confirms the first candidate stands in, its tokens estimated as
characters / 4, and the table says so.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore

from latm.backends import open_backend
from latm.data import TASKS, load_task
from latm.graph.builder import build_graph
from latm.graph.context import Context
from latm.graph.state import CaseReport, InputState, passed_cases
from latm.local import USER_MODEL, LocalPaths, ensure_local_endpoints, is_installed
from latm.nodes.dispatcher import dispatcher, fresh_run
from latm.nodes.wrappers import store_errors
from latm.repository import ToolRecord, ToolRepository, UsageDemo
from latm.routing import route_embedder

PARSERS: dict[str, str] = {
    "word_sorting": """
import re
def solve(request: str) -> str:
    m = re.search(r"Sort the following words alphabetically: List: (.+)$", request, re.S)
    if not m:
        raise ValueError("not a word-sorting question")
    return " ".join(sorted(m.group(1).split()))
""",
    "dyck_languages": """
import re
def solve(request: str) -> str:
    m = re.search(r"Complete the rest of the sequence.*Input: ([\\[\\](){}<> ]+)$", request, re.S)
    if not m:
        raise ValueError("not a Dyck question")
    pairs, stack = {"(": ")", "[": "]", "{": "}", "<": ">"}, []
    for ch in m.group(1).split():
        if ch in pairs:
            stack.append(pairs[ch])
        elif not stack or stack.pop() != ch:
            raise ValueError("unbalanced input")
    return " ".join(reversed(stack))
""",
    "logical_deduction_five_objects": """
import re
def solve(request: str) -> str:
    if not request.startswith("The following paragraphs each describe a set of five objects"):
        raise ValueError("not a logical-deduction question")
    if len(re.findall(r"^\\([A-E]\\) ", request, re.M)) != 5:
        raise ValueError("no five options")
    return "(A)"
""",
    "tracking_shuffled_objects_five_objects": """
import re
def solve(request: str) -> str:
    if not request.startswith("Alice, Bob, Claire, Dave, and Eve"):
        raise ValueError("not a tracking question")
    if "swap" not in request or len(re.findall(r"^\\([A-E]\\) ", request, re.M)) != 5:
        raise ValueError("no swaps or no five options")
    return "(A)"
""",
    "chinese_remainder_theorem": """
import re
def solve(request: str) -> str:
    limit = re.search(r"no more than (\\d+)", request)
    rules = re.findall(r"(\\d+) [a-z ]+?, (\\d+) (?:will be|is|are) left", request)
    if not limit or len(rules) < 2:
        raise ValueError("not a remainder question")
    for n in range(int(limit.group(1)) + 1):
        if all(n % int(k) == int(r) for k, r in rules):
            return str(n)
    raise ValueError("no solution")
""",
    "schedule_meeting": """
import re
def solve(request: str) -> str:
    if "want to schedule a" not in request or "availability:" not in request:
        raise ValueError("not a scheduling question")
    slots = re.findall(r"(\\d\\d:\\d\\d) - (\\d\\d:\\d\\d)", request)
    if not slots:
        raise ValueError("no availability")
    return f"{slots[0][0]} - {slots[0][1]}"
""",
}

DESCRIPTIONS = {
    "word_sorting": "Sort a list of words alphabetically.",
    "dyck_languages": "Close the open brackets of a Dyck-language sequence.",
    "logical_deduction_five_objects": "Order five objects from clues and pick the option.",
    "tracking_shuffled_objects_five_objects": "Track who holds what after pairwise swaps.",
    "chinese_remainder_theorem": "Find the smallest number with given remainders.",
    "schedule_meeting": "Find the earliest common free slot of two or three people.",
}


def bench_record(task: str) -> ToolRecord:
    """A tool for ``task`` as the graph stores one under the default settings."""
    examples = load_task(task)
    call_cases = examples[5:8]
    direct_cases = examples[3:10]
    verification = passed_cases(call_cases, "call") + passed_cases(direct_cases, "direct")
    return ToolRecord(
        name="solve",
        task_type=task,
        description=DESCRIPTIONS[task],
        signature="def solve(request: str) -> str",
        docstring=DESCRIPTIONS[task],
        code=PARSERS[task].strip() + "\n",
        demos=[
            UsageDemo(question=e["input"], call=f"solve({e['input']!r})", answer=e["target"])
            for e in call_cases
        ],
        maker_model="benchmark",
        verification=verification,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        version=1,
        direct_entry="solve",
    )


# --- synthetic tools for the scale test -----------------------------------------------

_VERBS = ("count", "sort", "rank", "merge", "split", "convert", "score", "classify")
_THINGS = (
    "invoices",
    "orders",
    "tickets",
    "sensors",
    "genes",
    "routes",
    "tweets",
    "recipes",
    "trades",
    "flights",
)
_BY = ("date", "size", "weight", "price", "color", "region", "priority", "author")
_FORMATS = (
    "CSV",
    "JSON",
    "XML",
    "YAML",
    "a table",
    "a list",
    "a report",
    "plain text",
    "a chart",
    "a ledger",
)


def synthetic_record(i: int, rng: random.Random) -> ToolRecord:
    """A synthetic tool (a distinct task type), indexed by five generated questions."""
    verb, thing = _VERBS[i % 8], _THINGS[(i // 8) % 10]
    by, fmt = _BY[(i // 80) % 8], _FORMATS[(i // 640) % 10]
    ident = f"t{i:05d}"
    questions = [
        f"Please {verb} these {thing} by {by} and answer in {fmt}: "
        + ", ".join(
            f"{thing[:-1]} {rng.randint(1, 999)} ({by} {rng.randint(1, 99)})" for _ in range(3)
        )
        + f" [ref {ident}-{k}]"
        for k in range(5)
    ]
    return ToolRecord(
        name=f"{verb}_{thing}_{ident}",
        task_type=f"{verb}_{thing}_by_{by}_{ident}",
        description=f"{verb.capitalize()} {thing} by {by}, answering in {fmt}.",
        signature="def solve(request: str) -> str",
        docstring="",
        code="def solve(request: str) -> str:\n    raise ValueError('synthetic')\n",
        demos=[UsageDemo(question=q, call="solve(...)", answer="-") for q in questions[:3]],
        maker_model="synthetic",
        verification=[
            CaseReport(input=q, expected="-", got="-", error=None, passed=True, check="direct")
            for q in questions
        ],
        created_at="2026-01-01T00:00:00+00:00",
        version=1,
        direct_entry="solve",
    )


# --- the user model ----------------------------------------------------------------------


class FirstCandidateModel(BaseChatModel):
    """A scripted user model that confirms the first candidate tool it is shown.

    It stands in when no local model is installed. Its token counts are
    estimates (characters / 4); it answers instantly, so latencies measured with
    it leave out the model's own time.
    """

    @property
    def _llm_type(self) -> str:
        return "first-candidate"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        prompt = "\n".join(str(m.content) for m in messages)
        first = next(
            (ln[2:].split(":", 1)[0] for ln in prompt.splitlines() if ln.startswith("- ")), "none"
        )
        text = json.dumps({"tool": first})
        n_in, n_out = len(prompt) // 4, len(text) // 4
        usage = {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out}
        return ChatResult(
            generations=[ChatGeneration(message=AIMessage(content=text, usage_metadata=usage))]
        )


def user_model_context(choice: str) -> tuple[dict[str, Any], str]:
    """Context settings for the user model, and a label saying which it is."""
    if choice == "local":
        try:
            if is_installed(LocalPaths.from_env()):
                endpoints = ensure_local_endpoints()
                return (
                    {"user_model": USER_MODEL.name, "user_base_url": endpoints.user_base_url},
                    f"local {USER_MODEL.name}",
                )
        except Exception as exc:  # not installed or not startable: say so below
            print(f"(local user model unavailable: {exc})", file=sys.stderr)
    return {"user_llm": FirstCandidateModel()}, "scripted (confirms the first candidate)"


# --- routing -----------------------------------------------------------------------------


@dataclass
class Tally:
    """Routing outcomes of one dispatcher."""

    known: list[bool] = field(default_factory=list)
    unknown: list[bool] = field(default_factory=list)
    calls: int = 0
    tokens: int = 0
    zero_token: int = 0
    ms: list[float] = field(default_factory=list)
    by: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def routes(self) -> int:
        """How many requests were routed."""
        return len(self.known) + len(self.unknown)

    def row(self, name: str) -> dict[str, Any]:
        """The table row."""
        n = max(self.routes, 1)
        ms = sorted(self.ms) or [0.0]
        return {
            "dispatcher": name,
            "routes": self.routes,
            "known": _pct(self.known),
            "unknown": _pct(self.unknown),
            "overall": _pct(self.known + self.unknown),
            "model_calls_per_route": self.calls / n,
            "tokens_per_route": self.tokens / n,
            "zero_token_routes": self.zero_token / n,
            "p50_ms": _quantile(ms, 0.5),
            "p99_ms": _quantile(ms, 0.99),
            "decided_by": dict(sorted(self.by.items())),
        }


def _pct(values: list[bool]) -> float:
    return 100.0 * sum(values) / len(values) if values else float("nan")


def _quantile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


DISPATCHER = store_errors(reset=fresh_run)(dispatcher)
"""The dispatcher node as the graph runs it (a failing store is a clear ``error``)."""


def _private_store(path: Path) -> BaseStore:
    """A benchmark's own SQLite file, opened as every store is (:mod:`latm.backends`)."""
    return open_backend(store_path=str(path)).store


def route_one(
    store: BaseStore, ctx: Context, question: str
) -> tuple[str | None, dict[str, Any], float]:
    """Run the dispatcher node alone on one request.

    Returns:
        The chosen tool (``None``: no tool), the node's update and its wall time in ms.
    """
    runtime = Runtime(context=ctx, store=store)
    started = time.perf_counter()
    update: dict[str, Any] = dict(DISPATCHER({"task": question}, runtime))
    elapsed = (time.perf_counter() - started) * 1000
    tool = update.get("tool")
    return (tool["task_type"] if tool else None), update, elapsed


def score(tally: Tally, truth: str | None, known: set[str], got: str | None, update: Any) -> None:
    """Count one routed request."""
    if truth in known:
        tally.known.append(got == truth)
    else:
        tally.unknown.append(got is None)
    usage = update.get("usage") or {}
    user = usage.get("user") or {}
    tally.calls += int(user.get("calls", 0))
    tokens = int(user.get("total_tokens", 0))
    tally.tokens += tokens
    tally.zero_token += tokens == 0
    routing = update.get("routing") or {}
    by = str(routing.get("by", "search" if user else "none"))
    tally.by[by] = tally.by.get(by, 0) + 1
    error = update.get("error")
    if error and "no cached tool fits" not in error:
        tally.errors.append(error)


def questions_for(seed: int, n: int) -> tuple[list[str], list[tuple[str, str]]]:
    """The known tasks of a seed and its ``n`` (task, question) test draws."""
    rng = random.Random(seed)
    known = sorted(rng.sample(list(TASKS), 4))
    pools = {t: [e["input"] for e in load_task(t)[10:]] for t in TASKS}
    drawn: list[tuple[str, str]] = []
    for _ in range(n):
        task = rng.choice(list(TASKS))
        drawn.append((task, pools[task].pop(rng.randrange(len(pools[task])))))
    return known, drawn


def run_protocol(
    seeds: Sequence[int], n: int, user: dict[str, Any], work: Path, route_embeddings: str
) -> dict[str, Tally]:
    """The paper's protocol, both dispatchers on the same questions."""
    tallies = {"llm": Tally(), "embedding": Tally()}
    for seed in seeds:
        known, drawn = questions_for(seed, n)
        store = _private_store(work / f"protocol-{seed}.sqlite")
        repo = ToolRepository(store, "bench")
        for task in known:
            repo.put(bench_record(task))
        for mode, tally in tallies.items():
            ctx = Context(
                namespace="bench",
                dispatch=mode,
                route_embeddings=route_embeddings,
                max_retries=0,
                **user,
            )
            route_one(store, ctx, "warm-up request")  # loads the model and the index
            for task, question in drawn:
                got, update, ms = route_one(store, ctx, question)
                tally.ms.append(ms)
                score(tally, task, set(known), got, update)
    return tallies


def run_scale(
    n_tools: int, seed: int, n: int, old_n: int, user: dict[str, Any], work: Path, emb: str
) -> tuple[dict[str, Tally], dict[str, float]]:
    """Route the protocol's questions among ``n_tools`` synthetic tools plus 4 known ones."""
    known, drawn = questions_for(seed, n)
    store = _private_store(work / "scale.sqlite")
    repo = ToolRepository(store, "scale")
    rng = random.Random(seed)
    started = time.perf_counter()
    for task in known:
        repo.put(bench_record(task))
    for i in range(n_tools):
        repo.put(synthetic_record(i, rng))
    timings = {"store_seconds": time.perf_counter() - started}
    tallies = {"llm": Tally(), "embedding": Tally()}
    for mode, tally in tallies.items():
        ctx = Context(namespace="scale", dispatch=mode, route_embeddings=emb, max_retries=0, **user)
        started = time.perf_counter()
        route_one(store, ctx, "warm-up request")
        timings[f"{mode}_first_route_seconds"] = time.perf_counter() - started
        for task, question in drawn[: old_n if mode == "llm" else n]:
            got, update, ms = route_one(store, ctx, question)
            tally.ms.append(ms)
            score(tally, task, set(known), got, update)
    return tallies, timings


def run_hit_cost(work: Path, emb: str, n: int) -> dict[str, float]:
    """p50 of a whole graph run answered by a cached tool, with and without ``task_type``."""
    store = _private_store(work / "hits.sqlite")
    repo = ToolRepository(store, "hits")
    for task in TASKS:
        repo.put(bench_record(task))
    graph = build_graph(store=store)
    ctx = Context(namespace="hits", route_embeddings=emb, user_llm=FirstCandidateModel())
    questions = [e["input"] for e in load_task("word_sorting")[10 : 10 + n]]
    out: dict[str, float] = {}
    for label, extra in (("with_task_type", {"task_type": "word_sorting"}), ("without", {})):
        graph.invoke(
            cast(InputState, {"task": questions[0], **extra}), context=ctx
        )  # warm the executor
        times = []
        for q in questions:
            started = time.perf_counter()
            result = graph.invoke(cast(InputState, {"task": q, **extra}), context=ctx)
            times.append((time.perf_counter() - started) * 1000)
            if not result.get("cache_hit") or result.get("path") != "direct":
                raise SystemExit(f"hit-cost run did not hit directly: {result.get('error')}")
        out[label] = statistics.median(times)
    return out


def render(
    protocol: dict[str, Tally],
    scale: dict[str, Tally],
    timings: dict[str, float],
    hits: dict[str, float],
    labels: dict[str, str],
) -> str:
    """The results as one Markdown table, with the settings it ran with."""
    lines = [
        "| setting | dispatcher | routes | known % | unknown % | overall % | model calls/route "
        "| tokens/route | 0-token routes | p50 ms | p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for setting, tallies in (("protocol", protocol), (labels["scale"], scale)):
        for mode, tally in tallies.items():
            row = tally.row(mode)
            name = "LLM-confirmed (old)" if mode == "llm" else "embedding (new)"
            lines.append(
                f"| {setting} | {name} | {row['routes']} | {row['known']:.1f} | "
                f"{row['unknown']:.1f} | {row['overall']:.1f} | "
                f"{row['model_calls_per_route']:.2f} | {row['tokens_per_route']:.0f} | "
                f"{100 * row['zero_token_routes']:.0f} % | {row['p50_ms']:.1f} | "
                f"{row['p99_ms']:.1f} |"
            )
    lines.append("")
    for setting, tallies in (("protocol", protocol), ("scale", scale)):
        for mode, tally in tallies.items():
            lines.append(f"- {setting}, {mode}: decided by {tally.row(mode)['decided_by']}")
            if tally.errors:
                lines.append(f"  - {len(tally.errors)} errors, first: {tally.errors[0][:200]}")
    lines.append(f"- user model: {labels['user']}; route embeddings: {labels['embedder']}")
    if timings:
        built = ", ".join(f"{k} {v:.1f}" for k, v in sorted(timings.items()))
        lines.append(f"- scale store: {built}")
    if hits:
        ratio = hits["without"] / hits["with_task_type"]
        lines.append(
            f"- whole-graph cache hit (direct solve, SQLite store), p50: with task_type "
            f"{hits['with_task_type']:.1f} ms, without {hits['without']:.1f} ms ({ratio:.2f}x)"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(
        prog="python -m latm.bench.dispatch", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--questions", type=int, default=100, help="questions per seed")
    parser.add_argument("--scale-tools", type=int, default=10_000)
    parser.add_argument(
        "--scale-old", type=int, default=20, help="questions the old dispatcher routes at scale"
    )
    parser.add_argument("--hits", type=int, default=30, help="graph runs per hit-cost setting")
    parser.add_argument("--model", choices=("local", "scripted"), default="local")
    parser.add_argument("--embeddings", default="auto", help="the route embeddings (default: auto)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    user, user_label = user_model_context(args.model)
    _, embedder_name = route_embedder(args.embeddings)
    with tempfile.TemporaryDirectory(prefix="latm-dispatch-") as tmp:
        work = Path(tmp)
        print(f"protocol: seeds {args.seeds}, {args.questions} questions each", file=sys.stderr)
        protocol = run_protocol(args.seeds, args.questions, user, work, args.embeddings)
        scale: dict[str, Tally] = {}
        timings: dict[str, float] = {}
        if args.scale_tools > 0:
            print(f"scale: {args.scale_tools} synthetic tools", file=sys.stderr)
            scale, timings = run_scale(
                args.scale_tools,
                args.seeds[0],
                args.questions,
                args.scale_old,
                user,
                work,
                args.embeddings,
            )
        hits = run_hit_cost(work, args.embeddings, args.hits) if args.hits else {}
    labels = {
        "user": user_label,
        "embedder": embedder_name,
        "scale": f"{args.scale_tools:,} tools",
    }
    print(render(protocol, scale, timings, hits, labels))
    if args.json:
        figures = {
            "protocol": {m: t.row(m) for m, t in protocol.items()},
            "scale": {m: t.row(m) for m, t in scale.items()},
            "timings": timings,
            "hits_ms": hits,
            "labels": labels,
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
