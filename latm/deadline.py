"""The run deadline (``Context.run_deadline_s``): when a run must end, and bounded waits.

The dispatcher stamps each request with ``deadline_at`` (epoch seconds). Nodes
that may take long (the maker's calls, verification rounds) check it before
they start and bound their waits by it, so a hung model server holds a run no
longer than the deadline, whatever the request timeout and retries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceeded(RuntimeError):
    """The run's deadline passed; the message says what was cut short."""


def stamp(deadline_s: float, now: float | None = None) -> float | None:
    """The ``deadline_at`` of a request arriving ``now`` (``None`` without a deadline)."""
    if deadline_s <= 0:
        return None
    return (time.time() if now is None else now) + deadline_s


def remaining(deadline_at: float | None) -> float | None:
    """Seconds left before ``deadline_at`` (may be negative); ``None`` without a deadline."""
    return None if deadline_at is None else deadline_at - time.time()


def check(deadline_at: float | None, doing: str) -> None:
    """Raise :class:`DeadlineExceeded` if the deadline passed before ``doing`` starts."""
    left = remaining(deadline_at)
    if left is not None and left <= 0:
        raise DeadlineExceeded(f"the run deadline passed before {doing} (LATM_RUN_DEADLINE_S)")


def call_within(deadline_at: float | None, doing: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` and wait for it no longer than the deadline.

    ``fn`` runs on a daemon thread; past the deadline the run stops waiting
    (the abandoned call ends on its own, bounded by its request timeout).

    Raises:
        DeadlineExceeded: The deadline passed before or while ``fn`` ran.
        Exception: Whatever ``fn`` raised.
    """
    check(deadline_at, doing)
    left = remaining(deadline_at)
    if left is None:
        return fn()
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the waiting thread
            box["error"] = exc

    import contextvars

    context = contextvars.copy_context()
    worker = threading.Thread(target=context.run, args=(run,), daemon=True, name="latm-deadline")
    worker.start()
    worker.join(max(left, 0.0))
    if worker.is_alive():
        raise DeadlineExceeded(f"the run deadline passed during {doing} (LATM_RUN_DEADLINE_S)")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]
