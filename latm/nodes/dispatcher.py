"""The dispatcher: send a request to a cached tool (a hit) or to tool making (a miss)."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from latm.deadline import DeadlineExceeded, remaining, stamp
from latm.effects import Steps, blocking, drive, io, sync_node, within
from latm.graph.context import Context
from latm.graph.state import (
    DispatcherUpdate,
    Example,
    RouteInfo,
    State,
    TokenUsage,
    ToolRef,
    new_making,
    run_usage,
)
from latm.leases import Claim, aclaim, claim
from latm.llm import ModelError, ainvoke_structured, invoke_structured
from latm.nodes.common import emit, get_context, get_limits, get_repository, get_tool_executor
from latm.prompts import DISPATCH_SYSTEM, DISPATCH_USER
from latm.repository import TASK_TYPE, TASK_TYPE_RULE, ToolRecord, ToolRepository
from latm.routing import Decision, Scored, decide, route_embedder, route_index
from latm.sandbox import SandboxUnavailableError
from latm.tracing import call_config
from latm.usage import retired_steps, usable_steps


class DispatchChoice(BaseModel):
    """The user model's pick among the candidate tools."""

    tool: str = Field(description="the name of the fitting tool, or 'none'")


def fresh_run() -> DispatcherUpdate:
    """A run's start: what an earlier run on the same thread left, cleared.

    The output keys, and the working state in three keys (the tool, the lease,
    the making with its round of candidates).
    """
    return DispatcherUpdate(
        answer=None,
        tool=None,
        cache_hit=False,
        error=None,
        usage=run_usage(),
        path=None,
        routing=None,
        verification=None,
        tool_record=None,
        lease=None,
        making=None,
        candidates=[],
    )


def _text_problem(value: str, what: str, limit: int) -> str | None:
    """Why ``value`` cannot be sent on (not UTF-8 text, or too long), else ``None``."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"{what} is not valid UTF-8 text (undecodable bytes at character {exc.start})"
    if len(value) > limit:
        return f"{what} is {len(value)} characters long; the limit is {limit}"
    return None


def check_examples(raw: Any, ctx: Context | None = None) -> tuple[str | None, list[Example]]:
    """Validate worked examples (the graph's input and the CLI's examples files alike).

    Returns:
        An error message (``None`` when they are fine) and the examples, with
        numeric fields turned into text.
    """
    ctx = ctx or Context()
    if not isinstance(raw, list):
        return "'examples' must be a list of {input, target} objects", []
    if len(raw) > ctx.max_examples:
        return f"{len(raw)} examples given; the limit is {ctx.max_examples}", []
    examples: list[Example] = []
    for i, ex in enumerate(raw):
        if not isinstance(ex, dict) or not {"input", "target"} <= ex.keys():
            return f"example {i} must be an object with 'input' and 'target'", []
        fields = [ex["input"], ex["target"]]
        if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in fields):
            return f"example {i}: 'input' and 'target' must be text", []
        example = Example(input=str(ex["input"]), target=str(ex["target"]))
        if not example["input"].strip():
            return f"example {i} has an empty 'input'", []
        rationale = ex.get("rationale")
        if rationale is not None and not isinstance(rationale, str):
            return f"example {i}: 'rationale' must be text", []
        texts = (("input", example["input"]), ("target", example["target"]))
        for name, value in (*texts, ("rationale", rationale or "")):
            if problem := _text_problem(value, f"example {i}: '{name}'", ctx.max_example_chars):
                return problem, []
        if rationale and rationale.strip():
            example["rationale"] = rationale.strip()
        examples.append(example)
    return None, examples


def check_task_type(task_type: Any) -> str | None:
    """Why ``task_type`` is not a valid task type (``None`` when it is, or absent)."""
    if task_type is not None and (
        not isinstance(task_type, str) or not TASK_TYPE.fullmatch(task_type)
    ):
        return f"'task_type' must be {TASK_TYPE_RULE}"
    return None


def check_request(state: State, ctx: Context | None = None) -> tuple[str | None, list[Example]]:
    """Validate the caller's input (types, UTF-8, the size limits of ``ctx``).

    Returns:
        An error message (``None`` when the input is fine) and the examples,
        with numeric fields turned into text.
    """
    ctx = ctx or Context()
    task = state.get("task", "")
    if not isinstance(task, str):
        return "'task' must be a string", []
    if problem := _text_problem(task, "'task'", ctx.max_request_chars):
        return problem, []
    problem, examples = check_examples(state.get("examples") or [], ctx)
    if problem:
        return problem, []
    if problem := check_task_type(state.get("task_type")):
        return problem, []
    if not task.strip() and not examples:
        return "the request has no 'task' (and no 'examples' to make a tool from)", []
    if state.get("make") and not examples:
        return "'make' needs 'examples' to make a tool from", []
    return None, examples


def _hit(update: DispatcherUpdate, record: ToolRecord) -> DispatcherUpdate:
    """``update`` routed to ``record`` (a cache hit)."""
    update["route"] = "hit"
    update["cache_hit"] = True
    update["tool_record"] = record.model_dump(mode="json")
    update["tool"] = ToolRef(name=record.name, task_type=record.task_type, version=record.version)
    return update


def _stop(update: DispatcherUpdate, error: str) -> DispatcherUpdate:
    """``update`` ending the run with ``error``."""
    update["route"] = "stop"
    update["error"] = error
    return update


def _miss(
    update: DispatcherUpdate,
    state: State,
    runtime: Runtime[Context],
    repo: ToolRepository,
    examples: list[Example],
    reason: str,
) -> Steps[DispatcherUpdate]:
    """A miss: take the lease to make the tool, or use the one another run just made."""
    ctx = get_context(runtime)
    left = remaining(update.get("deadline_at"))
    if left is not None and left < ctx.lease_wait_s:  # wait for another maker no longer
        ctx = dataclasses.replace(ctx, lease_wait_s=max(left, 0.0))
    got: Claim = yield io(claim, aclaim, repo, ctx, state.get("task_type"), examples)
    if got.kind == "error":
        return _stop(update, got.error or "the tool-making lease could not be taken")
    if got.record is not None:
        emit(runtime, "dispatcher", "hit", tool=got.record.task_type, by="lease")
        update["routing"] = RouteInfo(by="lease", tool=got.record.task_type)
        update = _hit(update, got.record)
        if not state.get("task"):
            update["route"] = "stop"
        return update
    emit(runtime, "dispatcher", "miss", reason=reason)
    update["route"] = "miss"
    update["lease"] = got.lease
    update["making"] = new_making(uuid.uuid4().hex)
    return update


def dispatcher_steps(state: State, runtime: Runtime[Context]) -> Steps[DispatcherUpdate]:
    """Route the request: a fitting cached tool answers it, or a new tool is made.

    An exact ``task_type`` match wins without any model call. Otherwise the
    request is placed in the tools' embedding space (:mod:`latm.routing`): inside
    the closest tool's calibrated region with a clear margin is a hit, far from
    every region a miss, both with no model call; a borderline case asks the
    candidates' ``solve`` entries, and the user model only when these disagree
    (``Context.dispatch="llm"``: the user model confirms every search result, as
    before). ``routing`` in the output says how it was decided. Retired tools
    (too many use-time failures) are skipped. A miss takes the tool-making
    lease, so that concurrent requests make one tool (:mod:`latm.leases`). A
    miss without examples ends the run with an error that names the closest
    tools.

    Written as steps (:mod:`latm.effects`): store reads, the lease and the user
    model's call are awaited on async paths; routing in the embedding space and the
    parsers' sandboxed runs leave the event loop.
    """
    update = fresh_run()
    ctx = get_context(runtime)
    update["deadline_at"] = stamp(ctx.run_deadline_s)
    problem, examples = check_request(state, ctx)
    if problem:
        emit(runtime, "dispatcher", "invalid", error=problem)
        return _stop(update, f"invalid request: {problem}")
    update["examples"] = examples
    repo = get_repository(runtime, ctx)
    task = state.get("task", "").strip()
    task_type = state.get("task_type")

    if examples and (state.get("make") or not task):
        return (
            yield from _miss(update, state, runtime, repo, examples, "tool making was asked for")
        )
    if task_type:
        record: ToolRecord | None = yield io(repo.get, repo.aget, task_type)
        why = (yield from retired_steps(repo, record, ctx)) if record is not None else None
        if record is not None and why is None:
            emit(runtime, "dispatcher", "hit", tool=record.task_type, by="task_type")
            update["routing"] = RouteInfo(by="task_type", tool=record.task_type, asked_model=False)
            return _hit(update, record)
        if examples:
            reason = why or f"no tool for task type {task_type!r}"
            return (yield from _miss(update, state, runtime, repo, examples, reason))
        return _stop(
            update,
            f"{why}; pass 'examples' to re-make it"
            if why
            else f"no tool for task type {task_type!r} and no examples to make one",
        )

    if ctx.dispatch == "llm":
        return (yield from _route_by_model(update, state, runtime, ctx, repo, examples, task))
    return (yield from _route_by_embedding(update, state, runtime, ctx, repo, examples, task))


dispatcher = sync_node(dispatcher_steps)
"""The dispatcher node as a plain function (``dispatcher(state, runtime)``)."""


def _no_tool(
    update: DispatcherUpdate,
    state: State,
    runtime: Runtime[Context],
    repo: ToolRepository,
    examples: list[Example],
    shortlist: list[str] | None = None,
) -> DispatcherUpdate:
    """No cached tool fits: make one from the examples, or stop naming the closest tools."""
    return drive(_no_tool_steps(update, state, runtime, repo, examples, shortlist))


def _no_tool_steps(
    update: DispatcherUpdate,
    state: State,
    runtime: Runtime[Context],
    repo: ToolRepository,
    examples: list[Example],
    shortlist: list[str] | None = None,
) -> Steps[DispatcherUpdate]:
    if examples:
        return (yield from _miss(update, state, runtime, repo, examples, "no cached tool fits"))
    empty = not shortlist and (yield io(repo.is_empty, repo.ais_empty))
    closest = ", ".join(shortlist or []) or (
        "none (the repository is empty)" if empty else "none matched the request"
    )
    return _stop(
        update,
        "no cached tool fits this request and no examples were given to make one; "
        f"closest tools: {closest}. Pass 'examples' (worked {{input, target}} pairs) "
        "to make a tool, or 'task_type' to name one.",
    )


def _ask_model(
    ctx: Context, task: str, found: list[ToolRecord], deadline_at: float | None = None
) -> Steps[tuple[ToolRecord | None, dict[str, TokenUsage]]]:
    """The user model's pick among candidate tools (``None`` for none).

    Raises:
        ModelError: The model could not be reached or gave no usable reply.
    """
    tools = "\n".join(f"- {r.task_type}: {r.description}" for r in found)
    messages = [
        SystemMessage(DISPATCH_SYSTEM),
        HumanMessage(DISPATCH_USER.format(task=task, tools=tools)),
    ]
    config = call_config("user", "dispatcher")
    ask = io(
        invoke_structured, ainvoke_structured, ctx, "user", messages, DispatchChoice, config=config
    )
    try:
        choice, usage = yield within(deadline_at, "the dispatcher's model call", ask)
    except DeadlineExceeded as exc:
        raise ModelError(str(exc)) from exc
    picked = {r.task_type: r for r in found}.get(choice.tool.strip() if choice else "")
    return picked, usage


def _route_by_model(
    update: DispatcherUpdate,
    state: State,
    runtime: Runtime[Context],
    ctx: Context,
    repo: ToolRepository,
    examples: list[Example],
    task: str,
) -> Steps[DispatcherUpdate]:
    """The LLM-confirmed dispatcher: search, then the user model confirms a candidate."""
    searched = yield io(repo.search, repo.asearch, task, limit=ctx.dispatch_candidates)
    found = yield from usable_steps(repo, searched, ctx)
    shortlist = [r.task_type for r, _ in found]
    if found:
        deadline_at = update.get("deadline_at")
        try:
            picked, usage = yield from _ask_model(ctx, task, [r for r, _ in found], deadline_at)
        except ModelError as exc:
            return _stop(update, str(exc))
        update["usage"] = run_usage(usage)
        routing = RouteInfo(
            by="model",
            tool=picked.task_type if picked else None,
            candidates=shortlist,
            asked_model=True,
        )
        update["routing"] = routing
        emit(runtime, "dispatcher", "route", **routing)
        if picked is not None:
            emit(runtime, "dispatcher", "hit", tool=picked.task_type, by="search")
            return _hit(update, picked)
    return (yield from _no_tool_steps(update, state, runtime, repo, examples, shortlist))


def _parser_signal(
    ctx: Context, tenant: str, task: str, records: list[ToolRecord]
) -> dict[str, bool]:
    """Whether each tool's ``solve(request)`` entry accepts the request (runs sandboxed)."""
    if not records:
        return {}
    try:
        executor = get_tool_executor(ctx)
    except SandboxUnavailableError:
        return {}
    limits = get_limits(ctx)
    accepted: dict[str, bool] = {}
    for record in records:
        call = f"{record.direct_entry}({task!r})"
        result = executor.run(record.code, [call], limits, cache_key=record.worker_key(tenant))[0]
        accepted[record.task_type] = bool(result.ok and result.value not in (None, ""))
    return accepted


def embedding_route(decision: Decision, shortlist: list[str], embedder: str) -> RouteInfo:
    """What the embedding space said, as the output's ``routing`` shows it (pure)."""
    info = RouteInfo(
        by="embedding",
        tool=None,
        verdict=decision.verdict,
        candidates=shortlist,
        asked_model=False,
        embedder=embedder,
    )
    if (best := decision.best) is not None:
        info["distance"] = round(1.0 - best.similarity, 4)
        info["threshold"] = round(1.0 - best.threshold, 4)
        info["margin"] = round(decision.margin, 4)
    return info


def parsers_say(signal: dict[str, bool], near: list[str]) -> str | None:
    """What the ``solve`` entries of a borderline request's tools settle (pure).

    Args:
        signal: Whether each tool's entry accepted the request (tools with one).
        near: Every tool in or near whose region the request falls.

    Returns:
        The one tool whose entry accepts the request, ``""`` when every tool's
        entry rejects it (no tool fits), or ``None`` when they cannot settle it
        (several accept, or some tool has no entry): the user model decides.
    """
    accepted = [t for t, ok in signal.items() if ok]
    if not near or len(signal) != len(near):
        return None
    if len(accepted) == 1:
        return accepted[0]
    return "" if not accepted else None


def _route_by_embedding(
    update: DispatcherUpdate,
    state: State,
    runtime: Runtime[Context],
    ctx: Context,
    repo: ToolRepository,
    examples: list[Example],
    task: str,
) -> Steps[DispatcherUpdate]:
    """Route in the embedding space; ask the user model only when the signals disagree.

    See :mod:`latm.routing` for the index and the calibrated acceptance regions.
    """
    try:
        embedder, name = yield blocking(route_embedder, ctx.route_embeddings)
    except ValueError as exc:
        return _stop(update, f"the dispatcher cannot embed: {exc}")
    limit = max(3, ctx.dispatch_candidates)
    ranked: list[Scored] = yield blocking(_rank, repo, embedder, name, task, limit)
    records: dict[str, ToolRecord] = {}
    while True:  # drop retired (or vanished) tools among those that count, then decide
        decision = decide(ranked)
        best = decision.best
        counted = decision.near if decision.verdict == "borderline" else []
        if decision.verdict == "hit" and best is not None:
            counted = [best]
        gone = None
        for scored in counted:
            record = records.get(scored.task_type) or (
                yield io(repo.get, repo.aget, scored.task_type)
            )
            if record is None or (yield from retired_steps(repo, record, ctx)) is not None:
                gone = scored.task_type
                break
            records[scored.task_type] = record
        if gone is None:
            break
        ranked = [s for s in ranked if s.task_type != gone]
    shortlist = [s.task_type for s in ranked]
    info = embedding_route(decision, shortlist, name)
    picked: ToolRecord | None = None
    if decision.verdict == "hit" and best is not None:
        picked = records[best.task_type]
    elif decision.verdict == "borderline":
        # the parser signal: the solve entries of every tool in or near its region
        near = [records[s.task_type] for s in decision.near]
        with_parser = [r for r in near if r.direct_entry]
        signal = yield blocking(_parser_signal, ctx, repo.tenant, task, with_parser)
        info["parser"] = signal
        verdict = parsers_say(signal, [r.task_type for r in near])
        if verdict is not None:  # the parsers settled it: one tool, or none
            info["by"] = "parser"
            picked = records[verdict] if verdict else None
        else:  # several parse it, or some cannot tell (no parser): the user model decides
            info["by"], info["asked_model"] = "model", True
            try:
                picked, usage = yield from _ask_model(ctx, task, near, update.get("deadline_at"))
            except ModelError as exc:
                update["routing"] = info
                return _stop(update, str(exc))
            update["usage"] = run_usage(usage)
    info["tool"] = picked.task_type if picked is not None else None
    update["routing"] = info
    emit(runtime, "dispatcher", "route", **info)
    if picked is not None:
        emit(runtime, "dispatcher", "hit", tool=picked.task_type, by=info["by"])
        return _hit(update, picked)
    return (yield from _no_tool_steps(update, state, runtime, repo, examples, shortlist))


def _rank(
    repo: ToolRepository, embedder: Embeddings, name: str, task: str, limit: int
) -> list[Scored]:
    """The tools nearest the request in the route index (synced with the store first)."""
    return route_index(repo, embedder, name).rank(task, limit=limit)
