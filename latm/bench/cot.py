"""The direct-answering baseline: few-shot chain of thought by one model."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from latm.bench.scoring import extract_cot_answer
from latm.graph.context import Context
from latm.graph.state import Example, Role
from latm.llm import ModelError, invoke
from latm.nodes.common import message_text
from latm.prompts.bench import COT_DEMO, COT_REASONING, COT_SYSTEM, COT_USER


def cot_messages(demos: list[Example], question: str) -> list[BaseMessage]:
    """The few-shot chain-of-thought prompt: the demos, then the question."""
    shots = "\n\n".join(
        COT_DEMO.format(
            n=i,
            question=d["input"],
            reasoning=COT_REASONING.format(rationale=d["rationale"]) if d.get("rationale") else "",
            answer=d["target"],
        )
        for i, d in enumerate(demos, 1)
    )
    return [
        SystemMessage(COT_SYSTEM),
        HumanMessage(COT_USER.format(demos=shots, question=question)),
    ]


def cot_prompt_version() -> str:
    """A short hash of the CoT prompt texts: a run's CoT answers all come from one prompt."""
    text = "\0".join((COT_SYSTEM, COT_DEMO, COT_REASONING, COT_USER))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class CotAnswer:
    """One chain-of-thought answer.

    Attributes:
        answer: The extracted final answer, or ``None``.
        reply: The model's full reply (empty after an error).
        usage: Token usage per role (``{role: {...}}``).
        error: A model failure, else ``None``.
    """

    answer: str | None
    reply: str
    usage: dict[str, Any]
    error: str | None


def cot_context(ctx: Context, max_tokens: int | None) -> Context:
    """The context for CoT calls: the run's, with the reply length capped if asked."""
    if max_tokens is None:
        return ctx
    return replace(ctx, maker_max_tokens=max_tokens, user_max_tokens=max_tokens)


def answer_cot(ctx: Context, role: Role, demos: list[Example], question: str) -> CotAnswer:
    """Ask the ``role`` model to answer ``question`` with few-shot chain of thought.

    A model failure is returned as ``error`` (never raised).
    """
    try:
        reply, usage = invoke(ctx, role, cot_messages(demos, question))
    except ModelError as exc:
        return CotAnswer(answer=None, reply="", usage={}, error=str(exc))
    text = message_text(reply)
    return CotAnswer(
        answer=extract_cot_answer(text, question),
        reply=text,
        usage={r: dict(u) for r, u in usage.items()},
        error=None,
    )
