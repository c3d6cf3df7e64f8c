"""The one small interface through which LATM runs generated code.

Every node that runs a tool (``verify`` and ``use``) goes through an
:class:`Executor`. Implementations run the tool's code in another process; none
of them may ``exec`` generated code in the host process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

Status = Literal["ok", "error", "timeout", "killed", "invalid"]
"""How one call ended.

* ``ok``: the call returned; ``value`` holds its answer as text.
* ``error``: the tool raised; ``error`` holds the exception.
* ``timeout``: the wall-clock or CPU deadline passed and the process was killed.
* ``killed``: the process died otherwise (memory limit, signal, ``os._exit``).
* ``invalid``: the process answered with something that is not a result.
"""


def clean_text(text: str) -> str:
    """Text that any encoder takes: lone surrogates (valid in JSON, not in UTF-8) become ``?``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


class SandboxUnavailableError(RuntimeError):
    """No isolation tier that is allowed to run generated code is available."""


@dataclass(frozen=True, slots=True)
class ExecLimits:
    """Resource limits for one call of a generated tool.

    Attributes:
        timeout_s: Wall-clock deadline for one call, in seconds.
        memory_mb: Address-space limit of the process running the call, in MiB.
        max_output_bytes: Cap on the size of the returned answer and captured stdout.
    """

    timeout_s: float = 5.0
    memory_mb: int = 512
    max_output_bytes: int = 65_536


@dataclass(frozen=True, slots=True)
class ExecResult:
    """The outcome of one call of a generated tool.

    Attributes:
        status: How the call ended (see :data:`Status`).
        value: The call's return value rendered as text, when ``status == "ok"``.
        error: A one-line description of what went wrong, otherwise.
        stdout: What the tool printed (capped), for debugging and feedback.
        duration_ms: Host-side wall time of the call.
    """

    status: Status
    value: str | None = None
    error: str | None = None
    stdout: str = ""
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the call returned a value."""
        return self.status == "ok"


@runtime_checkable
class Executor(Protocol):
    """Runs generated tool code outside the host process.

    ``code`` is the tool's source (imports, helpers and the tool function);
    each entry of ``calls`` is one Python expression that uses it. Each call is
    evaluated against a fresh copy of the module unless ``cache_key`` names a
    tool version the executor may keep warm (a worker dedicated to that one
    key; never shared between keys).
    """

    name: str
    """Short name of the executor (and isolation tier), for reports."""

    def run(
        self,
        code: str,
        calls: Sequence[str],
        limits: ExecLimits,
        *,
        cache_key: str | None = None,
    ) -> list[ExecResult]:
        """Evaluate each call against ``code`` and return one result per call."""
        ...
