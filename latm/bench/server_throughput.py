"""Throughput of LATM on a LangGraph API server under concurrent runs, side by side.

``python -m latm.bench.server_throughput`` starts, all on 127.0.0.1, the scripted
OpenAI-compatible model server of :mod:`latm.bench.load` with a per-request
latency (``--latency-ms``: replies overlap, as a real model server's do) and
``langgraph dev`` (no browser, no reload) serving LATM's graph from this
checkout. It makes one tool first, then, per round, fires through
``langgraph_sdk`` (``runs.wait``, ``--concurrency`` runs in flight):

* ``hit/llm``: ``--runs`` cache hits answered through the user model (one model
  call, one sandboxed call of the tool each);
* ``hit/direct``: ``--runs`` cache hits answered by the tool's ``solve`` entry
  (no model call: the server's own cost);
* ``mix``: ``--runs`` runs of which every ``--make-every``-th makes a new tool
  (a task type of its own: a maker call, verification, storing) and the rest
  are hits through the user model.

It prints each phase's throughput (runs/s), p50/p90 latency and errors (a run
that ends with an ``error`` or a wrong answer, or fails to come back).

``--compare-with CHECKOUT`` starts a second server running another checkout's
LATM (say, the main branch before a change) beside this one's, both on the same
model server, and measures them in alternating rounds (``--rounds``, the order
flipped every round), so that both see the same machine load; it prints the
median of each figure over the rounds for both and their ratio.

Bounded in count and time (``--timeout-s`` per run); it stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latm.bench.load import (
    N_EXAMPLES,
    TASK_TYPE,
    FakeChat,
    examples,
    percentile_ms,
    start_server,
    stop_server,
)

ROOT = Path(__file__).resolve().parents[2]
PHASES = ("hit/llm", "hit/direct", "mix")


@dataclass
class Result:
    """The outcome of one phase on one server.

    Attributes:
        phase: Its name.
        latencies: Seconds per run that came back (with an answer or an ``error``).
        errors: One line per run that failed: an ``error``, a wrong answer, or no reply.
        wall_s: The phase's wall time.
        runs: How many runs were sent.
    """

    phase: str
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    runs: int = 0

    @property
    def rate(self) -> float:
        """Runs per second (every run that came back, right or wrong)."""
        return len(self.latencies) / self.wall_s if self.wall_s else 0.0

    def figure(self, metric: str) -> float:
        """``runs/s``, ``p50 ms`` or ``p90 ms``."""
        return self.rate if metric == "runs/s" else self.percentile(float(metric[1:3]))

    def percentile(self, p: float) -> float:
        """The ``p``-th latency percentile in ms (nearest rank); NaN without runs."""
        return percentile_ms(self.latencies, p)


@dataclass
class Server:
    """One ``langgraph dev`` under test and the checkout it runs."""

    label: str
    root: Path
    url: str
    proc: Any
    work: Path
    tools_made: int = 0


class Bench:
    """The runs one bench sends: the shared examples and the answers to expect."""

    def __init__(self, runs: int, concurrency: int, make_every: int, timeout_s: float) -> None:
        """Split the shipped word-sorting examples into the maker's and the requests'."""
        data = examples()
        self.train, self.pool = data[:N_EXAMPLES], data[N_EXAMPLES:]
        self.runs = runs
        self.concurrency = concurrency
        self.make_every = make_every
        self.timeout_s = timeout_s

    def request(self, i: int, **extra: Any) -> dict[str, Any]:
        """The ``i``-th word-sorting request (with the answer it must get)."""
        ex = self.pool[i % len(self.pool)]
        return {"task": ex["input"], "task_type": TASK_TYPE, "expected": ex["target"], **extra}

    def phase_inputs(
        self, phase: str, server: Server
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The inputs of a phase on ``server`` and the run context they are sent with."""
        llm = {"direct_entry": False}
        if phase == "hit/direct":
            return [self.request(i) for i in range(self.runs)], {}
        if phase == "hit/llm":
            return [self.request(i) for i in range(self.runs)], llm
        inputs = []
        for i in range(self.runs):
            if self.make_every and i % self.make_every == 0:
                server.tools_made += 1
                task_type = f"{TASK_TYPE}_{server.tools_made}"
                inputs.append(self.request(i, task_type=task_type, examples=self.train))
            else:
                inputs.append(self.request(i))
        return inputs, llm

    async def run_phase(self, server: Server, phase: str) -> Result:
        """Send a phase's runs to ``server`` (``concurrency`` in flight); time each."""
        from langgraph_sdk import get_client

        inputs, context = self.phase_inputs(phase, server)
        client = get_client(url=server.url, timeout=self.timeout_s + 10)
        result = Result(phase, runs=len(inputs))
        gate = asyncio.Semaphore(self.concurrency)

        async def one(payload: dict[str, Any]) -> None:
            expected = payload.pop("expected")
            async with gate:
                started = time.perf_counter()
                try:
                    out: Any = await asyncio.wait_for(
                        client.runs.wait(
                            None, "latm", input=payload, context=context, raise_error=False
                        ),
                        self.timeout_s,
                    )
                except Exception as exc:  # a timeout, a dropped connection, an HTTP error
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                    return
                result.latencies.append(time.perf_counter() - started)
            if not isinstance(out, dict):
                result.errors.append(f"unexpected output {str(out)[:200]}")
            elif out.get("error"):
                result.errors.append(str(out["error"]))
            elif out.get("answer") != expected:
                result.errors.append(f"wrong answer {out.get('answer')!r}")

        started = time.perf_counter()
        await asyncio.gather(*(one(p) for p in inputs))
        result.wall_s = time.perf_counter() - started
        return result

    async def make_first(self, server: Server) -> None:
        """Make the tool the hits use (one run)."""
        from langgraph_sdk import get_client

        client = get_client(url=server.url, timeout=self.timeout_s + 10)
        payload = self.request(0, examples=self.train)
        payload.pop("expected")
        out: Any = await client.runs.wait(None, "latm", input=payload, raise_error=False)
        if not isinstance(out, dict) or out.get("error") or out.get("answer") is None:
            raise SystemExit(f"{server.label}: could not make the first tool: {out}")


def header() -> str:
    """The single-server table's header."""
    return (
        f"{'server':<8}{'phase':<12}{'runs':>6}{'conc':>6}{'wall s':>9}{'runs/s':>9}"
        f"{'p50 ms':>9}{'p90 ms':>9}{'errors':>7}"
    )


def row(server: Server, result: Result, concurrency: int) -> str:
    """One line of the single-server table."""
    return (
        f"{server.label:<8}{result.phase:<12}{result.runs:>6}{concurrency:>6}{result.wall_s:>9.2f}"
        f"{result.rate:>9.2f}{result.percentile(50):>9.0f}{result.percentile(90):>9.0f}"
        f"{len(result.errors):>7}"
    )


def summary(
    results: dict[str, dict[str, list[Result]]], labels: tuple[str, str], rounds: int
) -> list[str]:
    """Median figures over the rounds, ``labels[0]`` (before) beside ``labels[1]`` (after)."""
    before, after = labels
    lines = [
        f"median over {rounds} alternating rounds",
        f"{'phase':<12}{'metric':<8}{before:>12}{after:>12}{'after/before':>14}",
    ]
    for phase in PHASES:
        old, new = results[before].get(phase), results[after].get(phase)
        if not old or not new:
            continue
        for metric in ("runs/s", "p50 ms", "p90 ms"):
            a = statistics.median(r.figure(metric) for r in old)
            b = statistics.median(r.figure(metric) for r in new)
            ratio = b / a if a else float("nan")
            lines.append(f"{phase:<12}{metric:<8}{a:>12.2f}{b:>12.2f}{ratio:>13.2f}x")
        errors = (sum(len(r.errors) for r in old), sum(len(r.errors) for r in new))
        lines.append(f"{phase:<12}{'errors':<8}{errors[0]:>12}{errors[1]:>12}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the figures; exit 1 when a run failed."""
    parser = argparse.ArgumentParser(
        prog="python -m latm.bench.server_throughput", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--runs", type=int, default=96, help="runs per phase and round (96)")
    parser.add_argument("--concurrency", type=int, default=32, help="runs in flight (32)")
    parser.add_argument(
        "--latency-ms", type=float, default=300.0, help="the model server's latency (300 ms)"
    )
    parser.add_argument(
        "--make-every", type=int, default=8, help="in the mix, one run in N makes a tool (8)"
    )
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated phases to run ({','.join(PHASES)})",
    )
    parser.add_argument("--jobs", type=int, default=64, help="runs a server executes at once (64)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server (3)")
    parser.add_argument(
        "--compare-with",
        metavar="CHECKOUT",
        help="another checkout of the project to serve and measure alternately with this one",
    )
    parser.add_argument("--timeout-s", type=float, default=300.0, help="per run (300 s)")
    args = parser.parse_args(argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if unknown := set(phases) - set(PHASES):
        parser.error(f"unknown phases {sorted(unknown)}; choose among {', '.join(PHASES)}")
    if not (
        0 < args.runs <= 2000
        and 0 < args.concurrency <= 256
        and 0 < args.rounds <= 20
        and 0 < args.jobs <= 256
        and 0 <= args.latency_ms <= 10_000
        and args.make_every >= 0
    ):
        parser.error(
            "keep 0 < --runs ≤ 2000, --concurrency ≤ 256, --rounds ≤ 20, --jobs ≤ 256 "
            "and --latency-ms ≤ 10000"
        )
    checkouts = [("this", ROOT)]
    if args.compare_with:
        other = Path(args.compare_with).resolve()
        if not (other / "latm" / "graph" / "builder.py").is_file():
            parser.error(f"{other} is not a checkout of the project")
        checkouts = [("before", other), ("after", ROOT)]

    bench = Bench(args.runs, args.concurrency, args.make_every, args.timeout_s)
    chat = FakeChat([e["input"] for e in bench.train[3:6]], latency_s=args.latency_ms / 1000)
    servers: list[Server] = []
    failed = False
    try:
        for label, root in checkouts:
            work = Path(tempfile.mkdtemp(prefix="latm-throughput-"))
            proc, url = start_server(work, chat, args.jobs, root=root)
            servers.append(Server(label, root, url, proc, work))
            print(f"{label}: {root} at {url}", file=sys.stderr)
        for server in servers:
            asyncio.run(bench.make_first(server))
        print(
            f"latency {args.latency_ms:g} ms per model call, {args.runs} runs per phase, "
            f"{args.concurrency} in flight, server jobs {args.jobs}"
        )
        print(header())
        results: dict[str, dict[str, list[Result]]] = {s.label: {} for s in servers}
        for n in range(args.rounds):
            order = servers if n % 2 == 0 else servers[::-1]
            for server in order:
                for phase in phases:
                    result = asyncio.run(bench.run_phase(server, phase))
                    results[server.label].setdefault(phase, []).append(result)
                    print(row(server, result, args.concurrency), flush=True)
                    failed = failed or bool(result.errors)
                    for error in result.errors[:3]:
                        print(f"  error: {error[:300]}")
        if len(servers) == 2:
            print("\n".join(summary(results, ("before", "after"), args.rounds)))
    finally:
        for server in servers:
            stop_server(server.proc)
        chat.stop()
    for server in servers:
        if failed:
            print(f"{server.label} server log: {server.work / 'server.log'}")
        else:
            shutil.rmtree(server.work, ignore_errors=True)
    print(f"model calls: {dict(sorted(chat.calls.items()))}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
