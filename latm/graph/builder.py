"""LATM's graph: the paper's diagram, wired (see ``build_graph``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

from latm.graph.context import Context, RunSettings
from latm.graph.state import InputState, OutputState, State
from latm.lifecycle import GUARD, waiting_node
from latm.nodes import dispatcher, propose, use, verify, wrap
from latm.nodes.common import get_context
from latm.nodes.verify import passed


def to_propose(state: State, runtime: Runtime[Context]) -> list[Send]:
    """Fan out to ``propose``: one branch per candidate of the round (best-of-N)."""
    n = get_context(runtime).n_candidates
    return [Send("propose", {**state, "candidate": i}) for i in range(n)]


def route_dispatch(state: State, runtime: Runtime[Context]) -> str | list[Send]:
    """A cache hit goes to ``use``, a miss to ``propose``; a bad request ends."""
    route = state.get("route")
    return "use" if route == "hit" else to_propose(state, runtime) if route == "miss" else END


def route_verify(state: State, runtime: Runtime[Context]) -> str | list[Send]:
    """Verified → ``wrap``; failed with attempts left → ``propose``; otherwise end."""
    if state.get("error"):
        return END
    return "wrap" if passed(state) else to_propose(state, runtime)


def unless_error(then: str) -> Callable[[State], str]:
    """A route to ``then`` that ends the run instead when a node set ``error``."""

    def route(state: State) -> str:
        if state.get("error") or (then == "use" and not (state.get("task") or "").strip()):
            return END
        return then

    route.__name__ = f"to_{then}_unless_error"
    return route


LATMGraph = CompiledStateGraph[State, Context, InputState, OutputState]


def build_graph(**compile_kwargs: Any) -> LATMGraph:
    """Build and compile LATM.

    Args:
        **compile_kwargs: Passed to ``compile``: ``checkpointer``, ``store``,
            ``interrupt_before`` and so on. Without a store, the nodes use the
            local SQLite repository.

    Returns:
        The compiled graph.
    """
    # The context schema is what a server's client may send: run settings only. The
    # nodes see a full Context (in-process callers pass one; get_context adds the
    # deployment's settings to a client's), hence the static type.
    client_schema = cast(type[Context], RunSettings)
    builder = StateGraph(
        State, context_schema=client_schema, input_schema=InputState, output_schema=OutputState
    )
    # waits for another run's tool off the server's node threads (see waiting_node)
    builder.add_node("dispatcher", waiting_node(dispatcher))
    builder.add_node("propose", propose)
    builder.add_node("verify", verify)
    builder.add_node("wrap", wrap)
    builder.add_node("use", use)

    #  START ─► dispatcher ──hit──────────────────────────────► use ─► END
    #               │                                           ▲
    #               └──miss──► propose ─► verify ──pass─► wrap ──┘
    #                          (N of them, Send)    │
    #                             ▲──retry───┤  (attempts left)
    #                                        └──exhausted──► END
    #  Any node that sets `error` ends the run (a bad request, a dead model, ...).
    builder.add_edge(START, "dispatcher")
    builder.add_conditional_edges("dispatcher", route_dispatch, ["use", "propose", END])
    builder.add_edge("propose", "verify")
    builder.add_conditional_edges("verify", route_verify, ["wrap", "propose", END])
    builder.add_conditional_edges("wrap", unless_error("use"), ["use", END])
    builder.add_edge("use", END)
    compile_kwargs.setdefault("name", "LATM")
    # the lease guard releases a tool-making lease when the run ends, however it ends
    return builder.compile(**compile_kwargs).with_config(callbacks=[GUARD])


graph = build_graph()
"""The compiled graph, with no checkpointer or store (a server supplies its own)."""
