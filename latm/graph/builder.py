"""LATM's graph: the paper's diagram, wired (see ``build_graph``)."""

from __future__ import annotations

import functools
from typing import Any, cast

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

from latm.chat import chat_turn
from latm.effects import twin
from latm.graph.context import Context, RunSettings
from latm.graph.state import InputState, OutputState, State
from latm.leases import GUARD
from latm.nodes.approval import review_steps
from latm.nodes.common import get_context
from latm.nodes.dispatcher import dispatcher_steps, fresh_run
from latm.nodes.propose import propose_steps
from latm.nodes.use import use_steps
from latm.nodes.verify import passed, verify_steps
from latm.nodes.wrap import wrap_steps
from latm.nodes.wrappers import holds_lease, store_errors
from latm.tracing import TAG, node_metadata


def to_propose(state: State, runtime: Runtime[Context]) -> list[Send]:
    """Fan out to ``propose``: one branch per candidate of the round (best-of-N)."""
    n = get_context(runtime).n_candidates
    return [Send("propose", {**state, "branch": i}) for i in range(n)]


def route_dispatch(state: State, runtime: Runtime[Context]) -> str | list[Send]:
    """``hit`` → ``use``; ``miss`` → ``propose`` (N branches); ``stop`` (bad request) → end."""
    route = state.get("route")
    return "hit" if route == "hit" else to_propose(state, runtime) if route == "miss" else "stop"


def route_verify(state: State, runtime: Runtime[Context]) -> str | list[Send]:
    """``pass`` → ``wrap``; ``approval`` → ``review``; ``retry`` → ``propose``; else end.

    A verified tool goes to ``review`` first when ``require_approval`` is on.
    ``verify`` sets ``error`` when the last attempt failed (``exhausted``) and
    on any other failure, a dead model for one (``stop``).
    """
    if state.get("error"):
        making = state.get("making")
        attempts = making["attempts"] if making else 0
        return "exhausted" if attempts >= get_context(runtime).max_attempts else "stop"
    if not passed(state):
        return to_propose(state, runtime)
    return "approval" if get_context(runtime).require_approval else "pass"


def route_review(state: State) -> str:
    """``approved`` (or edited and re-verified) → ``wrap``; ``stop`` (rejected) → end."""
    return "stop" if state.get("error") else "approved"


def route_wrap(state: State) -> str:
    """``stored`` → ``use``; ``made`` (make only: no task) or ``stop`` → end."""
    if state.get("error"):
        return "stop"
    return "stored" if (state.get("task") or "").strip() else "made"


def _add_node(builder: StateGraph[Any, Any, Any, Any], name: str, node: Any) -> None:
    builder.add_node(name, node, metadata=node_metadata(name))


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
    # Every wrapper is applied here, and only here:
    # - store_errors: a failing store ends the run with a clear `error` (`stop`);
    # - holds_lease: renews the run's tool-making lease, or releases it when the
    #   node ends the making (stores a tool or fails). GUARD (below) releases it
    #   when the run ends any other way;
    # - chat_turn: the last human message is the task, the answer an AI message;
    # - twin: each node is written once as steps (latm.effects); sync runs (invoke,
    #   stream) drive them on the calling thread, async runs (ainvoke, a LangGraph
    #   server) await their async twins (models, store, leases) on the event loop
    #   and run the sandbox on LATM's I/O threads; one span per node;
    # - node_metadata: each node's span names it (and its model's role) for tracers.
    add = functools.partial(_add_node, builder)
    add("dispatcher", twin(chat_turn(store_errors(reset=fresh_run)(dispatcher_steps))))
    add("propose", twin(holds_lease(propose_steps)))
    add("verify", twin(chat_turn(holds_lease(verify_steps))))
    add("review", twin(chat_turn(holds_lease(store_errors()(review_steps)))))
    add("wrap", twin(chat_turn(holds_lease(store_errors()(wrap_steps)))))
    add("use", twin(chat_turn(use_steps)))

    #  START ─► dispatcher ──hit─────────────────────────────────────► use ─► END
    #               ├──stop──► END                                stored ▲
    #               └──miss──► propose ─► verify ──pass───────────► wrap ──┤
    #             (N of them, Send) ▲      │ │                      ▲      ├─made─► END
    #                               └retry─┘ ├approval► review ─approved┘  └─stop─► END
    #                                        │ (require   └─stop─► END
    #                                        │  approval)
    #                                        └──exhausted / stop──► END
    #  `stop`: a node set `error` (a bad request, a dead model, a store failure, a
    #  rejection); `made`: a make-only request (no task to answer). review pauses
    #  the run (interrupt) until a person answers; wrap alone writes the repository.
    builder.add_edge(START, "dispatcher")
    # path maps name each edge (Studio draws the labels); a Send list bypasses them
    builder.add_conditional_edges(
        "dispatcher", route_dispatch, {"hit": "use", "miss": "propose", "stop": END}
    )
    builder.add_edge("propose", "verify")
    builder.add_conditional_edges(
        "verify",
        route_verify,
        {"pass": "wrap", "approval": "review", "retry": "propose", "exhausted": END, "stop": END},
    )
    builder.add_conditional_edges("review", route_review, {"approved": "wrap", "stop": END})
    builder.add_conditional_edges("wrap", route_wrap, {"stored": "use", "made": END, "stop": END})
    builder.add_edge("use", END)
    compile_kwargs.setdefault("name", "LATM")
    # the lease guard releases a tool-making lease when the run ends, however it ends
    return builder.compile(**compile_kwargs).with_config(callbacks=[GUARD], tags=[TAG])


graph = build_graph()
"""The compiled graph, with no checkpointer or store (a server supplies its own)."""
