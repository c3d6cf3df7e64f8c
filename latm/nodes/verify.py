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
from dataclasses import dataclass, field
from typing import Any, Literal

from langgraph.runtime import Runtime

from latm import evidence as ev_
from latm.answers import is_correct, normalize_answer
from latm.checks import hardcoded
from latm.codeparse import DIRECT_ENTRY, parse_module, without_function
from latm.deadline import DeadlineExceeded, check
from latm.graph.context import Context
from latm.graph.state import (
    Best,
    Candidate,
    CaseReport,
    Example,
    Making,
    State,
    VerifiedFunction,
    VerifyUpdate,
    cases_of,
    check_kind,
)
from latm.nodes.common import (
    STALE_THREAD,
    ExampleSets,
    emit,
    example_sets,
    get_context,
    get_limits,
    get_tool_executor,
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
        calls = cases_of(self.report, "call")
        return not self.problem and bool(calls) and all(c["passed"] for c in calls)

    @property
    def direct(self) -> bool:
        """Its ``solve(request)`` entry was checked and passed on every example.

        That verifies the tool on the raw questions, which is stronger evidence
        than the maker's calls (its own transcription of the questions' data):
        such a candidate is accepted even if a call miscopied the data.
        """
        checked = cases_of(self.report, "direct")
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


Outcome = Literal["pass", "retry", "exhausted", "stop"]


@dataclass(frozen=True)
class Verdict:
    """What a round of verification decided (see :func:`decide`).

    Attributes:
        outcome: ``pass`` (a tool is accepted for ``wrap``), ``retry`` (another
            round), ``exhausted`` (the last round failed) or ``stop`` (a failure
            no other round can mend: a dead model, no sandbox, too weak evidence).
        making: The making's working data after the round (``best``, ``function``,
            ``verified``, ``revealed``, ``attempts``).
        verification: The strength of an accepted tool's verification, else ``None``.
        error: Why the run ends (``exhausted``, ``stop``), else ``None``.
        events: The progress events of the round, in order, for the custom stream.
    """

    outcome: Outcome
    making: Making
    verification: dict[str, Any] | None = None
    error: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


def _event(event: str, **data: Any) -> dict[str, Any]:
    return {"node": "verify", "event": event, **data}


def _data(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in ("node", "event")}


def _best(ev: Evaluation) -> Best:
    """The round's best candidate, whole, as the state keeps it."""
    chosen = ev.candidate
    return Best(
        index=chosen["index"],
        code=chosen["code"],
        entry=chosen["entry"],
        calls=chosen["calls"],
        direct=ev.direct,
        report=ev.report,
        problem=ev.problem if ev.problem or not ev.report else None,
        conversation=[] if chosen["error"] else transcript(chosen),
    )


def _function_best(function: VerifiedFunction, index: int, conversation: list[Any]) -> Best:
    """The verified function, accepted without a ``solve`` entry, as the round's best."""
    return Best(
        index=index,
        code=function["code"],
        entry=function["entry"],
        calls=function["calls"],
        direct=False,
        report=function["report"],
        problem=None,
        conversation=conversation,
    )


def _ended(error: str, making: Making, ctx: Context) -> Verdict:
    """A round that ends the run before any check ran."""
    last = making["attempts"] >= ctx.max_attempts
    return Verdict("exhausted" if last else "stop", making, error=error)


def found_function(best: Evaluation, tried: int) -> VerifiedFunction:
    """The verified function of a candidate whose calls passed (its ``solve`` did not)."""
    chosen = best.candidate
    code = chosen["code"] or ""
    return VerifiedFunction(
        code=code
        if chosen["entry"] == DIRECT_ENTRY  # never drop the tool itself
        else without_function(code, DIRECT_ENTRY),
        entry=chosen["entry"] or "",
        calls=chosen["calls"],
        report=cases_of(best.report, "call"),
        conversation=transcript(chosen),
        tried=tried,
    )


def evidence(
    best: Best,
    making: Making,
    sets: ExampleSets,
    ctx: Context,
    *,
    tried: int,
    agreement: float | None,
    compared: int,
    probes: int,
    weak: str,
) -> tuple[dict[str, Any], str | None]:
    """The strength of an accepted candidate (:func:`weigh`), and the error when too weak.

    Args:
        best: The accepted candidate.
        making: The making's working data (the inputs already revealed to the maker).
        sets: The request's examples.
        ctx: The run's settings.
        tried: Candidates tried so far.
        agreement: Its agreement with the other passing candidates, if measured.
        compared: With how many it was compared.
        probes: On how many unlabelled inputs.
        weak: How the error starts when the evidence falls short.
    """
    strength, shortfall = weigh(
        best["report"],
        direct=best["direct"],
        examples=sets.labelled,
        seen=[*(e["input"] for e in sets.demos), *making["revealed"]],
        tried=tried,
        agreement=agreement,
        compared=compared,
        probes=probes,
        ctx=ctx,
    )
    if shortfall is None:
        return strength, None
    return strength, (
        f"{weak}: {shortfall}, or set LATM_WEAK_TOOLS=store to store it marked weakly "
        "verified. Nothing was stored."
    )


def decide_unchecked(
    candidates: list[Candidate], making: Making, sets: ExampleSets, ctx: Context
) -> Verdict | None:
    """The verdict on a round that needs no check (``None``: run the checks).

    No candidate at all, or the maker failed on every one: the run ends, unless a
    function was verified in an earlier round and its evidence suffices, which is
    then accepted (the paper's bar) rather than thrown away.
    """
    outage = bool(candidates) and all(c["error"] for c in candidates)
    function = making["function"]
    if function is not None and outage:
        best = _function_best(function, 0, making["best"]["conversation"] if making["best"] else [])
        strength, error = evidence(
            best,
            making,
            sets,
            ctx,
            tried=function.get("tried", (making["attempts"] - 1) * ctx.n_candidates),
            agreement=None,
            compared=0,
            probes=0,
            weak="the maker failed after a function was verified, but it is not verified "
            "strongly enough",
        )
        making = Making(
            **{
                **making,
                "best": best,
                "verified": error is None,
                "revealed": revealed(making["revealed"], best["report"], error is None),
            }
        )
        events = [_event("no_direct", attempt=making["attempts"], problem=candidates[0]["error"])]
        if error is None:
            return Verdict("pass", making, strength, events=events)
        last = making["attempts"] >= ctx.max_attempts
        return Verdict("exhausted" if last else "stop", making, strength, error, events)
    if not candidates:
        return _ended("the maker made no proposal", making, ctx)
    if outage:
        return _ended(candidates[0]["error"] or "the maker failed", making, ctx)
    return None


def decide(
    evaluations: list[Evaluation],
    agreement: dict[int, float | None],
    n_probes: int,
    *,
    making: Making,
    sets: ExampleSets,
    ctx: Context,
) -> Verdict:
    """Decide a checked round: the best candidate, and whether it passes (pure).

    Args:
        evaluations: Each candidate's checks (after :func:`screen`).
        agreement: Each passing candidate's agreement with the others, by index.
        n_probes: How many unlabelled inputs :func:`screen` ran.
        making: The making's working data, ``attempts`` counting this round.
        sets: The request's examples, as the checks used them.
        ctx: The run's settings.

    Returns:
        The verdict: the outcome, the new working data, the strength of an
        accepted tool, the error that ends the run and the round's events.
    """
    attempt = making["attempts"]
    events = _round_events(evaluations, attempt)
    best = min(evaluations, key=lambda e: preference(e, agreement))
    chosen = best.candidate
    tried = (attempt - 1) * ctx.n_candidates + len(evaluations)
    accepted = best.direct or (best.passed and not ctx.direct_entry)
    last = attempt >= ctx.max_attempts
    kept = _best(best)
    function = making["function"]
    if not accepted and function is None and best.calls_passed and chosen["code"]:
        # The function is right; its solve(request) entry is missing or wrong.
        function = found_function(best, tried)
        events.append(_event("function", attempt=attempt, candidate=chosen["index"]))
    kept_function = not accepted and function is not None and last
    if kept_function and function is not None:
        # No entry verified in time: keep the verified function, for the user
        # model to call (the paper's bar).
        accepted = True
        kept = _function_best(function, chosen["index"], kept["conversation"])
        events.append(_event("no_direct", attempt=attempt, problem=best.first_failure))
    strength: dict[str, Any] | None = None
    error: str | None = None
    if accepted:
        strength, error = evidence(
            kept,
            making,
            sets,
            ctx,
            tried=function.get("tried", tried) if kept_function and function else tried,
            agreement=None if kept_function else agreement.get(chosen["index"]),
            compared=0 if kept_function else sum(1 for i in agreement if i != chosen["index"]),
            probes=n_probes,
            weak="the tool passed every check but is not verified",
        )
        events.append(_event("evidence", attempt=attempt, **strength))
        accepted = error is None
    report = kept["report"]
    events.append(
        _event(
            "done",
            attempt=attempt,
            passed=accepted,
            candidate=chosen["index"],
            n_passed=sum(c["passed"] for c in report),
            n_cases=len(report),
            direct=kept["direct"],
        )
    )
    if not accepted and last and error is None:
        why = best.problem or (summarize(best.report) if best.report else "nothing could run")
        error = (
            f"could not make a verified tool in {attempt} attempt(s); best candidate of the "
            f"last attempt: {why}. Nothing was stored."
        )
    new = Making(
        **{
            **making,
            "best": kept,
            "function": function,
            "verified": accepted,
            "revealed": revealed(making["revealed"], report, accepted),
        }
    )
    if accepted:
        return Verdict("pass", new, strength, events=events)
    if error is not None:
        return Verdict("exhausted" if last else "stop", new, strength, error, events)
    return Verdict("retry", new, strength, events=events)


def _round_events(evaluations: list[Evaluation], attempt: int) -> list[dict[str, Any]]:
    """Each candidate's cases and outcome, as progress events."""
    events: list[dict[str, Any]] = []
    for ev in evaluations:
        index = ev.candidate["index"]
        for i, case in enumerate(ev.report):
            events.append(
                _event(
                    "case",
                    attempt=attempt,
                    candidate=index,
                    index=i,
                    check=check_kind(case),
                    passed=case["passed"],
                    expected=case["expected"],
                    got=case["got"],
                    error=case["error"],
                )
            )
        events.append(
            _event(
                "candidate",
                attempt=attempt,
                candidate=index,
                passed=ev.passed,
                direct=ev.direct,
                n_passed=sum(c["passed"] for c in ev.report),
                n_cases=len(ev.report),
                problem=ev.first_failure,
            )
        )
    return events


def check_round(
    candidates: list[Candidate],
    *,
    task: str,
    sets: ExampleSets,
    ctx: Context,
    deadline_at: float | None,
) -> tuple[list[Evaluation], dict[int, float | None], int]:
    """Run every candidate's checks (in parallel) and the label-free screen (the I/O).

    Returns:
        The evaluations, the agreement per candidate index and the number of probes.

    Raises:
        DeadlineExceeded: The run's deadline has passed.
        SandboxUnavailableError: No allowed executor is available.
    """
    check(deadline_at, "verification")
    executor = get_tool_executor(ctx)
    limits = get_limits(ctx)
    with ThreadPoolExecutor(max_workers=min(8, len(candidates))) as pool:  # all at once
        evaluations = list(
            pool.map(
                lambda c: evaluate(
                    c,
                    validation=sets.validation,
                    direct_examples=sets.direct,
                    all_examples=sets.labelled,
                    ctx=ctx,
                    executor=executor,
                    limits=limits,
                ),
                candidates,
            )
        )
    agreement, n_probes = screen(
        evaluations,
        task=task,
        demos=sets.demos,
        examples=sets.labelled,
        ctx=ctx,
        executor=executor,
        limits=limits,
    )
    return evaluations, agreement, n_probes


def verify(state: State, runtime: Runtime[Context]) -> VerifyUpdate:
    """Check the round's candidates and keep the best.

    Prepare (the round's candidates, the example sets), run the checks in the
    sandbox (:func:`check_round`), decide (:func:`decide`, pure), then write the
    round's events. When the last allowed round fails, the run ends with an
    error and nothing is stored.
    """
    making = state.get("making")
    if making is None:  # a thread an older LATM checkpointed: its working state is gone
        return VerifyUpdate(candidates=[], error=STALE_THREAD)
    ctx = get_context(runtime)
    sets = example_sets(state, ctx)
    candidates = sorted(state.get("candidates") or [], key=lambda c: c["index"])
    making = Making(**{**making, "attempts": making["attempts"] + 1})
    update = VerifyUpdate(candidates=[])  # read: the next round starts empty
    verdict = decide_unchecked(candidates, making, sets, ctx)
    if verdict is None:
        try:
            evaluations, agreement, n_probes = check_round(
                candidates,
                task=state.get("task") or "",
                sets=sets,
                ctx=ctx,
                deadline_at=state.get("deadline_at"),
            )
        except DeadlineExceeded as exc:
            verdict = _ended(f"{exc}; nothing was stored", making, ctx)
        except SandboxUnavailableError as exc:
            verdict = _ended(f"cannot run generated code: {exc}", making, ctx)
        else:
            verdict = decide(evaluations, agreement, n_probes, making=making, sets=sets, ctx=ctx)
    for event in verdict.events:
        emit(runtime, event["node"], event["event"], **_data(event))
    update["making"] = verdict.making
    update["verification"] = verdict.verification
    if verdict.error is not None:
        update["error"] = verdict.error
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
        cases_of(report, check),
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


def revealed(shown: list[str], report: list[CaseReport], accepted: bool) -> list[str]:
    """Inputs whose expected answers the maker has seen beyond the demos, after this round.

    A failed case of the round's best candidate is shown to the next round's
    maker (as repair feedback and as a worked example): from then on, passing
    it proves less. Cases the early stop skipped are never shown.

    Args:
        shown: Those already shown in earlier rounds.
        report: The report of the round's best candidate.
        accepted: Whether the round accepted a tool (then nothing more is shown).
    """
    shown = list(shown)
    if not accepted:
        shown += [
            c["input"]
            for c in report
            if not c["passed"] and not not_run(c) and c["input"] not in shown
        ]
    return shown


def passed(state: State) -> bool:
    """Whether the round's verification accepted a tool for ``wrap``."""
    making = state.get("making")
    return bool(making and making["verified"])
