"""Execution of generated tools outside the host process, in hardened isolation.

:func:`get_executor` picks the strongest isolation tier the start-up probe
found (:mod:`latm.sandbox.probe`): bubblewrap + Landlock + seccomp as an
unprivileged uid, else Landlock + seccomp as an unprivileged uid; anything
weaker runs generated code only with the explicit opt-in
``LATM_ALLOW_UNSANDBOXED=1``. ``latm doctor`` reports the choice.
"""

from __future__ import annotations

import atexit
import os
import threading

from latm.sandbox import probe as _tiers
from latm.sandbox.base import (
    ExecLimits,
    ExecResult,
    Executor,
    SandboxUnavailableError,
)
from latm.sandbox.executor import RefusingExecutor, SandboxExecutor, UnsandboxedExecutor
from latm.sandbox.probe import ALLOW_ENV, EXECUTOR_ENV, Choice, choose, settings_from_env
from latm.sandbox.subprocess_executor import SubprocessExecutor

__all__ = [
    "ALLOW_ENV",
    "EXECUTOR_ENV",
    "EXECUTOR_NAMES",
    "ExecLimits",
    "ExecResult",
    "Executor",
    "RefusingExecutor",
    "SandboxExecutor",
    "SandboxUnavailableError",
    "SubprocessExecutor",
    "UnsandboxedExecutor",
    "close_executors",
    "describe_isolation",
    "get_executor",
    "resolve",
    "settings_from_env",
]

EXECUTOR_NAMES = ("auto", "bwrap", "landlock", "subprocess")
"""Accepted executor names (``LATM_EXECUTOR``)."""

_lock = threading.Lock()
_instances: dict[str, Executor] = {}
_owner_pid = os.getpid()


def resolve(name: str = "auto", *, allow_unsandboxed: bool = False) -> Choice:
    """Which tier a setting gets and why, without starting anything (uses the probe).

    Raises:
        ValueError: If no executor has that name.
    """
    wanted = (str(name or "auto")).strip().lower()
    if wanted not in EXECUTOR_NAMES:
        known = ", ".join(repr(n) for n in EXECUTOR_NAMES)
        raise ValueError(f"unknown executor {ascii(str(name))[:80]}; known: {known}")
    return choose(_tiers.probe(), wanted, allow_unsandboxed)


def get_executor(name: str = "auto", *, allow_unsandboxed: bool = False) -> Executor:
    """Return the process-wide executor for a setting (thread-safe, cached).

    ``"auto"`` picks the strongest available tier. A sandboxed executor keeps
    its zygote, warm workers and spare across calls and graph runs, until
    :func:`close_executors` or interpreter exit. When no allowed tier exists,
    the returned executor's ``run`` raises :class:`SandboxUnavailableError`
    with a message naming what is missing and the opt-in ``LATM_ALLOW_UNSANDBOXED=1``.

    Args:
        name: ``"auto"``, ``"bwrap"`` (tier 1), ``"landlock"`` (tier 2) or
            ``"subprocess"`` (tier 3, no isolation).
        allow_unsandboxed: The user's explicit opt-in to tier 3.
    """
    try:
        choice = resolve(name, allow_unsandboxed=allow_unsandboxed)
    except ValueError as exc:
        return RefusingExecutor(f"{EXECUTOR_ENV}: {exc}")
    if choice.tier is None:
        return RefusingExecutor(choice.reason)
    global _owner_pid
    with _lock:
        if _owner_pid != os.getpid():  # a forked host: the parent's sandboxes are not ours
            _instances.clear()
            _owner_pid = os.getpid()
        executor = _instances.get(choice.tier.name)
        if executor is None:
            if choice.tier.config is not None:
                executor = SandboxExecutor(choice.tier.config)
            else:
                executor = UnsandboxedExecutor()
            _instances[choice.tier.name] = executor
        return executor


def describe_isolation(executor: Executor) -> str:
    """One line saying how isolated an executor's runs are, for user-facing output."""
    isolation = getattr(executor, "isolation", None)
    if isinstance(isolation, str):
        return isolation
    return f"{executor.name}: isolation unknown"


def close_executors() -> None:
    """Stop every cached executor's processes (also run at interpreter exit)."""
    with _lock:
        executors = list(_instances.values()) if _owner_pid == os.getpid() else []
        _instances.clear()
    for executor in executors:
        close = getattr(executor, "close", None)
        if callable(close):
            close()


atexit.register(close_executors)
