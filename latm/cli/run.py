"""Running the graph from the CLI, with each node's progress shown as it happens."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from langgraph.types import StreamMode
from rich.markup import escape

from latm.backends import BackendError, backend_for
from latm.cli.common import UserError, console, err_console
from latm.graph.builder import build_graph
from latm.graph.context import Context
from latm.graph.state import InputState
from latm.sandbox import describe_isolation, get_executor


def configure_models(ctx: Context) -> Context:
    """Point the roles without an endpoint at the local llama.cpp server.

    A role counts as configured when it has a base URL or its API-key
    variable is set; otherwise the local server is started (if installed) and
    used, and the CLI says so.
    """
    roles = {
        "maker": bool(ctx.maker_base_url or os.environ.get(ctx.maker_api_key_env)),
        "user": bool(ctx.user_base_url or os.environ.get(ctx.user_api_key_env)),
    }
    if all(roles.values()) or ctx.maker_llm is not None:
        return ctx
    try:
        from latm.local import ensure_local_endpoints
    except ImportError:  # pragma: no cover - the local backend is not part of this build
        return ctx
    try:
        endpoints = ensure_local_endpoints(console=err_console)
    except Exception as exc:
        raise UserError(
            f"no model endpoint is configured and the local default is unavailable: {exc}. "
            "Set OPENAI_API_KEY, or LATM_MAKER_BASE_URL/LATM_USER_BASE_URL, or run "
            "'latm local install'."
        ) from exc
    if not roles["maker"]:
        ctx.maker_base_url, ctx.maker_model = endpoints.maker_base_url, endpoints.maker_model
        err_console.print(f"[dim]maker: local {endpoints.maker_model} at {ctx.maker_base_url}[/]")
    if not roles["user"]:
        ctx.user_base_url, ctx.user_model = endpoints.user_base_url, endpoints.user_model
        err_console.print(f"[dim]user:  local {endpoints.user_model} at {ctx.user_base_url}[/]")
    return ctx


def render_event(event: dict[str, Any]) -> str | None:
    """One line of progress for a custom stream event, or ``None`` to skip it."""
    node, kind = event.get("node", "?"), event.get("event")
    head = f"[bold cyan]{node:<10}[/] "
    text: str | None = None
    if kind == "invalid":
        text = f"[red]invalid request[/]: {escape(str(event.get('error')))}"
    elif kind == "hit":
        text = f"[green]hit[/] {event['tool']} (by {event['by']})"
    elif kind == "miss":
        text = f"[yellow]miss[/]: {escape(str(event['reason']))} → making a tool"
    elif kind == "start":
        n = event.get("n_candidates", 1)
        if event.get("candidate", 0) == 0:
            several = f" for {n} candidates" if n > 1 else ""
            text = f"attempt {event['attempt']}/{event['max_attempts']}: asking the maker{several}"
    elif kind == "proposed":
        direct = " + solve(request)" if event.get("direct") else ""
        text = f"#{event.get('candidate', 0)} proposed {event['entry']}(){direct} "
        text += f"({event['lines']} lines)"
    elif kind == "unusable":
        text = f"#{event.get('candidate', 0)} [red]unusable reply[/]: "
        text += escape(str(event["problem"]))
    elif kind == "candidate":
        mark = "[green]✓[/]" if event["passed"] else "[red]✗[/]"
        text = f"{mark} #{event['candidate']}: {event['n_passed']}/{event['n_cases']} checks"
        if event.get("problem"):
            text += f"; {escape(str(event['problem'])[:200])}"
    elif kind == "done":
        verdict = "[green]verified[/]" if event["passed"] else "[red]not yet[/]"
        direct = ", with a direct entry" if event.get("direct") else ""
        text = f"{verdict}: candidate #{event.get('candidate', 0)}{direct}"
    elif kind == "function":
        text = f"[green]function verified[/] (#{event['candidate']}); "
        text += "next: its solve(request) entry"
    elif kind == "no_direct":
        text = "no solve(request) entry verified: keeping the function for the user model"
    elif kind == "evidence":
        text = f"evidence: {event['cases']} examples ({event['blind_cases']} unseen answers), "
        text += f"lucky-pass chance {event['lucky_pass']:.2g} → {event['level']}"
    elif kind == "stored":
        text = f"stored {event['tool']} v{event['version']}"
        if event.get("level") == "weak":
            text += " [yellow](weakly verified)[/]"
    elif kind == "call":
        text = escape(str(event["call"])[:300])
    elif kind == "failed":
        text = f"[red]{event['status']}[/]: {escape(str(event.get('error')))}"
    elif kind == "fallback":
        text = f"the tool's solve() rejected the request ({escape(str(event['reason']))[:120]}); "
        text += "asking the user model for a call"
    elif kind == "answer":
        how = " (direct, no model call)" if event.get("path") == "direct" else ""
        text = f"answer: [bold]{escape(str(event['answer']))}[/]{how}"
    return head + text if text else None


_warned = False


def warn_if_unsandboxed(ctx: Context) -> None:
    """Say once, loudly, when generated code will run without OS-level isolation."""
    global _warned
    if _warned or not ctx.allow_unsandboxed:
        return
    executor = get_executor(ctx.executor, allow_unsandboxed=True)
    if getattr(executor, "sandboxed", True) is False:
        _warned = True
        err_console.print(f"[bold red]warning:[/] {escape(describe_isolation(executor))}")


def run_graph(inputs: InputState, ctx: Context, *, quiet: bool = False) -> dict[str, Any]:
    """Run LATM once, printing each node's progress, and return its output."""
    try:
        app = build_graph(store=backend_for(ctx).store)
    except BackendError as exc:
        raise UserError(f"cannot open the tool repository: {exc}") from exc
    warn_if_unsandboxed(ctx)
    output: dict[str, Any] = {}
    started = time.perf_counter()
    modes: list[StreamMode] = ["custom", "values"]
    for mode, chunk in app.stream(inputs, context=ctx, stream_mode=modes):
        if mode == "custom" and not quiet and isinstance(chunk, dict):
            line = render_event(chunk)
            if line:
                err_console.print(line)
        elif mode == "values" and isinstance(chunk, dict):
            output = dict(chunk)
    output["seconds"] = round(time.perf_counter() - started, 3)
    return output


def print_result(output: dict[str, Any], *, as_json: bool) -> int:
    """Print a run's output; returns the exit status (1 when it failed)."""
    keys = ("answer", "tool", "cache_hit", "path", "error", "usage", "seconds")
    result = {k: output.get(k) for k in keys}
    if as_json:
        console.print_json(json.dumps(result))
    else:
        if result["error"]:
            err_console.print(f"[bold red]error:[/] {escape(str(result['error']))}")
        elif result["answer"] is not None:
            console.print(escape(str(result["answer"])))
        usage = result.get("usage") or {}
        tokens = ", ".join(
            f"{role} {u['total_tokens']} tokens/{u['calls']} calls"
            for role, u in sorted(usage.items())
        )
        tool = result.get("tool")
        where = f"{tool['task_type']} v{tool['version']}" if tool else "no tool"
        hit = "cache hit" if result.get("cache_hit") else "no cache hit"
        err_console.print(
            f"[dim]{where}; {hit}; {tokens or 'no model calls'}; {result['seconds']:.1f} s[/]"
        )
    return 1 if result["error"] else 0
