"""A parent agent that hands sub-tasks to LATM, which runs as a subgraph.

The parent is a small "assistant" graph with its own state. Its ``route`` node
decides whether a request is a job for a reusable tool (here: a request that
starts with a phrase of a known skill); its ``delegate`` node maps the parent's
state onto LATM's input, runs LATM and maps LATM's output back; its ``reply``
node answers the user and lists the tools LATM has made so far, read from the
**store the parent and LATM share** (LATM inherits the parent's store,
checkpointer and context; with ``require_approval`` an approval interrupt raised
inside LATM pauses the parent).

Run it against real models (the settings of ``latm.graph.Context``: e.g.
``OPENAI_API_KEY``, or ``LATM_MAKER_BASE_URL``/``LATM_USER_BASE_URL``)::

    python examples/parent_agent.py

The first word-sorting request makes a tool (LATM's miss path); the second is
answered by that tool from the shared store (a cache hit, no maker call).
"""

from __future__ import annotations

import operator
from typing import Annotated, Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore
from langgraph.store.memory import InMemoryStore
from typing_extensions import TypedDict

from latm.data import load_task
from latm.graph import Context
from latm.graph.builder import build_graph
from latm.graph.state import Example
from latm.repository import ToolRepository

SKILLS: dict[str, str] = {
    "sort the following words alphabetically": "word_sorting",
}
"""Request prefixes the parent recognizes, and the LATM task type each maps to."""


class AssistantState(TypedDict, total=False):
    """The parent's own state (it shares no keys with LATM's).

    Attributes:
        request: What the user asked.
        skill: The LATM task type chosen for it, or ``None`` when no tool fits.
        worked_examples: Worked examples per skill that the parent keeps, handed
            to LATM so that it can make a tool on a miss.
        result: The reply to the user.
        made_tool: Whether LATM made a new tool for this request.
        trace: One line per step, appended by each node.
    """

    request: str
    skill: str | None
    worked_examples: dict[str, list[Example]]
    result: str
    made_tool: bool
    trace: Annotated[list[str], operator.add]


latm = build_graph()
"""LATM, compiled without a store or checkpointer: it inherits the parent's."""


def route(state: AssistantState) -> dict[str, Any]:
    """The parent's own decision: which skill (LATM task type) fits the request."""
    text = state.get("request", "").strip().lower()
    skill = next((task for prefix, task in SKILLS.items() if text.startswith(prefix)), None)
    return {"skill": skill, "trace": [f"route: {skill or 'no skill fits'}"]}


def delegate(state: AssistantState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Hand the sub-task to LATM: map the parent's state in, and LATM's output back."""
    skill = state.get("skill") or ""
    examples = (state.get("worked_examples") or {}).get(skill, [])
    out = latm.invoke(
        {"task": state["request"], "task_type": skill, "examples": examples},
        context=runtime.context,
    )
    if out.get("error"):
        return {"result": f"sorry, that failed: {out['error']}", "trace": ["latm: error"]}
    made = not out.get("cache_hit")
    tool = out.get("tool") or {}
    how = "made a new tool" if made else "used a cached tool"
    return {
        "result": str(out.get("answer")),
        "made_tool": made,
        "trace": [f"latm: {how} {tool.get('task_type')} v{tool.get('version')}"],
    }


def reply(state: AssistantState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Answer the user, noting the tools now in the shared store."""
    if not state.get("skill"):
        return {"result": "I have no skill for that request.", "trace": ["reply"]}
    ctx = runtime.context if isinstance(runtime.context, Context) else Context()
    tools = []
    if runtime.store is not None:
        tools = [
            f"{r.task_type} v{r.version}"
            for r in ToolRepository(runtime.store, ctx.namespace).records()
        ]
    return {"trace": [f"reply: tools in the shared store: {', '.join(tools) or 'none'}"]}


def build_assistant(store: BaseStore, **compile_kwargs: Any) -> CompiledStateGraph[Any, Any]:
    """Compile the parent agent with the store it shares with LATM.

    Args:
        store: The store of the parent; LATM keeps its tools there.
        **compile_kwargs: More ``compile`` options (e.g. a ``checkpointer``).

    Returns:
        The compiled parent graph.
    """
    builder = StateGraph(AssistantState, context_schema=Context)
    builder.add_node("route", route)
    builder.add_node("delegate", delegate)
    builder.add_node("reply", reply)
    builder.add_edge(START, "route")
    builder.add_conditional_edges(
        "route", lambda s: "delegate" if s.get("skill") else "reply", ["delegate", "reply"]
    )
    builder.add_edge("delegate", "reply")
    builder.add_edge("reply", END)
    return builder.compile(store=store, name="assistant", **compile_kwargs)


def main() -> None:
    """Two word-sorting requests: the first makes a tool, the second reuses it."""
    examples = list(load_task("word_sorting"))
    assistant = build_assistant(InMemoryStore())
    known = {"word_sorting": examples[:6]}
    for example in (examples[20], examples[21]):
        out = assistant.invoke(
            {"request": example["input"], "worked_examples": known}, context=Context()
        )
        print(f"Q: {example['input']}\nA: {out['result']}  (expected {example['target']})")
        print("   " + " | ".join(out["trace"]))


if __name__ == "__main__":
    main()
