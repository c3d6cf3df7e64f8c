"""The floor executor: one fresh interpreter per call, with rlimits and a deadline.

This is *not* a hardened sandbox: it keeps generated code out of the host
process, gives it an empty environment, a scratch directory, closed stdin,
resource limits and its own process group killed at the deadline. A stronger
executor can replace it behind :class:`latm.sandbox.base.Executor`.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from latm.sandbox.base import ExecLimits, ExecResult, clean_text
from latm.sandbox.server import decode_frame, result_cap

RUNNER = Path(__file__).with_name("runner.py")


def _limit_resources(limits: ExecLimits) -> Callable[[], None]:
    cpu = int(limits.timeout_s) + 1
    memory = limits.memory_mb * 1024 * 1024

    def apply() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_FSIZE, (10 * 1024 * 1024, 10 * 1024 * 1024))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def parse_result(stdout: bytes, returncode: int, max_output_bytes: int) -> ExecResult:
    """Turn the runner's output into an :class:`ExecResult`.

    Args:
        stdout: Everything the runner wrote to its standard output.
        returncode: The runner's exit status (negative: killed by that signal).
        max_output_bytes: Cap on the answer and captured stdout.

    Returns:
        The parsed result, or ``killed``/``invalid`` when the output holds none.
    """
    lines = stdout.decode("utf-8", "replace").strip().splitlines()
    payload = decode_frame(lines[-1].encode("utf-8")) if lines else None
    if not isinstance(payload, dict) or payload.get("status") not in ("ok", "error"):
        if returncode != 0:
            how = (
                f"signal {signal.Signals(-returncode).name}"
                if returncode < 0 and -returncode in signal.Signals._value2member_map_
                else f"exit status {returncode}"
            )
            return ExecResult("killed", error=f"the tool process died ({how})")
        return ExecResult("invalid", error="the tool process wrote no result")
    value = payload.get("value")
    error = payload.get("error")
    printed = payload.get("stdout")
    ok = payload["status"] == "ok" and isinstance(value, str)
    if isinstance(error, str) and error:
        error = clean_text(error[:2000])
    else:
        error = None if ok else "the tool process wrote a malformed result"
    return ExecResult(
        "ok" if ok else "error",
        value=clean_text(value[:max_output_bytes]) if ok and isinstance(value, str) else None,
        error=error,
        stdout=clean_text(printed[:max_output_bytes]) if isinstance(printed, str) else "",
    )


class SubprocessExecutor:
    """Runs each call in a fresh ``python -I -S`` process (the unhardened floor)."""

    name = "subprocess"

    def __init__(self, python: str | None = None) -> None:
        """Create the executor.

        Args:
            python: Interpreter to run tools with; defaults to the host's.
        """
        self.python = python or sys.executable

    def run(
        self,
        code: str,
        calls: Sequence[str],
        limits: ExecLimits,
        *,
        cache_key: str | None = None,
    ) -> list[ExecResult]:
        """Evaluate each call against ``code``, each in a fresh process."""
        return [self._run_one(code, call, limits) for call in calls]

    def _run_one(self, code: str, call: str, limits: ExecLimits) -> ExecResult:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="latm-run-") as scratch:
            job = Path(scratch) / "job.json"
            job.write_text(
                json.dumps(
                    {"code": code, "call": call, "max_output_bytes": limits.max_output_bytes}
                ),
                encoding="utf-8",
            )
            proc = subprocess.Popen(
                [self.python, "-I", "-S", "-B", str(RUNNER), str(job)],
                cwd=scratch,
                env={},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_limit_resources(limits),
            )
            try:
                stdout = _read_tail(
                    proc, time.monotonic() + limits.timeout_s, result_cap(limits.max_output_bytes)
                )
                proc.wait(timeout=max(0.0, started + limits.timeout_s - time.perf_counter()))
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                return ExecResult(
                    "timeout",
                    error=f"the tool did not finish within {limits.timeout_s:g} s",
                    duration_ms=(time.perf_counter() - started) * 1000,
                )
            finally:
                _kill_group(proc)
        result = parse_result(stdout, proc.returncode, limits.max_output_bytes)
        if result.status == "killed" and proc.returncode == -signal.SIGXCPU:
            result = ExecResult("timeout", error="the tool exceeded its CPU time limit")
        return ExecResult(
            result.status,
            result.value,
            result.error,
            result.stdout,
            (time.perf_counter() - started) * 1000,
        )


def _read_tail(proc: subprocess.Popen[bytes], deadline: float, cap: int) -> bytes:
    """Read the process's stdout until EOF, keeping only its last ``cap`` bytes.

    Raises:
        subprocess.TimeoutExpired: At the deadline.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    tail = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise subprocess.TimeoutExpired(proc.args, 0)
        if not poller.poll(max(1, int(remaining * 1000) + 1)):
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return bytes(tail)
        tail += chunk
        if len(tail) > cap:
            del tail[: len(tail) - cap]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the call's whole process group and reap the leader."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):  # a process that ignores SIGKILL
        proc.wait(timeout=5)
