"""Blocking steps awaited from async code, off the event loop and off its small thread pool.

LATM's async paths (the nodes' async twins on a LangGraph server) await their
model calls and store operations natively. What has no async form, a run of
generated code in the sandbox (a pipe round trip to a warm worker, well under a
millisecond, or seconds for a looping tool) or a store without async support
(the local ``SqliteStore``), runs here: on LATM's own pool of I/O threads, with
the caller's context variables (LangGraph's config and runtime) carried over.

Not the event loop's default executor: that pool is small (``min(32, cores + 4)``
threads) and shared with everything else the server runs in threads, so a few
slow tools would hold up every other run's steps.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, TypeVar

from langgraph.store.base import BaseStore

from latm.sandbox import ExecLimits, ExecResult, Executor

P = ParamSpec("P")
T = TypeVar("T")

IO_THREADS = 64
"""Threads of LATM's I/O pool: blocking steps of async runs that may be in flight at once."""

_POOL = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="latm-io")


async def offload(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Await ``fn(*args, **kwargs)`` run on LATM's I/O threads (context variables kept).

    A cancelled caller stops waiting at once; the call itself runs to its end
    (bounded by its own limits: a tool's timeout, a store's).
    """
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    call = functools.partial(context.run, fn, *args, **kwargs)
    return await loop.run_in_executor(_POOL, call)


async def arun_tool(
    executor: Executor,
    code: str,
    calls: Sequence[str],
    limits: ExecLimits,
    *,
    cache_key: str | None = None,
) -> list[ExecResult]:
    """Async ``executor.run``: generated code runs in the sandbox, awaited off the loop."""
    return await offload(executor.run, code, list(calls), limits, cache_key=cache_key)


@asynccontextmanager
async def holding(lock: threading.Lock) -> AsyncIterator[None]:
    """Hold a thread lock from async code without blocking the event loop.

    The lock is shared with the sync paths (a thread that holds it is waited for
    on an I/O thread). A caller cancelled while waiting never leaves it taken:
    the lock, once acquired for it, is released at once.
    """
    if not lock.acquire(blocking=False):
        waiting = asyncio.get_running_loop().run_in_executor(_POOL, lock.acquire)
        try:
            await asyncio.shield(waiting)
        except asyncio.CancelledError:
            waiting.add_done_callback(lambda _: lock.release())
            raise
    try:
        yield
    finally:
        lock.release()


_SYNC_ONLY_STORES: set[type[BaseStore]] = set()
"""Store classes whose async operations raised NotImplementedError (the local SqliteStore):
their sync operations run on LATM's I/O threads."""


async def astore(store: BaseStore, name: str, *args: Any, **kwargs: Any) -> Any:
    """One store operation awaited: ``store.a<name>``, else ``store.<name>`` on an I/O thread.

    ``name`` is ``get``, ``put``, ``delete``, ``search`` or ``batch``; results and
    errors are the store's own.
    """
    if type(store) not in _SYNC_ONLY_STORES:
        try:
            return await getattr(store, "a" + name)(*args, **kwargs)
        except NotImplementedError:
            _SYNC_ONLY_STORES.add(type(store))
    return await offload(getattr(store, name), *args, **kwargs)
