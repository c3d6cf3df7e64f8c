"""Host side of one sandbox process: launch, framed requests with deadlines, kill.

A sandbox process is a fresh interpreter (one the sandbox user can read, not
necessarily the host's) started with an empty environment, in its own session,
as an unprivileged uid when the host is root; for the ``bwrap`` tier inside
bubblewrap with every namespace unshared and only the interpreter, the system
libraries and a size-capped scratch tmpfs visible. The host writes a bundle (the
stdlib-only modules :mod:`~latm.sandbox.runner`, :mod:`~latm.sandbox.confine`,
:mod:`~latm.sandbox.server` and their configuration) to its stdin; the process
confines itself and answers ``ready``. No file of this package needs to be
readable by the sandbox user.

Every process is launched from one long-lived spawner thread: the kernel's
parent-death signal, which ends sandboxes whose host died, is tied to the thread
that forked them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from latm.sandbox.policy import SeccompPrograms
from latm.sandbox.server import encode_frame

Tier = Literal["bwrap", "landlock"]

STARTUP_TIMEOUT_S = 20.0
"""How long a sandbox process may take to confine itself and answer ``ready``."""

BOOT = """\
import os, sys, json, types
def _read(n):
    b = b""
    while len(b) < n:
        c = os.read(0, n - len(b))
        if not c:
            os._exit(3)
        b += c
    return b
_bundle = json.loads(_read(int.from_bytes(_read(4), "big")).decode("utf-8"))
for _name in _bundle["order"]:
    _mod = types.ModuleType(_name)
    _mod.__file__ = "<latm:" + _name + ">"
    if _name in _bundle["packages"]:
        _mod.__path__ = []
    sys.modules[_name] = _mod
    _parent, _, _leaf = _name.rpartition(".")
    if _parent:
        setattr(sys.modules[_parent], _leaf, _mod)
    if _name in _bundle["sources"]:
        exec(compile(_bundle["sources"][_name], _mod.__file__, "exec"), _mod.__dict__)
del _read, _name, _mod, _parent, _leaf
sys.modules[_bundle["main"]].serve(_bundle["config"])
"""
"""The ``python -c`` program: reads the bundle from stdin, installs its modules, serves."""

_SHIPPED = ("latm.sandbox.confine", "latm.sandbox.runner", "latm.sandbox.server")
_SYSTEM_DIRS = (
    "/usr/lib",
    "/usr/lib64",
    "/usr/lib32",
    "/lib",
    "/lib64",
    "/lib32",
    "/usr/share/zoneinfo",
)
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/dev/urandom")
_BWRAP_SCRATCH = "/scratch"

T = TypeVar("T")


class SandboxStartError(RuntimeError):
    """A sandbox process could not be started or did not confine itself."""


class SandboxTimeout(Exception):
    """The sandbox process did not answer before the deadline."""


class SandboxDied(Exception):
    """The sandbox process closed its pipe or sent something that is not an answer."""


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Everything needed to launch sandbox processes of one tier.

    Attributes:
        tier: ``"bwrap"`` (bubblewrap + Landlock + seccomp) or ``"landlock"``
            (Landlock + seccomp, no namespaces).
        python: Interpreter the sandbox user can run (an absolute, resolved path).
        python_paths: The interpreter's ``sys.path`` (standard library), readable in the sandbox.
        bind_dirs: Interpreter prefixes outside ``/usr`` to mount into the ``bwrap`` sandbox.
        landlock_abi: The kernel's Landlock ABI (at least 1).
        seccomp: The compiled seccomp filters.
        uid: Unprivileged uid to run as, or ``None`` to keep the host's (non-root) uid.
        gid: Its gid.
        bwrap: Path of the ``bwrap`` binary (``bwrap`` tier only).
        bwrap_options: The options that ``bwrap`` knows (see :func:`bwrap_options`);
            the optional hardening ones (``--disable-userns``, ``--size``) are
            used only when listed.
        scratch_bytes: Size of the scratch tmpfs (``bwrap`` tier).
        file_bytes: ``RLIMIT_FSIZE``: the largest file a tool may write.
        open_files: ``RLIMIT_NOFILE``.
        server_memory_mb: Address-space limit of a sandbox process before a tool
            is loaded (a call's own limit comes with the call).
    """

    tier: Tier
    python: str
    python_paths: tuple[str, ...]
    bind_dirs: tuple[str, ...]
    landlock_abi: int
    seccomp: SeccompPrograms = field(repr=False)
    uid: int | None = None
    gid: int | None = None
    bwrap: str | None = None
    bwrap_options: frozenset[str] = frozenset()
    scratch_bytes: int = 64 * 1024 * 1024
    file_bytes: int = 16 * 1024 * 1024
    open_files: int = 64
    server_memory_mb: int = 1024


# -- the spawner thread -------------------------------------------------------

_spawner_lock = threading.Lock()
_spawner: concurrent.futures.ThreadPoolExecutor | None = None
_spawner_pid = 0


def spawn_in_background(fn: Callable[[], T]) -> concurrent.futures.Future[T]:
    """Run ``fn`` on the process-wide spawner thread (which launches every sandbox)."""
    global _spawner, _spawner_pid
    with _spawner_lock:
        if _spawner is None or _spawner_pid != os.getpid():
            _spawner = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="latm-sandbox-spawner"
            )
            _spawner_pid = os.getpid()
        return _spawner.submit(fn)


# -- framing with deadlines ---------------------------------------------------


def _wait(fd: int, events: int, deadline: float) -> None:
    poller = select.poll()
    poller.register(fd, events)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SandboxTimeout
        if poller.poll(max(1, int(remaining * 1000) + 1)):
            return


def _write_all(fd: int, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            written = 0
        except (BrokenPipeError, OSError) as exc:
            raise SandboxDied(f"cannot write to the sandbox: {exc}") from exc
        view = view[written:]
        if view:
            _wait(fd, select.POLLOUT, deadline)


def _read_exact(fd: int, size: int, deadline: float) -> bytes:
    data = bytearray()
    while len(data) < size:
        try:
            chunk = os.read(fd, min(size - len(data), 1 << 20))
        except BlockingIOError:
            _wait(fd, select.POLLIN, deadline)
            continue
        if not chunk:
            raise SandboxDied("the sandbox process closed its pipe")
        data += chunk
    return bytes(data)


# -- one sandbox process ------------------------------------------------------


def _bundle(config: SandboxConfig, scratch: str) -> bytes:
    here = Path(__file__).parent
    sources = {
        name: (here / (name.rsplit(".", 1)[1] + ".py")).read_text(encoding="utf-8")
        for name in _SHIPPED
    }
    ro_paths = [*config.python_paths, *(d for d in _SYSTEM_DIRS if os.path.isdir(d))]
    server_config = {
        "tier": config.tier,
        "scratch": scratch,
        "landlock_abi": config.landlock_abi,
        "base_filter": config.seccomp.base.hex(),
        "call_filter": config.seccomp.call.hex(),
        "ro_paths": ro_paths,
        "ro_files": [f for f in _SYSTEM_FILES if os.path.exists(f)],
        "file_bytes": config.file_bytes,
        "open_files": config.open_files,
        "server_memory_mb": config.server_memory_mb,
        "parent_pid": os.getpid() if config.tier == "landlock" else None,
    }
    bundle = {
        "order": ["latm", "latm.sandbox", *_SHIPPED],
        "packages": ["latm", "latm.sandbox"],
        "sources": sources,
        "main": "latm.sandbox.server",
        "config": server_config,
    }
    data = json.dumps(bundle).encode("utf-8")
    return struct.pack(">I", len(data)) + data


def bwrap_options(bwrap: str) -> frozenset[str]:
    """The command-line options a ``bwrap`` binary lists in its ``--help``."""
    try:
        done = subprocess.run(
            [bwrap, "--help"],
            capture_output=True,
            timeout=10,
            check=False,
            env={},
        )
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    text = (done.stdout + done.stderr).decode("utf-8", "replace")
    return frozenset(re.findall(r"(?m)^\s*(--[a-z0-9-]+)", text))


def _bwrap_argv(config: SandboxConfig) -> list[str]:
    assert config.bwrap is not None
    known = config.bwrap_options
    argv = [config.bwrap, "--unshare-all", "--unshare-user"]
    if "--disable-userns" in known:  # bubblewrap 0.8+
        argv.append("--disable-userns")
    argv += [
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "latm-sandbox",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for top in ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    for path in _SYSTEM_FILES[:2]:
        argv += ["--ro-bind-try", path, path]
    for path in config.bind_dirs:
        if os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    argv += ["--dev", "/dev"]
    if "--perms" in known:
        argv += ["--perms", "0700"]
    if "--size" in known:  # bubblewrap 0.7+: a bounded scratch file system
        argv += ["--size", str(config.scratch_bytes)]
    argv += ["--tmpfs", _BWRAP_SCRATCH, "--chdir", _BWRAP_SCRATCH, "--"]
    return argv


def launch_argv(config: SandboxConfig) -> list[str]:
    """The command line that starts one sandbox process of ``config``'s tier."""
    python = [config.python, "-I", "-S", "-B", "-c", BOOT]
    if config.tier == "bwrap":
        return _bwrap_argv(config) + python
    return python


class SandboxProcess:
    """One confined interpreter serving framed requests (zygote or warm worker)."""

    def __init__(self, config: SandboxConfig) -> None:
        """Launch the process and wait until it reports that it is confined.

        Call from the spawner thread (:func:`spawn_in_background`).

        Args:
            config: The tier to launch.

        Raises:
            SandboxStartError: If it fails to start or to confine itself.
        """
        self.config = config
        self.lock = threading.Lock()
        self.calls = 0
        self._closed = False
        self._host_scratch: str | None = None
        if config.tier == "bwrap":
            scratch = _BWRAP_SCRATCH
            cwd = "/"
        else:
            scratch = self._host_scratch = tempfile.mkdtemp(prefix="latm-sandbox-")
            if config.uid is not None:
                os.chown(scratch, config.uid, config.gid if config.gid is not None else -1)
            os.chmod(scratch, 0o700)
            cwd = scratch
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - lives with the process
        drop: dict[str, Any] = {}
        if config.uid is not None:
            drop = {"user": config.uid, "group": config.gid, "extra_groups": []}
        try:
            self.proc = subprocess.Popen(
                launch_argv(config),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                cwd=cwd,
                env={},
                close_fds=True,
                start_new_session=True,
                **drop,
            )
        except OSError as exc:
            self._cleanup_files()
            raise SandboxStartError(f"cannot launch {config.tier} sandbox: {exc}") from exc
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._out = self.proc.stdin.fileno()
        self._in = self.proc.stdout.fileno()
        os.set_blocking(self._out, False)
        os.set_blocking(self._in, False)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        try:
            _write_all(self._out, _bundle(config, scratch), deadline)
            ready = self._receive(deadline, 1 << 20)
        except (SandboxTimeout, SandboxDied) as exc:
            detail = self._stderr_tail() or str(exc) or type(exc).__name__
            self.kill()
            raise SandboxStartError(f"the {config.tier} sandbox did not start: {detail}") from exc
        if ready.get("op") != "ready":
            self.kill()
            raise SandboxStartError(
                f"the {config.tier} sandbox refused to start: {ready.get('error', ready)}"
            )
        self.info = ready

    @property
    def pid(self) -> int:
        """Host pid of the launched process (``bwrap`` or the interpreter)."""
        return self.proc.pid

    @property
    def alive(self) -> bool:
        """Whether the process is running and has not been killed by the host."""
        return not self._closed and self.proc.poll() is None

    def _stderr_tail(self) -> str:
        try:
            self._stderr.seek(0)
            text = self._stderr.read()[-2000:].decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        return " ".join(text.split())

    def _receive(self, deadline: float, max_bytes: int) -> dict[str, Any]:
        size = struct.unpack(">I", _read_exact(self._in, 4, deadline))[0]
        if size > max_bytes:
            raise SandboxDied(f"the sandbox sent {size} bytes, more than {max_bytes}")
        try:
            message = json.loads(_read_exact(self._in, size, deadline).decode("utf-8"))
        except ValueError as exc:
            raise SandboxDied("the sandbox sent something that is not JSON") from exc
        if not isinstance(message, dict):
            raise SandboxDied("the sandbox sent something that is not an answer")
        return message

    def request(self, message: dict[str, Any], timeout_s: float, max_bytes: int) -> dict[str, Any]:
        """Send one request and wait for its answer.

        Args:
            message: The request.
            timeout_s: Wall-clock deadline for the answer, from now.
            max_bytes: Largest answer accepted.

        Raises:
            SandboxTimeout: No answer in time (the caller must kill the process).
            SandboxDied: The process is gone or answered nonsense (likewise).
        """
        if not self.alive:
            raise SandboxDied("the sandbox process is not running")
        deadline = time.monotonic() + timeout_s
        _write_all(self._out, encode_frame(message), deadline)
        return self._receive(deadline, max_bytes)

    def kill(self) -> None:
        """Kill the process and everything in its session; remove its scratch directory."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._cleanup_files()

    def _cleanup_files(self) -> None:
        with contextlib.suppress(OSError):
            self._stderr.close()
        if self._host_scratch is not None:
            for _ in range(3):
                shutil.rmtree(self._host_scratch, ignore_errors=True)
                if not os.path.exists(self._host_scratch):
                    break
                time.sleep(0.05)


def start_process(config: SandboxConfig) -> concurrent.futures.Future[SandboxProcess]:
    """Launch a sandbox process on the spawner thread; the future holds it once ready."""
    return spawn_in_background(lambda: SandboxProcess(config))


@contextlib.contextmanager
def running(config: SandboxConfig) -> Iterator[SandboxProcess]:
    """A sandbox process for the duration of a ``with`` block (probes, benchmarks)."""
    proc = start_process(config).result()
    try:
        yield proc
    finally:
        proc.kill()
