"""Node wrappers: what the builder puts around a node (and only the builder).

* :func:`waiting_node`: a node that may wait for another run's tool (the
  dispatcher) runs, in async hosts, on its own pool of waiting threads
  (:func:`on_own_threads`) instead of the server's small default pool;
* :func:`store_errors`: a failing store ends the run with a clear ``error``;
* :func:`holds_lease`: renews the run's tool-making lease, or releases it when the
  node ends the making. The lease guard (:data:`latm.leases.GUARD`) releases it
  when the run ends any other way.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

from langgraph.errors import GraphBubbleUp
from langgraph.runtime import Runtime, get_runtime

from latm.graph.context import Context
from latm.graph.state import State
from latm.leases import release, renew
from latm.nodes.common import get_context, get_repository
from latm.repository import RepositoryError, ToolRecord
from latm.tracing import NodeFunctions

log = logging.getLogger(__name__)

Node = TypeVar("Node", bound=Callable[..., Any])  # nodes return their own TypedDict updates


def holds_lease(node: Node) -> Node:
    """Wrap a tool-making node: renew the run's lease, or release it when making ends.

    Making ends when the node stores a tool (its update has a ``tool``) or
    fails (its update has an ``error``); the update then clears ``lease``. A
    node that raises (any exception, ``KeyboardInterrupt``, but not LangGraph's
    own interrupt of a review) releases the lease before the exception goes on.
    A store failure here is logged, never raised: the run's end tries again,
    and the lease lapses on its own.
    """

    @functools.wraps(node)
    def run(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        lease = state.get("lease")
        try:
            update: dict[str, Any] = node(state, runtime)
        except GraphBubbleUp:  # an interrupt (the review) or a parent command: still held
            raise
        except BaseException:
            if lease:
                _release_quietly(runtime, lease)
            raise
        if not lease:
            return update
        ctx = get_context(runtime)
        ends = bool(update.get("error") or (update.get("tool_record") and update.get("tool")))
        try:
            repo = get_repository(runtime, ctx)
            with repo.guard("updating the tool-making lease"):
                if update.get("error"):
                    release(repo, lease)
                elif ends:
                    release(repo, lease, made=ToolRecord.model_validate(update["tool_record"]))
                else:
                    renew(repo, lease, ctx)
        except Exception as exc:
            log.warning("could not update the lease on %s: %s", lease.get("key"), exc)
        # only a node that ends the making clears the lease (parallel proposals never write it)
        return {**update, "lease": None} if ends else update

    return cast(Node, run)


def _release_quietly(runtime: Runtime[Context], lease: dict[str, Any]) -> None:
    try:
        repo = get_repository(runtime, get_context(runtime))
        with repo.guard("releasing the tool-making lease"):
            release(repo, lease)
    except Exception as exc:  # the run's end tries again; else the TTL ends it
        log.warning("could not release the lease on %s: %s", lease.get("key"), exc)


def store_errors(reset: Callable[[], Mapping[str, Any]] | None = None) -> Callable[[Node], Node]:
    """Wrap a node so that a failing store ends the run with a clear ``error``.

    Args:
        reset: State updates to return with the error (e.g. a fresh run's).
    """

    def decorate(node: Node) -> Node:
        @functools.wraps(node)
        def run(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
            try:
                update: dict[str, Any] = node(state, runtime)
                return update
            except RepositoryError as exc:
                runtime.stream_writer(
                    {"node": node.__name__, "event": "store_error", "error": str(exc)}
                )
                return {**(reset() if reset else {}), "route": "stop", "error": str(exc)}

        return cast(Node, run)

    return decorate


_WAITING_THREADS = ThreadPoolExecutor(max_workers=64, thread_name_prefix="latm-dispatch")


def on_own_threads(node: Node) -> Callable[[State], Awaitable[dict[str, Any]]]:
    """The async twin of a sync node that may wait for a lease (the dispatcher).

    An async host (the LangGraph server) runs sync nodes on its event loop's small
    default thread pool. Requests that wait for another run's tool would fill it,
    and the maker's own nodes could not run until the waiters timed out. This twin
    runs the node on a separate pool of cheap waiting threads instead, with the
    run's context variables (config, runtime) carried over.
    """

    @functools.wraps(node)
    async def run(state: State) -> dict[str, Any]:
        runtime = get_runtime(Context)
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        call = functools.partial(context.run, node, state, runtime)
        return await loop.run_in_executor(_WAITING_THREADS, call)

    return run


def waiting_node(node: Node) -> NodeFunctions[State, dict[str, Any]]:
    """``node`` for ``add_node``: sync runs call it, async runs use :func:`on_own_threads`.

    LangGraph's public node API takes one callable; :class:`~latm.tracing.NodeFunctions`
    pairs a sync function with its async twin without a span of its own (the node
    is one span in traces). Both read the node's runtime with LangGraph's public
    ``get_runtime``.
    """

    @functools.wraps(node)
    def run(state: State) -> dict[str, Any]:
        update: dict[str, Any] = node(state, get_runtime(Context))
        return update

    return NodeFunctions(run, on_own_threads(node), name=node.__name__)
