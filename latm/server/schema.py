"""The schemas LATM's LangServe app advertises: input, output/stream chunk and config.

The LangServe playground builds its form from the input schema with JSON Forms,
which cannot render a nullable field (``anyOf: [{type: string}, {type: null}]``
throws ``Unknown type: {"type":"null"}`` and leaves a blank page). So the app's
input is :class:`ServedInput`: the graph's :class:`~latm.graph.state.InputState`
with plain types and defaults (an empty ``task_type`` means "not known"), which
:func:`graph_input` turns back into the graph's input.

One schema serves as the output schema of ``invoke`` and of each ``stream``
chunk (LangServe advertises one): :func:`output_model` is the graph's output
with one more field, ``event``, set on progress chunks only. A stream is
``{"event": {...}}`` chunks, then the whole output as its last chunk (which
LangChain's ``stream_log`` and tracers report as the run's output).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from latm.graph.state import Example, InputState


class ServedExample(BaseModel):
    """One worked example of a task: a question and its expected answer."""

    model_config = ConfigDict(title="Example")

    input: str = Field(description="The question, as a user would ask it.")
    target: str = Field(description="Its expected answer.")
    rationale: str = Field(
        default="",
        description="Optional: how the answer follows (shown to the maker, never checked).",
    )


class ServedInput(BaseModel):
    """What a LangServe client sends: a task, and worked examples to make a tool from.

    The graph's input with no nullable field (the playground's form cannot show
    one): an empty ``task_type`` means the caller does not know it; ``null`` is
    read as empty, as older clients send it.
    """

    model_config = ConfigDict(title="LATMInput")

    task: str = Field(
        default="",
        description="The request to answer. May be empty only when examples are given, "
        "to make a tool without answering anything.",
    )
    examples: list[ServedExample] = Field(
        default_factory=list,
        description="Worked examples of this kind of task ({input, target}), used to make a "
        "tool when none fits: the first ones are shown to the maker, the next ones verify "
        "its tool.",
    )
    task_type: str = Field(
        default="",
        description="A name for this kind of task (e.g. word_sorting), when known; empty when not.",
    )
    make: bool = Field(
        default=False,
        description="Make a new tool (a new version, if task_type exists) even when a "
        "cached one fits.",
    )

    @field_validator("task", "task_type", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return "" if value is None else value


def graph_input(value: Any) -> InputState:
    """The graph's input for a served request (a :class:`ServedInput`, or its dict).

    Raises:
        pydantic.ValidationError: ``value`` does not fit :class:`ServedInput`.
    """
    served = value if isinstance(value, ServedInput) else ServedInput.model_validate(value)
    examples: list[Example] = []
    for ex in served.examples:
        example = Example(input=ex.input, target=ex.target)
        if ex.rationale:
            example["rationale"] = ex.rationale
        examples.append(example)
    out = InputState(task=served.task, make=served.make)
    if examples:
        out["examples"] = examples
    if served.task_type:
        out["task_type"] = served.task_type
    return out


class ProgressEvent(BaseModel):
    """One node's progress event, as the CLI shows it (more fields per event)."""

    model_config = ConfigDict(title="ProgressEvent", extra="allow")

    node: str = Field(description="The node that reports it (dispatcher, propose, ...).")
    event: str = Field(description="What happened (miss, case, stored, answer, ...).")


def output_model(graph_output: type[BaseModel]) -> type[BaseModel]:
    """The app's output schema: the graph's output, plus ``event`` on progress chunks.

    Args:
        graph_output: The graph's output schema (``graph.get_output_schema()``).
    """
    model: type[BaseModel] = create_model(
        "LATMOutput",
        __base__=graph_output,
        event=(
            ProgressEvent | None,
            Field(
                default=None,
                description="Stream chunks only: one node's progress event. A stream sends "
                "these, then the whole output as its last chunk.",
            ),
        ),
    )
    return model
