"""Recording a tool's use from a node: the run's repository, tenant and sandbox."""

from __future__ import annotations

import logging

from langgraph.runtime import Runtime

from latm.effects import Steps, blocking, drive, io
from latm.graph.context import Context
from latm.nodes.common import get_limits, get_repository, get_tenant, get_tool_executor
from latm.repository import RepositoryError, ToolRecord, ToolStats
from latm.sandbox import ExecResult
from latm.usage import tool_still_sound, use_status

log = logging.getLogger(__name__)


def record_use(
    runtime: Runtime[Context],
    ctx: Context,
    record: ToolRecord,
    result: ExecResult,
    *,
    call: str | None = None,
) -> ToolStats | None:
    """Count one run of a tool at use time; never fails the run (a warning instead).

    How the run counts (the tool's fault or the call's) is
    :func:`latm.usage.use_status`; the re-check of the tool's demos runs in the
    run's sandbox only when a failed call is not well formed.
    """
    return drive(record_use_steps(runtime, ctx, record, result, call=call))


def record_use_steps(
    runtime: Runtime[Context],
    ctx: Context,
    record: ToolRecord,
    result: ExecResult,
    *,
    call: str | None = None,
) -> Steps[ToolStats | None]:
    """:func:`record_use` as steps (the count awaited on async paths)."""

    def still_sound() -> bool:
        try:
            executor = get_tool_executor(ctx)
        except Exception as exc:  # no sandbox: no verdict either way
            log.warning("could not re-check %s: %s", record.task_type, exc)
            return False
        return tool_still_sound(executor, get_limits(ctx), get_tenant(runtime, ctx), record)

    if result.ok and result.value is not None:  # a success: no re-check can be needed
        status = use_status(result, record, call, still_sound)
    else:  # a failure may re-check the tool in the sandbox: off the event loop
        status = yield blocking(use_status, result, record, call, still_sound)
    error = None if status == "ok" else f"{result.status}: {result.error}"
    try:
        repo = get_repository(runtime, ctx)
        stats: ToolStats = yield io(repo.record_use, repo.arecord_use, record, status, error)
        return stats
    except RepositoryError as exc:
        log.warning("could not record the use of %s: %s", record.task_type, exc)
        return None
