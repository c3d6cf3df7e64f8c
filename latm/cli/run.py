"""Running the graph from the CLI, with each node's progress shown as it happens."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from langgraph.types import StreamMode
from rich.console import Console
from rich.markup import escape

from latm.backends import BackendError, backend_for
from latm.cli.common import UserError, console, err_console
from latm.graph.builder import build_graph
from latm.graph.context import Context
from latm.graph.state import InputState
from latm.sandbox import describe_isolation, get_executor

PROGRESS_INTERVAL_S = 15.0
"""How often the maker's progress is printed when stderr is not a terminal."""

_FIELDS = {
    "'examples'": "examples (--examples FILE)",
    "'task_type'": "a task type (--task-type NAME)",
    "'task'": "a question",
}
"""Graph input fields as the CLI user knows them."""


def shorten(text: str, limit: int) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters (``…`` marks a cut)."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip() + "…"


def cli_terms(message: str) -> str:
    """An error message of the graph with its input field names as CLI options."""
    for field, term in _FIELDS.items():
        message = message.replace(f"pass {field}", f"pass {term}")
        message = message.replace(f"Pass {field}", f"Pass {term}")
        message = message.replace(f"or {field}", f"or {term}")
        message = message.replace(f"no {field}", f"no {term}")
        message = message.replace(f"needs {field}", f"needs {term}")
    return message


class MakerProgress:
    """A live count of the tokens the maker has written, per reply, with elapsed time.

    Fed with the ``messages`` stream (one chunk per generated token); on a
    terminal it updates one status line, otherwise it prints a line every
    :data:`PROGRESS_INTERVAL_S` seconds while the maker writes.
    """

    def __init__(self, out: Console, interval: float | None = None) -> None:
        self.out = out
        self.interval = PROGRESS_INTERVAL_S if interval is None else interval
        self.tokens: dict[str, int] = {}
        self.started: float | None = None
        self.printed = 0.0
        self.status: Any = None

    def token(self, reply: str, text: str) -> None:
        """Count one streamed chunk of the maker's ``reply`` (its LangGraph task id)."""
        now = time.monotonic()
        if self.started is None:
            self.started = now
            self.printed = now
        self.tokens[reply] = self.tokens.get(reply, 0) + (1 if text else 0)
        line = self.line(now)
        if self.out.is_terminal:
            if self.status is None:
                self.status = self.out.status(line)
                self.status.start()
            else:
                self.status.update(line)
        elif now - self.printed >= self.interval:
            self.printed = now
            self.out.print(f"[bold cyan]{'propose':<10}[/] {line}", soft_wrap=True)

    def line(self, now: float | None = None) -> str:
        """``maker writing: #0 120 tokens, #1 45 tokens (32 s)``."""
        elapsed = (now or time.monotonic()) - (self.started or time.monotonic())
        counts = ", ".join(f"#{i} {n} tokens" for i, n in enumerate(self.tokens.values()))
        return f"maker writing: {counts} ({elapsed:.0f} s)"

    def stop(self) -> None:
        """End the round's count (its replies are in)."""
        if self.status is not None:
            self.status.stop()
            self.status = None
        self.tokens.clear()
        self.started = None


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
        # lazy: `latm --help` loads no graph, store or model code
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
        text = f"[red]invalid request[/]: {escape(cli_terms(str(event.get('error'))))}"
    elif kind == "hit":
        text = f"[green]hit[/] {event['tool']} (by {event['by']})"
    elif kind == "miss":
        text = f"[yellow]miss[/]: {escape(shorten(event['reason'], 200))} → making a tool"
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
        text += escape(shorten(event["problem"], 200))
    elif kind == "candidate":
        mark = "[green]✓[/]" if event["passed"] else "[red]✗[/]"
        text = f"{mark} #{event['candidate']}: {event['n_passed']}/{event['n_cases']} checks"
        if event.get("problem"):
            text += f"; {escape(shorten(event['problem'], 200))}"
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
        text = escape(shorten(event["call"], 300))
    elif kind == "failed":
        what = _FAILED.get(str(event.get("status")), f"the tool failed ({event.get('status')})")
        text = f"[red]{what}[/]: {escape(shorten(event.get('error') or '', 300))}"
    elif kind == "fallback":
        text = (
            f"the tool's solve() rejected the request ({escape(shorten(event['reason'], 120))}); "
        )
        text += "asking the user model for a call"
    elif kind == "answer":
        how = (
            " (direct: the tool's solve() read the question)"
            if event.get("path") == "direct"
            else ""
        )
        text = f"answer: [bold]{escape(str(event['answer']))}[/]{how}"
    return head + text if text else None


_FAILED = {
    "error": "the tool raised an error",
    "timeout": "the tool timed out",
    "memory": "the tool ran out of memory",
}

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
    modes: list[StreamMode] = ["custom", "values"] if quiet else ["custom", "values", "messages"]
    progress = MakerProgress(err_console)
    try:
        for mode, chunk in app.stream(inputs, context=ctx, stream_mode=modes):
            if mode == "messages":
                message, meta = chunk if isinstance(chunk, tuple) else (None, None)
                if isinstance(meta, dict) and meta.get("langgraph_node") == "propose":
                    reply = str(
                        meta.get("langgraph_checkpoint_ns") or meta.get("langgraph_task_id")
                    )
                    progress.token(reply, str(getattr(message, "content", "") or ""))
            elif mode == "custom" and not quiet and isinstance(chunk, dict):
                if chunk.get("node") != "propose":  # the round's replies are all in
                    progress.stop()
                line = render_event(chunk)
                if line:
                    err_console.print(line, soft_wrap=True)
            elif mode == "values" and isinstance(chunk, dict):
                output = dict(chunk)
    finally:
        progress.stop()
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
            message = escape(cli_terms(str(result["error"])))
            err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
        elif result["answer"] is not None:
            console.print(escape(str(result["answer"])), soft_wrap=True)
        usage = result.get("usage") or {}
        tokens = ", ".join(
            f"{role} {u['total_tokens']} tokens/{u['calls']} calls"
            for role, u in sorted(usage.items())
        )
        tool = result.get("tool")
        where = f"{tool['task_type']} v{tool['version']}" if tool else "no tool"
        hit = "cache hit" if result.get("cache_hit") else "no cache hit"
        err_console.print(
            f"[dim]{where}; {hit}; {tokens or 'no model calls'}; {result['seconds']:.1f} s[/]",
            soft_wrap=True,
        )
    return 1 if result["error"] else 0
