"""Verify: run the proposed tool on held-out examples in the sandbox (paper, stage 2)."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from latm.answers import is_correct, normalize_answer
from latm.graph.context import Context
from latm.graph.state import CaseReport, State
from latm.nodes.common import emit, get_context, get_limits, get_tool_executor, split_examples
from latm.sandbox import SandboxUnavailableError


def summarize(report: list[CaseReport]) -> str:
    """One line on how a verification went, naming the first failure."""
    failed = [c for c in report if not c["passed"]]
    first = failed[0]
    what = f"error {first['error']}" if first["error"] else f"got {first['got']!r}"
    return (
        f"{len(failed)} of {len(report)} validation cases failed "
        f"(first: expected {first['expected']!r}, {what})"
    )


def verify(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Check the proposal against the validation examples.

    Each call runs in a fresh sandboxed process; expected answers stay in the
    host, which compares after normalization. When the last allowed attempt
    fails, the run ends with an error and nothing is stored.
    """
    ctx = get_context(runtime)
    _, validation = split_examples(state, ctx)
    attempt = state.get("attempts", 1)
    code, calls = state.get("code"), state.get("calls") or []
    report: list[CaseReport] = []
    problem = state.get("problem")
    if code and not problem:
        try:
            executor = get_tool_executor(ctx)
            results = executor.run(code, calls[: len(validation)], get_limits(ctx))
        except SandboxUnavailableError as exc:
            return {"error": f"cannot run generated code: {exc}"}
        for i, example in enumerate(validation):
            if i >= len(results):
                case = CaseReport(
                    input=example["input"],
                    expected=example["target"],
                    got=None,
                    error="no call was written for this question",
                    passed=False,
                )
            else:
                res = results[i]
                got = None
                if res.ok and res.value is not None:
                    got = normalize_answer(res.value, example["input"])
                case = CaseReport(
                    input=example["input"],
                    expected=example["target"],
                    got=got,
                    error=None if res.ok else f"{res.status}: {res.error}",
                    passed=res.ok and is_correct(res.value, example["target"], example["input"]),
                )
            report.append(case)
            emit(
                runtime,
                "verify",
                "case",
                attempt=attempt,
                index=i,
                passed=case["passed"],
                expected=case["expected"],
                got=case["got"],
                error=case["error"],
            )
    passed = bool(report) and all(c["passed"] for c in report)
    emit(
        runtime,
        "verify",
        "done",
        attempt=attempt,
        passed=passed,
        n_passed=sum(c["passed"] for c in report),
        n_cases=len(validation),
    )
    update: dict[str, Any] = {"report": report}
    if not passed and attempt >= ctx.max_attempts:
        why = problem or (summarize(report) if report else "the proposal could not be run")
        update["error"] = (
            f"could not make a verified tool in {attempt} attempt(s); last attempt: {why}. "
            "Nothing was stored."
        )
    return update


def passed(state: State) -> bool:
    """Whether the latest proposal passed every validation case."""
    report = state.get("report") or []
    return bool(report) and all(c["passed"] for c in report) and not state.get("problem")
