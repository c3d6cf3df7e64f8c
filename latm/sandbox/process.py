"""Host side of one sandbox process: launch, framed requests with deadlines, kill.

A sandbox process is a fresh interpreter (one the sandbox user can read, not
necessarily the host's) started with an empty environment, in its own session,
as an unprivileged uid when the host is root (a uid of its own per sandbox
process unless one fixed uid is configured: no sandbox can then reach another's
processes, limits or task count); for the ``bwrap`` tier inside bubblewrap with
every namespace unshared and only the interpreter, the system libraries, its
own ``/proc`` and a size-capped scratch tmpfs visible. The host talks to it over
a unix socket pair (its stdin and stdout), which also carries the file
descriptors of per-call pipes (see :mod:`latm.sandbox.server`). The host writes a bundle (the
stdlib-only modules :mod:`~latm.sandbox.runner`, :mod:`~latm.sandbox.confine`,
:mod:`~latm.sandbox.server` and their configuration) to its stdin; the process
confines itself and answers ``ready``. No file of this package needs to be
readable by the sandbox user.

Every process is launched from one long-lived spawner thread: the kernel's
parent-death signal, which ends sandboxes whose host died, is tied to the thread
that forked them.
"""

from __future__ import annotations

import array
import concurrent.futures
import contextlib
import itertools
import os
import re
import select
import signal
import socket
import stat
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
from latm.sandbox.server import decode_frame, encode_frame, remove_tree

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
UID_BASE = 1_800_000_000
"""First uid of the per-sandbox range (4096 x 4096 uids above it, unused by any real user)."""
_uid_counter = itertools.count()

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
        unique_uids: Give every sandbox process a uid of its own (from
            :data:`UID_BASE`) instead of ``uid``; needs a root host.
        max_tasks: ``RLIMIT_NPROC`` of a sandbox (processes and threads of
            its uid), applied with ``unique_uids`` only.
        scratch_bytes: Size of the scratch (a tmpfs on the ``bwrap`` tier; a
            quota the host enforces on the ``landlock`` tier).
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
    unique_uids: bool = False
    max_tasks: int = 64
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


def read_to_end(fd: int, deadline: float, max_bytes: int) -> tuple[bytes, str]:
    """Read a pipe until end of file, the deadline or ``max_bytes``.

    Returns:
        The data and how reading ended: ``"eof"``, ``"timeout"`` or ``"full"``.
    """
    data = bytearray()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bytes(data), "timeout"
        if not poller.poll(max(1, int(remaining * 1000) + 1)):
            continue
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            continue
        except OSError:
            return bytes(data), "eof"
        if not chunk:
            return bytes(data), "eof"
        data += chunk
        if len(data) > max_bytes:
            return bytes(data), "full"


def write_to(fd: int, data: bytes, deadline: float) -> bool:
    """Write all of ``data`` to a pipe before the deadline; ``False`` if the reader is gone."""
    os.set_blocking(fd, False)
    try:
        _write_all(fd, data, deadline)
    except (SandboxDied, SandboxTimeout):
        return False
    return True


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
        "max_tasks": config.max_tasks if config.unique_uids else None,
        "parent_pid": os.getpid() if config.tier == "landlock" else None,
    }
    bundle = {
        "order": ["latm", "latm.sandbox", *_SHIPPED],
        "packages": ["latm", "latm.sandbox"],
        "sources": sources,
        "main": "latm.sandbox.server",
        "config": server_config,
    }
    return encode_frame(bundle)


def allocate_uid() -> int:
    """A uid for one more sandbox process: unique within this host process, spread by pid."""
    return UID_BASE + (os.getpid() % 4096) * 4096 + next(_uid_counter) % 4096


def tree_usage(path: str, max_entries: int = 10_000) -> tuple[int, int]:
    """``(bytes, entries)`` of a directory tree, walked without recursion.

    Stops counting at ``max_entries`` (the caller treats that as over quota);
    an unreadable part counts as ``max_entries``.
    """
    total = 0
    entries = 0
    stack = [path]
    try:
        while stack:
            with os.scandir(stack.pop()) as listing:
                for entry in listing:
                    entries += 1
                    if entries >= max_entries:
                        return total, entries
                    info = entry.stat(follow_symlinks=False)
                    total += info.st_blocks * 512
                    if stat.S_ISDIR(info.st_mode):
                        stack.append(entry.path)
    except FileNotFoundError:
        pass
    except OSError:
        return total, max_entries
    return total, entries


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
    argv += ["--dev", "/dev", "--proc", "/proc"]
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
        self.last_used = time.monotonic()
        self.killed_because: str | None = None
        self._closed = False
        self._fds: list[int] = []
        self._host_scratch: str | None = None
        self.uid = config.uid
        gid = config.gid
        if config.unique_uids and config.uid is not None:
            self.uid = gid = allocate_uid()
        if config.tier == "bwrap":
            scratch = _BWRAP_SCRATCH
            cwd = "/"
        else:
            scratch = self._host_scratch = tempfile.mkdtemp(prefix="latm-sandbox-")
            if self.uid is not None:
                os.chown(scratch, self.uid, gid if gid is not None else -1)
            os.chmod(scratch, 0o700)
            cwd = scratch
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - lives with the process
        drop: dict[str, Any] = {}
        if self.uid is not None:
            drop = {"user": self.uid, "group": gid, "extra_groups": []}
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = subprocess.Popen(
                launch_argv(config),
                stdin=theirs.fileno(),
                stdout=theirs.fileno(),
                stderr=self._stderr,
                cwd=cwd,
                env={},
                close_fds=True,
                start_new_session=True,
                **drop,
            )
        except OSError as exc:
            self._sock.close()
            self._cleanup_files()
            raise SandboxStartError(f"cannot launch {config.tier} sandbox: {exc}") from exc
        finally:
            theirs.close()
        self._sock.setblocking(False)
        self._fd = self._sock.fileno()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        try:
            _write_all(self._fd, _bundle(config, scratch), deadline)
            ready = self.receive(deadline, 1 << 20)
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
    def scratch(self) -> str | None:
        """The host directory that is this sandbox's scratch (``landlock`` tier)."""
        return self._host_scratch

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

    def _recv_exact(self, size: int, deadline: float) -> bytes:
        data = bytearray()
        space = socket.CMSG_SPACE(16 * 4)
        while len(data) < size:
            try:
                chunk, ancillary, _flags, _addr = self._sock.recvmsg(
                    min(size - len(data), 1 << 20), space, socket.MSG_CMSG_CLOEXEC
                )
            except (BlockingIOError, InterruptedError):
                _wait(self._fd, select.POLLIN, deadline)
                continue
            except OSError as exc:
                raise SandboxDied(f"cannot read from the sandbox: {exc}") from exc
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                    self._fds.extend(fds)
            if not chunk:
                raise SandboxDied(self._death("the sandbox process closed its socket"))
            data += chunk
        return bytes(data)

    def _death(self, what: str) -> str:
        return f"{what}: {self.killed_because}" if self.killed_because else what

    def receive(self, deadline: float, max_bytes: int) -> dict[str, Any]:
        """Read one frame (and any file descriptors sent with it).

        Raises:
            SandboxTimeout: Nothing complete before the deadline.
            SandboxDied: The socket closed, or the frame is too large, not JSON,
                nested too deeply or not an object.
        """
        size = struct.unpack(">I", self._recv_exact(4, deadline))[0]
        if size > max_bytes:
            raise SandboxDied(f"the sandbox sent {size} bytes, more than {max_bytes}")
        message = decode_frame(self._recv_exact(size, deadline))
        if message is None:
            raise SandboxDied("the sandbox sent something that is not an answer")
        return message

    def take_fds(self) -> list[int]:
        """The file descriptors received so far (the caller owns and closes them)."""
        fds, self._fds = self._fds, []
        return fds

    def send(self, message: dict[str, Any], deadline: float) -> None:
        """Write one frame.

        Raises:
            SandboxTimeout: The socket stayed full until the deadline.
            SandboxDied: The process is gone.
        """
        if not self.alive:
            raise SandboxDied(self._death("the sandbox process is not running"))
        _write_all(self._fd, encode_frame(message), deadline)

    def pending(self) -> bool:
        """Whether the process sent something nobody asked for (it is then out of step)."""
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        return bool(poller.poll(0)) or bool(self._fds)

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
        deadline = time.monotonic() + timeout_s
        self.send(message, deadline)
        return self.receive(deadline, max_bytes)

    def terminate(self, because: str) -> None:
        """Kill the process (from another thread); its owner then sees it die and cleans up."""
        if not self.killed_because:
            self.killed_because = because
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.proc.kill()

    def kill(self, because: str | None = None) -> None:
        """Kill the process and everything in its session; remove its scratch directory.

        Args:
            because: Why, when the host kills it for a reason of its own (a quota).
        """
        if because and not self.killed_because:
            self.killed_because = because
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            self._sock.close()
        for fd in self.take_fds():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._cleanup_files()

    def _cleanup_files(self) -> None:
        with contextlib.suppress(OSError):
            self._stderr.close()
        if self._host_scratch is not None:
            for _ in range(3):
                if remove_tree(self._host_scratch):
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
