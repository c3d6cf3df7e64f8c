"""Use: the user model calls the cached tool to answer the request (paper, stage 4)."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from latm.answers import normalize_answer
from latm.codeparse import ReplyError, parse_call
from latm.graph.context import Context
from latm.graph.state import State
from latm.llm import ModelError, invoke
from latm.nodes.common import emit, get_context, get_limits, get_tool_executor
from latm.prompts import USE_SYSTEM, USE_USER
from latm.repository import ToolRecord
from latm.sandbox import SandboxUnavailableError


def use(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Have the user model write the tool call, run it in the sandbox, normalize the answer.

    A reply without a call of the tool, or a tool that raises, times out or
    dies, ends the run with a clear error instead of an answer.
    """
    ctx = get_context(runtime)
    record = ToolRecord.model_validate(state.get("tool_record"))
    task = state.get("task", "").strip()
    demos = "\n\n".join(f"Question: {d.question}\nCall: {d.call}" for d in record.demos)
    messages = [
        SystemMessage(USE_SYSTEM),
        HumanMessage(
            USE_USER.format(
                signature=record.signature,
                docstring=record.docstring or record.description,
                demos=demos,
                question=task,
            )
        ),
    ]
    name = f"{record.task_type} v{record.version}"
    try:
        reply, usage = invoke(ctx, "user", messages)
    except ModelError as exc:
        return {"error": str(exc)}
    text = reply.content if isinstance(reply.content, str) else str(reply.content)
    try:
        call = parse_call(text, record.name)
    except ReplyError as exc:
        emit(runtime, "use", "unusable", problem=str(exc))
        return {"usage": usage, "error": f"the user model could not use tool {name}: {exc}"}
    emit(runtime, "use", "call", tool=record.task_type, call=call)
    try:
        executor = get_tool_executor(ctx)
        result = executor.run(record.code, [call], get_limits(ctx), cache_key=record.cache_key)[0]
    except SandboxUnavailableError as exc:
        return {"usage": usage, "error": f"cannot run generated code: {exc}"}
    if not result.ok or result.value is None:
        emit(runtime, "use", "failed", status=result.status, error=result.error)
        return {
            "usage": usage,
            "error": f"tool {name} failed on {call}: {result.status}: {result.error}",
        }
    answer = normalize_answer(result.value, task)
    emit(runtime, "use", "answer", answer=answer)
    return {"usage": usage, "answer": answer}
