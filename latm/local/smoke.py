"""Prove that the built server serves: load a model, complete a few tokens, time it.

``latm local install`` ends with this smoke test for every model, and
``latm local start`` uses the same probe to diagnose a model that failed to load
in the router (which only reports "exit 1" for a crashed child): the probe runs
``llama-server`` for one model as its own child, so a crash is seen as a crash,
with its signal and the last lines of its log.

When a model crashes with the default options and serves with the
:data:`SAFE_OPTIONS`, the safe options are recorded next to the server binary
and every later start uses them (a rebuild clears the record).
:data:`ENV_SERVER_ARGS` passes extra options to every ``llama-server`` LATM
starts (the escape hatch for a CPU or build the defaults do not suit).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latm.local.paths import LocalError, LocalPaths
from latm.local.spec import ModelSpec

ENV_SERVER_ARGS = "LATM_LOCAL_SERVER_ARGS"
"""Extra ``llama-server`` options (shell syntax), added to every server LATM starts."""

SAFE_OPTIONS: tuple[str, ...] = ("--no-repack",)
"""Options that avoid the CPU-specific weight-repacking kernels (slower, but portable)."""

SMOKE_TOKENS = 32
"""Tokens each model generates in the smoke test."""

SMOKE_PROMPT = "Write a Python function that returns the sum of a list of numbers."

HOST = "127.0.0.1"

ENV_LOCAL_THREADS = "LATM_LOCAL_THREADS"
"""Environment variable overriding the number of CPU threads per model."""


@dataclass
class Probe:
    """How one model did in a probe run.

    Attributes:
        model: The model's name.
        options: The extra server options it ran with.
        ok: Whether it loaded and completed the tokens.
        load_seconds: Time until the server answered ``/health``.
        tokens: Tokens generated.
        tokens_per_second: Generation speed the server measured.
        prompt_tokens_per_second: Prompt processing speed the server measured.
        failure: What went wrong, in one sentence (``None`` when ``ok``).
        crashed: Whether the server died from a signal (a crash, not a clean error).
        log_tail: The last lines of the probe's log when it failed.
    """

    model: str
    options: list[str] = field(default_factory=list)
    ok: bool = False
    load_seconds: float = 0.0
    tokens: int = 0
    tokens_per_second: float = 0.0
    prompt_tokens_per_second: float = 0.0
    failure: str | None = None
    crashed: bool = False
    log_tail: str = ""

    def diagnosis(self, log: Path) -> str:
        """The failure and the last lines of ``log``, for an error message."""
        how = f" (options: {' '.join(self.options)})" if self.options else ""
        text = f"{self.model}{how}: {self.failure}"
        if self.log_tail:
            text += f"\nLast lines of {log}:\n{self.log_tail}"
        return text


def extra_server_args(env: Mapping[str, str] | None = None) -> list[str]:
    """The options in ``$LATM_LOCAL_SERVER_ARGS`` (shell syntax), split.

    Raises:
        LocalError: If the value cannot be split (an unclosed quote).
    """
    raw = (os.environ if env is None else env).get(ENV_SERVER_ARGS, "").strip()
    try:
        return shlex.split(raw)
    except ValueError as exc:
        raise LocalError(f"{ENV_SERVER_ARGS}={raw!r} cannot be read: {exc}.") from exc


def describe_exit(code: int) -> str:
    """``exit 1``, or ``crashed with SIGSEGV (Segmentation fault)`` for a signal."""
    if code >= 0:
        return f"exited with status {code}"
    try:
        sig = signal.Signals(-code)
    except ValueError:
        return f"was killed by signal {-code}"
    return f"crashed with {sig.name} ({signal.strsignal(sig) or sig.name})"


# --- the recorded safe options ------------------------------------------------------


def safe_options_file(paths: LocalPaths) -> Path:
    """Where the options a crash forced are recorded (next to the binary)."""
    return paths.bin_dir / "safe-options.json"


def recorded_options(paths: LocalPaths) -> list[str]:
    """The options recorded after a crash of the defaults (empty if none)."""
    try:
        data = json.loads(safe_options_file(paths).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    options = data.get("options") if isinstance(data, dict) else None
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        return []
    return list(options)


def record_options(paths: LocalPaths, options: Sequence[str], reason: str) -> None:
    """Remember that this build needs ``options`` (and why)."""
    paths.bin_dir.mkdir(parents=True, exist_ok=True)
    safe_options_file(paths).write_text(
        json.dumps({"options": list(options), "reason": reason}, indent=2) + "\n",
        encoding="utf-8",
    )


def server_options(paths: LocalPaths) -> list[str]:
    """Options every server start adds: the recorded safe ones, then ``$LATM_LOCAL_SERVER_ARGS``."""
    return recorded_options(paths) + extra_server_args()


# --- one probe ----------------------------------------------------------------------


def free_port() -> int:
    """A port on ``127.0.0.1`` that nothing listens on now (the system picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def is_healthy(port: int, timeout: float = 3.0) -> bool:
    """Whether the server on ``port`` answers ``/health`` with 200."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=timeout) as response:
            return int(response.status) == 200
    except (OSError, ValueError, urllib.error.URLError):
        return False


def default_threads() -> int:
    """CPU threads per model: ``$LATM_LOCAL_THREADS``, else one less than the usable cores (1-8).

    llama.cpp's threads wait for each other by spinning: when anything else
    needs a core (the sandbox, the other model, another program), a model using
    every core slows down tenfold. Measured on a busy 2-core machine, the 1.5B
    generated 8.7-12 tokens/s with 1 thread and 0.5-1.7 with 2.

    Raises:
        LocalError: If the variable is set to something that is not a positive integer.
    """
    raw = os.environ.get(ENV_LOCAL_THREADS, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise LocalError(f"{ENV_LOCAL_THREADS}={raw!r} is not a positive integer.")
        return int(raw)
    try:
        cores = len(os.sched_getaffinity(0))  # honours CPU limits of containers
    except (AttributeError, OSError):
        cores = os.cpu_count() or 2
    return max(1, min(cores - 1, 8))


def server_env(paths: LocalPaths, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment: the caller's, minus llama.cpp overrides.

    ``LLAMA_ARG_*`` variables would silently change every model's settings, and
    the router would list models from llama.cpp's download cache; both are cut off.
    """
    env = {k: v for k, v in (os.environ if base is None else base).items()}
    env = {k: v for k, v in env.items() if not k.startswith("LLAMA_ARG_")}
    env["LLAMA_CACHE"] = str(paths.run_dir / "llama-cache")
    return env


def _tail(path: Path, start: int, lines: int = 12) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(start)
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _complete(port: int, model: str, tokens: int, timeout: float) -> dict[str, Any]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": SMOKE_PROMPT}],
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
    }
    request = urllib.request.Request(
        f"http://{HOST}:{port}/v1/chat/completions",
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data = json.loads(response.read().decode("utf-8"))
    return data if isinstance(data, dict) else {}


def probe_model(
    paths: LocalPaths,
    model: ModelSpec,
    options: Sequence[str],
    *,
    threads: int,
    env: Mapping[str, str],
    log: Path,
    timeout: float = 180.0,
    tokens: int = SMOKE_TOKENS,
) -> Probe:
    """Serve ``model`` alone on a free loopback port, complete ``tokens`` tokens, stop it.

    Never raises for the server's failures: they are in the returned probe.
    """
    result = Probe(model=model.name, options=list(options))
    port = free_port()
    cmd = [
        str(paths.server_bin),
        "--model",
        str(paths.model_path(model)),
        "--alias",
        model.name,
        "--host",
        HOST,
        "--port",
        str(port),
        "--ctx-size",
        "2048",
        "--threads",
        str(threads),
        "--no-webui",
        *options,
    ]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(cmd)}\n")
        start = fh.tell()
        fh.flush()
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=dict(env),
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            result.failure = f"cannot run {paths.server_bin}: {exc}"
            return result
    began = time.monotonic()
    try:
        while not is_healthy(port, timeout=2):
            code = proc.poll()
            if code is not None:
                result.crashed = code < 0
                result.failure = f"llama-server {describe_exit(code)} while loading the model"
                result.log_tail = _tail(log, start)
                return result
            if time.monotonic() - began > timeout:
                result.failure = f"the model was not loaded after {timeout:.0f} s"
                result.log_tail = _tail(log, start)
                return result
            time.sleep(0.3)
        result.load_seconds = time.monotonic() - began
        try:
            data = _complete(port, model.name, tokens, timeout)
        except (OSError, ValueError, urllib.error.URLError) as exc:
            code = proc.poll()
            if code is not None:
                result.crashed = code < 0
                result.failure = f"llama-server {describe_exit(code)} while generating"
            else:
                result.failure = f"the completion request failed: {exc}"
            result.log_tail = _tail(log, start)
            return result
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        timings = data.get("timings") if isinstance(data.get("timings"), dict) else {}
        result.tokens = int((usage or {}).get("completion_tokens") or 0)
        result.tokens_per_second = float((timings or {}).get("predicted_per_second") or 0.0)
        result.prompt_tokens_per_second = float((timings or {}).get("prompt_per_second") or 0.0)
        if result.tokens < 1:
            result.failure = "the server answered but generated no tokens"
            result.log_tail = _tail(log, start)
            return result
        result.ok = True
        return result
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def probe_with_fallback(
    paths: LocalPaths,
    model: ModelSpec,
    *,
    threads: int,
    env: Mapping[str, str],
    log: Path,
    timeout: float = 180.0,
    tokens: int = SMOKE_TOKENS,
) -> tuple[Probe, Probe | None]:
    """Probe with the current options; after a crash, once more with the safe options.

    Returns:
        ``(first, retry)``: the probe with the current options, and the one with
        :data:`SAFE_OPTIONS` added if the first crashed and they were not in use
        (else ``None``).
    """
    options = server_options(paths)
    first = probe_model(
        paths, model, options, threads=threads, env=env, log=log, timeout=timeout, tokens=tokens
    )
    if first.ok or not first.crashed or all(o in options for o in SAFE_OPTIONS):
        return first, None
    safe = [*SAFE_OPTIONS, *(o for o in options if o not in SAFE_OPTIONS)]
    retry = probe_model(
        paths, model, safe, threads=threads, env=env, log=log, timeout=timeout, tokens=tokens
    )
    return first, retry
