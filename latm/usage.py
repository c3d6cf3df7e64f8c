"""Use statistics and retirement of stored tools, beside the repository that keeps them.

``use`` counts every run of a tool (calls, failures, timeouts, last error) per
version (:meth:`ToolRepository.record_use`); once a version has failed
``Context.max_tool_failures`` times the dispatcher stops routing to it
(:func:`retired`, :func:`usable`) and re-makes it (a new version, the history
kept) when the request has examples. Only failures that are the tool's count: a
failing call written by the user model whose arguments are not plain literals
of the kinds the usage demos pass (:func:`well_formed`) while the tool still
passes those demos (:func:`tool_still_sound`) is the call's fault
(``call_failures``) and never retires the tool (:func:`use_status`).
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Callable

from latm.answers import is_correct
from latm.codeparse import parse_python
from latm.graph.context import Context
from latm.repository import ToolRecord, ToolRepository, UseStatus
from latm.sandbox import ExecLimits, ExecResult, Executor

log = logging.getLogger(__name__)


def retired(repo: ToolRepository, record: ToolRecord, ctx: Context) -> str | None:
    """Why a tool version must not answer any more, or ``None`` when it may.

    A version is retired once its use-time failures reach ``ctx.max_tool_failures``
    (0 never retires).
    """
    if ctx.max_tool_failures <= 0:
        return None
    stats = repo.stats(record.task_type, record.version)
    if stats.failures < ctx.max_tool_failures:
        return None
    last = f"; last error: {stats.last_error}" if stats.last_error else ""
    return (
        f"tool {record.task_type} v{record.version} is retired after {stats.failures} "
        f"failures in {stats.calls} uses{last}"
    )


def usable(
    repo: ToolRepository, found: list[tuple[ToolRecord, float]], ctx: Context
) -> list[tuple[ToolRecord, float]]:
    """The search results without retired tools."""
    return [(r, s) for r, s in found if retired(repo, r, ctx) is None]


def use_status(
    result: ExecResult, record: ToolRecord, call: str | None, still_sound: Callable[[], bool]
) -> UseStatus:
    """How one run of a tool counts: ``ok``, ``timeout``, ``error`` or ``call_error``.

    A failure counts against the tool (towards retirement) only when the tool is
    at fault. A failed ``call`` the user model wrote is the call's fault
    (``call_error``, which never retires the tool) when its arguments are not
    plain literals of the kinds the tool's verified usage demos pass (``None``
    for a list, an expression that computes its own input, other keywords) and
    ``still_sound()`` says the tool still gives its demos' verified answers. A
    tool that fails on well-formed arguments is at fault.
    """
    status: UseStatus = "ok" if result.ok and result.value is not None else "error"
    if result.status == "timeout":
        status = "timeout"
    if status != "ok" and call is not None and not well_formed(call, record) and still_sound():
        status = "call_error"
    return status


def _kind(node: ast.expr, depth: int = 0) -> str:
    """The shape of a literal argument: ``str``, ``list[str]``, ...; ``expr`` when computed."""
    if isinstance(node, ast.Constant):
        return type(node.value).__name__
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        inner = _kind(node.operand, depth)
        return inner if inner in ("int", "float") else "expr"
    if isinstance(node, ast.List | ast.Tuple | ast.Set) and depth < 3:
        items = sorted({_kind(e, depth + 1) for e in node.elts})
        return f"{type(node).__name__.lower()}[{','.join(items)}]"
    if isinstance(node, ast.Dict) and depth < 3:
        keys = sorted({_kind(k, depth + 1) if k else "expr" for k in node.keys})
        values = sorted({_kind(v, depth + 1) for v in node.values})
        return f"dict[{','.join(keys)}:{','.join(values)}]"
    return "expr"


def _shape(call: str, entry: str) -> tuple[str, ...] | None:
    try:
        tree = parse_python(call, "eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    node = tree.body if isinstance(tree, ast.Expression) else None
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        return None
    if node.func.id != entry:
        return None
    kinds = [_kind(a) for a in node.args]
    kinds += [f"{k.arg}={_kind(k.value)}" for k in node.keywords]
    return tuple(kinds)


def _fits(kind: str, demo: str) -> bool:
    if kind == demo:
        return True
    # an empty container or one with fewer element kinds fits the demo's
    open_, close = kind.find("["), demo.find("[")
    if open_ < 0 or close < 0 or kind[:open_] != demo[:close] or kind.startswith("dict"):
        return False
    mine = set(filter(None, kind[open_ + 1 : -1].split(",")))
    theirs = set(filter(None, demo[close + 1 : -1].split(",")))
    return mine <= theirs


def well_formed(call: str, record: ToolRecord) -> bool:
    """Whether ``call`` passes plain literals of the kinds the tool's usage demos pass."""
    shape = _shape(call, record.name)
    if shape is None or "expr" in ",".join(shape):
        return False
    for demo in record.demos:
        theirs = _shape(demo.call, record.name)
        if (
            theirs is not None
            and len(theirs) == len(shape)
            and all(_fits(a, b) for a, b in zip(shape, theirs, strict=True))
        ):
            return True
    return False


def tool_still_sound(
    executor: Executor, limits: ExecLimits, tenant: str, record: ToolRecord
) -> bool:
    """Whether the tool still gives its usage demos' verified answers (in the sandbox)."""
    demos = record.demos
    if not demos:
        return False  # no demos to tell a bad call from a broken tool by: count it
    try:
        results = executor.run(
            record.code,
            [d.call for d in demos],
            limits,
            cache_key=record.worker_key(tenant),
        )
    except Exception as exc:  # the sandbox is gone: no verdict either way
        log.warning("could not re-check %s: %s", record.task_type, exc)
        return False
    return len(results) == len(demos) and all(
        r.ok and is_correct(r.value, d.answer, d.question)
        for r, d in zip(results, demos, strict=False)
    )
