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


def get_executor(name: str = "auto", *, allow_unsandboxed: bool = False) -> Executor:
    """Return the executor registered under ``name``.

    Args:
        name: ``"auto"`` (the strongest available) or ``"subprocess"`` (the
            unhardened floor).
        allow_unsandboxed: Accept an executor without OS-level isolation.

    Raises:
        ValueError: If no executor has that name.
    """
    if name in ("auto", "subprocess"):
        return SubprocessExecutor()
    raise ValueError(f"unknown executor {name!r}; known: 'auto', 'subprocess'")
