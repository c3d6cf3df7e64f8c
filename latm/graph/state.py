"""The typed state that LATM's nodes pass along.

``InputState`` is what a caller sends, ``OutputState`` what it gets back and
``State`` the whole working state. They are ``TypedDict``s from
``typing_extensions`` so that LangServe can derive schemas from them on
Python 3.11.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, NotRequired

from pydantic import Field
from typing_extensions import TypedDict

from latm.chat import ChatState

Role = Literal["maker", "user"]


class Example(TypedDict):
    """One worked example of a task: a question and its expected answer.

    An optional ``rationale`` says how the answer follows from the question. The
    maker sees it with the demos (a worked solution, as few-shot chain-of-thought
    prompts show one); checks never use it.
    """

    input: Annotated[str, Field(description="The question, as a user would ask it.")]
    target: Annotated[str, Field(description="Its expected answer.")]
    rationale: NotRequired[
        Annotated[
            str,
            Field(
                description="Optional: how the answer follows (shown to the maker, never checked)."
            ),
        ]
    ]


class ToolRef(TypedDict):
    """Which tool answered (or was made): function name, task type and version."""

    name: Annotated[str, Field(description="The tool function's name.")]
    task_type: Annotated[str, Field(description="The kind of task it solves (its repository key).")]
    version: Annotated[int, Field(description="The tool's version (1 for the first of its type).")]


class TokenUsage(TypedDict):
    """Token counts reported by a model, summed over a run."""

    input_tokens: Annotated[int, Field(description="Prompt tokens.")]
    output_tokens: Annotated[int, Field(description="Completion tokens.")]
    total_tokens: Annotated[int, Field(description="Prompt and completion tokens.")]
    calls: Annotated[int, Field(description="Model calls.")]


class CaseReport(TypedDict):
    """The verification outcome of one validation example.

    ``check`` says what ran: ``call`` (the maker's call of the tool for this
    question) or ``direct`` (the ``solve(request)`` entry on the raw question).
    """

    input: str
    expected: str
    got: str | None
    error: str | None
    passed: bool
    check: NotRequired[str]


def check_kind(case: CaseReport) -> str:
    """What a verification case checked: ``call`` (the maker's call) or ``direct``."""
    return case.get("check", "call")


def cases_of(report: list[CaseReport], kind: str) -> list[CaseReport]:
    """The cases of ``report`` that checked ``kind`` (``call`` or ``direct``)."""
    return [c for c in report if check_kind(c) == kind]


def passed_cases(examples: Sequence[Example], kind: str) -> list[CaseReport]:
    """A report of ``examples`` all passed by a ``kind`` check (``call`` or ``direct``)."""
    return [
        CaseReport(
            input=e["input"], expected=e["target"], got=e["target"], error=None, passed=True,
            check=kind,
        )
        for e in examples
    ]  # fmt: skip


class RouteInfo(TypedDict, total=False):
    """How the dispatcher routed a request.

    Attributes:
        by: What decided: ``task_type`` (the caller named the tool),
            ``embedding`` (the calibrated region alone), ``parser`` (a borderline
            case the tools' ``solve`` entries settled), ``model`` (the user model
            chose), ``lease`` (another run had just made the tool) or ``request``
            (tool making was asked for).
        tool: The chosen tool's task type, or ``None`` for no tool.
        verdict: What the embedding space said: ``hit``, ``none`` or ``borderline``.
        distance: Cosine distance from the request to the best tool's closest
            verified question.
        threshold: The best tool's acceptance distance.
        margin: How much farther the second-best tool is.
        candidates: The closest tools, best first.
        parser: Which candidates' ``solve`` entries accepted the request.
        asked_model: Whether a model was asked.
        embedder: The embedding model.
    """

    by: Annotated[
        str, Field(description="What decided: task_type, embedding, parser, model, lease.")
    ]
    tool: Annotated[str | None, Field(description="The chosen tool's task type, or null.")]
    verdict: Annotated[
        str, Field(description="The embedding space's verdict: hit, none, borderline.")
    ]
    distance: Annotated[
        float, Field(description="Cosine distance to the best tool's closest question.")
    ]
    threshold: Annotated[float, Field(description="The best tool's acceptance distance.")]
    margin: Annotated[float, Field(description="How much farther the second-best tool is.")]
    candidates: Annotated[list[str], Field(description="The closest tools, best first.")]
    parser: Annotated[
        dict[str, bool], Field(description="Which candidates' solve entries parsed the request.")
    ]
    asked_model: Annotated[bool, Field(description="Whether a model was asked.")]
    embedder: Annotated[str, Field(description="The embedding model.")]


class Candidate(TypedDict):
    """One proposal of the maker in a round (best-of-N proposes several in parallel).

    Attributes:
        index: The candidate's number within its round.
        prompt: The whole conversation sent to the maker (earlier rounds included), as
            ``(role, text)`` pairs.
        reply: The maker's reply (its last reply, with the two-step prompt).
        code: The tool code, or ``None`` when the reply could not be used.
        entry: The tool function's name.
        calls: The maker's calls for the validation questions.
        direct: Whether the code defines the ``solve(request)`` entry.
        problem: Why the reply could not be used, else ``None``.
        error: A model failure (server down, ...), else ``None``.
    """

    index: int
    prompt: list[tuple[str, str]]
    reply: str
    code: str | None
    entry: str | None
    calls: list[str]
    direct: bool
    problem: str | None
    error: str | None


class VerifiedFunction(TypedDict):
    """A tool function whose calls passed, waiting for its ``solve(request)`` entry.

    Attributes:
        code: The verified tool code.
        entry: The tool function's name.
        calls: The maker's verified calls for the validation questions.
        report: The verification report of those calls.
        conversation: The maker's conversation that produced it, as ``(role, text)``.
        tried: Candidates tried up to the one that made it (for its evidence).
    """

    code: str
    entry: str
    calls: list[str]
    report: list[CaseReport]
    conversation: list[tuple[str, str]]
    tried: NotRequired[int]


class Best(TypedDict):
    """The round's best candidate, whole: what ``review`` shows and ``wrap`` stores.

    Attributes:
        index: Its number within its round.
        code: Its tool code (``None`` when its reply could not be used).
        entry: The tool function's name.
        calls: The maker's calls for the validation questions.
        direct: Whether its ``solve(request)`` entry was verified.
        report: Its verification report.
        problem: Why it could not be verified at all (no code, a syntax error, ...),
            for the maker's next attempt; else ``None``.
        conversation: The maker's conversation that made it, its reply last, as
            ``(role, text)`` pairs (candidate 0 of the next round continues it);
            empty after a model failure.
    """

    index: int
    code: str | None
    entry: str | None
    calls: list[str]
    direct: bool
    report: list[CaseReport]
    problem: str | None
    conversation: list[tuple[str, str]]


class Making(TypedDict):
    """The maker's working data in one run that makes a tool (``State.making``).

    Attributes:
        make_id: Identifies this run's tool making; the stored tool carries it, so a
            run resumed after a crash finds its tool and never stores a second version.
        attempts: How many rounds of proposals the maker has made.
        best: The latest round's best candidate (``None`` before the first round).
        function: The verified tool function (calls passed) while the maker writes
            its ``solve(request)`` entry in later rounds; if no entry verifies, this
            function is stored without one.
        verified: Whether the latest round accepted ``best`` for ``wrap`` to store.
        reviewed: What the person decided in the ``review`` node: ``approved``, or
            ``edited`` (then ``best`` holds the edit); ``None`` before a review.
        revealed: Inputs of examples beyond the demos whose expected answers earlier
            rounds showed the maker (its failures): no evidence any more.
    """

    make_id: str
    attempts: int
    best: Best | None
    function: VerifiedFunction | None
    verified: bool
    reviewed: Literal["approved", "edited"] | None
    revealed: list[str]


def new_making(make_id: str) -> Making:
    """The working data of a tool making that has not started yet."""
    return Making(
        make_id=make_id,
        attempts=0,
        best=None,
        function=None,
        verified=False,
        reviewed=None,
        revealed=[],
    )


def collect_candidates(
    left: list[Candidate] | None, right: list[Candidate] | None
) -> list[Candidate]:
    """Reducer for ``candidates``: parallel ``propose`` branches append; ``[]`` clears.

    ``verify`` writes ``[]`` once it has read a round's candidates, and the
    dispatcher at a run's start, so the state never carries old rounds.
    """
    if right is not None and not right:
        return []
    return [*(left or []), *(right or [])]


ROLES: tuple[Role, ...] = ("maker", "user")


def merge_usage(
    left: Mapping[str, TokenUsage] | None, right: Mapping[str, TokenUsage | None] | None
) -> dict[str, TokenUsage]:
    """Reducer for ``usage``: sums token counts per role.

    A run's first update (the dispatcher's, see :func:`run_usage`) names every
    role, ``null`` for one that spent nothing yet: that starts the run's usage
    over. No other update holds a ``null``. This keeps each update plain JSON
    (no ``Overwrite`` object).

    Args:
        left: The usage accumulated so far.
        right: The usage a node adds (or a run's start).

    Returns:
        The summed usage per role.
    """
    if right and any(u is None for u in right.values()):
        left = None  # a run's start: what earlier runs on the thread spent is not this run's
    merged = {role: TokenUsage(**u) for role, u in (left or {}).items()}
    for role, usage in (right or {}).items():
        if usage is None:
            continue
        zero = TokenUsage(input_tokens=0, output_tokens=0, total_tokens=0, calls=0)
        base = merged.get(role, zero)
        merged[role] = TokenUsage(
            input_tokens=base["input_tokens"] + usage["input_tokens"],
            output_tokens=base["output_tokens"] + usage["output_tokens"],
            total_tokens=base["total_tokens"] + usage["total_tokens"],
            calls=base["calls"] + usage["calls"],
        )
    return merged


def run_usage(spent: Mapping[str, TokenUsage] | None = None) -> dict[str, TokenUsage | None]:
    """A run's first ``usage`` update: what it spent so far per role, ``None`` for nothing.

    :func:`merge_usage` starts the run's usage over on it.
    """
    return {role: (spent or {}).get(role) for role in ROLES}


class InputState(ChatState, total=False):
    """What a caller sends.

    Attributes:
        task: The request to answer. May be empty only when ``examples`` are
            given, to make a tool without answering anything.
        examples: Worked examples of this kind of task (``{input, target}``),
            used to make a tool when none fits. The first ``n_demos`` are shown to
            the maker; the next ``n_validation`` verify its tool.
        task_type: A name for this kind of task, when the caller knows it.
        make: Make a new tool (a new version, if ``task_type`` exists) even
            when a cached one fits.
    """

    task: Annotated[
        str,
        Field(
            description="The request to answer. May be empty only when examples are given, "
            "to make a tool without answering anything."
        ),
    ]
    examples: Annotated[
        list[Example],
        Field(
            description="Worked examples of this kind of task ({input, target}), used to make "
            "a tool when none fits: the first ones are shown to the maker, the next ones verify "
            "its tool."
        ),
    ]
    task_type: Annotated[
        str | None,
        Field(description="A name for this kind of task (e.g. word_sorting), when known."),
    ]
    make: Annotated[
        bool,
        Field(
            description="Make a new tool (a new version, if task_type exists) even when a "
            "cached one fits."
        ),
    ]


class OutputState(ChatState, total=False):
    """What a caller gets back.

    Attributes:
        answer: The normalized answer, or ``None``.
        tool: The tool that answered (or was made), or ``None``.
        cache_hit: Whether a cached tool answered without tool making.
        error: A clear message when the run failed, else ``None``.
        usage: Token usage per role (``maker``, ``user``).
        path: How the answer was computed: ``direct`` (the tool's ``solve`` entry
            on the raw request, no model call) or ``llm`` (the user model wrote
            the call).
        routing: How the dispatcher routed the request (:class:`RouteInfo`).
        verification: When a tool was made, how strong its verification was:
            ``level`` (``verified`` or ``weak``), the labelled examples passed
            (``cases``, ``blind_cases``: those whose answer the maker had not
            seen), ``lucky_pass`` (the chance that a tool ignoring its input
            would have passed, times the candidates tried), ``agreement`` (with
            the other candidates that passed, on unlabelled inputs); see
            :mod:`latm.evidence`.
    """

    answer: Annotated[str | None, Field(description="The normalized answer, or null.")]
    tool: Annotated[
        ToolRef | None,
        Field(description="The tool that answered (or was made), or null."),
    ]
    cache_hit: Annotated[
        bool, Field(description="Whether a cached tool answered without tool making.")
    ]
    error: Annotated[
        str | None, Field(description="A clear message when the run failed, else null.")
    ]
    # the reducer must stay the last metadata (LangGraph reads it from there)
    usage: Annotated[
        dict[str, TokenUsage],
        Field(description="Token usage per role (maker, user), summed over the run."),
        merge_usage,
    ]
    path: Annotated[
        Literal["direct", "llm"] | None,
        Field(
            description="How the answer was computed: direct (the tool's solve entry on the "
            "raw request, no model call) or llm (the user model wrote the call)."
        ),
    ]
    routing: Annotated[
        RouteInfo | None,
        Field(
            description="How the dispatcher routed the request: what decided (task_type, "
            "embedding, parser, model, lease), the tool, its distance, threshold and margin, "
            "and whether a model was asked."
        ),
    ]
    verification: Annotated[
        dict[str, Any] | None,
        Field(
            description="When a tool was made, how strong its verification was: level "
            "(verified or weak), cases and blind_cases (labelled examples passed, and those "
            "whose answer the maker had not seen), lucky_pass (the chance that a tool ignoring "
            "its input would have passed, times the candidates tried), agreement (with the other "
            "passing candidates on unlabelled inputs); null otherwise."
        ),
    ]


class State(InputState, OutputState, total=False):
    """The working state of one run: the caller's input, the output, and these keys.

    A run's start resets the output and the working keys (``route``,
    ``tool_record``, ``lease``, ``candidates``, ``making``) in one update of the
    dispatcher (:data:`latm.nodes.dispatcher.fresh_run`).

    Attributes:
        route: The dispatcher's decision: ``hit``, ``miss`` or ``stop``.
        deadline_at: When the run must end (epoch seconds; ``Context.run_deadline_s``
            after the request arrived); ``None`` for no deadline.
        tool_record: The chosen or newly stored tool record (a JSON dict), for ``use``.
        lease: The tool-making lease this run holds (``key``, ``owner``), taken by
            the dispatcher on a miss and released when the tool is stored or the
            making fails (see :mod:`latm.leases`); ``None`` otherwise.
        making: The maker's working data (:class:`Making`), set by the dispatcher
            on a miss; ``None`` when the run makes no tool.
        branch: Which candidate a ``propose`` branch makes (only in its ``Send``).
        candidates: The current round's candidates, one per ``propose`` branch,
            collected for ``verify`` (which clears them).
    """

    route: Literal["hit", "miss", "stop"]
    deadline_at: float | None
    tool_record: dict[str, Any] | None
    lease: dict[str, Any] | None
    making: Making | None
    branch: int
    candidates: Annotated[list[Candidate], collect_candidates]


# ---------------------------------------------------------------- node updates
# What each node may write (mypy checks the keys; LangGraph applies them).


class DispatcherUpdate(TypedDict, total=False):
    """The dispatcher's update: a fresh run's keys, the route and the chosen tool."""

    answer: str | None
    tool: ToolRef | None
    cache_hit: bool
    error: str | None
    usage: dict[str, TokenUsage | None]
    path: Literal["direct", "llm"] | None
    routing: RouteInfo | None
    verification: dict[str, Any] | None
    examples: list[Example]
    route: Literal["hit", "miss", "stop"]
    deadline_at: float | None
    tool_record: dict[str, Any] | None
    lease: dict[str, Any] | None
    making: Making | None
    candidates: list[Candidate]


class ProposeUpdate(TypedDict):
    """A ``propose`` branch's update: its one candidate and the tokens it spent."""

    candidates: list[Candidate]
    usage: dict[str, TokenUsage]


class VerifyUpdate(TypedDict, total=False):
    """``verify``'s update: the making's new state and the strength of an accepted tool."""

    making: Making
    candidates: list[Candidate]
    verification: dict[str, Any] | None
    error: str | None


class ReviewUpdate(TypedDict, total=False):
    """``review``'s update: the person's decision (in ``making``) or an error.

    ``verification`` is the verified tool's strength, or ``None`` for an edit
    (its strength is not measured): every update holds an output key, so a
    server's ``updates`` stream (output keys only) never shows it as ``null``.
    """

    making: Making
    verification: dict[str, Any] | None
    error: str | None


class WrapUpdate(TypedDict, total=False):
    """``wrap``'s update: the stored tool, or an error."""

    tool_record: dict[str, Any] | None
    tool: ToolRef | None
    verification: dict[str, Any] | None
    error: str | None


class UseUpdate(TypedDict, total=False):
    """``use``'s update: the answer and how it was computed, or an error."""

    answer: str | None
    path: Literal["direct", "llm"] | None
    usage: dict[str, TokenUsage]
    error: str | None
