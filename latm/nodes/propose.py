"""Propose: the maker writes a generic Python function from the demos (paper, stage 1)."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from latm.codeparse import ReplyError, parse_proposal
from latm.graph.context import Context
from latm.graph.state import Example, State
from latm.llm import ModelError, invoke
from latm.nodes.common import emit, get_context, split_examples
from latm.prompts import MAKER_SYSTEM, PROPOSE_USER, RETRY_BAD_REPLY, RETRY_FAILED_CASES


def format_demos(demos: list[Example]) -> str:
    """The worked examples as the maker sees them."""
    return "\n\n".join(
        f"Example {i}:\nQuestion: {ex['input']}\nAnswer: {ex['target']}"
        for i, ex in enumerate(demos, 1)
    )


def format_questions(validation: list[Example]) -> str:
    """The validation questions (their answers are never shown to the maker)."""
    return "\n\n".join(f"Question {i}: {ex['input']}" for i, ex in enumerate(validation, 1))


def feedback(state: State) -> str:
    """What the maker is told about its previous attempt."""
    if state.get("problem"):
        return RETRY_BAD_REPLY.format(problem=state["problem"])
    failures = []
    for i, case in enumerate(state.get("report") or [], 1):
        if case["passed"]:
            continue
        got = f"error: {case['error']}" if case["error"] else f"got: {case['got']!r}"
        failures.append(
            f"Question {i}: {case['input']}\nExpected: {case['expected']!r}\nYour function {got}"
        )
    return RETRY_FAILED_CASES.format(failures="\n\n".join(failures))


def propose(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Ask the maker for a tool, or for a fix of its previous one.

    The first attempt shows the demos and the validation questions; a retry
    continues the conversation with the failing cases (expected vs got, or
    the error) or the reason the last reply could not be used.
    """
    ctx = get_context(runtime)
    demos, validation = split_examples(state, ctx)
    attempt = state.get("attempts", 0) + 1
    history: list[BaseMessage] = list(state.get("maker_messages") or [])
    if not history:
        new: list[BaseMessage] = [
            SystemMessage(MAKER_SYSTEM),
            HumanMessage(
                PROPOSE_USER.format(
                    demos=format_demos(demos),
                    questions=format_questions(validation),
                    n_calls=len(validation),
                )
            ),
        ]
    else:
        new = [HumanMessage(feedback(state))]
    emit(runtime, "propose", "start", attempt=attempt, max_attempts=ctx.max_attempts)
    try:
        reply, usage = invoke(ctx, "maker", [*history, *new])
    except ModelError as exc:
        return {"attempts": attempt, "error": str(exc)}
    update: dict[str, Any] = {
        "attempts": attempt,
        "maker_messages": [*new, reply],
        "usage": usage,
        "report": [],
    }
    text = reply.content if isinstance(reply.content, str) else str(reply.content)
    try:
        proposal = parse_proposal(text)
    except ReplyError as exc:
        emit(runtime, "propose", "unusable", attempt=attempt, problem=str(exc))
        return {**update, "code": None, "entry": None, "calls": [], "problem": str(exc)}
    emit(
        runtime,
        "propose",
        "proposed",
        attempt=attempt,
        entry=proposal.entry,
        lines=proposal.code.count("\n"),
    )
    return {
        **update,
        "code": proposal.code,
        "entry": proposal.entry,
        "calls": proposal.calls,
        "problem": None,
    }
