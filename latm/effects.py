"""One node body for both calling paths: the body yields its I/O, a driver performs it.

A node's logic is written once, as a generator (its *steps*) that yields an
:class:`Io` wherever it needs the outside world (a model call, a store read, a
run of generated code) and gets the result back at that point (or the exception,
raised there, so its ``try``/``except`` reads as in plain code)::

    def use_steps(state, runtime):
        reply, usage = yield io(invoke, ainvoke, ctx, "user", messages)
        ...
        return {"answer": answer}

:func:`drive` performs each step with its sync function (``graph.invoke``,
``graph.stream``); :func:`adrive` awaits its async twin (``graph.ainvoke``, the
LangGraph server), or, for a step with no async form, runs the sync function on
LATM's I/O threads (:func:`latm.aio.offload`), never on the event loop. Helpers
compose with ``yield from``. :func:`twin` makes the pair LangGraph's ``add_node``
takes: :class:`~latm.tracing.NodeFunctions`, both paths and no span of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeAlias, TypeVar, cast

from langgraph.runtime import Runtime, get_runtime

from latm.aio import offload
from latm.deadline import acall_within, call_within
from latm.graph.context import Context
from latm.sandbox import ExecLimits, ExecResult, Executor
from latm.tracing import NodeFunctions

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Io(Generic[T]):
    """One I/O step: a sync function and its async twin (``None``: the sync one, off the loop).

    Attributes:
        sync: Performs the step on the calling thread.
        asynchronous: Performs it awaited; ``None`` runs ``sync`` on LATM's I/O threads.
        args: Positional arguments of either.
        kwargs: Keyword arguments of either.
    """

    sync: Callable[..., T]
    asynchronous: Callable[..., Awaitable[T]] | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def run(self) -> T:
        """Perform the step synchronously."""
        return self.sync(*self.args, **self.kwargs)

    async def arun(self) -> T:
        """Perform the step awaited, never blocking the event loop."""
        if self.asynchronous is None:
            return await offload(self.sync, *self.args, **self.kwargs)
        return await self.asynchronous(*self.args, **self.kwargs)


Steps: TypeAlias = Generator[Io[Any], Any, R]
"""A node body (or a part of one): yields :class:`Io` steps, returns its result."""


def io(
    sync: Callable[..., T],
    asynchronous: Callable[..., Awaitable[T]] | None,
    /,
    *args: Any,
    **kw: Any,
) -> Io[T]:
    """The step ``sync(*args, **kw)``, awaited as ``asynchronous(*args, **kw)`` on async paths."""
    return Io(sync, asynchronous, args, kw)


def blocking(sync: Callable[..., T], /, *args: Any, **kw: Any) -> Io[T]:
    """A step with no async form: async paths run it on LATM's I/O threads."""
    return Io(sync, None, args, kw)


def run_tool(
    executor: Executor,
    code: str,
    calls: Sequence[str],
    limits: ExecLimits,
    cache_key: str | None = None,
) -> Io[list[ExecResult]]:
    """A run of generated code in the sandbox (no async form: off the loop on async paths)."""
    return Io(executor.run, None, (code, list(calls), limits), {"cache_key": cache_key})


def within(deadline_at: float | None, doing: str, step: Io[T]) -> Io[T]:
    """``step`` waited for no longer than the run's deadline (see :mod:`latm.deadline`)."""

    def sync() -> T:
        return call_within(deadline_at, doing, step.run)

    async def asynchronous() -> T:
        return await acall_within(deadline_at, doing, step.arun())

    return Io(sync, asynchronous)


def drive(steps: Steps[R]) -> R:
    """Run a body's steps synchronously; its result."""
    try:
        step = next(steps)
        while True:
            try:
                value = step.run()
            except BaseException as exc:  # raised in the body where it yielded the step
                step = steps.throw(exc)
            else:
                step = steps.send(value)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def adrive(steps: Steps[R]) -> R:
    """Run a body's steps awaited (async twins, or LATM's I/O threads); its result."""
    try:
        step = next(steps)
        while True:
            try:
                value = await step.arun()
            except BaseException as exc:  # a cancellation too: the body's finally blocks run
                step = steps.throw(exc)
            else:
                step = steps.send(value)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


NodeSteps: TypeAlias = Callable[[Any, Runtime[Context]], Steps[R]]
"""A node's body: ``(state, runtime)`` to its steps (named ``<node>_steps`` by convention)."""


def node_name(fn: Callable[..., Any]) -> str:
    """The node a body or a node function is: its name without the ``_steps`` suffix."""
    return str(getattr(fn, "__name__", "node")).removesuffix("_steps")


def sync_node(body: NodeSteps[R]) -> Callable[[Any, Runtime[Context]], R]:
    """The plain sync node of a body (``node(state, runtime)``)."""

    def node(state: Any, runtime: Runtime[Context]) -> R:
        return drive(body(state, runtime))

    node.__name__ = node.__qualname__ = node_name(body)
    node.__doc__ = body.__doc__
    node.__module__ = body.__module__
    return node


def async_node(body: NodeSteps[R]) -> Callable[[Any, Runtime[Context]], Awaitable[R]]:
    """The async node of a body (``await node(state, runtime)``)."""

    async def node(state: Any, runtime: Runtime[Context]) -> R:
        return await adrive(body(state, runtime))

    node.__name__ = node.__qualname__ = node_name(body)
    node.__doc__ = body.__doc__
    node.__module__ = body.__module__
    return node


def twin(body: NodeSteps[R], name: str | None = None) -> NodeFunctions[Any, R]:
    """``body`` for ``add_node``: ``invoke`` drives it synchronously, ``ainvoke`` awaited.

    ``body`` returns its steps (a wrapper may also return a plain update, which
    is passed on). Both paths read the node's runtime with LangGraph's public
    ``get_runtime``.
    """

    def func(state: Any) -> R:
        steps: Any = body(state, get_runtime(Context))
        return drive(steps) if isinstance(steps, Generator) else cast(R, steps)

    async def afunc(state: Any) -> R:
        steps: Any = body(state, get_runtime(Context))
        return await adrive(steps) if isinstance(steps, Generator) else cast(R, steps)

    return NodeFunctions(func, afunc, name=name or node_name(body))
