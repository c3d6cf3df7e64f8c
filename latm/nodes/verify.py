"""Verify: run the proposed tools on held-out examples in the sandbox (paper, stage 2).

Each candidate of the round is checked: the maker's calls of its function on the
validation questions and, when it defines one, its ``solve(request)`` entry on
every example (the demos too: a tool that contradicts a demo is no tool).
Expected answers never leave the host. The best candidate wins: a verified
direct entry, then every check passed (among those, the one the other passing
candidates agree with most on unlabelled inputs), then the most checks passed,
then the simplest code.

A candidate that passes is still screened (:func:`screen`): one whose answer does
not depend on the question is rejected. An accepted tool must then show
evidence proportional to the search (:func:`weigh`, :mod:`latm.evidence`): the
chance that a tool ignoring its input would have passed, times the candidates
tried, must be within ``Context.lucky_pass_max``; otherwise nothing is stored
(the error says how many more examples would do) or, with
``Context.weak_tools == "store"``, the tool is stored marked weakly verified.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import Overwrite

from latm import evidence as ev_
from latm.answers import is_correct, normalize_answer
from latm.checks import hardcoded
from latm.codeparse import DIRECT_ENTRY, parse_module, without_function
from latm.deadline import DeadlineExceeded, check
from latm.graph.context import Context
from latm.graph.state import Candidate, CaseReport, Example, State, VerifiedFunction
from latm.nodes.common import (
    checked_examples,
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
            size = sum(1 for _ in ast.walk(parse_module(self.candidate["code"] or "")))
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


def not_run(case: CaseReport) -> bool:
    """Whether a failed case was skipped by the early stop (never run, never shown)."""
    return (case["error"] or "").endswith(SKIPPED)


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


def run_until_stuck(
    executor: Executor, code: str, calls: list[str], limits: ExecLimits
) -> list[ExecResult]:
    """Run unjudged ``calls`` (probes) as :func:`run_checks` does.

    After a timeout or a crash the rest is skipped: a looping tool would
    otherwise cost one deadline per call.
    """
    checks = [("probe", c) for c in calls]
    results = run_checks(executor, code, checks, limits, lambda i, r: True, frozenset())
    skipped = ExecResult("error", error="not run: an earlier call timed out or crashed")
    return [r or skipped for r in results]


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


def _kept_through_outage(
    state: State,
    ctx: Context,
    function: VerifiedFunction,
    demos: list[Example],
    examples: list[Example],
    attempt: int,
) -> dict[str, Any]:
    """Accept the verified function when the maker is gone, if its evidence suffices."""
    update = _accept_function(function)
    strength, shortfall = weigh(
        function["report"],
        direct=False,
        examples=examples,
        seen=[*(e["input"] for e in demos), *(state.get("revealed") or [])],
        tried=function.get("tried", (attempt - 1) * ctx.n_candidates),
        agreement=None,
        compared=0,
        probes=0,
        ctx=ctx,
    )
    update["verification"] = strength
    update["revealed"] = revealed(state, function["report"], shortfall is None)
    if shortfall is not None:
        update["verified"] = False
        update["error"] = (
            f"the maker failed after a function was verified, but it is not verified "
            f"strongly enough: {shortfall}, or set LATM_WEAK_TOOLS=store to store it marked "
            "weakly verified. Nothing was stored."
        )
    return update


def verify(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Check the round's candidates and keep the best.

    When the last allowed round fails, the run ends with an error and nothing
    is stored.
    """
    ctx = get_context(runtime)
    demos, validation = split_examples(state, ctx)
    examples = list(state.get("examples") or [])
    direct_examples = checked_examples(examples, ctx)
    attempt = state.get("attempts", 0) + 1
    proposals = sorted(state.get("proposals") or [], key=lambda c: c["index"])
    update: dict[str, Any] = {"attempts": attempt, "proposals": Overwrite([])}
    function = state.get("function")
    outage = bool(proposals) and all(c["error"] for c in proposals)
    if function is not None and outage:
        # The maker is gone (or the deadline passed) after a function was verified:
        # store that function (the paper's bar) rather than throw it away.
        emit(runtime, "verify", "no_direct", attempt=attempt, problem=proposals[0]["error"])
        return {**update, **_kept_through_outage(state, ctx, function, demos, examples, attempt)}
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
        agreement, n_probes = screen(
            evaluations,
            task=state.get("task") or "",
            demos=demos,
            examples=examples,
            ctx=ctx,
            executor=executor,
            limits=limits,
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
    best = min(evaluations, key=lambda e: preference(e, agreement))
    chosen = best.candidate
    tried = (attempt - 1) * ctx.n_candidates + len(proposals)
    calls_only = [c for c in best.report if c.get("check", "call") == "call"]
    accepted = best.direct or (best.passed and not ctx.direct_entry)
    last = attempt >= ctx.max_attempts
    update.update(
        report=best.report,
        problem=best.problem if best.problem or not best.report else None,
        code=chosen["code"],
        entry=chosen["entry"],
        calls=chosen["calls"],
        direct=best.direct,
        maker_messages=Overwrite([] if chosen["error"] else to_messages(transcript(chosen))),
    )
    if not accepted and function is None and best.calls_passed and chosen["code"]:
        # The function is right; its solve(request) entry is missing or wrong.
        function = VerifiedFunction(
            code=chosen["code"]
            if chosen["entry"] == DIRECT_ENTRY  # never drop the tool itself
            else without_function(chosen["code"], DIRECT_ENTRY),
            entry=chosen["entry"] or "",
            calls=chosen["calls"],
            report=calls_only,
            conversation=transcript(chosen),
            tried=tried,
        )
        update["function"] = function
        emit(runtime, "verify", "function", attempt=attempt, candidate=chosen["index"])
    kept_function = not accepted and function is not None and last
    if kept_function and function is not None:
        # No entry verified in time: keep the verified function, for the user
        # model to call (the paper's bar).
        accepted = True
        update.update(_accept_function(function))
        emit(runtime, "verify", "no_direct", attempt=attempt, problem=best.first_failure)
    strength: dict[str, Any] | None = None
    if accepted:
        compared = 0 if kept_function else sum(1 for i in agreement if i != chosen["index"])
        strength, shortfall = weigh(
            update["report"],
            direct=bool(update["direct"]),
            examples=examples,
            seen=[*(e["input"] for e in demos), *(state.get("revealed") or [])],
            tried=function.get("tried", tried) if kept_function and function else tried,
            agreement=None if kept_function else agreement.get(chosen["index"]),
            compared=compared,
            probes=n_probes,
            ctx=ctx,
        )
        emit(runtime, "verify", "evidence", attempt=attempt, **strength)
        if shortfall is not None:
            accepted = False
            update["error"] = (
                f"the tool passed every check but is not verified: {shortfall}, or set "
                f"LATM_WEAK_TOOLS=store to store it marked weakly verified. Nothing was stored."
            )
    update["verification"] = strength
    update["revealed"] = revealed(state, update["report"], accepted)
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
    if not accepted and last and not update.get("error"):
        why = best.problem or (summarize(best.report) if best.report else "nothing could run")
        update["error"] = (
            f"could not make a verified tool in {attempt} attempt(s); best candidate of the "
            f"last attempt: {why}. Nothing was stored."
        )
    return update


def _outputs(report: list[CaseReport], skip: set[str]) -> dict[str, str | None]:
    """A candidate's answer per input (``None`` where a check failed to run)."""
    found: dict[str, str | None] = {}
    for case in report:
        if case["input"] not in skip and case["input"] not in found:
            found[case["input"]] = case["got"] if case["error"] is None else None
    return found


def screen(
    evaluations: list[Evaluation],
    *,
    task: str,
    demos: list[Example],
    examples: list[Example],
    ctx: Context,
    executor: Executor,
    limits: ExecLimits,
) -> tuple[dict[int, float | None], int]:
    """Label-free checks of the candidates that passed, and their agreement.

    Each candidate that passed (its ``solve`` entry, or its calls) is run on
    unlabelled inputs, when it has a ``solve`` entry: the request and perturbed
    example questions (:func:`latm.evidence.probes`). A candidate whose answer is
    the same for every input beyond the demos, probes included, is rejected: its
    answer does not depend on the question (a constant, or a tool that recognises
    the demos and answers everything else by a default). A candidate that could
    not be probed is left to the lucky-pass bound: its labelled questions beyond
    the demos may all share the answer it gives. When several candidates
    pass, each one's agreement with the others on the probes is returned
    (TroVE-style self-consistency), by candidate index.

    Returns:
        The agreement per candidate index (empty when fewer than two could be
        compared) and the number of probes.
    """
    passing = [e for e in evaluations if e.direct or e.calls_passed]
    if not passing:
        return {}, 0
    skip = {e["input"] for e in demos}
    inputs = ev_.probes(task, examples, ctx.agreement_probes)
    answers: dict[int, list[str | None]] = {}
    for ev in passing:
        seen = _outputs(ev.report, skip)
        probed: list[str | None] = []
        if inputs and ev.direct and ev.candidate["code"]:
            calls = [f"{DIRECT_ENTRY}({text!r})" for text in inputs]
            for text, result in zip(
                inputs, run_until_stuck(executor, ev.candidate["code"], calls, limits), strict=False
            ):
                ok = result.ok and result.value is not None
                probed.append(normalize_answer(result.value or "", text) if ok else None)
            answers[ev.candidate["index"]] = probed
        outputs = [*seen.values(), *probed]
        # Without probes, a constant answer to labelled questions that all share
        # that answer may be right: the lucky-pass bound (weigh) judges it.
        if any(p is not None for p in probed) and (same := ev_.constant(outputs)) is not None:
            ev.problem = (
                f"its answer does not depend on the question: it answered {same!r} to all "
                f"{len(outputs)} questions beyond the demos it was run on; a tool must "
                f"compute the answer from the question"
            )
    if len(answers) < 2:
        return {}, len(inputs)
    return ev_.agreement(answers), len(inputs)


def preference(ev: Evaluation, agreement: dict[int, float | None]) -> tuple[Any, ...]:
    """Sort key, best first: :meth:`Evaluation.rank`, the most agreed with among equals."""
    rank = ev.rank()
    score = agreement.get(ev.candidate["index"])
    return (*rank[:3], -(score if score is not None else -1.0), *rank[3:])


def weigh(
    report: list[CaseReport],
    *,
    direct: bool,
    examples: list[Example],
    seen: list[str],
    tried: int,
    agreement: float | None,
    compared: int,
    probes: int,
    ctx: Context,
) -> tuple[dict[str, Any], str | None]:
    """The strength of an accepted tool's verification, and why it falls short.

    A tool accepted through its ``solve`` entry is weighed on those checks (a
    call the maker miscopied says nothing about the tool); one without, on the
    maker's calls.

    Returns:
        The strength (the fields of :class:`latm.repository.VerificationStrength`)
        and, when the examples cannot rule out a lucky pass and weak tools are
        not stored, what is missing (else ``None``).
    """
    check = "direct" if direct else "call"
    found = ev_.evidence(
        [c for c in report if c.get("check", "call") == check],
        labelled=examples,
        seen=set(seen),
        candidates=tried,
        threshold=ctx.lucky_pass_max,
        copy_guarded=ctx.reject_hardcoded,
    )
    strength: dict[str, Any] = {
        "level": "verified" if found.sufficient else "weak",
        **found.summary(),
        "agreement": agreement,
        "compared": compared if agreement is not None else 0,
        "probes": probes if agreement is not None else 0,
    }
    if found.sufficient or ctx.weak_tools == "store":
        return strength, None
    return strength, found.shortfall(ctx.n_demos)


def revealed(state: State, report: list[CaseReport], accepted: bool) -> list[str]:
    """Inputs whose expected answers the maker has seen beyond the demos, after this round.

    A failed case of the round's best candidate is shown to the next round's
    maker (as repair feedback and as a worked example): from then on, passing
    it proves less. Cases the early stop skipped are never shown.
    """
    shown = list(state.get("revealed") or [])
    if not accepted:
        shown += [
            c["input"]
            for c in report
            if not c["passed"] and not not_run(c) and c["input"] not in shown
        ]
    return shown


def passed(state: State) -> bool:
    """Whether the round's verification accepted a tool for ``wrap``."""
    return bool(state.get("verified"))
