"""The typed state that LATM's nodes pass along.

``InputState`` is what a caller sends, ``OutputState`` what it gets back and
``State`` the whole working state. They are ``TypedDict``s from
``typing_extensions`` so that LangServe can derive schemas from them on
Python 3.11.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
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


def add_candidates(left: list[Candidate] | None, right: list[Candidate] | None) -> list[Candidate]:
    """Reducer for ``proposals``: parallel proposals append; ``Overwrite([])`` clears."""
    return [*(left or []), *(right or [])]


def merge_usage(
    left: dict[str, TokenUsage] | None, right: dict[str, TokenUsage] | None
) -> dict[str, TokenUsage]:
    """Reducer for ``usage``: sums token counts per role.

    A new run starts over by writing ``langgraph.types.Overwrite({})``.

    Args:
        left: The usage accumulated so far.
        right: The usage a node adds.

    Returns:
        The summed usage per role.
    """
    merged = {role: TokenUsage(**u) for role, u in (left or {}).items()}
    for role, usage in (right or {}).items():
        zero = TokenUsage(input_tokens=0, output_tokens=0, total_tokens=0, calls=0)
        base = merged.get(role, zero)
        merged[role] = TokenUsage(
            input_tokens=base["input_tokens"] + usage["input_tokens"],
            output_tokens=base["output_tokens"] + usage["output_tokens"],
            total_tokens=base["total_tokens"] + usage["total_tokens"],
            calls=base["calls"] + usage["calls"],
        )
    return merged


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
    """The working state of one run.

    Attributes:
        route: The dispatcher's decision: ``hit``, ``miss`` or ``stop``.
        candidates: Names of the tools the dispatcher considered, best first.
        candidate: The index of the proposal a ``propose`` branch makes (its ``Send``).
        proposals: The proposals of the current round, collected for ``verify``.
        tool_record: The chosen or newly wrapped tool record (a JSON dict).
        code: The maker's latest proposed tool code.
        entry: The name of the tool function in ``code``.
        direct: Whether ``code`` defines the verified ``solve(request)`` entry.
        calls: The maker's call expressions for the validation examples.
        report: The verification report of the latest proposal.
        problem: Why the latest proposal could not be verified at all (no code,
            a syntax error, ...), for the maker's next attempt.
        attempts: How many rounds of proposals the maker has made in this run.
        maker_messages: The conversation with the maker in this run.
        function: The verified tool function (calls passed) while the maker writes
            its ``solve(request)`` entry in later rounds; if no entry verifies,
            this function is stored without one.
        verified: Whether the latest round accepted a tool, for ``wrap`` to store.
        reviewed: What the person decided in the ``review`` node: ``approved``,
            or ``edited`` (then ``code``, ``report`` and ``direct`` are the
            edit's); ``None`` before a review (or without approval).
        revealed: Inputs of examples beyond the demos whose expected answers
            earlier rounds showed the maker (its failures): no evidence any more.
        lease: The tool-making lease this run holds (``key``, ``owner``), taken by
            the dispatcher on a miss and released when the tool is stored or the
            making fails (see :mod:`latm.lifecycle`); ``None`` otherwise.
        make_id: Identifies this run's tool making (set on a miss); the stored tool
            carries it, so a run resumed after a crash finds its tool and never
            stores a second version.
        deadline_at: When the run must end (epoch seconds; ``Context.run_deadline_s``
            after the request arrived); ``None`` for no deadline.
    """

    route: Literal["hit", "miss", "stop"]
    candidates: list[str]
    candidate: int
    proposals: Annotated[list[Candidate], add_candidates]
    tool_record: dict[str, Any] | None
    code: str | None
    entry: str | None
    direct: bool
    calls: list[str]
    report: list[CaseReport]
    problem: str | None
    attempts: int
    maker_messages: Annotated[list[AnyMessage], add_messages]
    function: VerifiedFunction | None
    verified: bool
    reviewed: Literal["approved", "edited"] | None
    revealed: list[str]
    lease: dict[str, Any] | None
    make_id: str | None
    deadline_at: float | None
