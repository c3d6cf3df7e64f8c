"""What LATM tells tracers and stream consumers about its runs, model calls and nodes.

Every span of a LATM run carries the tag ``latm`` (set on the compiled graph,
so LangSmith, Studio and any LangChain callback handler see it). Each node's span
carries ``latm_node`` (and ``latm_role`` when the node may call a model) in its
metadata. Each model call carries, as tags and metadata:

============================  ==============================================
metadata key                  meaning
============================  ==============================================
``latm_role``                 ``maker`` or ``user`` (also the tag ``latm:<role>``)
``latm_node``                 the calling node (also the tag ``latm:node:<node>``)
``latm_task_type``            the task type, when known
``latm_tool_version``         the tool's version (``use``)
``latm_cache_hit``            whether a cached tool answered (``use``)
``latm_candidate``            the candidate's index in its round (``propose``)
``latm_attempt``              the round, from 1 (``propose``)
============================  ==============================================

The metadata of a model call is also the metadata of each of its chunks in
``stream_mode="messages"`` (LangGraph passes it along), so a consumer can tell
the maker's parallel candidates apart as their tokens interleave.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from langchain_core.runnables import Runnable, RunnableConfig

from latm.graph.state import Role

TAG = "latm"
"""The tag on every span of a LATM run."""

NODE_ROLES: dict[str, Role] = {"dispatcher": "user", "propose": "maker", "use": "user"}
"""The model each node may call (the others call none)."""

In = TypeVar("In")
Out = TypeVar("Out")


def node_metadata(node: str) -> dict[str, Any]:
    """The metadata of ``node``'s span (for ``add_node(..., metadata=...)``)."""
    meta: dict[str, Any] = {"latm_node": node}
    if node in NODE_ROLES:
        meta["latm_role"] = NODE_ROLES[node]
    return meta


def call_config(
    role: Role,
    node: str,
    *,
    task_type: str | None = None,
    tool_version: int | None = None,
    cache_hit: bool | None = None,
    candidate: int | None = None,
    attempt: int | None = None,
) -> RunnableConfig:
    """The tags and metadata of one model call (fields left ``None`` are omitted).

    Args:
        role: Which model is called.
        node: The calling node.
        task_type: The task type, when known.
        tool_version: The version of the tool in use.
        cache_hit: Whether a cached tool answers this request.
        candidate: The candidate's index within its round.
        attempt: The round, from 1.

    Returns:
        A ``RunnableConfig`` with ``tags`` and ``metadata``; LangChain merges it
        with the node's own (``langgraph_node``, ``langgraph_step``, ...).
    """
    fields: dict[str, Any] = {
        "latm_role": role,
        "latm_node": node,
        "latm_task_type": task_type,
        "latm_tool_version": tool_version,
        "latm_cache_hit": cache_hit,
        "latm_candidate": candidate,
        "latm_attempt": attempt,
    }
    metadata = {k: v for k, v in fields.items() if v is not None}
    return RunnableConfig(tags=[TAG, f"latm:{role}", f"latm:node:{node}"], metadata=metadata)


class NodeFunctions(Runnable[In, Out], Generic[In, Out]):
    """A node given as a sync function and its async twin, with no span of its own.

    LangGraph's ``add_node`` takes one callable; a ``RunnableLambda`` pairs a
    sync function with an async one but opens its own span, which LangGraph's
    node span then wraps: the node appears twice, nested, in every trace. This
    runnable calls the function under the node's span (the config, the
    runtime and the callbacks stay those of the node).
    """

    def __init__(
        self, func: Callable[[In], Out], afunc: Callable[[In], Awaitable[Out]], *, name: str
    ) -> None:
        """Pair ``func`` and ``afunc`` under the node ``name``."""
        self.func = func
        self.afunc = afunc
        self.name = name

    def invoke(self, input: In, config: RunnableConfig | None = None, **kwargs: Any) -> Out:
        """Call the sync function."""
        return self.func(input)

    async def ainvoke(self, input: In, config: RunnableConfig | None = None, **kwargs: Any) -> Out:
        """Await the async function."""
        return await self.afunc(input)
