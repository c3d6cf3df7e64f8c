"""Executors over the isolation tiers: sandboxed (zygotes + warm pool), unsandboxed, refusing.

:class:`SandboxExecutor` serves tiers 1 and 2:

* **verification** (``cache_key=None``): long-lived, confined *zygote*
  processes fork a fresh child per call. A zygote never sees a request or a
  result: the host writes the job to the child and reads its answer over pipes
  the zygote hands over as file descriptors (see :mod:`latm.sandbox.server`),
  so every call runs in a clean copy of a process that never held another
  call's data. The zygote kills the child at the deadline and reports how it
  ended. Up to ``max_parallel`` zygotes (the core count) serve calls from
  different threads at once: one slow tool does not hold up the others.
* **cached tools** (``cache_key`` given, which the caller makes unique per
  namespace and tool version): a *warm worker* dedicated to that key, the
  code's SHA-256 and the limits compiles the tool once and executes its module
  afresh for every call (a new namespace, its own builtins), in well under a
  millisecond. Answers carry a per-call id; the worker is retired after
  ``max_calls_per_worker`` calls, after any call that did not end ``ok``, that
  left a trace in the process (a thread, a timer, a file, a changed builtin)
  or that was answered out of step, and after ``idle_s`` seconds unused. A tool
  whose code reaches for process-wide state (``sys``, ``gc``, ``ctypes``,
  threads, dunder attributes, assignments into imported modules ...) is never
  kept warm: each of its calls runs in a fresh child like a verification.
  At most ``max_workers`` warm workers live at once, least recently used out;
  a blank, already confined *spare* process is kept started.

On the ``landlock`` tier (no tmpfs of its own) the host measures every
sandbox's scratch directory several times a second and kills a sandbox that
holds more than its quota. Answers cross the process boundary as size-capped
JSON frames, never pickle; the host validates every field and turns lone
surrogates into ``?``. Expected answers never enter the sandbox.
"""

from __future__ import annotations

import ast
import concurrent.futures
import contextlib
import hashlib
import logging
import math
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from latm.codeparse import parse_module
from latm.sandbox.base import (
    ExecLimits,
    ExecResult,
    SandboxUnavailableError,
    Status,
    clean_text,
)
from latm.sandbox.process import (
    STARTUP_TIMEOUT_S,
    SandboxConfig,
    SandboxDied,
    SandboxProcess,
    SandboxStartError,
    SandboxTimeout,
    read_to_end,
    start_process,
    tree_usage,
    write_to,
)
from latm.sandbox.server import decode_frame, encode_frame, result_cap
from latm.sandbox.subprocess_executor import SubprocessExecutor

log = logging.getLogger("latm.sandbox")

_UNKNOWN: Any = object()
"""Marks a tool whose warm obstacle is not yet in the cache (``None`` means it has none)."""

ZYGOTE_GRACE_S = 2.0
"""Extra time the host gives the zygote beyond a call's deadline before killing it."""
WARM_GRACE_S = 0.05
"""Extra time for the pipe round trip of a warm call, beyond the call's deadline."""
DISK_CHECK_S = 0.05
"""How often the host measures the ``landlock`` tier's scratch directories."""
MAX_SCRATCH_ENTRIES = 10_000
"""Most files and directories a ``landlock`` sandbox may keep in its scratch directory."""

ISOLATION = {
    "bwrap": "tier 1: bubblewrap (unprivileged uid, all namespaces) + Landlock + seccomp",
    "landlock": "tier 2: Landlock + seccomp + unprivileged uid (no namespaces)",
    "subprocess": "tier 3: NO isolation (plain subprocess with rlimits), opted in with "
    "LATM_ALLOW_UNSANDBOXED=1",
}

_STATUSES: tuple[Status, ...] = ("ok", "error", "timeout", "killed", "invalid")
DEFAULT_MAX_WORKERS = 8
DEFAULT_IDLE_S = 300.0


def default_parallel() -> int:
    """Verification calls run at once by default: the core count, at least 2."""
    return max(2, os.cpu_count() or 1)


def guarantees(config: SandboxConfig | None) -> list[tuple[str, str]]:
    """What isolation a tier's executor gives, one ``(what, how)`` line each (``latm doctor``)."""
    if config is None:
        return [("isolation", "NONE: generated code runs as a plain subprocess of the host")]
    bwrap = config.tier == "bwrap"
    if config.unique_uids:
        uid = f"a uid of its own per sandbox process; at most {config.max_tasks} tasks each"
    elif config.uid is not None:
        uid = f"one shared uid {config.uid} (LATM_SANDBOX_UID): no per-sandbox task limit"
    else:
        uid = "the host's own uid (host not root): no per-sandbox uid, no task limit"
    scratch_mb = config.scratch_bytes // (1024 * 1024)
    if bwrap:
        sized = "--size" in config.bwrap_options
        disk = f"tmpfs of {scratch_mb} MiB" if sized else "tmpfs WITHOUT a size (old bubblewrap)"
    else:
        disk = (
            f"host-measured quota: {scratch_mb} MiB / {MAX_SCRATCH_ENTRIES} entries, "
            f"checked every {DISK_CHECK_S * 1000:.0f} ms (the sandbox is killed beyond it)"
        )
    return [
        (
            "requests",
            "never enter a zygote: each call's job and result travel over its own pipes "
            "to a fresh child",
        ),
        (
            "warm workers",
            "one per namespace and tool version; the module runs afresh for every call; "
            "tools that touch process-wide state (sys, threads, dunders...) get a fresh child; "
            f"retired on any trace, forged frame or failure, after {DEFAULT_IDLE_S:.0f} s idle; "
            f"at most {DEFAULT_MAX_WORKERS}",
        ),
        ("identity", uid),
        (
            "processes",
            "private PID, IPC, network, mount and user namespaces"
            if bwrap
            else "no namespaces: seccomp refuses every system call aimed at another process",
        ),
        ("IPC and memfd", "System V and POSIX IPC and memfd_create refused (seccomp)"),
        (
            "scratch",
            disk + "; per-file cap "
            f"{config.file_bytes // (1024 * 1024)} MiB; removed with the sandbox",
        ),
        ("verification", f"up to {default_parallel()} calls at once (one zygote each)"),
    ]


_PROCESS_WIDE_MODULES = frozenset(
    {
        "_thread",
        "asyncio",
        "atexit",
        "builtins",
        "code",
        "codeop",
        "concurrent",
        "ctypes",
        "faulthandler",
        "fcntl",
        "gc",
        "importlib",
        "inspect",
        "marshal",
        "mmap",
        "multiprocessing",
        "os",
        "pickle",
        "posix",
        "resource",
        "sched",
        "select",
        "shutil",
        "signal",
        "socket",
        "subprocess",
        "sys",
        "tempfile",
        "threading",
        "tracemalloc",
        "types",
        "weakref",
    }
)
_PROCESS_WIDE_NAMES = frozenset(
    {
        "globals",
        "vars",
        "locals",
        "setattr",
        "delattr",
        "getattr",
        "eval",
        "exec",
        "compile",
        "attrgetter",
        "methodcaller",
    }
)


def warm_obstacle(code: str) -> str | None:
    """Why a tool may not be kept warm (its calls then each run in a fresh child).

    A warm worker executes the module afresh for every call, but the process,
    its imported modules and the interpreter stay: code that reaches them could
    leave state for a later call. Read from the syntax tree only.

    Returns:
        ``None`` when the tool touches nothing process-wide, else the reason.
    """
    try:
        tree = parse_module(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return "the code does not parse"
    imported: set[str] = set()
    nodes = list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            for module in modules:
                if module.split(".")[0] in _PROCESS_WIDE_MODULES or node_level(node):
                    return f"it imports {module or '.'}"
            imported.update((a.asname or a.name).split(".")[0] for a in node.names)
    for node in nodes:
        if isinstance(node, ast.Attribute) and (
            node.attr.startswith("__") or node.attr in _PROCESS_WIDE_NAMES
        ):
            return f"it uses the attribute {node.attr}"
        text = node.value if isinstance(node, ast.Constant) else None
        if isinstance(text, str) and text.startswith("__") and text.endswith("__"):
            return f"it names {text[:40]}"
        if isinstance(node, ast.Name) and (
            node.id in _PROCESS_WIDE_NAMES or node.id.startswith("__")
        ):
            return f"it uses {node.id}"
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = list(node.targets)
        for target in targets:
            root = target
            while isinstance(root, ast.Attribute | ast.Subscript | ast.Call):
                root = root.func if isinstance(root, ast.Call) else root.value
            if target is not root and isinstance(root, ast.Name) and root.id in imported:
                return f"it assigns into the imported {root.id}"
    return None


def node_level(node: ast.AST) -> int:
    """The relative-import level of an import (0 for absolute ones)."""
    return int(getattr(node, "level", 0) or 0)


def _limits_message(limits: ExecLimits) -> dict[str, Any]:
    return {
        "timeout_s": limits.timeout_s,
        "memory_mb": limits.memory_mb,
        "max_output_bytes": limits.max_output_bytes,
    }


def to_result(answer: dict[str, Any], limits: ExecLimits, started: float) -> ExecResult:
    """Validate a sandbox's answer and turn it into an :class:`ExecResult`.

    Anything malformed (unknown status, a value that is not text, an answer
    longer than the cap) becomes ``invalid``; lone surrogates become ``?``.
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
        or not isinstance(value, str | type(None))
        or not isinstance(error, str | type(None))
        or not isinstance(stdout, str | type(None))
        or (status == "ok" and value is None)
        or (value is not None and len(value) > cap)
    ):
        return ExecResult(
            "invalid", error="the sandbox answered with a malformed result", duration_ms=duration
        )
    checked: Status = next(s for s in _STATUSES if s == status)
    return ExecResult(
        checked,
        value=clean_text(value) if checked == "ok" and value is not None else None,
        error=clean_text(error[:2000]) if error else None,
        stdout=clean_text((stdout or "")[:cap]),
        duration_ms=duration,
    )


def _child_answer(data: bytes) -> dict[str, Any] | None:
    """A child's result as an answer, or ``None`` when it wrote none."""
    payload = decode_frame(data)
    if payload is None or payload.get("status") not in ("ok", "error"):
        return None
    return {
        "op": "result",
        "status": payload["status"],
        "value": payload.get("value"),
        "error": payload.get("error"),
        "stdout": payload.get("stdout") or "",
    }


def _judge_exit(
    exit_report: dict[str, Any], ended: str, limits: ExecLimits, started: float
) -> ExecResult:
    """The result of a child that left no answer, from how its pipe and process ended."""
    duration = (time.perf_counter() - started) * 1000
    why = exit_report.get("why")
    signal_name = exit_report.get("signal")
    code = exit_report.get("code")
    if signal_name == "SIGXCPU":
        return ExecResult(
            "timeout", error="the tool exceeded its CPU time limit", duration_ms=duration
        )
    if ended == "timeout" or why == "timeout":
        return _timeout(limits, started)
    if ended == "full":
        size = result_cap(limits.max_output_bytes)
        return ExecResult(
            "invalid",
            error=f"the tool's result is larger than {size} bytes",
            duration_ms=duration,
        )
    if isinstance(signal_name, str):
        how = f"signal {signal_name[:20]}"
    elif code == 0:
        return ExecResult("invalid", error="the tool process wrote no result", duration_ms=duration)
    else:
        how = f"exit status {code if isinstance(code, int) else '?'}"
    return ExecResult("killed", error=f"the tool process died ({how})", duration_ms=duration)


@dataclass(eq=False)
class _Slot:
    """One tool version's warm worker (or the place for one)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    proc: SandboxProcess | None = None
    calls: int = 0
    evicted: bool = False
    last_used: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class _Zygote:
    """A zygote process and whether its last child's exit report is still unread."""

    proc: SandboxProcess
    pending_exit: bool = False
    last_used: float = field(default_factory=time.monotonic)


class SandboxExecutor:
    """Runs generated tools in a sandboxed tier (see the module's docstring)."""

    sandboxed = True

    def __init__(
        self,
        config: SandboxConfig,
        *,
        max_workers: int = DEFAULT_MAX_WORKERS,
        max_calls_per_worker: int = 1000,
        max_parallel: int | None = None,
        idle_s: float = DEFAULT_IDLE_S,
        prestart: bool = True,
        keep_spare: bool = True,
    ) -> None:
        """Create the executor; with ``prestart``, start a zygote and a spare now.

        Args:
            config: The tier to run in (from :func:`latm.sandbox.probe.probe`).
            max_workers: Most warm workers kept at once (one per tool version).
            max_calls_per_worker: Calls after which a warm worker is replaced.
            max_parallel: Most verification calls running at once (default:
                the core count, at least 2).
            idle_s: Seconds after which an unused warm worker or extra zygote is stopped.
            prestart: Start the zygote and the spare in the background right away.
            keep_spare: Keep a blank process started for the next worker or zygote
                (off for one-off executors: the probe, the fresh-process benchmark).
        """
        self.config = config
        self.name: str = config.tier
        self.isolation: str = ISOLATION[config.tier]
        self.max_workers = max(1, max_workers)
        self.max_calls_per_worker = max(1, max_calls_per_worker)
        self.max_parallel = max(1, max_parallel or default_parallel())
        self.idle_s = idle_s
        self.keep_spare = keep_spare
        self._closed = False
        self._stop = threading.Event()
        self._zcond = threading.Condition()
        self._zygotes: list[_Zygote] = []
        self._idle: list[_Zygote] = []
        self._starting = 0
        self._zygote_future: concurrent.futures.Future[SandboxProcess] | None = None
        self._spare_lock = threading.Lock()
        self._spare: concurrent.futures.Future[SandboxProcess] | None = None
        self._pool_lock = threading.Lock()
        self._slots: OrderedDict[tuple[str, str, ExecLimits], _Slot] = OrderedDict()
        self._obstacles: dict[str, str | None] = {}
        self.fresh_fallbacks = 0
        if prestart:
            self._zygote_future = start_process(config)
            if keep_spare:
                self._spare = start_process(config)
        self._keeper = threading.Thread(
            target=self._housekeeping, name=f"latm-sandbox-{self.name}-keeper", daemon=True
        )
        self._keeper.start()

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
        """Kill every zygote, warm worker and the spare."""
        self._closed = True
        self._stop.set()
        with self._zcond:
            zygotes = list(self._zygotes)
            self._zygotes.clear()
            self._idle.clear()
            future, self._zygote_future = self._zygote_future, None
            self._zcond.notify_all()
        for zygote in zygotes:
            zygote.proc.kill()
        if future is not None:
            _discard(future)
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
        with self._zcond:
            zygotes = sum(1 for z in self._zygotes if z.proc.alive)
        return {
            "zygote": int(zygotes > 0),
            "zygotes": zygotes,
            "warm_workers": workers,
            "spare": int(self._spare is not None),
        }

    def processes(self) -> list[SandboxProcess]:
        """Every sandbox process this executor holds now (tests and the disk quota)."""
        with self._zcond:
            procs = [z.proc for z in self._zygotes]
        with self._pool_lock:
            procs += [s.proc for s in self._slots.values() if s.proc is not None]
        return procs

    # -- processes --------------------------------------------------------------

    def _take_spare(self) -> SandboxProcess:
        """A confined, blank process: the spare if ready, and start the next spare."""
        with self._spare_lock:
            future, self._spare = self._spare, None
            if not self._closed and self.keep_spare:
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

    def _new_zygote(self) -> SandboxProcess:
        with self._zcond:
            future, self._zygote_future = self._zygote_future, None
        if future is not None:
            with contextlib.suppress(SandboxStartError, concurrent.futures.TimeoutError):
                proc = future.result(timeout=STARTUP_TIMEOUT_S + 10)
                if proc.alive:
                    return proc
                proc.kill()
        return self._take_spare()

    def _acquire_zygote(self) -> _Zygote:
        """An idle zygote, a new one while fewer than ``max_parallel`` exist, else wait."""
        while True:
            zygote: _Zygote | None
            with self._zcond:
                while True:
                    if self._closed:
                        raise SandboxUnavailableError(f"the {self.name} executor has been closed")
                    if self._idle:
                        zygote = self._idle.pop()
                        break
                    if len(self._zygotes) + self._starting < self.max_parallel:
                        self._starting += 1
                        zygote = None
                        break
                    self._zcond.wait(1.0)
            if zygote is None:
                try:
                    proc = self._new_zygote()
                finally:
                    with self._zcond:
                        self._starting -= 1
                        self._zcond.notify()
                zygote = _Zygote(proc)
                with self._zcond:
                    self._zygotes.append(zygote)
                return zygote
            if zygote.proc.alive and (not zygote.pending_exit or self._drain(zygote)):
                return zygote
            self._release_zygote(zygote, dead=True)

    def _release_zygote(self, zygote: _Zygote, *, dead: bool = False) -> None:
        if dead or not zygote.proc.alive or self._closed:
            zygote.proc.kill()
            with self._zcond:
                with contextlib.suppress(ValueError):
                    self._zygotes.remove(zygote)
                self._zcond.notify()
            return
        zygote.last_used = time.monotonic()
        with self._zcond:
            self._idle.append(zygote)
            self._zcond.notify()

    @staticmethod
    def _drain(zygote: _Zygote) -> bool:
        """Read the exit report of the zygote's last child (the host was done with it)."""
        try:
            report = zygote.proc.receive(time.monotonic() + ZYGOTE_GRACE_S + 3, 4096)
        except (SandboxTimeout, SandboxDied):
            return False
        zygote.pending_exit = False
        return report.get("op") == "exit" and not zygote.proc.pending()

    # -- verification: a fresh child per call -------------------------------------

    def _verify(self, code: str, calls: Sequence[str], limits: ExecLimits) -> list[ExecResult]:
        results = []
        for call in calls:
            zygote = self._acquire_zygote()
            dead = True
            try:
                result, dead = self._fork_call(zygote, code, call, limits)
            finally:
                self._release_zygote(zygote, dead=dead)
            results.append(result)
        return results

    def _fork_call(
        self, zygote: _Zygote, code: str, call: str, limits: ExecLimits
    ) -> tuple[ExecResult, bool]:
        """One call in a fresh child of ``zygote``; also whether the zygote must go."""
        proc = zygote.proc
        started = time.perf_counter()
        deadline = time.monotonic() + limits.timeout_s + ZYGOTE_GRACE_S
        try:
            if proc.pending():
                raise SandboxDied("the zygote sent something unasked")
            proc.send({"op": "fork", "timeout_s": limits.timeout_s}, deadline)
            handed = proc.receive(deadline + STARTUP_TIMEOUT_S, 4096)
            fds = proc.take_fds()
            if handed.get("op") != "child" or len(fds) != 2:
                for fd in fds:
                    os.close(fd)
                raise SandboxDied(f"the zygote did not hand over a child ({handed.get('op')!r})")
            job_fd, result_fd = fds
            try:
                job = {"code": code, "call": call, "limits": _limits_message(limits)}
                write_to(job_fd, encode_frame(job), deadline)
                os.close(job_fd)
                job_fd = -1
                data, ended = read_to_end(
                    result_fd, deadline, result_cap(limits.max_output_bytes) + 4096
                )
            finally:
                for fd in (job_fd, result_fd):
                    if fd >= 0:
                        os.close(fd)
            proc.send({"op": "done"}, deadline + ZYGOTE_GRACE_S)
            answer = _child_answer(data) if ended == "eof" else None
            if answer is not None:
                zygote.pending_exit = True  # read at the zygote's next use
                return to_result(answer, limits, started), False
            report = proc.receive(time.monotonic() + ZYGOTE_GRACE_S + 3, 4096)
            if report.get("op") != "exit":
                raise SandboxDied("the zygote answered out of step")
            return _judge_exit(report, ended, limits, started), False
        except SandboxTimeout:
            return _timeout(limits, started), True
        except SandboxDied as exc:
            proc.kill()
            because = proc.killed_because
            what = f"the sandbox was killed: {because}" if because else f"the sandbox died ({exc})"
            return ExecResult(
                "killed", error=what, duration_ms=(time.perf_counter() - started) * 1000
            ), True

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
        digest = hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()
        obstacle = self._obstacles.get(digest, _UNKNOWN)
        if obstacle is _UNKNOWN:
            if len(self._obstacles) >= 4096:  # a cache, not a record of every tool ever run
                self._obstacles.clear()
            obstacle = self._obstacles[digest] = warm_obstacle(code)
        if obstacle is not None:
            self.fresh_fallbacks += 1
            return self._verify(code, calls, limits)
        while True:
            slot = self._slot((cache_key, digest, limits))
            with slot.lock:
                if self._closed:
                    raise SandboxUnavailableError(f"the {self.name} executor has been closed")
                if slot.evicted:  # evicted between the lookup and the lock
                    continue
                return [self._warm_call(slot, code, call, limits) for call in calls]

    def _warm_call(
        self, slot: _Slot, code: str, call: str, limits: ExecLimits, retried: bool = False
    ) -> ExecResult:
        if slot.proc is not None and (
            not slot.proc.alive
            or slot.calls >= self.max_calls_per_worker
            or slot.proc.pending()  # something was written after the last answer
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
                return _died(started, proc)
            if answer.get("op") != "loaded":
                proc.kill()
                return ExecResult(
                    "invalid",
                    error="the sandbox did not load the tool",
                    duration_ms=(time.perf_counter() - started) * 1000,
                )
            slot.proc, slot.calls = proc, 0
        remaining = limits.timeout_s - (time.perf_counter() - started)
        call_id = secrets.token_hex(8)
        request = {
            "op": "call",
            "id": call_id,
            "call": call,
            "timeout_s": limits.timeout_s,
            "max_output_bytes": limits.max_output_bytes,
        }
        proc = slot.proc
        try:
            answer = proc.request(
                request,
                max(remaining, 0.0) + WARM_GRACE_S,
                result_cap(limits.max_output_bytes) + 4096,
            )
        except SandboxTimeout:
            _retire(slot)
            return _timeout(limits, started)
        except SandboxDied:
            _retire(slot)
            return _died(started, proc)
        slot.calls += 1
        slot.last_used = time.monotonic()
        if answer.get("id") != call_id:
            # A frame left by an earlier call that wrote to its pipe after its answer
            # (a forger descheduled between writes slips past both pending() checks):
            # the worker is retired, and this call, which did not write it, runs once
            # more on a fresh worker (every warm call runs the module afresh anyway).
            _retire(slot)
            if not retried:
                return self._warm_call(slot, code, call, limits, retried=True)
            return ExecResult(
                "invalid",
                error="the sandbox answered out of step (a frame that is not this call's)",
                duration_ms=(time.perf_counter() - started) * 1000,
            )
        result = to_result(answer, limits, started)
        trace = answer.get("trace")
        if trace:
            log.warning("retiring a warm worker: %s", str(trace)[:200])
        if result.status != "ok" or trace or proc.pending():
            _retire(slot)
        return result

    # -- housekeeping -------------------------------------------------------------

    def _housekeeping(self) -> None:
        """Reap idle workers and zygotes; enforce the scratch quota on the ``landlock`` tier."""
        quota = self.config.tier == "landlock"
        interval = DISK_CHECK_S if quota else min(5.0, max(0.05, self.idle_s / 4))
        while not self._stop.wait(interval):
            try:
                self._reap_idle()
                if quota:
                    self._enforce_scratch_quota()
            except Exception:  # never let the keeper die of one bad round
                log.exception("sandbox housekeeping failed")

    def _reap_idle(self) -> None:
        now = time.monotonic()
        with self._pool_lock:
            for key, slot in list(self._slots.items()):
                if now - slot.last_used < self.idle_s or not slot.lock.acquire(blocking=False):
                    continue
                try:
                    _retire(slot)
                    slot.evicted = True
                    del self._slots[key]
                finally:
                    slot.lock.release()
        with self._zcond:
            stale = [z for z in self._idle if now - z.last_used >= self.idle_s]
            stale = stale[: max(0, len(self._zygotes) - 1)]  # one zygote stays ready
            for zygote in stale:
                self._idle.remove(zygote)
                self._zygotes.remove(zygote)
        for zygote in stale:
            zygote.proc.kill()

    def _enforce_scratch_quota(self) -> None:
        limit = self.config.scratch_bytes
        for proc in self.processes():
            scratch = proc.scratch
            if scratch is None or not proc.alive:
                continue
            used, entries = tree_usage(scratch, MAX_SCRATCH_ENTRIES)
            if used > limit or entries >= MAX_SCRATCH_ENTRIES:
                proc.terminate(
                    f"its scratch directory exceeded the quota ({limit // (1024 * 1024)} MiB, "
                    f"{MAX_SCRATCH_ENTRIES} entries)"
                )


def _timeout(limits: ExecLimits, started: float) -> ExecResult:
    return ExecResult(
        "timeout",
        error=f"the tool did not finish within {limits.timeout_s:g} s",
        duration_ms=(time.perf_counter() - started) * 1000,
    )


def _died(started: float, proc: SandboxProcess | None = None) -> ExecResult:
    because = proc.killed_because if proc is not None else None
    return ExecResult(
        "killed",
        error=f"the tool process was killed: {because}" if because else "the tool process died",
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
