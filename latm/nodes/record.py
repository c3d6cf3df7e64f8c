"""Recording a tool's use from a node: the run's repository, tenant and sandbox."""

from __future__ import annotations

import logging

from langgraph.runtime import Runtime

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

    def still_sound() -> bool:
        try:
            executor = get_tool_executor(ctx)
        except Exception as exc:  # no sandbox: no verdict either way
            log.warning("could not re-check %s: %s", record.task_type, exc)
            return False
        return tool_still_sound(executor, get_limits(ctx), get_tenant(runtime, ctx), record)

    status = use_status(result, record, call, still_sound)
    error = None if status == "ok" else f"{result.status}: {result.error}"
    try:
        return get_repository(runtime, ctx).record_use(record, status, error)
    except RepositoryError as exc:
        log.warning("could not record the use of %s: %s", record.task_type, exc)
        return None
