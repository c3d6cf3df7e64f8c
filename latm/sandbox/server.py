"""The process inside the sandbox: confines itself, then serves calls of generated tools.

Standard library only, compatible with Python 3.8 and later: the host ships
this module's source (with :mod:`latm.sandbox.confine` and
:mod:`latm.sandbox.runner`) into a fresh interpreter started as an unprivileged
user, optionally inside bubblewrap (see :mod:`latm.sandbox.process`).

Start-up, before any tool code exists in the process: move the control pipe
away from fds 0-2 (which become ``/dev/null``), die with the host, become
non-dumpable, lower rlimits, import the usual standard library modules, stack a
Landlock domain (read-only interpreter and libraries, read-write scratch
directory, no TCP, signals scoped) and load the base seccomp filter. Then it
answers length-prefixed JSON requests on the control pipe:

* ``fork`` (the zygote, used for verification): a fresh child per call. The
  zygote forks it ahead of time (after answering the previous call); the child
  takes its own session, an emptied scratch sub-directory, a nested Landlock
  domain and the call filter (no fork, no signals), then waits for its job on
  a pipe, lowers its rlimits to the call's, runs the call and writes its result
  to another pipe. The zygote answers with the verdict (killing the child at
  the wall deadline), then kills and reaps the child's process group before it
  forks the next one.
* ``load`` then ``call`` (a warm worker dedicated to one tool version): load
  the call filter and limits in this very process, execute the module once,
  then evaluate calls against it. A process that loaded a tool never forks
  again and never serves another tool.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import select
import shutil
import signal
import struct
import sys
import time
from typing import Any

from latm.sandbox import confine, runner

MIB = 1024 * 1024
PRELOAD = (
    "re",
    "math",
    "cmath",
    "json",
    "itertools",
    "collections",
    "functools",
    "operator",
    "datetime",
    "calendar",
    "string",
    "textwrap",
    "random",
    "heapq",
    "bisect",
    "statistics",
    "fractions",
    "decimal",
    "typing",
    "dataclasses",
    "copy",
    "enum",
    "unicodedata",
    "difflib",
    "contextlib",
    "io",
)
"""Standard library modules imported before confinement, so calls start fast."""

RESULT_OVERHEAD = 65536


def result_cap(max_output_bytes: int) -> int:
    """Largest JSON result, in bytes, a call capped at ``max_output_bytes`` can produce."""
    # value and stdout are capped in characters; JSON escapes a character in
    # at most 12 bytes (a surrogate pair), the error line is at most 2000 chars.
    return 24 * max_output_bytes + RESULT_OVERHEAD


def encode_frame(message: dict[str, Any]) -> bytes:
    """A message as one frame: 4-byte big-endian length, then UTF-8 JSON."""
    data = json.dumps(message).encode("utf-8")
    return struct.pack(">I", len(data)) + data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = os.read(fd, size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


class Server:
    """The request loop of one sandbox process."""

    def __init__(self, config: dict[str, Any], ctl_in: int, ctl_out: int) -> None:
        """Keep the configuration and the control pipe.

        Args:
            config: The host's configuration (see :mod:`latm.sandbox.process`).
            ctl_in: Fd the host's requests arrive on.
            ctl_out: Fd the answers go to.
        """
        self.config = config
        self.ctl_in = ctl_in
        self.ctl_out = ctl_out
        self.scratch = str(config["scratch"])
        self.abi = int(config["landlock_abi"])
        self.call_filter = bytes.fromhex(config["call_filter"])
        self.file_bytes = int(config["file_bytes"])
        self.open_files = int(config["open_files"])
        self.ro_rules: list[tuple[str, int]] = []
        self.tool: runner.LoadedTool | None = None
        self.forks = 0
        self.pid = os.getpid()
        self.unreaped = 0
        self.waiting: tuple[int, int, int] | None = None
        self.generation = 0
        self.workdir = os.path.join(self.scratch, "call-0")

    # -- start-up -----------------------------------------------------------

    def setup(self) -> None:
        """Confine this process; nothing here may run tool code."""
        parent = self.config.get("parent_pid")
        if parent:
            confine.die_with_parent(signal.SIGKILL)
            if os.getppid() != int(parent):
                os._exit(0)
        confine.not_dumpable()
        os.environ.clear()  # bwrap's PWD, the interpreter's locale coercion: tools see nothing
        confine.set_limits(
            memory_bytes=int(self.config["server_memory_mb"]) * MIB,
            file_bytes=self.file_bytes,
            open_files=self.open_files,
        )
        os.chdir(self.scratch)
        for name in PRELOAD:
            with contextlib.suppress(ImportError):
                __import__(name)
        gc.collect()
        gc.freeze()  # forked children then leave these objects' pages shared
        paths = [str(p) for p in self.config["ro_paths"]]
        paths += [p for p in sys.path if p and os.path.isdir(p)]
        self.ro_rules = [(p, confine.READ_ONLY) for p in paths]
        self.ro_rules += [(str(f), confine.FS_READ_FILE) for f in self.config["ro_files"]]
        self.ro_rules.append(
            (os.devnull, confine.FS_READ_FILE | confine.FS_WRITE_FILE | confine.FS_TRUNCATE)
        )
        confine.landlock_restrict(self.abi, [*self.ro_rules, (self.scratch, confine.READ_WRITE)])
        confine.load_seccomp(bytes.fromhex(self.config["base_filter"]))

    def ready(self) -> dict[str, Any]:
        """The start-up report sent to the host."""
        return {
            "op": "ready",
            "pid": os.getpid(),
            "uid": os.getuid(),
            "python": ".".join(str(part) for part in sys.version_info[:3]),
            "landlock_abi": self.abi,
        }

    # -- loop ---------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        """Write one answer frame to the host."""
        _write_all(self.ctl_out, encode_frame(message))

    def loop(self) -> None:
        """Answer requests until the host closes the control pipe."""
        while True:
            header = _read_exact(self.ctl_in, 4)
            if header is None:
                return
            body = _read_exact(self.ctl_in, struct.unpack(">I", header)[0])
            if body is None:
                return
            request = json.loads(body.decode("utf-8"))
            op = request.get("op")
            if op == "fork" and self.tool is None:
                answer = self.fork_call(request)
            elif op == "load" and self.tool is None and self.forks == 0:
                answer = self.load(request)
            elif op == "call" and self.tool is not None:
                answer = self.warm_call(request)
            elif op == "ping":
                answer = {"op": "pong"}
            else:
                answer = {"op": "refused", "error": f"unexpected request {op!r}"}
            self.send(answer)
            if self.unreaped:
                self._kill(self.unreaped)
                os.waitpid(self.unreaped, 0)
                self.unreaped = 0
            if op == "fork" and self.waiting is None:
                self.waiting = self._prefork()  # off the next call's critical path

    # -- fork per call (verification) ----------------------------------------

    def fork_call(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run one call in a forked, further-confined child and judge how it ended."""
        limits = request["limits"]
        timeout = float(limits["timeout_s"])
        cap = int(limits["max_output_bytes"])
        child, self.waiting = self.waiting or self._prefork(), None
        pid, job_fd, result_fd = child
        started = time.monotonic()
        job = {"code": request["code"], "call": request["call"], "limits": limits}
        with contextlib.suppress(OSError):  # a child that died is judged below
            _write_all(job_fd, encode_frame(job))
        os.close(job_fd)
        data, verdict, status = self._collect(result_fd, pid, started, timeout, result_cap(cap))
        if verdict is None:
            verdict = self._parse(data)
        if verdict is None:
            if status is None:  # no result and still running: never left behind
                self._kill(pid)
                status = os.waitpid(pid, 0)[1]
            verdict = self._judge_exit(status)
        elif status is None:
            self.unreaped = pid  # killed and reaped right after the answer is sent
        verdict["op"] = "result"
        verdict["duration_ms"] = (time.monotonic() - started) * 1000
        return verdict

    def _prefork(self) -> tuple[int, int, int]:
        """Fork the next call's child, which confines itself and waits for its job.

        Returns:
            ``(pid, job fd, result fd)``.
        """
        self.forks += 1
        workdir = self._clean_workdir()
        job_read, job_write = os.pipe()
        result_read, result_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            exit_code = 70
            try:
                for fd in (job_write, result_read, self.ctl_in, self.ctl_out):
                    os.close(fd)
                self._child(workdir, job_read, result_write)
                exit_code = 0
            finally:
                os._exit(exit_code)
        os.close(job_read)
        os.close(result_write)
        return pid, job_write, result_read

    def _clean_workdir(self) -> str:
        """The calls' working directory, emptied of whatever the last call left.

        Reused while calls leave it empty (creating and removing a directory per
        call is slow on some file systems); a directory that cannot be emptied
        is abandoned for a new one.
        """
        workdir = self.workdir
        try:
            os.chmod(workdir, 0o700)
            with os.scandir(workdir) as entries:
                dirty = any(True for _ in entries)
        except OSError:
            dirty = True
        if dirty:
            shutil.rmtree(workdir, ignore_errors=True)
            if os.path.lexists(workdir):
                self.generation += 1
                workdir = self.workdir = os.path.join(self.scratch, f"call-{self.generation}")
            os.mkdir(workdir, 0o700)
        return workdir

    def _child(self, workdir: str, job_fd: int, out: int) -> None:
        write_all = _write_all
        os.setsid()
        confine.die_with_parent(signal.SIGKILL)
        if os.getppid() != self.pid:
            os._exit(0)
        os.chdir(workdir)
        confine.set_limits(file_bytes=self.file_bytes, open_files=self.open_files)
        confine.landlock_restrict(self.abi, [*self.ro_rules, (workdir, confine.READ_WRITE)])
        confine.load_seccomp(self.call_filter)
        header = _read_exact(job_fd, 4)
        body = _read_exact(job_fd, struct.unpack(">I", header)[0]) if header else None
        if body is None:  # the zygote is gone or never needed this child
            os._exit(0)
        os.close(job_fd)
        job = json.loads(body.decode("utf-8"))
        limits = job["limits"]
        confine.set_limits(
            memory_bytes=int(limits["memory_mb"]) * MIB,
            cpu_seconds=math.ceil(confine.cpu_seconds_used() + float(limits["timeout_s"])) + 1,
        )
        # From here on, tool code runs in this process.
        result = runner.execute(job["code"], job["call"], int(limits["max_output_bytes"]))
        write_all(out, runner.dumps(result).encode("utf-8"))
        os.close(out)  # EOF now: the zygote answers without waiting for the exit

    def _collect(
        self, fd: int, pid: int, started: float, timeout: float, max_bytes: int
    ) -> tuple[bytes, dict[str, Any] | None, int | None]:
        """Read the child's result, killing it at the deadline.

        Returns once the result pipe is closed and either the child has exited
        (its wait status is returned) or it left a well-formed result (status
        ``None``: the caller reaps it). Waits on the pipe and on a pidfd of the
        child (Linux 5.3+, Python 3.9+), else polls ``waitpid``.
        """
        deadline = started + timeout
        data = bytearray()
        verdict: dict[str, Any] | None = None
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        pidfd = -1
        with contextlib.suppress(AttributeError, OSError):
            pidfd = os.pidfd_open(pid)  # type: ignore[attr-defined,unused-ignore]
            poller.register(pidfd, select.POLLIN)
        pipe_open = True
        status: int | None = None
        pause = 0.0001
        try:
            while pipe_open or status is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    verdict = self._timeout(timeout)
                    break
                events = []
                if pipe_open or pidfd >= 0:
                    events = poller.poll(max(1, math.ceil(remaining * 1000)))
                for ready, _mask in events:
                    if ready == fd:
                        chunk = os.read(fd, 65536)
                        if not chunk:
                            pipe_open = False
                            poller.unregister(fd)
                        data += chunk
                    elif ready == pidfd:
                        poller.unregister(pidfd)
                        os.close(pidfd)
                        pidfd = -1
                if len(data) > max_bytes:
                    verdict = {
                        "status": "invalid",
                        "error": f"the tool's result is larger than {max_bytes} bytes",
                    }
                    break
                if status is None and (pidfd < 0 or not pipe_open):
                    reaped, code = os.waitpid(pid, os.WNOHANG)
                    if reaped:
                        status = code
                    elif not pipe_open and self._parse(bytes(data)) is not None:
                        break  # a complete result: answer first, reap after
                    elif pidfd < 0 and not pipe_open:  # no pidfd: poll for the exit
                        time.sleep(pause)
                        pause = min(pause * 2, 0.002)
        finally:
            os.close(fd)
            if pidfd >= 0:
                os.close(pidfd)
        if verdict is not None and status is None:
            self._kill(pid)
            status = os.waitpid(pid, 0)[1]
        return bytes(data), verdict, status

    @staticmethod
    def _timeout(seconds: float) -> dict[str, Any]:
        return {"status": "timeout", "error": f"the tool did not finish within {seconds:g} s"}

    @staticmethod
    def _kill(pid: int) -> None:
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(OSError):
                kill(pid, signal.SIGKILL)

    @staticmethod
    def _parse(data: bytes) -> dict[str, Any] | None:
        try:
            payload = json.loads(data.decode("utf-8"))
        except ValueError:
            return None
        if not isinstance(payload, dict) or payload.get("status") not in ("ok", "error"):
            return None
        return {
            "status": payload["status"],
            "value": payload.get("value"),
            "error": payload.get("error"),
            "stdout": payload.get("stdout") or "",
        }

    @staticmethod
    def _judge_exit(status: int) -> dict[str, Any]:
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            if number == signal.SIGXCPU:
                return {"status": "timeout", "error": "the tool exceeded its CPU time limit"}
            how = "signal " + _signal_name(number)
        else:
            code = os.WEXITSTATUS(status)
            if code == 0:
                return {"status": "invalid", "error": "the tool process wrote no result"}
            how = f"exit status {code}"
        return {"status": "killed", "error": f"the tool process died ({how})"}

    # -- warm worker (cached tools) ------------------------------------------

    def load(self, request: dict[str, Any]) -> dict[str, Any]:
        """Confine this process for tool code for good, then execute the tool's module."""
        limits = request["limits"]
        confine.set_limits(
            memory_bytes=int(limits["memory_mb"]) * MIB,
            file_bytes=self.file_bytes,
            open_files=self.open_files,
        )
        budget = int(request.get("cpu_budget_s") or 3600)
        used = confine.cpu_seconds_used()
        confine.set_limits(cpu_seconds=math.ceil(used) + budget)
        confine.load_seccomp(self.call_filter)
        # From here on, tool code runs in this process.
        self.tool = runner.LoadedTool(request["code"])
        return {"op": "loaded"}

    def warm_call(self, request: dict[str, Any]) -> dict[str, Any]:
        """Evaluate one call against the loaded tool."""
        assert self.tool is not None
        started = time.monotonic()
        timeout = float(request["timeout_s"])
        with contextlib.suppress(OSError, ValueError):
            confine.set_soft_cpu_limit(math.ceil(confine.cpu_seconds_used() + timeout) + 1)
        result = self.tool.call(str(request["call"]), int(request["max_output_bytes"]))
        result["op"] = "result"
        result["duration_ms"] = (time.monotonic() - started) * 1000
        return result


def serve(config: dict[str, Any]) -> None:
    """Entry point in the sandbox: confine, report ready, answer requests."""
    ctl_in = os.dup(0)
    ctl_out = os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    server = Server(config, ctl_in, ctl_out)
    try:
        server.setup()
    except BaseException as exc:
        _write_all(ctl_out, encode_frame({"op": "error", "error": f"{type(exc).__name__}: {exc}"}))
        os._exit(2)
    server.send(server.ready())
    server.loop()
    os._exit(0)
