"""Wrap: package the verified function as a tool and store it (paper, stage 3)."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime

from langgraph.runtime import Runtime

from latm.codeparse import DIRECT_ENTRY, ReplyError, function_info
from latm.effects import Steps, io, sync_node
from latm.graph.context import Context
from latm.graph.state import Best, Example, State, ToolRef, WrapUpdate, cases_of
from latm.nodes.common import (
    STALE_THREAD,
    emit,
    get_context,
    get_repository,
    split_examples,
)
from latm.repository import ToolRecord, UsageDemo, VerificationStrength


def describe(docstring: str, task_type: str) -> str:
    """A tool's description: its docstring's first paragraph, or a default."""
    first = docstring.strip().split("\n\n")[0]
    return " ".join(first.split()) or f"Solves {task_type.replace('_', ' ')} problems."


def tool_identity(task_type: str | None, entry: str, examples: list[Example]) -> str:
    """The key a new tool is stored under: the task type, or its name and examples.

    Without a task type the function's name alone would collide (two tasks whose
    makers both wrote ``solve_task`` would share one tool), so a hash of the
    examples it was made from is added: ``sort_words-3f2a9c1b0d4e``.
    """
    if task_type:
        return task_type
    canonical = json.dumps(
        [[e["input"], e["target"]] for e in examples], ensure_ascii=False, separators=(",", ":")
    )
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9_]+", "_", entry).strip("_")[:40] or "tool"
    return f"{name}-{digest}"


def _stored(record: ToolRecord) -> WrapUpdate:
    strength = record.strength
    return WrapUpdate(
        tool_record=record.model_dump(mode="json"),
        tool=ToolRef(name=record.name, task_type=record.task_type, version=record.version),
        verification=strength.model_dump(mode="json") if strength else None,
    )


def usage_demos(best: Best, validation: list[Example]) -> list[UsageDemo]:
    """The maker's calls that passed, with their questions: how the user model calls the tool.

    A call that failed (the maker miscopied the question's data; the tool was
    verified through its ``solve`` entry) would teach the user model a wrong call.
    """
    call_passed = [c["passed"] for c in cases_of(best["report"], "call")]
    return [
        UsageDemo(question=ex["input"], call=call, answer=ex["target"])
        for i, (ex, call) in enumerate(zip(validation, best["calls"], strict=False))
        if i >= len(call_passed) or call_passed[i]
    ]


def wrap_steps(state: State, runtime: Runtime[Context]) -> Steps[WrapUpdate]:
    """Build the tool record (signature, docstring, usage demos, report) and store it.

    This is the only node that writes to the repository, and it runs only
    after verification passed (and, with ``require_approval``, after a person
    approved it in the ``review`` node, see :mod:`latm.nodes.approval`). Its
    repository reads and its one write are awaited on async paths.
    """
    making = state.get("making")
    best = making["best"] if making else None
    if making is None or best is None:
        return WrapUpdate(error=STALE_THREAD)
    ctx = get_context(runtime)
    repo = get_repository(runtime, ctx)
    entry = best["entry"] or ""
    task_type = tool_identity(state.get("task_type"), entry, list(state.get("examples") or []))
    done = yield io(repo.made_by, repo.amade_by, task_type, making["make_id"])
    if done is not None:
        # a run resumed after a crash that came after the write: its tool is stored
        emit(runtime, "wrap", "stored", tool=task_type, version=done.version, resumed=True)
        return _stored(done)
    version: int = yield io(repo.next_version, repo.anext_version, task_type)
    if ctx.require_approval and not making["reviewed"]:
        # e.g. a review skipped by hand (update_state as the review node)
        return WrapUpdate(
            error=f"tool {task_type!r} was not reviewed (require_approval is on). "
            "Nothing was stored: send the request again."
        )
    try:
        record = tool_record(state, ctx, task_type=task_type, version=version)
    except ReplyError as exc:
        return WrapUpdate(error=f"cannot wrap the verified tool: {exc}")
    try:
        record = yield io(repo.put, repo.aput, record)  # one atomic write
    except Exception as exc:  # the store is gone or refuses the write
        return WrapUpdate(error=f"cannot store the tool {task_type!r}: {type(exc).__name__}: {exc}")
    emit(
        runtime,
        "wrap",
        "stored",
        tool=task_type,
        version=record.version,
        level=record.strength.level if record.strength else None,
    )
    return _stored(record)


wrap = sync_node(wrap_steps)
"""The ``wrap`` node as a plain function (``wrap(state, runtime)``)."""


def tool_record(state: State, ctx: Context, *, task_type: str, version: int) -> ToolRecord:
    """The record of the run's accepted tool, to be stored as ``version`` (pure).

    Raises:
        ReplyError: The accepted code holds no usable tool function.
    """
    making = state.get("making")
    best = making["best"] if making else None
    if making is None or best is None:
        raise ReplyError(STALE_THREAD)
    code, entry = best["code"] or "", best["entry"] or ""
    signature, docstring = function_info(code, entry)
    maker = ctx.model("maker").label
    edited = making["reviewed"] == "edited"  # by a person, in the review node
    _, validation = split_examples(state, ctx)
    return ToolRecord(
        name=entry,
        task_type=task_type,
        description=describe(docstring, task_type),
        signature=signature,
        docstring=docstring,
        code=code,
        demos=usage_demos(best, validation),
        maker_model=f"{maker}, edited by a reviewer" if edited else maker,
        verification=best["report"],
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        version=version,
        direct_entry=DIRECT_ENTRY if best["direct"] and ctx.direct_entry else None,
        make_id=making["make_id"],
        # a reviewer's edit replaces the weighed code: its strength is not measured
        strength=None if edited else verification_strength(state),
    )


def verification_strength(state: State) -> VerificationStrength | None:
    """The strength ``verify`` measured, as the record stores it (``None`` if absent)."""
    found = state.get("verification")
    if not found:
        return None
    try:
        return VerificationStrength.model_validate(found)
    except ValueError:
        return None
