"""Per-call latency of running a generated tool, on every path, side by side.

Run ``python -m latm.bench.sandbox_latency [--calls N]``. For each sandboxed
tier available here it times:

* ``fresh process``: launch a new sandbox process, confine it, run one call, kill it;
* ``verification``: :class:`~latm.sandbox.executor.SandboxExecutor` with
  ``cache_key=None`` (the zygote forks a fresh, confined child per call);
* ``warm cached``: the same executor with a ``cache_key`` (a warm worker
  dedicated to the tool answers; host round trip);
* ``warm cached, awaited``: the same call awaited from an event loop, as the
  nodes' async twins make it (:func:`latm.aio.arun_tool`: the call runs on
  LATM's I/O threads, so the loop is never blocked; the hop is the difference);

and, as floors, the unhardened ``subprocess`` executor (a fresh interpreter per
call, no isolation) and an ``in-process`` call of the same runner code in this
process (no isolation at all: only the benchmark's own trivial tool runs there).
Targets: warm cached p50 <= 0.5 ms; verification p50 <= 5 ms per example.

``--compare-with CHECKOUT`` measures another checkout of the project (say,
the main branch before a change) and this one alternately, ``--rounds`` times
each, in one run: on a shared machine the two see the same load. It prints the
median over the rounds of every path's p50 for both and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from latm.aio import arun_tool
from latm.sandbox import ExecLimits, SubprocessExecutor
from latm.sandbox import runner as tool_runner
from latm.sandbox.executor import SandboxExecutor
from latm.sandbox.probe import probe
from latm.sandbox.process import SandboxConfig

TOOL = "import math\n\ndef tool(a, b):\n    return math.gcd(a, b) + a + b\n"
LIMITS = ExecLimits(timeout_s=5.0, memory_mb=512, max_output_bytes=65536)
WARM_TARGET_MS = 0.5
VERIFY_TARGET_MS = 5.0


def _call(i: int) -> str:
    return f"tool({i}, {i * 3 + 1})"


def _expected(i: int) -> str:
    import math

    return str(math.gcd(i, i * 3 + 1) + i + i * 3 + 1)


def _time(n: int, one: Callable[[int], str | None], warmup: int = 3) -> list[float]:
    for i in range(warmup):
        one(i)
    samples = []
    for i in range(n):
        started = time.perf_counter()
        value = one(i)
        samples.append((time.perf_counter() - started) * 1000)
        if value != _expected(i):
            raise SystemExit(f"wrong answer on call {i}: {value!r}")
    return samples


def _time_awaited(
    n: int, executor: SandboxExecutor, cache_key: str, warmup: int = 3
) -> list[float]:
    """Like :func:`_time`, each call awaited with :func:`~latm.aio.arun_tool` in one loop."""

    async def timed() -> list[float]:
        samples = []
        for i in range(-warmup, n):
            started = time.perf_counter()
            results = await arun_tool(executor, TOOL, [_call(abs(i))], LIMITS, cache_key=cache_key)
            if i >= 0:
                samples.append((time.perf_counter() - started) * 1000)
            if results[0].value != _expected(abs(i)):
                raise SystemExit(f"wrong answer on awaited call {i}: {results[0].value!r}")
        return samples

    return asyncio.run(timed())


def _fresh_process(config: SandboxConfig) -> Callable[[int], str | None]:
    def one(i: int) -> str | None:
        executor = SandboxExecutor(config, max_parallel=1, prestart=False, keep_spare=False)
        try:
            return executor.run(TOOL, [_call(i)], LIMITS)[0].value
        finally:
            executor.close()

    return one


def _executor_call(executor: SandboxExecutor, cache_key: str | None) -> Callable[[int], str | None]:
    def one(i: int) -> str | None:
        return executor.run(TOOL, [_call(i)], LIMITS, cache_key=cache_key)[0].value

    return one


def _row(path: str, samples: list[float]) -> str:
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    return (
        f"{path:<40} {len(samples):>5} {pct(50):>9.3f} {pct(90):>9.3f} {pct(99):>9.3f} "
        f"{statistics.fmean(samples):>9.3f} {max(samples):>9.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    """Time every path and print a table; 1 if a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per path (default 200)")
    parser.add_argument(
        "--fresh-calls",
        type=int,
        default=None,
        help="calls for the fresh-process and subprocess paths (default: --calls)",
    )
    parser.add_argument(
        "--compare-with",
        metavar="CHECKOUT",
        help="another checkout of the project to measure alternately with this one",
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating rounds with --compare-with (5)"
    )
    args = parser.parse_args(argv)
    calls = max(1, args.calls)
    fresh_calls = max(1, args.fresh_calls or calls)
    if args.compare_with:
        return compare(Path(args.compare_with), calls, fresh_calls, max(1, args.rounds))

    report = probe()
    print("machine: " + "; ".join(f"{k}: {v}" for k, v in report.facts))
    header = (
        f"{'path':<40} {'calls':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} "
        f"{'mean ms':>9} {'max ms':>9}"
    )
    print(header)
    print("-" * len(header))
    missed = []
    rows: dict[str, str] = {}
    tiers = []
    for tier in report.tiers:
        if not tier.sandboxed:
            continue
        label = f"{tier.name} (tier {tier.level})"
        if not tier.available or tier.config is None:
            rows[label] = f"{label:<40} unavailable: {tier.reason}"
            continue
        tiers.append((label, tier.config))
    # The persistent paths first: tearing down hundreds of fresh sandboxes (their
    # namespaces) keeps the kernel busy for a while and would tax them unfairly.
    for label, config in tiers:
        executor = SandboxExecutor(config, max_calls_per_worker=max(1000, calls + 10))
        try:
            verify = _time(calls, _executor_call(executor, None))
            warm = _time(calls, _executor_call(executor, "bench:1:tool"))
            awaited = _time_awaited(calls, executor, "bench:1:tool")
        finally:
            executor.close()
        rows[f"{label}: verification"] = _row(f"{label}: verification", verify)
        rows[f"{label}: warm cached"] = _row(f"{label}: warm cached", warm)
        rows[f"{label}: warm cached, awaited"] = _row(f"{label}: warm cached, awaited", awaited)
        if statistics.median(verify) > VERIFY_TARGET_MS:
            missed.append(f"{label} verification p50 > {VERIFY_TARGET_MS} ms")
        if statistics.median(warm) > WARM_TARGET_MS:
            missed.append(f"{label} warm cached p50 > {WARM_TARGET_MS} ms")
    in_process = _time(
        calls, lambda i: tool_runner.execute(TOOL, _call(i), LIMITS.max_output_bytes)["value"]
    )
    for label, config in tiers:
        rows[f"{label}: fresh process"] = _row(
            f"{label}: fresh process", _time(fresh_calls, _fresh_process(config))
        )
    floor = SubprocessExecutor()
    subprocess_floor = _time(fresh_calls, lambda i: floor.run(TOOL, [_call(i)], LIMITS)[0].value)
    for label, _config in tiers:
        for path in ("fresh process", "verification", "warm cached", "warm cached, awaited"):
            print(rows[f"{label}: {path}"])
    for line in (v for k, v in rows.items() if ":" not in k):
        print(line)
    print(_row("subprocess floor (no isolation)", subprocess_floor))
    print(_row("in-process (no isolation)", in_process))
    print(
        f"targets: warm cached p50 <= {WARM_TARGET_MS} ms, "
        f"verification p50 <= {VERIFY_TARGET_MS} ms per example: "
        + ("met" if not missed else "MISSED: " + "; ".join(missed))
    )
    return 1 if missed else 0


_ROW = re.compile(r"^(\S.*?)\s+(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)$")


def _p50s(checkout: Path, calls: int, fresh_calls: int) -> dict[str, float]:
    """Run this benchmark from ``checkout`` in a fresh interpreter; its p50 per path."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "latm.bench.sandbox_latency",
            *("--calls", str(calls), "--fresh-calls", str(fresh_calls)),
        ],
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(checkout)},
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    rows = {}
    for line in done.stdout.splitlines():
        match = _ROW.match(line.strip())
        if match:
            rows[match.group(1).strip()] = float(match.group(3))
    if not rows:
        raise SystemExit(f"no figures from {checkout}: {done.stderr.strip()[-500:]}")
    return rows


def compare(other: Path, calls: int, fresh_calls: int, rounds: int) -> int:
    """Measure ``other`` and this checkout alternately; print medians side by side."""
    here = Path(__file__).resolve().parents[2]
    before: dict[str, list[float]] = {}
    after: dict[str, list[float]] = {}
    for n in range(rounds):
        for side, checkout in ((before, other), (after, here)):
            for path, p50 in _p50s(checkout, calls, fresh_calls).items():
                side.setdefault(path, []).append(p50)
        print(f"round {n + 1}/{rounds} done", file=sys.stderr)
    print(f"p50 per call, median of {rounds} alternating rounds ({calls} calls per path)")
    header = f"{'path':<40} {'before ms':>10} {'after ms':>10} {'after/before':>13}"
    print(header)
    print("-" * len(header))
    for path in after:
        if path not in before:
            continue
        old, new = statistics.median(before[path]), statistics.median(after[path])
        ratio = new / old if old else float("nan")
        print(f"{path:<40} {old:>10.3f} {new:>10.3f} {ratio:>12.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
