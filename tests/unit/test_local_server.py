"""Start/stop/status of the local server, against a fake ``llama-server`` on 127.0.0.1.

The fake is a small Python script installed as the cache dir's ``llama-server``:
it parses the same command line, lists the preset's models on ``/models``
("loading" at first, then "loaded"), and can be told to fail. No model, no
network beyond loopback.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

import latm.local as local
from latm.local import installer as inst
from latm.local import server as srv
from latm.local import smoke
from latm.local.paths import DEFAULT_PORT, LocalError, LocalPaths, port_from_env
from latm.local.spec import MAKER_MODEL, MODELS, USER_MODEL

FAKE_SERVER = r"""
import json, os, re, signal, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
host = args[args.index("--host") + 1]
alone = "--model" in args  # one model served alone (the smoke test / diagnosis)
if alone:
    names = [args[args.index("--alias") + 1]]
else:
    preset = open(args[args.index("--models-preset") + 1]).read()
    names = re.findall(r"^\[([^*\]]+)\]$", preset, re.M)
mode = os.environ.get("FAKE_MODE", "ok")
# "segv": the last model crashes unless --no-repack is given; "segv-always": it always does
crashes = mode == "segv-always" or (mode == "segv" and "--no-repack" not in args)
started = time.monotonic()
print("fake llama-server", " ".join(args), flush=True)
if mode == "exit":
    print("error: cannot load model", flush=True)
    sys.exit(3)
if alone and crashes and names[0] == os.environ.get("FAKE_CRASHING", names[0]):
    print("load_tensors: using the AMX buffer type", flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        if self.path == "/health":
            body = {"status": "ok"}
        elif self.path == "/models":
            loaded = time.monotonic() - started > 0.6
            data = []
            for n in names:
                st = {"value": "loaded" if loaded else "loading"}
                if (mode == "fail" or crashes) and n == names[-1]:
                    st = {"value": "unloaded", "failed": True, "exit_code": 1}
                if mode == "slow":
                    st = {"value": "loading"}
                data.append({"id": n, "status": st})
            body = {"data": data}
        else:
            self.send_response(404); self.end_headers(); return
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        req = json.loads(self.rfile.read(n))
        k = int(req.get("max_tokens") or 1)
        body = {
            "choices": [{"message": {"role": "assistant", "content": "x" * k}}],
            "usage": {"completion_tokens": k, "prompt_tokens": 10},
            "timings": {"predicted_per_second": 12.5 if "--no-repack" in args else 31.0,
                        "prompt_per_second": 100.0},
        }
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

ThreadingHTTPServer((host, port), H).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalPaths]:
    """A cache dir whose ``llama-server`` is the fake, counted as installed.

    Whatever a test leaves running is stopped afterwards.
    """
    p = LocalPaths(root=tmp_path / "cache")
    p.bin_dir.mkdir(parents=True)
    p.server_bin.write_text(f"#!{sys.executable}\n{FAKE_SERVER}", encoding="utf-8")
    p.server_bin.chmod(0o755)
    monkeypatch.setattr(srv, "missing_parts", lambda _p: [])
    yield p
    srv.stop(p, timeout=2)


@pytest.fixture
def port(monkeypatch: pytest.MonkeyPatch) -> int:
    n = free_port()
    monkeypatch.setenv("LATM_LOCAL_PORT", str(n))
    return n


def test_command_listens_on_loopback_with_the_preset(tmp_path: Path) -> None:
    p = LocalPaths(root=tmp_path)
    cmd = srv.server_command(p, 9999)
    assert cmd[0] == str(p.server_bin)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--port") + 1] == "9999"
    assert cmd[cmd.index("--models-preset") + 1] == str(p.preset_file)
    assert cmd[cmd.index("--models-max") + 1] == str(len(MODELS))


def test_preset_has_each_model_with_its_absolute_path(tmp_path: Path) -> None:
    p = LocalPaths(root=tmp_path)
    text = srv.preset_text(p, threads=2)
    assert "threads = 2" in text and "threads-batch = 2" in text and "parallel = 1" in text
    for model in MODELS:
        section = text.split(f"[{model.name}]", 1)[1].split("\n\n", 1)[0]
        assert f"model = {p.model_path(model)}" in section
        assert f"ctx-size = {model.ctx_size}" in section
        assert "load-on-startup = true" in section
        assert Path(p.model_path(model)).is_absolute()


def test_parallel_slots_each_get_the_full_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = LocalPaths(root=tmp_path)
    assert srv.default_parallel() == 1
    monkeypatch.setenv("LATM_LOCAL_PARALLEL", "3")
    assert srv.default_parallel() == 3
    text = srv.preset_text(p, threads=2, parallel=3)
    assert "parallel = 3" in text
    for model in MODELS:
        assert f"ctx-size = {3 * model.ctx_size}" in text
    for bad in ("0", "9", "two"):
        monkeypatch.setenv("LATM_LOCAL_PARALLEL", bad)
        with pytest.raises(LocalError, match="from 1 to 8"):
            srv.default_parallel()


def test_server_env_drops_llama_overrides(tmp_path: Path) -> None:
    env = smoke.server_env(
        LocalPaths(root=tmp_path), {"PATH": "/bin", "LLAMA_ARG_PORT": "1", "LLAMA_ARG_CTX": "9"}
    )
    assert env["PATH"] == "/bin"
    assert not any(k.startswith("LLAMA_ARG_") for k in env)
    assert env["LLAMA_CACHE"].startswith(str(tmp_path))


def test_port_and_threads_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert port_from_env() == DEFAULT_PORT
    monkeypatch.setenv("LATM_LOCAL_PORT", "9100")
    assert port_from_env() == 9100
    for bad in ("http", "0", "70000"):
        monkeypatch.setenv("LATM_LOCAL_PORT", bad)
        with pytest.raises(LocalError, match="not a port number"):
            port_from_env()
    monkeypatch.setenv("LATM_LOCAL_THREADS", "3")
    assert smoke.default_threads() == 3
    monkeypatch.setenv("LATM_LOCAL_THREADS", "0")
    with pytest.raises(LocalError, match="positive integer"):
        smoke.default_threads()
    monkeypatch.delenv("LATM_LOCAL_THREADS")
    assert 1 <= smoke.default_threads() <= 8


def test_local_dir_env_overrides_the_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LATM_LOCAL_DIR", str(tmp_path / "mine"))
    assert LocalPaths.from_env().root == tmp_path / "mine"
    monkeypatch.delenv("LATM_LOCAL_DIR")
    assert LocalPaths.from_env().root.name == "local"


def test_readiness_reads_model_states() -> None:
    loaded = {m.name: {"value": "loaded"} for m in MODELS}
    assert srv.readiness(None) == (False, None)
    assert srv.readiness(loaded) == (True, None)
    loading = dict(loaded, **{USER_MODEL.name: {"value": "loading"}})
    assert srv.readiness(loading) == (False, None)
    failed = dict(loaded, **{MAKER_MODEL.name: {"value": "unloaded", "failed": True}})
    ready, why = srv.readiness(failed)
    assert not ready and why is not None and MAKER_MODEL.name in why
    ready, why = srv.readiness({USER_MODEL.name: {"value": "loaded"}})
    assert not ready and why is not None and "does not list" in why


def test_pid_file_round_trip_and_garbage(tmp_path: Path) -> None:
    p = LocalPaths(root=tmp_path)
    assert srv.read_pid_file(p) is None
    srv.write_pid_file(p, 1234, 8800)
    record = srv.read_pid_file(p)
    assert record is not None and record["pid"] == 1234 and record["port"] == 8800
    for garbage in ("", "[]", '{"pid": "12", "port": 1}', '{"pid": 12}'):
        p.pid_file.write_text(garbage, encoding="utf-8")
        assert srv.read_pid_file(p) is None, garbage


def test_a_stale_or_foreign_pid_is_not_taken_for_the_server(tmp_path: Path) -> None:
    p = LocalPaths(root=tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not srv.pid_is_server(dead.pid, p.server_bin)
    assert not srv.pid_is_server(os.getpid(), p.server_bin), "pytest is no llama-server"
    srv.write_pid_file(p, os.getpid(), 8800)
    st = srv.status(p)
    assert not st.running and "stale" in st.detail
    assert "stale pid file" in srv.stop(p)
    assert not p.pid_file.exists()
    assert os.getpid() > 0  # still alive: stop() must never signal a foreign pid


def test_start_not_installed_says_to_install(tmp_path: Path) -> None:
    with pytest.raises(LocalError, match="latm local install"):
        srv.start(LocalPaths(root=tmp_path))


def test_start_status_stop_lifecycle(paths: LocalPaths, port: int) -> None:
    assert srv.status(paths).detail == "not running"
    got, started = srv.start(paths, timeout=20)
    assert (got, started) == (port, True)
    st = srv.status(paths)
    assert st.running and st.ready and st.port == port
    assert st.models == {m.name: "loaded" for m in MODELS}
    assert f"http://127.0.0.1:{port}/v1" in st.detail
    assert smoke.is_healthy(port)
    assert "--models-preset" in paths.server_log.read_text()
    assert f"model = {paths.model_path(MAKER_MODEL)}" in paths.preset_file.read_text()

    again, started_again = srv.start(paths, timeout=5)
    assert (again, started_again) == (port, False), "a running server is reused"
    pid = st.pid
    assert pid is not None

    assert "stopped" in srv.stop(paths)
    assert not paths.pid_file.exists()
    assert not srv.pid_is_server(pid, paths.server_bin)
    assert srv.port_is_free(port)
    assert srv.stop(paths) == "The local server is not running."


def test_start_reports_an_early_exit_with_the_log(
    paths: LocalPaths, port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "exit")
    with pytest.raises(LocalError, match="exited during start-up") as info:
        srv.start(paths, timeout=10)
    assert "cannot load model" in str(info.value)
    assert not paths.pid_file.exists()


def test_start_reports_a_model_that_failed_and_stops_the_server(
    paths: LocalPaths, port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "fail")
    with pytest.raises(LocalError, match=f"{USER_MODEL.name} failed to load"):
        srv.start(paths, timeout=10)
    assert not paths.pid_file.exists()
    assert srv.port_is_free(port)


def test_start_times_out_and_cleans_up(
    paths: LocalPaths, port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "slow")
    t0 = time.monotonic()
    with pytest.raises(LocalError, match="not ready after 2 s"):
        srv.start(paths, timeout=2)
    assert time.monotonic() - t0 < 15
    assert not paths.pid_file.exists()
    assert srv.port_is_free(port)


def test_stop_kills_a_server_that_ignores_sigterm(
    paths: LocalPaths, port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "ignore-term")
    srv.start(paths, timeout=10)
    pid = srv.status(paths).pid
    assert pid is not None
    assert "killed after it ignored SIGTERM" in srv.stop(paths, timeout=1)
    assert not srv.pid_is_server(pid, paths.server_bin)


def test_start_refuses_a_port_taken_by_another_program(paths: LocalPaths, port: int) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen()
        with pytest.raises(LocalError, match=f"Port {port} .* in use.*LATM_LOCAL_PORT"):
            srv.start(paths, timeout=5)
    assert not paths.pid_file.exists()


def test_ensure_local_endpoints_starts_once_and_says_so(paths: LocalPaths, port: int) -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=200)
    eps = local.ensure_local_endpoints(console, paths=paths)
    url = f"http://127.0.0.1:{port}/v1"
    assert eps == local.LocalEndpoints(url, MAKER_MODEL.name, url, USER_MODEL.name)
    assert "starting the local models" in buf.getvalue()
    assert "started at" in buf.getvalue()

    buf2 = io.StringIO()
    assert local.ensure_local_endpoints(Console(file=buf2, width=200), paths=paths) == eps
    assert "already running" in buf2.getvalue() and "starting" not in buf2.getvalue()


def test_ensure_local_endpoints_without_install_raises_clearly(tmp_path: Path) -> None:
    with pytest.raises(LocalError, match="Run `latm local install` first"):
        local.ensure_local_endpoints(paths=LocalPaths(root=tmp_path))


def test_status_json_safe_fields(paths: LocalPaths, port: int) -> None:
    srv.start(paths, timeout=20)
    record = json.loads(paths.pid_file.read_text())
    assert record["port"] == port and record["binary"] == str(paths.server_bin)


def test_server_args_env_is_the_escape_hatch(
    paths: LocalPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(smoke.ENV_SERVER_ARGS, "--no-repack --override-kv 'a b'")
    assert smoke.server_options(paths) == ["--no-repack", "--override-kv", "a b"]
    cmd = srv.server_command(paths, 9999, smoke.server_options(paths))
    assert cmd[-3:] == ["--no-repack", "--override-kv", "a b"]
    monkeypatch.setenv(smoke.ENV_SERVER_ARGS, "--x 'unclosed")
    with pytest.raises(LocalError, match=smoke.ENV_SERVER_ARGS):
        smoke.server_options(paths)


def test_describe_exit_names_the_signal() -> None:
    assert smoke.describe_exit(1) == "exited with status 1"
    assert smoke.describe_exit(-11).startswith("crashed with SIGSEGV")


def test_start_diagnoses_a_crash_and_retries_with_safe_options(
    paths: LocalPaths, port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "segv")
    said: list[str] = []
    assert srv.start(paths, timeout=10, notify=said.append) == (port, True)
    text = "\n".join(said)
    assert "crashed with SIGSEGV" in text and "--no-repack" in text
    assert "using the AMX buffer type" in text, "the crashed model's last log lines are shown"
    assert smoke.recorded_options(paths) == ["--no-repack"]
    assert srv.status(paths).ready
    srv.stop(paths, timeout=2)
    # the next start uses the recorded options at once: no crash, no diagnosis
    said.clear()
    srv.start(paths, timeout=10, notify=said.append)
    assert said == []
    last_start = paths.server_log.read_text().rsplit("====", 1)[1].splitlines()[0]
    assert last_start.endswith("--no-repack")


def test_start_reports_a_crash_the_safe_options_do_not_fix(
    paths: LocalPaths, port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "segv-always")
    with pytest.raises(LocalError) as info:
        srv.start(paths, timeout=10)
    text = str(info.value)
    assert f"{USER_MODEL.name} failed to load" in text
    assert "crashed with SIGSEGV" in text and "also fails with --no-repack" in text
    assert smoke.ENV_SERVER_ARGS in text
    assert smoke.recorded_options(paths) == []
    assert not paths.pid_file.exists() and srv.port_is_free(port)


def _real_models(paths: LocalPaths) -> None:
    paths.models_dir.mkdir(parents=True, exist_ok=True)
    for model in MODELS:
        paths.model_path(model).write_bytes(b"gguf")


def test_install_smoke_test_reports_tokens_per_second(paths: LocalPaths) -> None:
    _real_models(paths)
    buf = io.StringIO()
    probes = inst.smoke_test(paths, Console(file=buf, width=300))
    assert set(probes) == {m.name for m in MODELS}
    assert all(p.ok and p.tokens == smoke.SMOKE_TOKENS for p in probes.values())
    assert "31.0 tokens/s" in buf.getvalue()
    record = json.loads((paths.bin_dir / "smoke-test.json").read_text())
    assert record[MAKER_MODEL.name]["tokens_per_second"] == 31.0


def test_install_smoke_test_falls_back_to_safe_options_after_a_crash(
    paths: LocalPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    _real_models(paths)
    monkeypatch.setenv("FAKE_MODE", "segv")
    monkeypatch.setenv("FAKE_CRASHING", MAKER_MODEL.name)
    buf = io.StringIO()
    probes = inst.smoke_test(paths, Console(file=buf, width=300))
    assert "crashed with SIGSEGV" in buf.getvalue()
    assert probes[MAKER_MODEL.name].options == ["--no-repack"]
    assert probes[USER_MODEL.name].options == ["--no-repack"], "later models use the record"
    assert smoke.recorded_options(paths) == ["--no-repack"]


def test_install_that_cannot_serve_fails_with_the_diagnosis(
    paths: LocalPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    _real_models(paths)
    monkeypatch.setenv("FAKE_MODE", "segv-always")
    with pytest.raises(LocalError, match="cannot serve") as info:
        inst.smoke_test(paths, Console(file=io.StringIO(), width=300))
    assert "crashed with SIGSEGV" in str(info.value)
    assert "using the AMX buffer type" in str(info.value)


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (4, 3), (64, 8)])
def test_default_threads_leave_a_core_free(
    monkeypatch: pytest.MonkeyPatch, cores: int, threads: int
) -> None:
    monkeypatch.delenv("LATM_LOCAL_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)))
    assert smoke.default_threads() == threads
