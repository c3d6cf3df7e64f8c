"""Verify: run the proposed tools on held-out examples in the sandbox (paper, stage 2).

Each candidate of the round is checked: the maker's calls of its function on the
validation questions and, when it defines one, its ``solve(request)`` entry on
every example beyond the demos. Expected answers never leave the host. The best
candidate wins: a verified direct entry, then every check passed, then the most
checks passed, then the simplest code.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import Overwrite

from latm.answers import is_correct, normalize_answer
from latm.checks import hardcoded
from latm.codeparse import DIRECT_ENTRY, parse_python, without_function
from latm.deadline import DeadlineExceeded, check
from latm.graph.context import Context
from latm.graph.state import Candidate, CaseReport, Example, State, VerifiedFunction
from latm.lifecycle import holds_lease
from latm.nodes.common import (
    emit,
    get_context,
    get_limits,
    get_tool_executor,
    split_examples,
    to_messages,
    transcript,
)
from latm.sandbox import ExecLimits, ExecResult, Executor, SandboxUnavailableError


@dataclass
class Evaluation:
    """How one candidate fared."""

    candidate: Candidate
    report: list[CaseReport]
    problem: str | None

    @property
    def passed(self) -> bool:
        """Every check ran and passed."""
        return not self.problem and bool(self.report) and all(c["passed"] for c in self.report)

    @property
    def calls_passed(self) -> bool:
        """The maker's calls all ran and passed (the paper's criterion), whatever ``solve`` did."""
        calls = [c for c in self.report if c.get("check", "call") == "call"]
        return not self.problem and bool(calls) and all(c["passed"] for c in calls)

    @property
    def direct(self) -> bool:
        """Its ``solve(request)`` entry was checked and passed on every example.

        That verifies the tool on the raw questions, which is stronger evidence
        than the maker's calls (its own transcription of the questions' data):
        such a candidate is accepted even if a call miscopied the data.
        """
        checked = [c for c in self.report if c.get("check") == "direct"]
        return not self.problem and bool(checked) and all(c["passed"] for c in checked)

    @property
    def first_failure(self) -> str | None:
        """The problem, or the first failed case, in one line."""
        if self.problem:
            return self.problem
        failed = [c for c in self.report if not c["passed"]]
        if not failed:
            return None
        case = failed[0]
        got = f"error {case['error']}" if case["error"] else f"got {case['got']!r}"
        return f"expected {case['expected']!r}, {got}"

    def rank(self) -> tuple[bool, bool, bool, bool, bool, int, int, int]:
        """Sort key, best first: verified entry, all passed, calls passed, ran, passes, size."""
        try:
            size = sum(1 for _ in ast.walk(parse_python(self.candidate["code"] or "")))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            size = 10**9
        return (
            not self.direct,
            not self.passed,
            not self.calls_passed,
            self.candidate["error"] is not None,
            not self.report,
            -sum(c["passed"] for c in self.report),
            size,
            self.candidate["index"],
        )


def summarize(report: list[CaseReport]) -> str:
    """One line on how a verification went, naming the first failure."""
    failed = [c for c in report if not c["passed"]]
    first = failed[0]
    what = f"error {first['error']}" if first["error"] else f"got {first['got']!r}"
    return (
        f"{len(failed)} of {len(report)} validation cases failed "
        f"(first: expected {first['expected']!r}, {what})"
    )


def _case(example: Example, result: ExecResult | None, check: str) -> CaseReport:
    if result is None:
        return CaseReport(
            input=example["input"],
            expected=example["target"],
            got=None,
            error="no call was written for this question",
            passed=False,
            check=check,
        )
    got = None
    if result.ok and result.value is not None:
        got = normalize_answer(result.value, example["input"])
    return CaseReport(
        input=example["input"],
        expected=example["target"],
        got=got,
        error=None if result.ok else f"{result.status}: {result.error}",
        passed=result.ok and is_correct(result.value, example["target"], example["input"]),
        check=check,
    )


CHUNK = 8
"""Checks run per executor round trip after a candidate's first check of each kind."""

SKIPPED = "not run: an earlier check of this candidate failed"


def run_checks(
    executor: Executor,
    code: str,
    checks: list[tuple[str, str]],
    limits: ExecLimits,
    passes: Callable[[int, ExecResult], bool],
    stop_after_failure: frozenset[str] = frozenset({"direct"}),
) -> list[ExecResult | None]:
    """Run a candidate's checks, stopping early once it fails.

    ``checks`` are ``(kind, call)`` pairs and ``passes(index, result)`` judges
    one; ``None`` in the result stands for a check that was not run. The first
    check of each kind runs alone, then chunks of :data:`CHUNK`. After a
    timeout or a crash nothing more runs (a looping tool costs one deadline,
    not one per example); after a failed check of a kind in
    ``stop_after_failure`` (the direct checks, up to ``max_direct_checks`` of
    them) no more of that kind run: the candidate cannot pass it any more. The
    few calls all run, so that the maker's repair sees every failing case.
    """
    results: list[ExecResult | None] = [None] * len(checks)
    pending = list(range(len(checks)))
    started: set[str] = set()
    while pending:
        kind = checks[pending[0]][0]
        same = [i for i in pending if checks[i][0] == kind]
        chunk = same[: CHUNK if kind in started else 1]
        started.add(kind)
        ran = executor.run(code, [checks[i][1] for i in chunk], limits)
        for i, result in zip(chunk, ran, strict=False):
            results[i] = result
        pending = [i for i in pending if i not in chunk]
        if any(r.status in ("timeout", "killed") for r in ran):
            break
        if kind in stop_after_failure and not all(
            passes(i, r) for i, r in zip(chunk, ran, strict=False)
        ):
            pending = [i for i in pending if checks[i][0] != kind]
    return results


def evaluate(
    candidate: Candidate,
    *,
    validation: list[Example],
    direct_examples: list[Example],
    all_examples: list[Example],
    ctx: Context,
    executor: Executor,
    limits: ExecLimits,
) -> Evaluation:
    """Run the checks of one candidate in the sandbox, stopping once it fails."""
    if candidate["error"] or candidate["problem"] or not candidate["code"]:
        return Evaluation(candidate, [], candidate["error"] or candidate["problem"] or "no code")
    code = candidate["code"]
    if ctx.reject_hardcoded and (problem := hardcoded(code, all_examples)):
        return Evaluation(candidate, [], problem)
    calls = list(candidate["calls"][: len(validation)])
    if not (ctx.direct_entry and candidate["direct"]):
        direct_examples = []
    checks = [("call", c) for c in calls]
    checks += [("direct", f"{DIRECT_ENTRY}({ex['input']!r})") for ex in direct_examples]
    expected = validation[: len(calls)] + direct_examples

    def passes(i: int, result: ExecResult) -> bool:
        ex = expected[i]
        return result.ok and is_correct(result.value, ex["target"], ex["input"])

    results = run_checks(executor, code, checks, limits, passes)
    skipped = ExecResult("error", error=SKIPPED)
    report = [
        _case(ex, (results[i] or skipped) if i < len(calls) else None, "call")
        for i, ex in enumerate(validation)
    ]
    report += [
        _case(ex, results[len(calls) + i] or skipped, "direct")
        for i, ex in enumerate(direct_examples)
    ]
    return Evaluation(candidate, report, None)


def _accept_function(function: VerifiedFunction) -> dict[str, Any]:
    """State updates that accept a verified function without a ``solve`` entry."""
    return {
        "code": function["code"],
        "entry": function["entry"],
        "calls": function["calls"],
        "report": function["report"],
        "direct": False,
        "problem": None,
        "verified": True,
    }


@holds_lease
def verify(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Check the round's candidates and keep the best.

    When the last allowed round fails, the run ends with an error and nothing
    is stored.
    """
    ctx = get_context(runtime)
    demos, validation = split_examples(state, ctx)
    examples = list(state.get("examples") or [])
    direct_examples = (examples[ctx.n_demos :] or demos)[: ctx.max_direct_checks]
    attempt = state.get("attempts", 0) + 1
    proposals = sorted(state.get("proposals") or [], key=lambda c: c["index"])
    update: dict[str, Any] = {"attempts": attempt, "proposals": Overwrite([])}
    function = state.get("function")
    outage = bool(proposals) and all(c["error"] for c in proposals)
    if function is not None and outage:
        # The maker is gone (or the deadline passed) after a function was verified:
        # store that function (the paper's bar) rather than throw it away.
        emit(runtime, "verify", "no_direct", attempt=attempt, problem=proposals[0]["error"])
        return {**update, **_accept_function(function)}
    if not proposals:
        return {**update, "error": "the maker made no proposal"}
    if outage:
        return {**update, "error": proposals[0]["error"]}
    try:
        check(state.get("deadline_at"), "verification")
    except DeadlineExceeded as exc:
        return {**update, "error": f"{exc}; nothing was stored"}
    try:
        executor = get_tool_executor(ctx)
        limits = get_limits(ctx)
        with ThreadPoolExecutor(max_workers=min(8, len(proposals))) as pool:  # all at once
            evaluations = list(
                pool.map(
                    lambda c: evaluate(
                        c,
                        validation=validation,
                        direct_examples=direct_examples,
                        all_examples=examples,
                        ctx=ctx,
                        executor=executor,
                        limits=limits,
                    ),
                    proposals,
                )
            )
    except SandboxUnavailableError as exc:
        return {**update, "error": f"cannot run generated code: {exc}"}
    for ev in evaluations:
        for i, case in enumerate(ev.report):
            emit(
                runtime,
                "verify",
                "case",
                attempt=attempt,
                candidate=ev.candidate["index"],
                index=i,
                check=case.get("check", "call"),
                passed=case["passed"],
                expected=case["expected"],
                got=case["got"],
                error=case["error"],
            )
        emit(
            runtime,
            "verify",
            "candidate",
            attempt=attempt,
            candidate=ev.candidate["index"],
            passed=ev.passed,
            direct=ev.direct,
            n_passed=sum(c["passed"] for c in ev.report),
            n_cases=len(ev.report),
            problem=ev.first_failure,
        )
    best = min(evaluations, key=Evaluation.rank)
    chosen = best.candidate
    calls_only = [c for c in best.report if c.get("check", "call") == "call"]
    accepted = best.direct or (best.passed and not ctx.direct_entry)
    last = attempt >= ctx.max_attempts
    update.update(
        report=best.report,
        problem=None if best.report else best.problem,
        code=chosen["code"],
        entry=chosen["entry"],
        calls=chosen["calls"],
        direct=best.direct,
        maker_messages=Overwrite([] if chosen["error"] else to_messages(transcript(chosen))),
    )
    if not accepted and function is None and best.calls_passed and chosen["code"]:
        # The function is right; its solve(request) entry is missing or wrong.
        function = VerifiedFunction(
            code=without_function(chosen["code"], DIRECT_ENTRY),
            entry=chosen["entry"] or "",
            calls=chosen["calls"],
            report=calls_only,
            conversation=transcript(chosen),
        )
        update["function"] = function
        emit(runtime, "verify", "function", attempt=attempt, candidate=chosen["index"])
    if not accepted and function is not None and last:
        # No entry verified in time: keep the verified function, for the user
        # model to call (the paper's bar).
        accepted = True
        update.update(_accept_function(function))
        emit(runtime, "verify", "no_direct", attempt=attempt, problem=best.first_failure)
    report = update["report"]
    update["verified"] = accepted
    emit(
        runtime,
        "verify",
        "done",
        attempt=attempt,
        passed=accepted,
        candidate=chosen["index"],
        n_passed=sum(c["passed"] for c in report),
        n_cases=len(report),
        direct=bool(update["direct"]),
    )
    if not accepted and last:
        why = best.problem or (summarize(best.report) if best.report else "nothing could run")
        update["error"] = (
            f"could not make a verified tool in {attempt} attempt(s); best candidate of the "
            f"last attempt: {why}. Nothing was stored."
        )
    return update


def passed(state: State) -> bool:
    """Whether the round's verification accepted a tool for ``wrap``."""
    return bool(state.get("verified"))
