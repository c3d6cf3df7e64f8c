"""Node wrappers: what the builder puts around a node (and only the builder).

* :func:`store_errors`: a failing store ends the run with a clear ``error``;
* :func:`holds_lease`: renews the run's tool-making lease, or releases it when the
  node ends the making. The lease guard (:data:`latm.leases.GUARD`) releases it
  when the run ends any other way.

Each takes a plain node or a node body written as steps (:mod:`latm.effects`) and
gives the same kind. How a node runs on async paths is the builder's
(:func:`latm.effects.twin`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
from collections.abc import Callable, Generator, Mapping
from typing import Any, TypeVar, cast

from langgraph.errors import GraphBubbleUp
from langgraph.runtime import Runtime

from latm.effects import NodeSteps, Steps, io, node_name, sync_node
from latm.graph.context import Context
from latm.graph.state import State
from latm.leases import arelease, arenew, release, renew
from latm.nodes.common import get_context, get_repository
from latm.repository import RepositoryError, ToolRecord

log = logging.getLogger(__name__)

Node = TypeVar("Node", bound=Callable[..., Any])  # a plain node, or a body of steps


def holds_lease(node: Node) -> Node:
    """Wrap a tool-making node: renew the run's lease, or release it when making ends.

    Making ends when the node stores a tool (its update has a ``tool``) or
    fails (its update has an ``error``); the update then clears ``lease``. A
    node that raises (any exception, ``KeyboardInterrupt``, but not LangGraph's
    own interrupt of a review) releases the lease before the exception goes on.
    A store failure here is logged, never raised: the run's end tries again,
    and the lease lapses on its own.

    ``node`` is a plain node or a node body written as steps (:mod:`latm.effects`);
    the wrapper is of the same kind, its lease calls steps too (awaited on async paths).
    """
    body = _steps_of(node)

    @functools.wraps(node)
    def run(state: State, runtime: Runtime[Context]) -> Steps[dict[str, Any]]:
        lease = state.get("lease")
        try:
            update: dict[str, Any] = yield from body(state, runtime)
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
                    yield io(release, arelease, repo, lease)
                elif ends:
                    made = ToolRecord.model_validate(update["tool_record"])
                    yield io(release, arelease, repo, lease, made)
                else:
                    yield io(renew, arenew, repo, lease, ctx)
        except Exception as exc:
            log.warning("could not update the lease on %s: %s", lease.get("key"), exc)
        # only a node that ends the making clears the lease (parallel proposals never write it)
        return {**update, "lease": None} if ends else update

    return _like(node, run)


def _release_quietly(runtime: Runtime[Context], lease: dict[str, Any]) -> None:
    """Release on the way out of a failed node: now, or on a thread when on an event loop."""

    def give_back() -> None:
        try:
            repo = get_repository(runtime, get_context(runtime))
            with repo.guard("releasing the tool-making lease"):
                release(repo, lease)
        except Exception as exc:  # the run's end tries again; else the TTL ends it
            log.warning("could not release the lease on %s: %s", lease.get("key"), exc)

    try:
        asyncio.get_running_loop()
    except RuntimeError:  # a sync run's thread
        give_back()
    else:  # never block an event loop on the store (a server's store may need the loop)
        threading.Thread(target=give_back, name="latm-lease-release", daemon=True).start()


def store_errors(
    reset: Callable[[], Mapping[str, Any]] | None = None,
) -> Callable[[Node], Node]:
    """Wrap a node so that a failing store ends the run with a clear ``error``.

    ``node`` is a plain node or a node body written as steps; the wrapper is of the
    same kind.

    Args:
        reset: State updates to return with the error (e.g. a fresh run's).
    """

    def decorate(node: Node) -> Node:
        body = _steps_of(node)

        @functools.wraps(node)
        def run(state: State, runtime: Runtime[Context]) -> Steps[dict[str, Any]]:
            try:
                update: dict[str, Any] = yield from body(state, runtime)
                return update
            except RepositoryError as exc:
                runtime.stream_writer(
                    {"node": node_name(node), "event": "store_error", "error": str(exc)}
                )
                return {**(reset() if reset else {}), "route": "stop", "error": str(exc)}

        return _like(node, run)

    return decorate


def _steps_of(node: Callable[..., Any]) -> NodeSteps[Any]:
    """``node`` as a body of steps (a plain node is one with no I/O step of its own)."""
    if inspect.isgeneratorfunction(node):
        return cast(NodeSteps[Any], node)

    def body(state: State, runtime: Runtime[Context]) -> Steps[Any]:
        result = node(state, runtime)
        if isinstance(result, Generator):  # a wrapper that passes a body's steps on
            return (yield from result)
        return result

    return body


def _like(node: Node, body: NodeSteps[Any]) -> Node:
    """``body`` as the kind ``node`` was: steps for steps, a plain function for a plain node."""
    if inspect.isgeneratorfunction(node):
        return cast(Node, body)
    return cast(Node, functools.wraps(node)(sync_node(body)))
