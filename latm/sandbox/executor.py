"""Executors over the isolation tiers: sandboxed (zygote + warm pool), unsandboxed, refusing.

:class:`SandboxExecutor` serves tiers 1 and 2:

* **verification** (``cache_key=None``): one long-lived, confined *zygote*
  process forks a fresh child per call (a few milliseconds); the child is
  further confined, runs the call, and is killed with its process group at the
  wall deadline. Nothing survives from one call to the next.
* **cached tools** (``cache_key`` given): a *warm worker* dedicated to one tool
  version (the key, the code's SHA-256 and the limits) executes the module
  once and answers calls in well under a millisecond. It is recycled after
  ``max_calls_per_worker`` calls or after any call that did not end ``ok``
  (killed at the deadline, died, raised, answered nonsense). A blank, already
  confined *spare* process is kept started so a new worker is ready at once.
  Workers are never shared between tool versions; the pool keeps at most
  ``max_workers`` of them, least recently used first out.

Answers cross the process boundary as size-capped JSON frames, never pickle;
the host validates every field. Expected answers never enter the sandbox: the
interface has no place for them, and the caller compares.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from latm.sandbox.base import ExecLimits, ExecResult, SandboxUnavailableError, Status
from latm.sandbox.process import (
    STARTUP_TIMEOUT_S,
    SandboxConfig,
    SandboxDied,
    SandboxProcess,
    SandboxStartError,
    SandboxTimeout,
    start_process,
)
from latm.sandbox.server import result_cap
from latm.sandbox.subprocess_executor import SubprocessExecutor

log = logging.getLogger("latm.sandbox")

ZYGOTE_GRACE_S = 2.0
"""Extra time the host gives the zygote beyond a call's deadline before killing it."""
WARM_GRACE_S = 0.05
"""Extra time for the pipe round trip of a warm call, beyond the call's deadline."""

ISOLATION = {
    "bwrap": "tier 1: bubblewrap (unprivileged uid, all namespaces) + Landlock + seccomp",
    "landlock": "tier 2: Landlock + seccomp + unprivileged uid (no namespaces)",
    "subprocess": "tier 3: NO isolation (plain subprocess with rlimits), opted in with "
    "LATM_ALLOW_UNSANDBOXED=1",
}

_STATUSES: tuple[Status, ...] = ("ok", "error", "timeout", "killed", "invalid")


def _limits_message(limits: ExecLimits) -> dict[str, Any]:
    return {
        "timeout_s": limits.timeout_s,
        "memory_mb": limits.memory_mb,
        "max_output_bytes": limits.max_output_bytes,
    }


def to_result(answer: dict[str, Any], limits: ExecLimits, started: float) -> ExecResult:
    """Validate a sandbox's answer and turn it into an :class:`ExecResult`.

    Anything malformed (unknown status, a value that is not text, an answer
    longer than the cap) becomes ``invalid``.
    """
    duration = (time.perf_counter() - started) * 1000
    cap = limits.max_output_bytes
    status = answer.get("status")
    value = answer.get("value")
    error = answer.get("error")
    stdout = answer.get("stdout")
    if (
        answer.get("op") != "result"
        or status not in _STATUSES
        or not isinstance(value, (str, type(None)))
        or not isinstance(error, (str, type(None)))
        or not isinstance(stdout, (str, type(None)))
        or (status == "ok" and value is None)
        or (value is not None and len(value) > cap)
    ):
        return ExecResult(
            "invalid", error="the sandbox answered with a malformed result", duration_ms=duration
        )
    checked: Status = next(s for s in _STATUSES if s == status)
    return ExecResult(
        checked,
        value=value if checked == "ok" else None,
        error=error[:2000] if error else None,
        stdout=(stdout or "")[:cap],
        duration_ms=duration,
    )


@dataclass(eq=False)
class _Slot:
    """One tool version's warm worker (or the place for one)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    proc: SandboxProcess | None = None
    calls: int = 0
    evicted: bool = False


class SandboxExecutor:
    """Runs generated tools in a sandboxed tier (see the module's docstring)."""

    sandboxed = True

    def __init__(
        self,
        config: SandboxConfig,
        *,
        max_workers: int = 8,
        max_calls_per_worker: int = 1000,
        prestart: bool = True,
    ) -> None:
        """Create the executor; with ``prestart``, start the zygote and a spare now.

        Args:
            config: The tier to run in (from :func:`latm.sandbox.probe.probe`).
            max_workers: Most warm workers kept at once (one per tool version).
            max_calls_per_worker: Calls after which a warm worker is replaced.
            prestart: Start the zygote and the spare in the background right away.
        """
        self.config = config
        self.name: str = config.tier
        self.isolation: str = ISOLATION[config.tier]
        self.max_workers = max(1, max_workers)
        self.max_calls_per_worker = max(1, max_calls_per_worker)
        self._closed = False
        self._zygote_lock = threading.Lock()
        self._zygote: SandboxProcess | None = None
        self._zygote_future: concurrent.futures.Future[SandboxProcess] | None = None
        self._spare_lock = threading.Lock()
        self._spare: concurrent.futures.Future[SandboxProcess] | None = None
        self._pool_lock = threading.Lock()
        self._slots: OrderedDict[tuple[str, str, ExecLimits], _Slot] = OrderedDict()
        if prestart:
            self._zygote_future = start_process(config)
            self._spare = start_process(config)

    # -- public ---------------------------------------------------------------

    def run(
        self,
        code: str,
        calls: Sequence[str],
        limits: ExecLimits,
        *,
        cache_key: str | None = None,
    ) -> list[ExecResult]:
        """Evaluate each call against ``code``; see :class:`latm.sandbox.base.Executor`.

        Raises:
            SandboxUnavailableError: If sandbox processes can no longer be started.
        """
        if self._closed:
            raise SandboxUnavailableError(f"the {self.name} executor has been closed")
        if cache_key is None:
            return self._verify(code, calls, limits)
        return self._warm(cache_key, code, calls, limits)

    def close(self) -> None:
        """Kill the zygote, every warm worker and the spare."""
        self._closed = True
        with self._zygote_lock:
            if self._zygote is not None:
                self._zygote.kill()
                self._zygote = None
            if self._zygote_future is not None:
                _discard(self._zygote_future)
                self._zygote_future = None
        with self._spare_lock:
            if self._spare is not None:
                _discard(self._spare)
                self._spare = None
        with self._pool_lock:
            slots = list(self._slots.values())
            self._slots.clear()
        for slot in slots:
            with slot.lock:
                _retire(slot)
                slot.evicted = True

    def stats(self) -> dict[str, int]:
        """Counts of live processes, for ``latm doctor`` and tests."""
        with self._pool_lock:
            workers = sum(1 for s in self._slots.values() if s.proc is not None and s.proc.alive)
        return {
            "zygote": int(self._zygote is not None and self._zygote.alive),
            "warm_workers": workers,
            "spare": int(self._spare is not None),
        }

    # -- processes --------------------------------------------------------------

    def _take_spare(self) -> SandboxProcess:
        """A confined, blank process: the spare if ready, and start the next spare."""
        with self._spare_lock:
            future, self._spare = self._spare, None
            if not self._closed:
                self._spare = start_process(self.config)
        for attempt in range(2):
            if future is None or attempt:
                future = start_process(self.config)
            try:
                proc = future.result(timeout=STARTUP_TIMEOUT_S + 10)
            except (SandboxStartError, concurrent.futures.TimeoutError) as exc:
                if attempt:
                    raise SandboxUnavailableError(
                        f"the {self.name} sandbox cannot start any more: {exc}"
                    ) from exc
                continue
            if proc.alive:
                return proc
            proc.kill()
        raise SandboxUnavailableError(f"the {self.name} sandbox processes keep dying at start")

    def _ensure_zygote(self) -> SandboxProcess:
        if self._zygote is not None and self._zygote.alive:
            return self._zygote
        if self._zygote is not None:
            self._zygote.kill()
            self._zygote = None
        future, self._zygote_future = self._zygote_future, None
        proc = None
        if future is not None:
            with contextlib.suppress(SandboxStartError, concurrent.futures.TimeoutError):
                proc = future.result(timeout=STARTUP_TIMEOUT_S + 10)
        if proc is None or not proc.alive:
            proc = self._take_spare()
        self._zygote = proc
        return proc

    # -- verification: fork per call --------------------------------------------

    def _verify(self, code: str, calls: Sequence[str], limits: ExecLimits) -> list[ExecResult]:
        results = []
        with self._zygote_lock:
            for call in calls:
                zygote = self._ensure_zygote()
                started = time.perf_counter()
                request = {
                    "op": "fork",
                    "code": code,
                    "call": call,
                    "limits": _limits_message(limits),
                }
                try:
                    answer = zygote.request(
                        request,
                        limits.timeout_s + ZYGOTE_GRACE_S,
                        result_cap(limits.max_output_bytes) + 4096,
                    )
                except SandboxTimeout:
                    zygote.kill()
                    results.append(_timeout(limits, started))
                    continue
                except SandboxDied as exc:
                    zygote.kill()
                    results.append(
                        ExecResult(
                            "killed",
                            error=f"the sandbox process died ({exc})",
                            duration_ms=(time.perf_counter() - started) * 1000,
                        )
                    )
                    continue
                results.append(to_result(answer, limits, started))
        return results

    # -- cached tools: warm workers ---------------------------------------------

    def _slot(self, key: tuple[str, str, ExecLimits]) -> _Slot:
        with self._pool_lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot()
            self._slots.move_to_end(key)
            if len(self._slots) > self.max_workers:
                for old_key, old in list(self._slots.items()):
                    if len(self._slots) <= self.max_workers:
                        break
                    if old is slot or not old.lock.acquire(blocking=False):
                        continue
                    try:
                        _retire(old)
                        old.evicted = True
                        del self._slots[old_key]
                    finally:
                        old.lock.release()
            return slot

    def _warm(
        self, cache_key: str, code: str, calls: Sequence[str], limits: ExecLimits
    ) -> list[ExecResult]:
        digest = hashlib.sha256(code.encode("utf-8")).hexdigest()
        while True:
            slot = self._slot((cache_key, digest, limits))
            with slot.lock:
                if self._closed:
                    raise SandboxUnavailableError(f"the {self.name} executor has been closed")
                if slot.evicted:  # evicted between the lookup and the lock
                    continue
                return [self._warm_call(slot, code, call, limits) for call in calls]

    def _warm_call(self, slot: _Slot, code: str, call: str, limits: ExecLimits) -> ExecResult:
        if slot.proc is not None and (
            not slot.proc.alive or slot.calls >= self.max_calls_per_worker
        ):
            _retire(slot)
        started = time.perf_counter()
        if slot.proc is None:
            proc = self._take_spare()
            started = time.perf_counter()
            budget = self.max_calls_per_worker * (math.ceil(limits.timeout_s) + 1)
            try:
                answer = proc.request(
                    {
                        "op": "load",
                        "code": code,
                        "limits": _limits_message(limits),
                        "cpu_budget_s": budget,
                    },
                    limits.timeout_s + WARM_GRACE_S,
                    4096,
                )
            except SandboxTimeout:
                proc.kill()
                return _timeout(limits, started)
            except SandboxDied:
                proc.kill()
                return _died(started)
            if answer.get("op") != "loaded":
                proc.kill()
                return ExecResult(
                    "invalid",
                    error="the sandbox did not load the tool",
                    duration_ms=(time.perf_counter() - started) * 1000,
                )
            slot.proc, slot.calls = proc, 0
        remaining = limits.timeout_s - (time.perf_counter() - started)
        request = {
            "op": "call",
            "call": call,
            "timeout_s": limits.timeout_s,
            "max_output_bytes": limits.max_output_bytes,
        }
        try:
            answer = slot.proc.request(
                request,
                max(remaining, 0.0) + WARM_GRACE_S,
                result_cap(limits.max_output_bytes) + 4096,
            )
        except SandboxTimeout:
            _retire(slot)
            return _timeout(limits, started)
        except SandboxDied:
            _retire(slot)
            return _died(started)
        slot.calls += 1
        result = to_result(answer, limits, started)
        if result.status != "ok":
            _retire(slot)
        return result


def _timeout(limits: ExecLimits, started: float) -> ExecResult:
    return ExecResult(
        "timeout",
        error=f"the tool did not finish within {limits.timeout_s:g} s",
        duration_ms=(time.perf_counter() - started) * 1000,
    )


def _died(started: float) -> ExecResult:
    return ExecResult(
        "killed",
        error="the tool process died",
        duration_ms=(time.perf_counter() - started) * 1000,
    )


def _retire(slot: _Slot) -> None:
    if slot.proc is not None:
        slot.proc.kill()
    slot.proc, slot.calls = None, 0


def _discard(future: concurrent.futures.Future[SandboxProcess]) -> None:
    """Kill the process a start-up future holds or will hold."""

    def kill(done: concurrent.futures.Future[SandboxProcess]) -> None:
        if not done.cancelled() and done.exception() is None:
            done.result().kill()

    if not future.cancel():
        future.add_done_callback(kill)


class UnsandboxedExecutor(SubprocessExecutor):
    """Tier 3: the plain subprocess floor, allowed only by the explicit opt-in.

    Says so loudly: a warning on the ``latm.sandbox`` logger at the first run,
    and :attr:`isolation` for the caller's output.
    """

    sandboxed = False
    isolation = ISOLATION["subprocess"]

    def __init__(self) -> None:
        """Create the executor (the host's interpreter, no isolation)."""
        super().__init__()
        self._warned = False

    def run(
        self,
        code: str,
        calls: Sequence[str],
        limits: ExecLimits,
        *,
        cache_key: str | None = None,
    ) -> list[ExecResult]:
        """Evaluate each call in a fresh, unsandboxed process."""
        if not self._warned:
            self._warned = True
            log.warning("generated code runs WITHOUT isolation (LATM_ALLOW_UNSANDBOXED=1)")
        return super().run(code, calls, limits, cache_key=cache_key)


class RefusingExecutor:
    """Stands in when no allowed tier exists: every run raises :class:`SandboxUnavailableError`."""

    sandboxed = False

    def __init__(self, reason: str, name: str = "unavailable") -> None:
        """Keep the refusal message.

        Args:
            reason: Says what is missing and names the opt-in setting.
            name: Executor name for reports.
        """
        self.name = name
        self.reason = reason
        self.isolation = f"none: {reason}"

    def run(
        self,
        code: str,
        calls: Sequence[str],
        limits: ExecLimits,
        *,
        cache_key: str | None = None,
    ) -> list[ExecResult]:
        """Refuse to run generated code.

        Raises:
            SandboxUnavailableError: Always.
        """
        raise SandboxUnavailableError(self.reason)
