"""Start-up probe: which isolation tiers work on this machine, and why not.

Tiers, strongest first:

1. ``bwrap``: bubblewrap launched as an unprivileged uid (every namespace
   unshared, no network, a minimal read-only file system), plus Landlock and
   seccomp inside.
2. ``landlock``: Landlock + seccomp + an unprivileged uid, without namespaces
   (for hosts that refuse them, such as most containers).
3. ``subprocess``: a plain subprocess with rlimits. Not a sandbox: it runs
   generated code only when the user opts in with ``LATM_ALLOW_UNSANDBOXED=1``.

A tier counts as available only after a real sandbox process of that tier has
started, confined itself and stopped a canary call (reading ``/etc/passwd``,
opening a socket, forking, signalling its parent).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from latm.sandbox.base import ExecLimits, SandboxUnavailableError
from latm.sandbox.confine import landlock_abi
from latm.sandbox.executor import SandboxExecutor
from latm.sandbox.policy import SeccompPrograms, compile_programs
from latm.sandbox.process import (
    UID_BASE,
    SandboxConfig,
    Tier,
    bwrap_options,
)

ALLOW_ENV = "LATM_ALLOW_UNSANDBOXED"
"""The opt-in setting that lets generated code run without OS-level isolation."""
EXECUTOR_ENV = "LATM_EXECUTOR"
PYTHON_ENV = "LATM_SANDBOX_PYTHON"
UID_ENV = "LATM_SANDBOX_UID"
GID_ENV = "LATM_SANDBOX_GID"
NOBODY = 65534
SETUP_HINT = (
    "run .ci/sandbox-setup.sh (apt-get install -y bubblewrap libseccomp2; pip install pyseccomp)"
)

_INTERPRETER_CHECK = """\
import ctypes, json, os, resource, select, sys
dirs = [sys.base_prefix, sys.exec_prefix]
print(json.dumps({
    "version": list(sys.version_info[:3]),
    "prefixes": sorted({os.path.realpath(p) for p in dirs if p and os.path.isdir(p)}),
    "path": [os.path.realpath(p) for p in sys.path if p and os.path.exists(p)],
}))
"""

CANARY_CODE = """\
import os

def canary():
    leaks = []
    try:
        open("/etc/passwd").read()
        leaks.append("read /etc/passwd")
    except OSError:
        pass
    try:
        import socket
        socket.socket()
        leaks.append("socket")
    except OSError:
        pass
    try:
        pid = os.fork()
    except OSError:
        pass
    else:
        if pid == 0:
            os._exit(0)
        leaks.append("fork")
    try:
        os.kill(os.getppid(), 0)
        leaks.append("signal the parent")
    except OSError:
        pass
    try:
        import resource
        resource.prlimit(os.getppid(), resource.RLIMIT_NOFILE)
        leaks.append("prlimit the parent")
    except OSError:
        pass
    try:
        os.close(os.memfd_create("canary"))
        leaks.append("memfd")
    except (OSError, AttributeError):
        pass
    return "sealed" if not leaks else "not blocked: " + ", ".join(leaks)
"""
"""A benign tool whose call checks that the sandbox stops what it must stop."""


@dataclass(frozen=True, slots=True)
class TierStatus:
    """What the probe found out about one tier.

    Attributes:
        name: ``"bwrap"``, ``"landlock"`` or ``"subprocess"``.
        level: 1 (strongest) to 3 (no isolation).
        available: Whether the tier works on this machine.
        sandboxed: Whether it is real OS-level isolation (tiers 1 and 2).
        reason: Why it is or is not available, one line.
        config: How to launch it (sandboxed tiers that are available).
    """

    name: str
    level: int
    available: bool
    sandboxed: bool
    reason: str
    config: SandboxConfig | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ProbeReport:
    """The probe's findings.

    Attributes:
        tiers: Every tier, strongest first.
        facts: ``(what, finding)`` lines about the machine, for ``latm doctor``.
        duration_ms: How long probing took.
    """

    tiers: tuple[TierStatus, ...]
    facts: tuple[tuple[str, str], ...]
    duration_ms: float = 0.0

    def tier(self, name: str) -> TierStatus:
        """The status of the tier called ``name``."""
        for status in self.tiers:
            if status.name == name:
                return status
        raise KeyError(name)

    def strongest(self) -> TierStatus | None:
        """The strongest available sandboxed tier, if any."""
        for status in self.tiers:
            if status.available and status.sandboxed:
                return status
        return None


@dataclass(frozen=True, slots=True)
class Choice:
    """Which tier a configuration gets, and why.

    Attributes:
        tier: The chosen tier, or ``None`` when generated code must not run.
        reason: One line for the user (and the refusal message when ``tier`` is None).
    """

    tier: TierStatus | None
    reason: str


@dataclass(frozen=True, slots=True)
class _Interpreter:
    path: str
    version: str
    paths: tuple[str, ...]
    bind_dirs: tuple[str, ...]


def env_flag(value: str | None) -> bool:
    """Whether an environment value means "yes" (``1``, ``true``, ``yes``, ``on``)."""
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def settings_from_env() -> tuple[str, bool]:
    """``(executor name, allow_unsandboxed)`` from the environment.

    Reads ``LATM_EXECUTOR`` (default ``auto``) and ``LATM_ALLOW_UNSANDBOXED`` (default off).
    """
    name = (os.environ.get(EXECUTOR_ENV) or "auto").strip().lower() or "auto"
    return name, env_flag(os.environ.get(ALLOW_ENV))


def _sandbox_ids() -> tuple[int | None, int | None, bool, str]:
    """``(uid, gid, one uid per sandbox, description)`` the sandboxes run as."""
    if os.geteuid() != 0:
        return (
            None,
            None,
            False,
            f"uid {os.geteuid()} (the host's own; not root, so nothing to drop)",
        )
    fixed = os.environ.get(UID_ENV)
    uid = int(fixed or NOBODY)
    gid = int(os.environ.get(GID_ENV) or uid)
    if uid == 0 or gid == 0:
        raise ValueError(f"{UID_ENV}/{GID_ENV} must name an unprivileged user, not root")
    if fixed:
        return uid, gid, False, f"uid {uid}, gid {gid} for every sandbox ({UID_ENV})"
    return (
        uid,
        gid,
        True,
        f"a uid of its own per sandbox process (from {UID_BASE}), dropped from root, "
        "no supplementary groups",
    )


def _candidates() -> list[str]:
    override = os.environ.get(PYTHON_ENV)
    if override:
        return [override]
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    names = [
        os.path.realpath(sys.executable),
        os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
        f"/usr/bin/{version}",
        "/usr/bin/python3",
        f"/usr/local/bin/{version}",
        "/usr/local/bin/python3",
    ]
    found = shutil.which("python3")
    if found:
        names.append(os.path.realpath(found))
    seen: list[str] = []
    for name in names:
        real = os.path.realpath(name)
        if real not in seen and os.path.isfile(real):
            seen.append(real)
    return seen


def _find_interpreter(uid: int | None, gid: int | None) -> tuple[_Interpreter | None, str]:
    drop: dict[str, object] = {}
    if uid is not None:
        drop = {"user": uid, "group": gid, "extra_groups": []}
    tried = []
    for path in _candidates():
        try:
            done = subprocess.run(
                [path, "-I", "-S", "-B", "-c", _INTERPRETER_CHECK],
                env={},
                cwd="/",
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=15,
                check=False,
                **drop,  # type: ignore[call-overload]
            )
            info = json.loads(done.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
            if tuple(info["version"]) < (3, 8):
                raise ValueError("Python older than 3.8")
        except (OSError, ValueError, IndexError, KeyError, subprocess.TimeoutExpired) as exc:
            tried.append(f"{path} ({type(exc).__name__})")
            continue
        bind = tuple(p for p in info["prefixes"] if p != "/usr" and not p.startswith("/usr/"))
        interpreter = _Interpreter(
            path=path,
            version=".".join(str(v) for v in info["version"]),
            paths=tuple(dict.fromkeys(str(p) for p in info["path"])),
            bind_dirs=bind,
        )
        return interpreter, f"{path} (Python {interpreter.version})"
    hint = f"set {PYTHON_ENV} to a python3 the sandbox user can read"
    return None, f"no interpreter runnable by the sandbox user ({'; '.join(tried)}); {hint}"


def _landlock() -> tuple[int, str]:
    abi = landlock_abi()
    if abi >= 1:
        extra = []
        extra.append("TCP rules" if abi >= 4 else "no TCP rules (seccomp blocks sockets)")
        extra.append("signal scoping" if abi >= 6 else "no signal scoping (seccomp blocks kill)")
        return abi, f"ABI {abi}: " + ", ".join(extra)
    if -abi == errno.EOPNOTSUPP:
        return abi, "Landlock is built in but disabled at boot (add 'landlock' to the lsm= list)"
    return abi, "the kernel has no Landlock (needs Linux 5.13+ with CONFIG_SECURITY_LANDLOCK)"


def _seccomp() -> tuple[SeccompPrograms | None, str]:
    try:
        programs = compile_programs()
    except ImportError as exc:
        return None, f"pyseccomp is not installed ({exc}); {SETUP_HINT}"
    except (OSError, AttributeError, TypeError) as exc:
        return None, f"libseccomp unusable ({type(exc).__name__}: {exc}); {SETUP_HINT}"
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            supported = "Seccomp:" in status.read()
    except OSError:
        supported = False
    if not supported:
        return None, "the kernel does not report seccomp support"
    return programs, "libseccomp via pyseccomp; filters compiled"


def smoke_test(config: SandboxConfig) -> str | None:
    """Start a sandbox of ``config``'s tier and run the canary; ``None`` if all was blocked."""
    executor = SandboxExecutor(config, max_parallel=1, prestart=False, keep_spare=False)
    try:
        result = executor.run(
            CANARY_CODE,
            ["canary()"],
            ExecLimits(timeout_s=10.0, memory_mb=512, max_output_bytes=4096),
        )[0]
    except SandboxUnavailableError as exc:
        return str(exc)
    finally:
        executor.close()
    if result.status != "ok":
        return f"the canary call failed: {result.status}: {result.error}"
    if result.value != "sealed":
        return f"confinement does not hold: {result.value}"
    return None


def run_probe() -> ProbeReport:
    """Probe every tier now (about 0.1-0.3 s). Prefer the cached :func:`probe`."""
    started = time.perf_counter()
    facts: list[tuple[str, str]] = []
    sandbox_tiers: list[TierStatus] = []
    if sys.platform != "linux":
        reason = "isolation needs Linux (Landlock, seccomp, namespaces)"
        sandbox_tiers = [
            TierStatus("bwrap", 1, False, True, reason),
            TierStatus("landlock", 2, False, True, reason),
        ]
    else:
        try:
            uid, gid, unique, who = _sandbox_ids()
        except ValueError as exc:
            uid = gid = None
            unique = False
            who = str(exc)
        facts.append(("sandbox user", who))
        abi, landlock_note = _landlock()
        facts.append(("landlock", landlock_note))
        programs, seccomp_note = _seccomp()
        facts.append(("seccomp", seccomp_note))
        interpreter, python_note = _find_interpreter(uid, gid)
        facts.append(("interpreter", python_note))
        bwrap = shutil.which("bwrap")
        known = bwrap_options(bwrap) if bwrap else frozenset()
        if bwrap:
            lacking = [o for o in ("--disable-userns", "--size") if o not in known]
            extra = f" (older: lacks {', '.join(lacking)})" if lacking else ""
            facts.append(("bubblewrap", bwrap + extra))
        else:
            facts.append(("bubblewrap", "not installed (apt-get install -y bubblewrap)"))
        missing = []
        if os.geteuid() == 0 and uid is None:
            missing.append(who)
        if abi < 1:
            missing.append("Landlock: " + landlock_note)
        if programs is None:
            missing.append("seccomp: " + seccomp_note)
        if interpreter is None:
            missing.append(python_note)
        tier: Tier
        for tier, level in (("bwrap", 1), ("landlock", 2)):
            if tier == "bwrap" and not bwrap:
                sandbox_tiers.append(
                    TierStatus(
                        tier, level, False, True, f"bubblewrap is not installed; {SETUP_HINT}"
                    )
                )
                continue
            if missing:
                sandbox_tiers.append(TierStatus(tier, level, False, True, "; ".join(missing)))
                continue
            assert interpreter is not None and programs is not None
            config = SandboxConfig(
                tier=tier,
                python=interpreter.path,
                python_paths=interpreter.paths,
                bind_dirs=interpreter.bind_dirs,
                landlock_abi=abi,
                seccomp=programs,
                uid=uid,
                gid=gid,
                unique_uids=unique,
                bwrap=bwrap if tier == "bwrap" else None,
                bwrap_options=known if tier == "bwrap" else frozenset(),
            )
            failure = smoke_test(config)
            if failure is None:
                reason = {
                    "bwrap": "bubblewrap as an unprivileged uid + Landlock + seccomp: "
                    "canary sealed",
                    "landlock": "Landlock + seccomp + unprivileged uid: canary sealed",
                }[tier]
                sandbox_tiers.append(TierStatus(tier, level, True, True, reason, config))
            else:
                if tier == "bwrap":
                    failure = f"namespaces refused or bubblewrap failed: {failure}"
                sandbox_tiers.append(TierStatus(tier, level, False, True, failure))
    floor = TierStatus(
        "subprocess",
        3,
        True,
        False,
        f"plain subprocess with rlimits, NO isolation: runs generated code only with {ALLOW_ENV}=1",
    )
    return ProbeReport(
        tiers=(*sandbox_tiers, floor),
        facts=tuple(facts),
        duration_ms=(time.perf_counter() - started) * 1000,
    )


_probe_lock = threading.Lock()
_probe_cache: ProbeReport | None = None


def probe(*, refresh: bool = False) -> ProbeReport:
    """The process-wide probe report, computed once (thread-safe).

    Args:
        refresh: Probe again instead of returning the cached report.
    """
    global _probe_cache
    with _probe_lock:
        if _probe_cache is None or refresh:
            _probe_cache = run_probe()
        return _probe_cache


def choose(report: ProbeReport, name: str, allow_unsandboxed: bool) -> Choice:
    """Pick the tier for an executor setting.

    Args:
        report: The probe's findings.
        name: ``"auto"``, ``"bwrap"``, ``"landlock"`` or ``"subprocess"``.
        allow_unsandboxed: The user's explicit opt-in to tier 3.

    Returns:
        The tier to use, or none with the refusal message.
    """
    opt_in = f"set {ALLOW_ENV}=1 to run generated code WITHOUT isolation (unsafe)"
    if name == "auto":
        best = report.strongest()
        if best is not None:
            return Choice(best, f"{best.name} (tier {best.level}): the strongest available")
        why = "; ".join(f"{t.name}: {t.reason}" for t in report.tiers if t.sandboxed)
        if allow_unsandboxed:
            return Choice(
                report.tier("subprocess"),
                f"subprocess (tier 3, NO isolation) because {ALLOW_ENV}=1 and no sandbox "
                f"tier works ({why})",
            )
        return Choice(
            None,
            f"refusing to run generated code: no sandbox tier is available ({why}). "
            f"Fix: {SETUP_HINT}; or {opt_in}.",
        )
    if name == "subprocess":
        if allow_unsandboxed:
            return Choice(
                report.tier("subprocess"),
                f"subprocess (tier 3, NO isolation) as requested, with {ALLOW_ENV}=1",
            )
        return Choice(
            None,
            f"refusing to run generated code: {EXECUTOR_ENV}=subprocess has no OS-level "
            f"isolation; {opt_in}, or use {EXECUTOR_ENV}=auto.",
        )
    status = report.tier(name)
    if status.available:
        return Choice(status, f"{status.name} (tier {status.level}) as requested")
    return Choice(
        None,
        f"refusing to run generated code: the {name} tier is not available ({status.reason}); "
        f"use {EXECUTOR_ENV}=auto for the strongest available tier.",
    )
