"""``latm local start|stop|status``: one ``llama-server`` serving both models.

The pinned llama.cpp runs in *router mode*: one process on 127.0.0.1 listens
on the configured port and keeps one child instance per model (also on
127.0.0.1, on ports it picks), routing each OpenAI-style request by its
``model`` field. Both models are loaded at start-up. The router and its
children run in their own session (process group), recorded in a pid file,
so ``stop`` can end them all and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latm.local.installer import missing_parts
from latm.local.paths import LocalError, LocalPaths, port_from_env
from latm.local.smoke import (
    ENV_SERVER_ARGS,
    HOST,
    SAFE_OPTIONS,
    default_threads,
    probe_with_fallback,
    record_options,
    server_env,
    server_options,
)
from latm.local.spec import MAKER_MODEL, MODELS, SERVER_BINARY, USER_MODEL, ModelSpec

ENV_LOCAL_PARALLEL = "LATM_LOCAL_PARALLEL"
"""Environment variable setting how many requests each model serves at once (default 1)."""

START_TIMEOUT_S = 180.0
"""How long ``start`` waits for both models to be loaded."""

STOP_TIMEOUT_S = 20.0
"""How long ``stop`` waits after SIGTERM before it kills the process group."""

PROMPT_CACHE_MIB = 256
"""Host-memory prompt cache per model (llama.cpp's default is 8 GiB)."""

_STARTED: dict[int, subprocess.Popen[bytes]] = {}
"""Servers this process started, by pid: kept so they are reaped, never killed at exit."""


@dataclass(frozen=True, slots=True)
class LocalEndpoints:
    """OpenAI-compatible endpoints of the local maker and user models.

    Attributes:
        maker_base_url: Base URL for the maker (``.../v1``).
        maker_model: Model name to send as the maker.
        user_base_url: Base URL for the user.
        user_model: Model name to send as the user.
    """

    maker_base_url: str
    maker_model: str
    user_base_url: str
    user_model: str


class ServerFailed(LocalError):
    """The server died or a model failed to load during start-up (not a timeout)."""


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """What ``status`` found.

    Attributes:
        running: Whether the recorded server process is alive.
        ready: Whether it answers and has every model loaded.
        pid: The recorded pid, if any.
        port: The recorded port, if any.
        models: Each model name the server reports, with its status.
        detail: A one-line explanation for humans.
    """

    running: bool
    ready: bool
    pid: int | None
    port: int | None
    models: dict[str, str]
    detail: str


def default_parallel() -> int:
    """Requests each model serves at once: ``$LATM_LOCAL_PARALLEL`` (1-8), else 1.

    More than one slot lets llama.cpp batch concurrent requests (such as the
    maker's candidates); each slot gets the model's full context window.

    Raises:
        LocalError: If the variable is set to something other than 1-8.
    """
    raw = os.environ.get(ENV_LOCAL_PARALLEL, "").strip()
    if not raw:
        return 1
    if not raw.isdigit() or not 1 <= int(raw) <= 8:
        raise LocalError(f"{ENV_LOCAL_PARALLEL}={raw!r} is not a number from 1 to 8.")
    return int(raw)


def preset_text(
    paths: LocalPaths,
    threads: int,
    models: tuple[ModelSpec, ...] = MODELS,
    parallel: int = 1,
) -> str:
    """The router's models preset (INI): one section per model, loaded at start-up."""
    lines = [
        "; written by `latm local start`; regenerated at every start",
        "version = 1",
        "",
        "[*]",
        f"threads = {threads}",
        f"threads-batch = {threads}",
        f"parallel = {parallel}",
        f"cache-ram = {PROMPT_CACHE_MIB}",
        "",
    ]
    for model in models:
        lines += [
            f"[{model.name}]",
            f"model = {paths.model_path(model)}",
            f"ctx-size = {model.ctx_size * parallel}",
            "load-on-startup = true",
            "",
        ]
    return "\n".join(lines)


def server_command(paths: LocalPaths, port: int, options: Sequence[str] = ()) -> list[str]:
    """The command line that starts the router on ``127.0.0.1:port``.

    ``options`` (the recorded safe options, ``$LATM_LOCAL_SERVER_ARGS``) go last:
    the router passes its own options on to every model instance.
    """
    return [
        str(paths.server_bin),
        "--models-preset",
        str(paths.preset_file),
        "--models-max",
        str(len(MODELS)),
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-webui",
        *options,
    ]


def base_url(port: int) -> str:
    """The OpenAI-compatible base URL of the server on ``port``."""
    return f"http://{HOST}:{port}/v1"


# --- pid file -----------------------------------------------------------------------


def read_pid_file(paths: LocalPaths) -> dict[str, Any] | None:
    """The recorded server (``pid``, ``port``, ...), or ``None`` if absent or unreadable."""
    try:
        data = json.loads(paths.pid_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
        return None
    if not isinstance(data.get("port"), int):
        return None
    return data


def write_pid_file(paths: LocalPaths, pid: int, port: int) -> None:
    """Record a started server."""
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "pid": pid,
        "port": port,
        "binary": str(paths.server_bin),
        "started_at": time.time(),
    }
    tmp = paths.pid_file.with_name(paths.pid_file.name + ".tmp")
    tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
    tmp.replace(paths.pid_file)


def pid_is_server(pid: int, binary: Path | None = None) -> bool:
    """Whether ``pid`` is alive and (where ``/proc`` tells) is a ``llama-server``.

    Guards against a stale pid file whose pid was reused by another program.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc here: trust the live pid
    argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    if not argv:
        return False  # a zombie
    if binary is not None and str(binary) in argv[:2]:
        return True  # argv[1]: the server run through an interpreter (tests' fake server)
    return Path(argv[0]).name == SERVER_BINARY


# --- HTTP ---------------------------------------------------------------------------


def _get_json(url: str, timeout: float = 3.0) -> Any:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


def model_states(port: int, timeout: float = 3.0) -> dict[str, dict[str, Any]] | None:
    """Each model's status object from the router's ``/models``; ``None`` if it does not answer."""
    try:
        payload = _get_json(f"http://{HOST}:{port}/models", timeout)
    except (OSError, ValueError, urllib.error.URLError):
        return None
    states: dict[str, dict[str, Any]] = {}
    for item in payload.get("data", []) if isinstance(payload, dict) else []:
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            status = item.get("status")
            states[item["id"]] = status if isinstance(status, dict) else {}
    return states


def readiness(states: dict[str, dict[str, Any]] | None) -> tuple[bool, str | None]:
    """Whether every pinned model is loaded, and the failure (if one failed to load)."""
    if states is None:
        return False, None
    ready = True
    for model in MODELS:
        status = states.get(model.name)
        if status is None:
            return False, f"the server does not list {model.name}"
        if status.get("failed"):
            return False, f"{model.name} failed to load (exit {status.get('exit_code')})"
        if status.get("value") not in ("loaded", "sleeping"):
            ready = False
    return ready, None


def port_is_free(port: int) -> bool:
    """Whether nothing listens on ``127.0.0.1:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --- start / stop / status ----------------------------------------------------------


def status(paths: LocalPaths | None = None) -> ServerStatus:
    """Report whether the recorded server runs and has both models loaded."""
    paths = paths or LocalPaths.from_env()
    record = read_pid_file(paths)
    if record is None:
        return ServerStatus(False, False, None, None, {}, "not running")
    pid, port = int(record["pid"]), int(record["port"])
    if not pid_is_server(pid, paths.server_bin):
        return ServerStatus(False, False, pid, port, {}, "not running (stale pid file)")
    states = model_states(port)
    models = {name: str(s.get("value", "?")) for name, s in (states or {}).items()}
    ready, failure = readiness(states)
    if failure:
        detail = f"running, but {failure}"
    elif ready:
        detail = f"running and ready on {base_url(port)}"
    elif states is None:
        detail = "running, not answering yet"
    else:
        detail = "running, loading models"
    return ServerStatus(True, ready, pid, port, models, detail)


def wait_ready(
    port: int,
    *,
    timeout: float,
    alive: Callable[[], bool],
    log: Path,
    interval: float = 0.5,
) -> None:
    """Poll the server until every model is loaded.

    Raises:
        LocalError: If the process dies, a model fails to load, or ``timeout`` passes;
            the message ends with the tail of the server log.
    """
    deadline = time.monotonic() + timeout
    while True:
        if not alive():
            raise ServerFailed(
                f"The local server exited during start-up. Last lines of {log}:\n{_log_tail(log)}"
            )
        states = model_states(port, timeout=min(3.0, interval * 4))
        ready, failure = readiness(states)
        if ready:
            return
        if failure:
            raise ServerFailed(f"The local server runs but {failure}. See {log}:\n{_log_tail(log)}")
        if time.monotonic() >= deadline:
            raise LocalError(
                f"The local server was not ready after {timeout:.0f} s. See {log}:\n"
                f"{_log_tail(log)}"
            )
        time.sleep(interval)


def start(
    paths: LocalPaths | None = None,
    *,
    port: int | None = None,
    timeout: float = START_TIMEOUT_S,
    threads: int | None = None,
    notify: Callable[[str], None] | None = None,
) -> tuple[int, bool]:
    """Start the local server unless it already runs; wait until both models are loaded.

    Args:
        paths: Cache layout; default from the environment.
        port: Port on 127.0.0.1; default ``$LATM_LOCAL_PORT`` or 8723.
        timeout: Seconds to wait for readiness.
        threads: CPU threads per model; default :func:`default_threads`.
        notify: Called with what happens when start-up fails and is diagnosed or
            retried with the safe options.

    Returns:
        ``(port, started)``: the port it serves on, and whether this call started it.

    Raises:
        LocalError: If the install is missing, the port is taken by something else,
            or the server does not become ready (it is stopped again then). A
            crash is diagnosed by serving each model alone, and retried once with
            the safe options (:data:`~latm.local.smoke.SAFE_OPTIONS`) if they serve.
    """
    paths = paths or LocalPaths.from_env()
    missing = missing_parts(paths)
    if missing:
        raise LocalError(
            f"The local models are not installed ({', '.join(missing)} missing in {paths.root}). "
            "Run `latm local install` first: it builds the server and fetches about 1.6 GB."
        )
    wanted_port = port if port is not None else port_from_env()

    current = status(paths)
    if current.running and current.port is not None:
        if port is not None and current.port != port:
            raise LocalError(
                f"The local server already runs on port {current.port}; "
                "stop it first with `latm local stop`."
            )
        wait_ready(
            current.port,
            timeout=timeout,
            alive=lambda: pid_is_server(current.pid or 0, paths.server_bin),
            log=paths.server_log,
        )
        return current.port, False
    paths.pid_file.unlink(missing_ok=True)

    if not port_is_free(wanted_port):
        raise LocalError(
            f"Port {wanted_port} on {HOST} is already in use by another program. "
            "Set LATM_LOCAL_PORT to a free port."
        )
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    paths.log_dir.mkdir(parents=True, exist_ok=True)
    preset = preset_text(paths, threads or default_threads(), parallel=default_parallel())
    paths.preset_file.write_text(preset, encoding="utf-8")
    options = server_options(paths)
    try:
        _launch(paths, wanted_port, options, timeout)
    except ServerFailed as exc:
        if not _recover(paths, exc, threads or default_threads(), notify):
            raise
        _launch(paths, wanted_port, server_options(paths), timeout)
    return wanted_port, True


def _launch(paths: LocalPaths, port: int, options: Sequence[str], timeout: float) -> None:
    """Start the router with ``options`` and wait until both models are loaded.

    Raises:
        LocalError: If it does not become ready (it is stopped again then).
    """
    cmd = server_command(paths, port, options)
    with paths.server_log.open("a", encoding="utf-8") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=paths.run_dir,
            env=server_env(paths),
            start_new_session=True,
            close_fds=True,
        )
    _STARTED[proc.pid] = proc
    write_pid_file(paths, proc.pid, port)
    try:
        wait_ready(
            port,
            timeout=timeout,
            alive=lambda: proc.poll() is None,
            log=paths.server_log,
        )
    except BaseException:
        _terminate(proc.pid, STOP_TIMEOUT_S)
        proc.poll()
        paths.pid_file.unlink(missing_ok=True)
        raise


def _recover(
    paths: LocalPaths,
    failure: ServerFailed,
    threads: int,
    notify: Callable[[str], None] | None,
) -> bool:
    """Find out why start-up failed by serving each model alone; fall back to safe options.

    The router reports a crashed model instance as "exit 1"; a model served
    alone shows the real cause (a signal, and its own log lines). If a model
    crashes with the current options and serves with the safe ones, these are
    recorded (every later start uses them) and ``True`` is returned so the
    caller starts again.

    Raises:
        LocalError: With the diagnosis, when no option set serves every model.
    """
    say = notify or (lambda _text: None)
    say("The local server failed to start; serving each model alone to find out why ...")
    log = paths.log_dir / "diagnosis.log"
    env = server_env(paths)
    fallback = False
    for model in MODELS:
        first, retry = probe_with_fallback(
            paths, model, threads=threads, env=env, log=log, timeout=START_TIMEOUT_S, tokens=4
        )
        if first.ok:
            continue
        if retry is not None and retry.ok:
            record_options(paths, SAFE_OPTIONS, first.diagnosis(log))
            say(
                f"{first.diagnosis(log)}\nWith {' '.join(SAFE_OPTIONS)} it serves: recorded, so "
                f"every start uses it from now on (slower). {ENV_SERVER_ARGS} passes other "
                "llama-server options."
            )
            fallback = True
            continue
        tried = f" It also fails with {' '.join(SAFE_OPTIONS)}." if retry is not None else ""
        raise LocalError(
            f"{failure}\nServed alone, {(retry or first).diagnosis(log)}\n{tried}"
            f"Pass other llama-server options with {ENV_SERVER_ARGS}, or rebuild with "
            "`latm local install --rebuild`."
        ) from failure
    return fallback


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child (no-op otherwise)."""
    proc = _STARTED.get(pid)
    if proc is not None:
        if proc.poll() is not None:
            del _STARTED[pid]
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _terminate(pid: int, timeout: float) -> bool:
    """SIGTERM the router (it stops its children), then SIGKILL its group if it lingers.

    Returns:
        Whether it had to kill.
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not _group_alive(pid):
            return False
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    for _ in range(50):
        _reap(pid)
        if not _group_alive(pid):
            break
        time.sleep(0.1)
    return True


def stop(paths: LocalPaths | None = None, timeout: float = STOP_TIMEOUT_S) -> str:
    """Stop the recorded server and its model instances; remove the pid file.

    Returns:
        A one-line account of what happened.
    """
    paths = paths or LocalPaths.from_env()
    record = read_pid_file(paths)
    if record is None:
        paths.pid_file.unlink(missing_ok=True)
        return "The local server is not running."
    pid = int(record["pid"])
    if not pid_is_server(pid, paths.server_bin):
        paths.pid_file.unlink(missing_ok=True)
        return "The local server is not running (removed a stale pid file)."
    killed = _terminate(pid, timeout)
    paths.pid_file.unlink(missing_ok=True)
    how = "killed after it ignored SIGTERM" if killed else "stopped"
    return f"The local server (pid {pid}) {how}."


def endpoints_for(port: int) -> LocalEndpoints:
    """The maker/user endpoints of the local server on ``port``."""
    url = base_url(port)
    return LocalEndpoints(
        maker_base_url=url,
        maker_model=MAKER_MODEL.name,
        user_base_url=url,
        user_model=USER_MODEL.name,
    )
