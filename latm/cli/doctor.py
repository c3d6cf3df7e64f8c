"""``latm doctor``: which isolation tier runs generated code here, and why."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from rich.markup import escape
from rich.table import Table

from latm.cli.common import UserError, console
from latm.sandbox import (
    EXECUTOR_NAMES,
    ExecLimits,
    SandboxUnavailableError,
    get_executor,
    resolve,
    settings_from_env,
)
from latm.sandbox.executor import ISOLATION, guarantees
from latm.sandbox.probe import ALLOW_ENV, EXECUTOR_ENV, probe

_CHECK_CODE = "import math\n\ndef tool(n):\n    return math.factorial(n)\n"


def register(subparsers: Any) -> None:
    """Add the ``doctor`` sub-command."""
    parser = subparsers.add_parser(
        "doctor",
        help="report the sandbox: which isolation tier runs generated code, and why",
        description=(
            "Probe the isolation tiers (1: bubblewrap + Landlock + seccomp as an unprivileged "
            "uid; 2: Landlock + seccomp + unprivileged uid; 3: no isolation, only with "
            f"{ALLOW_ENV}=1) and report which one the current settings get."
        ),
    )
    parser.add_argument(
        "--executor",
        choices=EXECUTOR_NAMES,
        help=f"the executor setting to check (default: ${EXECUTOR_ENV} or 'auto')",
    )
    parser.add_argument(
        "--allow-unsandboxed",
        action="store_true",
        default=None,
        help=f"check as if {ALLOW_ENV}=1 (default: from the environment)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="also run a small tool through the chosen executor and time it",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=handler)


def _timed_check(name: str, allow: bool) -> dict[str, Any]:
    executor = get_executor(name, allow_unsandboxed=allow)
    limits = ExecLimits(timeout_s=5.0)
    executor.run(_CHECK_CODE, ["tool(10)"], limits)  # the first call waits for start-up
    started = time.perf_counter()
    fresh = executor.run(_CHECK_CODE, ["tool(10)"], limits)[0]
    fresh_ms = (time.perf_counter() - started) * 1000
    key = "doctor:1:check"
    executor.run(_CHECK_CODE, ["tool(10)"], limits, cache_key=key)
    started = time.perf_counter()
    warm = executor.run(_CHECK_CODE, ["tool(10)"], limits, cache_key=key)[0]
    warm_ms = (time.perf_counter() - started) * 1000
    ok = fresh.ok and warm.ok and fresh.value == warm.value == "3628800"
    return {
        "ok": ok,
        "verification_ms": round(fresh_ms, 3),
        "warm_ms": round(warm_ms, 3),
        "error": None if ok else (fresh.error or warm.error or "wrong answer"),
    }


def handler(args: argparse.Namespace) -> int:
    """Print the probe's findings and the tier in use; 0 if generated code may run."""
    env_name, env_allow = settings_from_env()
    name = args.executor or env_name
    allow = env_allow if args.allow_unsandboxed is None else bool(args.allow_unsandboxed)
    try:
        choice = resolve(name, allow_unsandboxed=allow)
    except ValueError as exc:
        raise UserError(f"{EXECUTOR_ENV}: {exc}") from exc
    report = probe()
    check: dict[str, Any] | None = None
    if args.check and choice.tier is not None:
        try:
            check = _timed_check(name, allow)
        except SandboxUnavailableError as exc:
            check = {"ok": False, "error": str(exc)}
    active = choice.tier.name if choice.tier is not None else None
    promised = guarantees(choice.tier.config) if choice.tier is not None else []
    promised += [
        (
            "model calls",
            "the user model's call reaches a tool only as a call with literal arguments",
        ),
        ("tool output", "never raises in the host; the CLI strips control and escape sequences"),
    ]
    if args.json:
        print(
            json.dumps(
                {
                    "setting": {"executor": name, "allow_unsandboxed": allow},
                    "active": active,
                    "sandboxed": bool(choice.tier and choice.tier.sandboxed),
                    "reason": choice.reason,
                    "tiers": [
                        {
                            "name": t.name,
                            "level": t.level,
                            "available": t.available,
                            "sandboxed": t.sandboxed,
                            "reason": t.reason,
                        }
                        for t in report.tiers
                    ],
                    "facts": dict(report.facts),
                    "probe_ms": round(report.duration_ms, 1),
                    "check": check,
                    "guarantees": dict(promised) if choice.tier is not None else {},
                },
                indent=2,
            )
        )
        return 0 if choice.tier is not None else 1

    facts = Table(title="machine", show_header=False, title_justify="left")
    facts.add_column(style="bold")
    facts.add_column()
    for what, finding in report.facts:
        facts.add_row(what, escape(finding))
    console.print(facts)
    tiers = Table(title="isolation tiers", title_justify="left")
    tiers.add_column("tier")
    tiers.add_column("name", style="bold")
    tiers.add_column("status")
    tiers.add_column("why")
    for tier in report.tiers:
        if not tier.available:
            status = "[red]unavailable[/]"
        elif tier.sandboxed:
            status = "[green]available[/]"
        else:
            status = "[yellow]opt-in only[/]"
        tiers.add_row(str(tier.level), tier.name, status, escape(tier.reason))
    console.print(tiers)
    console.print(
        f"setting: {EXECUTOR_ENV}={name}, {ALLOW_ENV}={'1' if allow else '0'} "
        f"(probed in {report.duration_ms:.0f} ms)"
    )
    if choice.tier is None:
        console.print(f"[bold red]active: none[/] - {escape(choice.reason)}")
        return 1
    colour = "green" if choice.tier.sandboxed else "bold yellow"
    console.print(f"[{colour}]active: {escape(choice.reason)}[/]")
    if not choice.tier.sandboxed:
        console.print(
            "[bold yellow]WARNING: generated code runs WITHOUT isolation on this machine.[/]"
        )
    else:
        console.print(escape(ISOLATION[choice.tier.name]))
    table = Table(title="guarantees", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for what, how in promised:
        table.add_row(what, escape(how))
    console.print(table)
    if check is not None:
        if check["ok"]:
            console.print(
                f"check: ok - verification call {check['verification_ms']:.2f} ms, "
                f"warm cached call {check['warm_ms']:.3f} ms"
            )
        else:
            console.print(f"[red]check failed:[/] {escape(str(check['error']))}")
            return 1
    return 0
