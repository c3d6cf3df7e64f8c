"""The typed state that LATM's nodes pass along.

``InputState`` is what a caller sends, ``OutputState`` what it gets back and
``State`` the whole working state. They are ``TypedDict``s from
``typing_extensions`` so that LangServe can derive schemas from them on
Python 3.11.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

Role = Literal["maker", "user"]


class Example(TypedDict):
    """One worked example of a task: a question and its expected answer."""

    input: str
    target: str


class ToolRef(TypedDict):
    """Which tool answered (or was made): function name, task type and version."""

    name: str
    task_type: str
    version: int


class TokenUsage(TypedDict):
    """Token counts reported by a model, summed over a run."""

    input_tokens: int
    output_tokens: int
    total_tokens: int
    calls: int


class CaseReport(TypedDict):
    """The verification outcome of one validation example."""

    input: str
    expected: str
    got: str | None
    error: str | None
    passed: bool


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


class InputState(TypedDict, total=False):
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

    task: str
    examples: list[Example]
    task_type: str | None
    make: bool


class OutputState(TypedDict, total=False):
    """What a caller gets back.

    Attributes:
        answer: The normalized answer, or ``None``.
        tool: The tool that answered (or was made), or ``None``.
        cache_hit: Whether a cached tool answered without tool making.
        error: A clear message when the run failed, else ``None``.
        usage: Token usage per role (``maker``, ``user``).
    """

    answer: str | None
    tool: ToolRef | None
    cache_hit: bool
    error: str | None
    usage: Annotated[dict[str, TokenUsage], merge_usage]


class State(InputState, OutputState, total=False):
    """The working state of one run.

    Attributes:
        route: The dispatcher's decision: ``hit``, ``miss`` or ``stop``.
        candidates: Names of the tools the dispatcher considered, best first.
        tool_record: The chosen or newly wrapped tool record (a JSON dict).
        code: The maker's latest proposed tool code.
        entry: The name of the tool function in ``code``.
        calls: The maker's call expressions for the validation examples.
        report: The verification report of the latest proposal.
        problem: Why the latest proposal could not be verified at all (no code,
            a syntax error, ...), for the maker's next attempt.
        attempts: How many proposals the maker has made in this run.
        maker_messages: The conversation with the maker in this run.
    """

    route: Literal["hit", "miss", "stop"]
    candidates: list[str]
    tool_record: dict[str, Any] | None
    code: str | None
    entry: str | None
    calls: list[str]
    report: list[CaseReport]
    problem: str | None
    attempts: int
    maker_messages: Annotated[list[AnyMessage], add_messages]
