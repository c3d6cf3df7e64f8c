"""Execution of generated tools outside the host process."""

from latm.sandbox.base import (
    ExecLimits,
    ExecResult,
    Executor,
    SandboxUnavailableError,
)
from latm.sandbox.subprocess_executor import SubprocessExecutor

__all__ = [
    "ExecLimits",
    "ExecResult",
    "Executor",
    "SandboxUnavailableError",
    "SubprocessExecutor",
    "get_executor",
]


def get_executor(name: str = "subprocess") -> Executor:
    """Return the executor registered under ``name``.

    Args:
        name: ``"subprocess"`` (the unhardened floor).

    Raises:
        ValueError: If no executor has that name.
    """
    if name == "subprocess":
        return SubprocessExecutor()
    raise ValueError(f"unknown executor {name!r}; known: 'subprocess'")
