"""Use: the user model calls the cached tool to answer the request (paper, stage 4)."""

from __future__ import annotations

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from latm.answers import normalize_answer
from latm.codeparse import ReplyError, literal_call, parse_call
from latm.effects import Steps, blocking, io, run_tool, sync_node
from latm.graph.context import Context
from latm.graph.state import State, UseUpdate
from latm.llm import ModelError, ainvoke, invoke
from latm.nodes.common import (
    emit,
    get_context,
    get_limits,
    get_tenant,
    get_tool_executor,
    message_text,
)
from latm.nodes.record import record_use_steps
from latm.prompts import USE_CALL, USE_SYSTEM, USE_USER
from latm.repository import ToolRecord
from latm.sandbox import Executor, SandboxUnavailableError
from latm.tracing import call_config


def call_prompt(record: ToolRecord, task: str) -> list[BaseMessage]:
    """The user model's prompt: the tool's signature and docstring, its usage demos, the task."""
    messages: list[BaseMessage] = [
        SystemMessage(
            USE_SYSTEM.format(
                signature=record.signature, docstring=record.docstring or record.description
            )
        )
    ]
    for demo in record.demos:
        messages.append(HumanMessage(USE_USER.format(question=demo.question)))
        messages.append(AIMessage(USE_CALL.format(call=demo.call)))
    messages.append(HumanMessage(USE_USER.format(question=task)))
    return messages


def use_steps(state: State, runtime: Runtime[Context]) -> Steps[UseUpdate]:
    """Answer the request with the tool: directly, or through a call the user model writes.

    A tool with a verified ``solve(request)`` entry gets the raw request first,
    with no model call; only if it rejects the request (raises) does the user
    model write the call from the usage demos. A reply without a call of the
    tool, or a tool that raises, times out or dies, ends the run with a clear
    error instead of an answer.

    Written as steps (:mod:`latm.effects`): the user model's call and the use
    count are awaited on async paths, the sandboxed runs leave the event loop.
    """
    ctx = get_context(runtime)
    record = ToolRecord.model_validate(state.get("tool_record"))
    task = state.get("task", "").strip()
    name = f"{record.task_type} v{record.version}"
    try:
        executor: Executor = yield blocking(get_tool_executor, ctx)
    except SandboxUnavailableError as exc:
        return UseUpdate(error=f"cannot run generated code: {exc}")
    limits = get_limits(ctx)
    cache_key = record.worker_key(get_tenant(runtime, ctx))
    if record.direct_entry and ctx.direct_entry:
        call = f"{record.direct_entry}({task!r})"
        result = (yield run_tool(executor, record.code, [call], limits, cache_key))[0]
        if result.status != "error":  # an error falls back to the call the user model writes
            yield from record_use_steps(runtime, ctx, record, result)
        if result.ok and result.value is not None:
            answer = normalize_answer(result.value, task)
            emit(runtime, "use", "answer", answer=answer, path="direct")
            return UseUpdate(answer=answer, path="direct")
        if result.status != "error":  # timed out or died: the LLM path would call it too
            emit(runtime, "use", "failed", status=result.status, error=result.error)
            return UseUpdate(
                error=f"tool {name} failed on the request: {result.status}: {result.error}"
            )
        emit(runtime, "use", "fallback", reason=result.error)
    try:
        config = use_call_config(state, record)
        reply, usage = yield io(
            invoke, ainvoke, ctx, "user", call_prompt(record, task), config=config
        )
    except ModelError as exc:
        return UseUpdate(error=str(exc))
    try:
        call = literal_call(parse_call(message_text(reply), record.name), record.name)
    except ReplyError as exc:
        emit(runtime, "use", "unusable", problem=str(exc))
        return UseUpdate(usage=usage, error=f"the user model could not use tool {name}: {exc}")
    emit(runtime, "use", "call", tool=record.task_type, call=call)
    result = (yield run_tool(executor, record.code, [call], limits, cache_key))[0]
    yield from record_use_steps(runtime, ctx, record, result, call=call)
    if not result.ok or result.value is None:
        emit(runtime, "use", "failed", status=result.status, error=result.error)
        return UseUpdate(
            usage=usage, error=f"tool {name} failed on {call}: {result.status}: {result.error}"
        )
    answer = normalize_answer(result.value, task)
    emit(runtime, "use", "answer", answer=answer, path="llm")
    return UseUpdate(usage=usage, answer=answer, path="llm")


def use_call_config(state: State, record: ToolRecord) -> RunnableConfig:
    """The tags and metadata of the user model's call of ``record`` (see :mod:`latm.tracing`)."""
    return call_config(
        "user",
        "use",
        task_type=record.task_type,
        tool_version=record.version,
        cache_hit=bool(state.get("cache_hit")),
    )


use = sync_node(use_steps)
"""The ``use`` node as a plain function (``use(state, runtime)``)."""
