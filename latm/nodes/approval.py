"""The ``review`` node: a person approves a new tool before ``wrap`` stores it.

It runs between ``verify`` and ``wrap`` when ``Context.require_approval`` is on
(its route skips it otherwise). It pauses the run with LangGraph's
``interrupt()``: the caller sees the tool's code, signature and verification
report and resumes the thread with ``Command(resume=...)``:

* ``{"action": "approve"}``: store the tool as verified;
* ``{"action": "reject", "reason": "..."}``: end the run with an error, storing nothing;
* ``{"action": "edit", "code": "..."}``: verify the edited code with the checks
  ``verify`` ran (the maker's calls on the validation questions, and the
  ``solve(request)`` entry if the edit defines one); if every check passes it is
  stored, otherwise the reviewer is asked again with the failed report (and may
  edit again, approve the verified original, or reject).

A malformed answer asks again, saying what was wrong. ``interrupt()`` re-runs
the node from its start on resume, so nothing here has side effects (but
renewing the run's lease): the repository is written by ``wrap``, after the
final decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langgraph.config import get_config
from langgraph.constants import CONFIG_KEY_CHECKPOINTER
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from latm.codeparse import ReplyError, defines_direct_entry, function_info
from latm.graph.context import Context
from latm.graph.state import Best, Candidate, CaseReport, Making, ReviewUpdate, State
from latm.leases import renew
from latm.nodes.common import (
    STALE_THREAD,
    ExampleSets,
    emit,
    example_sets,
    get_context,
    get_limits,
    get_repository,
    get_tool_executor,
)
from latm.nodes.verify import evaluate
from latm.nodes.wrap import tool_identity
from latm.sandbox import SandboxUnavailableError

INTERRUPT_TYPE = "latm.approve_tool"
"""The ``type`` of the interrupt payload, for clients that handle several kinds."""

CASE_KEYS = ("check", "passed", "expected", "got", "error")
"""The fields of a check that ``recheck`` progress events carry."""

HOW_TO_ANSWER = (
    'resume with {"action": "approve"}, {"action": "reject", "reason": "..."} '
    'or {"action": "edit", "code": "..."}'
)


@dataclass(frozen=True)
class Decision:
    """The reviewer's final word on a tool.

    Attributes:
        code: The code to store (the verified original or a verified edit).
        report: Its verification report.
        direct: Whether its ``solve(request)`` entry was verified.
        edited: Whether the reviewer's edit replaced the maker's code.
        error: Why nothing may be stored (a rejection), else ``None``.
    """

    code: str
    report: list[CaseReport]
    direct: bool
    edited: bool = False
    error: str | None = None


def has_checkpointer() -> bool:
    """Whether the running graph can be interrupted and resumed (it has a checkpointer)."""
    try:
        configurable = get_config().get("configurable") or {}
    except RuntimeError:  # not inside a run
        return False
    return configurable.get(CONFIG_KEY_CHECKPOINTER) is not None


def payload(
    *,
    task_type: str,
    entry: str,
    version: int,
    code: str,
    report: list[CaseReport],
    problem: str | None,
    rejected_edit: dict[str, Any] | None,
) -> dict[str, Any]:
    """What the reviewer sees: the tool, its verification report and how to answer."""
    try:
        signature, docstring = function_info(code, entry)
    except ReplyError:  # cannot happen for verified code; show the code anyway
        signature, docstring = "", ""
    return {
        "type": INTERRUPT_TYPE,
        "task_type": task_type,
        "name": entry,
        "version": version,
        "signature": signature,
        "docstring": docstring,
        "code": code,
        "verification": report,
        "passed": sum(c["passed"] for c in report),
        "cases": len(report),
        "problem": problem,
        "rejected_edit": rejected_edit,
        "how_to_answer": HOW_TO_ANSWER,
    }


def parse_answer(answer: Any) -> tuple[str, dict[str, Any]] | str:
    """Read a resume value.

    Returns:
        ``(action, answer)`` for a well-formed answer, else a message saying
        what is wrong with it.
    """
    if isinstance(answer, str) and answer in ("approve", "reject"):
        answer = {"action": answer}
    if not isinstance(answer, dict):
        return f"the answer must be an object with an 'action'; {HOW_TO_ANSWER}"
    action = answer.get("action")
    if action not in ("approve", "reject", "edit"):
        return f"unknown action {action!r}; {HOW_TO_ANSWER}"
    if action == "edit" and not (isinstance(answer.get("code"), str) and answer["code"].strip()):
        return "an 'edit' needs the new tool source in 'code'"
    if action == "reject" and not isinstance(answer.get("reason", ""), str):
        return "'reason' must be text"
    return action, answer


def recheck(
    code: str, entry: str, calls: list[str], sets: ExampleSets, ctx: Context
) -> tuple[list[CaseReport], bool, str | None]:
    """Verify edited code with the checks ``verify`` ran on the maker's code.

    The edit is checked as a candidate of its own by ``verify``'s engine
    (:func:`latm.nodes.verify.evaluate`): the maker's ``calls`` of ``entry`` on
    the validation questions and, when the edit defines ``solve(request)``, that
    entry on the examples.

    Returns:
        The report, whether the direct entry was verified, and why the edit
        could not be checked at all (``None`` when it could).

    Raises:
        ReplyError: The code does not parse.
        SandboxUnavailableError: No allowed executor is available.
    """
    candidate = Candidate(
        index=0,
        prompt=[],
        reply="",
        code=code,
        entry=entry,
        calls=list(calls),
        direct=defines_direct_entry(code),
        problem=None,
        error=None,
    )
    result = evaluate(
        candidate,
        validation=sets.validation,
        direct_examples=sets.direct,
        all_examples=sets.labelled,
        ctx=ctx,
        executor=get_tool_executor(ctx),
        limits=get_limits(ctx),
    )
    return result.report, result.direct, result.problem


def review(state: State, runtime: Runtime[Context]) -> ReviewUpdate:
    """The ``review`` node: ask a person about the verified tool; nothing is stored here.

    Returns:
        ``making`` with ``reviewed``: ``approved``, or ``edited`` with the edited,
        re-verified code in ``best``; an ``error`` for a rejection, a graph that
        cannot pause or a thread an older LATM paused here.
    """
    making = state.get("making")
    best = making["best"] if making else None
    if making is None or best is None:
        return ReviewUpdate(error=STALE_THREAD)
    ctx = get_context(runtime)
    repo = get_repository(runtime, ctx)
    entry = best["entry"] or ""
    task_type = tool_identity(state.get("task_type"), entry, list(state.get("examples") or []))
    if repo.made_by(task_type, making["make_id"]) is not None:
        # a run resumed after a crash that came after the write: wrap finds it
        return ReviewUpdate(making=making, verification=state.get("verification"))
    if lease := state.get("lease"):
        # a person may take longer than a maker: hold the lease through the review
        with repo.guard("holding the tool-making lease for the review"):
            renew(repo, lease, ctx, ttl_s=ctx.review_ttl_s, review=True)
    decision = ask_reviewer(
        best,
        example_sets(state, ctx),
        runtime,
        ctx,
        task_type=task_type,
        version=repo.next_version(task_type),
    )
    if decision.error:
        return ReviewUpdate(error=decision.error)
    if not decision.edited:
        return ReviewUpdate(
            making=Making(**{**making, "reviewed": "approved"}),
            verification=state.get("verification"),
        )
    edited = Best(
        **{**best, "code": decision.code, "report": decision.report, "direct": decision.direct}
    )
    # a reviewer's edit replaces the weighed code: its strength is not measured
    return ReviewUpdate(
        making=Making(**{**making, "best": edited, "reviewed": "edited"}), verification=None
    )


def edit_problem(report: list[CaseReport], unusable: str | None) -> str | None:
    """Why a reviewer's edit is not verified (``None``: every check passed), as they see it."""
    failed = sum(not c["passed"] for c in report)
    if not unusable and report and not failed:
        return None
    why = (
        f"the edited code cannot be used: {unusable}"
        if unusable
        else f"the edited code failed {failed} of {len(report)} checks"
    )
    return why + "; the verified original is shown: edit again, approve it or reject"


def ask_reviewer(
    best: Best,
    sets: ExampleSets,
    runtime: Runtime[Context],
    ctx: Context,
    *,
    task_type: str,
    version: int,
) -> Decision:
    """Ask a person to approve, reject or edit the verified tool before it is stored.

    Args:
        best: The verified candidate.
        sets: The request's examples, as its checks used them (for an edit's).
        runtime: The node's runtime (for progress events).
        ctx: The run's context.
        task_type: The task type the tool will be stored under.
        version: The version it will get.

    Returns:
        The decision: the code and report to store, or an error.
    """
    code = best["code"] or ""
    entry = best["entry"] or ""
    report: list[CaseReport] = list(best["report"])
    direct = best["direct"]
    if not has_checkpointer():
        return Decision(
            code,
            report,
            direct,
            error=(
                "human approval is on (require_approval) but the graph has no checkpointer "
                "to pause the run: compile it with one (e.g. checkpointer=InMemorySaver()) "
                "and a thread_id, or run it on the LangGraph server. Nothing was stored."
            ),
        )
    problem: str | None = None
    rejected_edit: dict[str, Any] | None = None
    while True:  # each round is one interrupt; on resume earlier rounds replay their answers
        answer = interrupt(
            payload(
                task_type=task_type,
                entry=entry,
                version=version,
                code=code,
                report=report,
                problem=problem,
                rejected_edit=rejected_edit,
            )
        )
        parsed = parse_answer(answer)
        if isinstance(parsed, str):
            problem = parsed
            continue
        action, body = parsed
        emit(runtime, "review", "review", action=action)
        if action == "approve":
            return Decision(code, report, direct)
        if action == "reject":
            reason = str(body.get("reason") or "no reason given").strip()
            return Decision(
                code,
                report,
                direct,
                error=f"the reviewer rejected tool {task_type!r}: {reason}. Nothing was stored.",
            )
        new_code = str(body["code"]).strip() + "\n"
        try:
            function_info(new_code, entry)
            new_report, new_direct, unusable = recheck(new_code, entry, best["calls"], sets, ctx)
        except ReplyError as exc:
            problem, rejected_edit = f"the edited code cannot be used: {exc}", None
            continue
        except SandboxUnavailableError as exc:
            return Decision(code, report, direct, error=f"cannot run the edited code: {exc}")
        for i, case in enumerate(new_report):
            emit(runtime, "review", "recheck", index=i, **{k: case.get(k) for k in CASE_KEYS})
        problem = edit_problem(new_report, unusable)
        if problem is None:
            emit(runtime, "review", "edit_verified", cases=len(new_report), direct=new_direct)
            return Decision(new_code, new_report, new_direct, edited=True)
        rejected_edit = {"code": new_code, "verification": new_report}
