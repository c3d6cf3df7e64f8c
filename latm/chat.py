"""LATM as a chat: a ``messages`` input and an AI message back (Studio's Chat mode, chat agents).

A caller may send ``{"messages": [{"role": "human", "content": "..."}]}`` instead
of (or besides) ``task``. When the last message is a human one, its text is the
request: the run answers it, and the answer (or the run's error) comes back as an
AI message appended to ``messages``. So the graph works in Studio's Chat mode, on
a thread turn after turn, and as a node of a parent graph whose state is
``MessagesState``. ``task``/``examples`` input works as before; a thread keeps its
``examples`` and ``task_type`` between turns like any other input.
"""

from __future__ import annotations

import functools
from collections.abc import Generator
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

from langchain_core.messages import AIMessage, AnyMessage, BaseMessage
from langgraph.graph.message import add_messages
from pydantic import Field, WithJsonSchema
from typing_extensions import TypedDict

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from langgraph.runtime import Runtime

    from latm.graph.context import Context

Node = TypeVar("Node", bound="Callable[..., Any]")  # nodes may return typed updates

MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A chat message, as LangChain and the OpenAI API write it.",
    "properties": {
        "role": {
            "type": "string",
            "description": "Who wrote it: human (or user), ai (or assistant), system, tool.",
        },
        "type": {
            "type": "string",
            "description": "Who wrote it, LangChain's spelling (human, ai, system, tool); "
            "instead of role.",
        },
        "content": {
            "type": "string",
            "description": "The text (a list of content blocks, {type: text, text}, works too).",
        },
        "id": {"type": "string", "description": "The message's id (assigned when missing)."},
        "name": {"type": "string", "description": "An optional name of the author."},
    },
    "required": ["content"],
}
"""The JSON schema of one message: what clients send (LangChain's message classes accept it)."""


class ChatState(TypedDict, total=False):
    """The chat entry: a conversation whose last human message is the request."""

    # the reducer must stay the last metadata (LangGraph reads it from there)
    messages: Annotated[
        list[AnyMessage],
        Field(
            description="Chat entry (Studio's Chat mode, chat agents): the last human message "
            "is the request; the answer, or the error, comes back as an AI message."
        ),
        WithJsonSchema({"type": "array", "items": MESSAGE_SCHEMA}),
        add_messages,
    ]


def question(state: Any) -> str | None:
    """The request of a chat turn: the text of the last message, if a human wrote it."""
    messages = state.get("messages") or []
    last = messages[-1] if messages else None
    if not isinstance(last, BaseMessage) or last.type != "human":
        return None
    return last.text.strip() or None


def reply(update: Mapping[str, Any]) -> AIMessage | None:
    """The AI message that answers a chat turn, when ``update`` ends the run."""
    if update.get("error"):
        return AIMessage(content=f"LATM could not answer: {update['error']}")
    if update.get("answer") is not None:
        return AIMessage(content=str(update["answer"]))
    return None


def answered(update: Mapping[str, Any], asked: str, new_task: bool) -> Mapping[str, Any]:
    """A chat turn's node update: the task it answered (when new) and the AI message, if final."""
    extra: dict[str, Any] = {"task": asked} if new_task else {}
    if (message := reply(update)) is not None:
        extra["messages"] = [message]
    return {**update, **extra} if extra else update


def chat_turn(node: Node) -> Node:
    """Wrap a node for chat turns: the last human message is the task, the answer a message.

    Outside a chat turn (no messages, or the last one is not a human's) the node
    runs as it is. In one, the node sees the message's text as ``task`` (written
    to the state by the first node, the dispatcher), and a node update that ends
    the run (an ``answer`` or an ``error``) also appends the AI message that says it.
    ``node`` may return its update, or a generator of I/O steps that returns it (a
    node body driven by someone else); the wrapper returns the same kind.
    """

    @functools.wraps(node)
    def run(state: Mapping[str, Any], runtime: Runtime[Context]) -> Any:
        asked = question(state)
        if asked is None:
            return node(state, runtime)
        new_task = state.get("task") != asked
        result: Any = node({**state, "task": asked} if new_task else state, runtime)
        if isinstance(result, Generator):
            return _answered_steps(result, asked, new_task)
        return answered(result, asked, new_task)

    return cast(Node, run)


def _answered_steps(
    steps: Generator[Any, Any, Mapping[str, Any]], asked: str, new_task: bool
) -> Generator[Any, Any, Mapping[str, Any]]:
    update = yield from steps
    return answered(update, asked, new_task)
