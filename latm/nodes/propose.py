"""Propose: the maker writes a generic Python function from the demos (paper, stage 1).

With best-of-N, ``propose`` runs as N parallel branches (one ``Send`` each); each
branch makes one candidate and ``verify`` collects them. In the first round the
candidates differ by sampling and by the order of the demos. In later rounds
candidate 0 repairs the round's best candidate from its failures (the paper's
retry), and the others start afresh with those failures as extra worked examples:
a small maker shown its own code tends to repeat it token for token, so fresh
attempts are where new ideas come from.

With the direct entry on, odd candidates write the function and its
``solve(request)`` entry at once, even ones the function alone; once a function's
calls pass without a verified ``solve``, the next rounds ask only for the entry that
parses the raw question, which is attached to the verified function. (A small maker
asked for both at once may mix parsing into the algorithm and get both wrong; asked
for the function alone it may miscopy long data into its calls, which a ``solve``
that parses the question avoids: the portfolio covers both.)
"""

from __future__ import annotations

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from latm.codeparse import Proposal, ReplyError, attach_direct_entry, parse_proposal
from latm.deadline import DeadlineExceeded
from latm.effects import Steps, io, sync_node, within
from latm.graph.context import Context
from latm.graph.state import (
    Best,
    Candidate,
    CaseReport,
    Example,
    Making,
    ProposeUpdate,
    State,
    TokenUsage,
    VerifiedFunction,
    merge_usage,
)
from latm.llm import ModelError, ainvoke, invoke
from latm.nodes.common import (
    STALE_THREAD,
    emit,
    get_context,
    message_text,
    split_examples,
    to_messages,
    to_pairs,
)
from latm.nodes.verify import not_run
from latm.prompts import (
    DESCRIBE_USER,
    DIRECT_INSTRUCTIONS,
    DIRECT_NAME,
    DIRECT_STAGE,
    DIRECT_TEMPLATE,
    LESSONS,
    MAKER_SYSTEM,
    PROPOSE_USER,
    RETRY_BAD_REPLY,
    RETRY_FAILED_CASES,
    RETRY_SOLVE,
    WRITE_INSTRUCTIONS,
)
from latm.tracing import call_config

MAX_FAILURES_SHOWN = 5


def format_demos(demos: list[Example]) -> str:
    """The worked examples as the maker sees them (with their reasoning, where given)."""
    return "\n\n".join(
        f"Example {i}:\nQuestion: {ex['input']}\n"
        + (f"Reasoning: {ex['rationale']}\n" if ex.get("rationale") else "")
        + f"Answer: {ex['target']}"
        for i, ex in enumerate(demos, 1)
    )


def format_questions(validation: list[Example]) -> str:
    """The validation questions (their answers are never shown to the maker)."""
    return "\n\n".join(f"Question {i}: {ex['input']}" for i, ex in enumerate(validation, 1))


def instructions(validation: list[Example], direct: bool = False) -> str:
    """What the maker is asked to write, and in which form (``direct``: with ``solve``)."""
    return WRITE_INSTRUCTIONS.format(
        questions=format_questions(validation),
        n_calls=len(validation),
        direct=DIRECT_INSTRUCTIONS if direct else "",
        direct_name=DIRECT_NAME if direct else "",
        direct_template=DIRECT_TEMPLATE if direct else "",
    )


def asks_for_solve(ctx: Context, index: int) -> bool:
    """Whether candidate ``index`` of a first or fresh attempt also writes ``solve``.

    With the direct entry on, odd candidates write the function and ``solve`` at
    once and even ones (the first among them) the function alone: parsing inside
    ``solve`` spares the maker copying long data into its calls (where small
    makers slip), but on harder tasks it mixes parsing into the algorithm.
    """
    return ctx.direct_entry and index % 2 == 1


def rotated(demos: list[Example], index: int) -> list[Example]:
    """The demos in the order candidate ``index`` sees them (candidate 0: as given)."""
    if not demos:
        return demos
    shift = index % len(demos)
    return demos[shift:] + demos[:shift]


def _best(state: State) -> Best | None:
    making = state.get("making")
    return making["best"] if making else None


def lessons(best: Best | None, demos: list[Example]) -> list[Example]:
    """Failed cases of the previous round's best candidate, as worked examples.

    Their expected answers were already shown in the repair feedback; a fresh
    candidate gets them without the failing code.
    """
    seen = {ex["input"] for ex in demos}
    cases: list[Example] = []
    for case in best["report"] if best else []:
        if case["passed"] or case["input"] in seen or not_run(case):
            continue
        seen.add(case["input"])
        cases.append(Example(input=case["input"], target=case["expected"]))
    return cases[:MAX_FAILURES_SHOWN]


def first_prompt(state: State, ctx: Context, index: int) -> list[str]:
    """The user turns of a fresh candidate: demos (and lessons), then what to write."""
    demos, validation = split_examples(state, ctx)
    shown = format_demos(rotated(demos, index))
    if learned := lessons(_best(state), demos):
        shown += "\n\n" + LESSONS.format(cases=format_demos(learned))
    asks = instructions(validation, asks_for_solve(ctx, index))
    if ctx.two_step:
        return [DESCRIBE_USER.format(demos=shown), asks]
    return [PROPOSE_USER.format(demos=shown, instructions=asks)]


def _describe_failure(i: int, case: CaseReport) -> str:
    got = f"error: {case['error']}" if case["error"] else f"got: {case['got']!r}"
    how = "solve(question)" if case.get("check") == "direct" else "your call of it"
    return f"Question {i}: {case['input']}\nExpected: {case['expected']!r}\n{how} {got}"


def feedback(best: Best, function: VerifiedFunction | None) -> str:
    """What the maker is told about the best candidate of the previous round."""
    if best["problem"]:
        return RETRY_BAD_REPLY.format(problem=best["problem"])
    failed = [
        _describe_failure(i, case)
        for i, case in enumerate(best["report"], 1)
        if not case["passed"] and not not_run(case)
    ]
    shown = failed[:MAX_FAILURES_SHOWN]
    if len(failed) > len(shown):
        shown.append(f"({len(failed) - len(shown)} more failed)")
    template = RETRY_SOLVE if function else RETRY_FAILED_CASES
    return template.format(failures="\n\n".join(shown))


def plan(state: State, ctx: Context, index: int) -> tuple[list[BaseMessage], list[str]]:
    """The conversation so far and the user turns to send, for candidate ``index``.

    Returns:
        The earlier messages (system prompt included) and the new user turns.
    """
    making = state.get("making")
    best = making["best"] if making else None
    function = making["function"] if making else None
    history = to_messages(best["conversation"]) if best else []
    if function is not None:
        # the direct-entry stage: candidate 0 repairs the last round's best solve()
        # (or the one that came with the function) from its failures; the others
        # ask for solve() afresh in the conversation that made the function
        failed = best is not None and any(not c["passed"] for c in best["report"])
        if index == 0 and best and history and (failed or best["problem"]):
            return history, [feedback(best, function)]
        return to_messages(function["conversation"]), [DIRECT_STAGE.format(entry=function["entry"])]
    if index == 0 and best and history:
        return history, [feedback(best, function)]
    return [SystemMessage(MAKER_SYSTEM)], first_prompt(state, ctx, index)


def parse(text: str, function: VerifiedFunction | None) -> Proposal:
    """The candidate in the maker's reply: a tool, or a ``solve`` for the verified one."""
    if function is None:
        return parse_proposal(text)
    return attach_direct_entry(text, function["code"], function["entry"], function["calls"])


def _candidate(
    index: int,
    prompt: list[tuple[str, str]],
    reply: str = "",
    *,
    code: str | None = None,
    entry: str | None = None,
    calls: list[str] | None = None,
    direct: bool = False,
    problem: str | None = None,
    error: str | None = None,
) -> Candidate:
    return Candidate(
        index=index,
        prompt=prompt,
        reply=reply,
        code=code,
        entry=entry,
        calls=calls or [],
        direct=direct,
        problem=problem,
        error=error,
    )


def ask_maker(
    ctx: Context,
    messages: list[BaseMessage],
    steps: list[str],
    *,
    index: int,
    attempt: int,
    deadline_at: float | None,
    config: RunnableConfig | None = None,
) -> Steps[tuple[list[tuple[str, str]], str, dict[str, TokenUsage], str | None]]:
    """Send the user turns ``steps`` to the maker, one reply each (the I/O of ``propose``).

    As steps (:mod:`latm.effects`): each maker call is awaited on async paths.
    ``config`` tags each call for tracers (:func:`latm.tracing.call_config`).

    Returns:
        The prompt as ``(role, text)`` pairs (earlier messages and the turns sent),
        the maker's last reply, the tokens spent and a model failure (else ``None``).
    """
    prompt = to_pairs(messages)
    messages = list(messages)
    temperature = ctx.maker_temperature if index == 0 else ctx.candidate_temperature
    usage: dict[str, TokenUsage] = {}
    text = ""
    for step, ask in enumerate(steps):
        messages.append(HumanMessage(ask))
        seed = attempt * 1000 + index * 10 + step if index else None
        call = io(
            invoke,
            ainvoke,
            ctx,
            "maker",
            list(messages),
            temperature=temperature,
            seed=seed,
            config=config,
        )
        try:
            reply, used = yield within(deadline_at, "a maker call", call)
        except (ModelError, DeadlineExceeded) as exc:
            return prompt, "", usage, str(exc)
        usage = merge_usage(usage, used)
        text = message_text(reply)
        prompt.append(("human", ask))
        if step < len(steps) - 1:
            prompt.append(("ai", text))
            messages.append(AIMessage(text))
    return prompt, text, usage, None


def read_reply(
    index: int, prompt: list[tuple[str, str]], text: str, function: VerifiedFunction | None
) -> Candidate:
    """The candidate in the maker's reply ``text`` (pure: no model, no sandbox)."""
    try:
        proposal = parse(text, function)
    except ReplyError as exc:
        return _candidate(index, prompt, text, problem=str(exc))
    return _candidate(
        index,
        prompt,
        text,
        code=proposal.code,
        entry=proposal.entry,
        calls=proposal.calls,
        direct=proposal.direct,
    )


def propose_steps(state: State, runtime: Runtime[Context]) -> Steps[ProposeUpdate]:
    """Ask the maker for one candidate tool, or for a fix of the round's best one.

    The first round shows the demos and the validation questions (with the
    two-step setting, the maker first describes the input format and the rule).
    In a later round candidate 0 continues the best candidate's conversation with
    its failing cases (expected vs got, or the error) or the reason its reply was
    unusable; the other candidates start a new conversation whose examples
    include those failing cases. Once a function is verified (and the direct
    entry is on), the candidates write its ``solve(request)`` entry instead.
    """
    ctx = get_context(runtime)
    index = state.get("branch", 0)
    making: Making | None = state.get("making")
    if making is None:  # a thread an older LATM checkpointed: its working state is gone
        return ProposeUpdate(candidates=[_candidate(index, [], error=STALE_THREAD)], usage={})
    attempt = making["attempts"] + 1
    messages, steps = plan(state, ctx, index)
    emit(
        runtime,
        "propose",
        "start",
        attempt=attempt,
        max_attempts=ctx.max_attempts,
        candidate=index,
        n_candidates=ctx.n_candidates,
    )
    traced = call_config(
        "maker", "propose", task_type=state.get("task_type"), candidate=index, attempt=attempt
    )
    prompt, text, usage, error = yield from ask_maker(
        ctx,
        messages,
        steps,
        index=index,
        attempt=attempt,
        deadline_at=state.get("deadline_at"),
        config=traced,
    )
    if error is not None:
        candidate = _candidate(index, prompt, error=error)
    else:
        candidate = read_reply(index, prompt, text, making["function"])
    if candidate["problem"]:
        emit(
            runtime,
            "propose",
            "unusable",
            attempt=attempt,
            candidate=index,
            problem=candidate["problem"],
        )
    elif candidate["code"] is not None:
        emit(
            runtime,
            "propose",
            "proposed",
            attempt=attempt,
            candidate=index,
            entry=candidate["entry"],
            lines=candidate["code"].count("\n"),
            direct=candidate["direct"],
        )
    return ProposeUpdate(candidates=[candidate], usage=usage)


propose = sync_node(propose_steps)
"""The ``propose`` node as a plain function (``propose(state, runtime)``)."""
