"""Hostile tools against every sandboxed tier available here (tier 2 also forced).

Each case runs a tool that attacks the host and asserts two things: the attack
was stopped (the call did not succeed at it) and the host is intact (files,
processes, listeners and secrets checked from the host side). Cases run both
on the verification path (fork per call) and, where it matters, on the warm
path (a worker dedicated to one tool).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from latm.sandbox import ExecLimits, ExecResult
from latm.sandbox.executor import SandboxExecutor
from latm.sandbox.probe import probe

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="sandbox tiers need Linux")

FAST = ExecLimits(timeout_s=1.0, memory_mb=512, max_output_bytes=4096)
NORMAL = ExecLimits(timeout_s=10.0, memory_mb=512, max_output_bytes=65536)


@pytest.fixture(scope="module", params=["bwrap", "landlock"])
def executor(request: pytest.FixtureRequest) -> Iterator[SandboxExecutor]:
    """A fresh executor of each sandboxed tier, skipped with the probe's reason if missing."""
    status = probe().tier(request.param)
    if not status.available or status.config is None:
        pytest.skip(f"tier {status.level} ({status.name}) unavailable here: {status.reason}")
    ex = SandboxExecutor(status.config, max_workers=4)
    try:
        yield ex
    finally:
        ex.close()


def run1(
    ex: SandboxExecutor,
    code: str,
    call: str = "tool()",
    limits: ExecLimits = NORMAL,
    cache_key: str | None = None,
) -> ExecResult:
    return ex.run(code, [call], limits, cache_key=cache_key)[0]


def assert_healthy(ex: SandboxExecutor, cache_key: str | None = None) -> None:
    """The executor still answers a normal call correctly after an attack."""
    result = run1(ex, "def tool():\n    return 6 * 7\n", cache_key=cache_key)
    assert result.status == "ok" and result.value == "42", result


def describe(pids: set[int]) -> list[str]:
    lines = []
    for pid in sorted(pids):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:80]
            lines.append(f"{pid} ppid={stat[1]} state={stat[0]} {cmd.decode(errors='replace')}")
    return lines


@pytest.fixture
def victim() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A host process holding a fake API key in its environment, as the sandbox's uid."""
    key = "sk-latm-fake-" + secrets.token_hex(16)
    drop = {"user": 65534, "group": 65534, "extra_groups": []} if os.geteuid() == 0 else {}
    proc = subprocess.Popen(  # type: ignore[call-overload]
        ["sleep", "60"],
        env={"OPENAI_API_KEY": key, "PATH": "/usr/bin:/bin"},
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        **drop,
    )
    try:
        deadline = time.monotonic() + 5
        environ = b""
        while key.encode() not in environ and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
            time.sleep(0.01)
        # Premise: the secret really is readable on the host, so the test can fail.
        assert key.encode() in environ
        yield proc, key
    finally:
        proc.kill()
        proc.wait()


def never_mentions(result: ExecResult, secret: str) -> None:
    for text in (result.value, result.error, result.stdout):
        assert secret not in (text or "")


# -- the file system -----------------------------------------------------------


def test_write_outside_scratch_is_stopped(executor: SandboxExecutor) -> None:
    target = Path(tempfile.mkdtemp(prefix="latm-hostile-"))
    target.chmod(0o777)  # writable by any uid: only the sandbox can stop the write
    outside = target / "pwned.txt"
    tmp_file = Path(f"/tmp/latm-pwned-{secrets.token_hex(6)}")
    code = f"""
def tool():
    done = []
    for path in ({str(outside)!r}, {str(tmp_file)!r}, "/etc/latm-pwned", "../pwned"):
        try:
            with open(path, "w") as handle:
                handle.write("pwned")
            done.append(path)
        except OSError:
            pass
    return "wrote " + " ".join(done) if done else None
"""
    try:
        for key in (None, "hostile:write:1"):
            result = run1(executor, code, cache_key=key)
            assert result.status != "ok", result
            assert not outside.exists() and not tmp_file.exists()
            assert not Path("/etc/latm-pwned").exists()
        assert_healthy(executor)
    finally:
        outside.unlink(missing_ok=True)
        tmp_file.unlink(missing_ok=True)
        target.rmdir()


def test_read_etc_shadow_is_stopped(executor: SandboxExecutor) -> None:
    if not Path("/etc/shadow").exists():
        pytest.skip("this machine has no /etc/shadow")
    code = "def tool():\n    return open('/etc/shadow').read()\n"
    for key in (None, "hostile:shadow:1"):
        result = run1(executor, code, cache_key=key)
        assert result.status == "error", result
        assert "PermissionError" in (result.error or "") or "FileNotFound" in (result.error or "")
        never_mentions(result, "root:")


def test_host_sysctl_write_is_stopped(executor: SandboxExecutor) -> None:
    path = Path("/proc/sys/kernel/domainname")
    before = path.read_text()
    code = f"""
def tool():
    with open({str(path)!r}, "w") as handle:
        handle.write({before!r})
    return "wrote a host sysctl"
"""
    result = run1(executor, code)
    assert result.status == "error", result
    assert path.read_text() == before


def test_host_secrets_in_proc_environ_never_leak(
    executor: SandboxExecutor,
    victim: tuple[subprocess.Popen[bytes], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proc, key = victim
    monkeypatch.setenv("OPENAI_API_KEY", key)  # the host's own environment has it too
    code = f"""
import os

def tool():
    found = []
    targets = [{proc.pid}, {os.getpid()}, 1, os.getppid(), "self"]
    try:
        targets += [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        pass
    for pid in targets:
        try:
            with open("/proc/%s/environ" % pid, "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        if data:
            found.append(data.decode("latin-1"))
    found.append(repr(dict(os.environ)))
    return " | ".join(found)
"""
    for key_name in (None, "hostile:environ:1"):
        result = run1(executor, code, cache_key=key_name)
        never_mentions(result, key)
        if result.ok:
            assert result.value == "{}"  # the sandbox's own environment is empty, nothing else read


# -- the network ---------------------------------------------------------------


def test_loopback_listener_is_unreachable(executor: SandboxExecutor) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    code = f"""
import socket

def tool():
    reached = []
    attempts = (
        lambda: socket.create_connection(("127.0.0.1", {port}), timeout=0.5).sendall(b"pwned"),
        lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(
            b"x", ("127.0.0.1", {port})
        ),
        lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect("\\0latm"),
        lambda: __import__("urllib.request").request.urlopen(
            "http://127.0.0.1:{port}/", timeout=0.5
        ),
    )
    for number, attempt in enumerate(attempts):
        try:
            attempt()
            reached.append(number)
        except Exception:
            pass
    return "reached " + repr(reached) if reached else None
"""
    try:
        for key in (None, "hostile:net:1"):
            result = run1(executor, code, cache_key=key)
            assert result.status == "error", result
            ready, _, _ = select.select([listener], [], [], 0.2)
            assert not ready, "the sandbox reached the loopback listener"
        # Premise: the listener does accept connections from the host.
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            assert select.select([listener], [], [], 1)[0]
    finally:
        listener.close()


# -- processes -----------------------------------------------------------------


def test_fork_spawn_and_exec_are_stopped(executor: SandboxExecutor) -> None:
    marker = "lk" + secrets.token_hex(3)  # a forked child would rename itself to this
    code = f"""
import ctypes, os, subprocess, time

def tool():
    made = 0
    for _ in range(50):
        try:
            pid = os.fork()
        except OSError:
            continue
        if pid == 0:
            ctypes.CDLL(None).prctl(15, {marker.encode()!r}, 0, 0, 0)  # PR_SET_NAME
            time.sleep(20)
            os._exit(0)
        made += 1
    others = []
    for attempt in (
        lambda: subprocess.Popen(["/bin/sleep", "20"]),
        lambda: os.system("sleep 20"),
        lambda: os.posix_spawn("/bin/sleep", ["sleep", "20"], {{}}),
        lambda: os.execv("/bin/sh", ["sh", "-c", "sleep 20"]),
        lambda: __import__("multiprocessing").Process(target=time.sleep, args=(20,)).start(),
    ):
        try:
            outcome = attempt()
            others.append(0 if outcome in (256, 32256, 32512) else 1)
        except Exception:
            others.append(0)
    return [made] + others
"""
    results = [run1(executor, code, cache_key=key) for key in (None, "hostile:fork:1")]
    leaked = processes_named(marker)
    for pid in leaked:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not leaked, describe(set(leaked))
    for result in results:
        assert result.status != "ok" or result.value == "0 0 0 0 0 0", result
    assert_healthy(executor)


def processes_named(name: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry}/comm").read_text().strip() == name:
                    found.append(int(entry))
    return found


def test_signals_and_ptrace_to_other_processes_are_stopped(
    executor: SandboxExecutor, victim: tuple[subprocess.Popen[bytes], str]
) -> None:
    proc, _key = victim
    code = f"""
import ctypes, os, signal

def tool():
    hits = []
    for name, attempt in (
        ("parent", lambda: os.kill(os.getppid(), signal.SIGKILL)),
        ("parent group", lambda: os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)),
        ("victim", lambda: os.kill({proc.pid}, signal.SIGKILL)),
        ("host", lambda: os.kill({os.getpid()}, signal.SIGTERM)),
        ("everyone", lambda: os.kill(-1, signal.SIGKILL)),
        ("parent memory", lambda: open("/proc/%d/mem" % os.getppid(), "rb").read(1)),
    ):
        try:
            attempt()
            hits.append(name)
        except (OSError, ValueError):
            pass
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(16, os.getppid(), None, None) == 0:  # PTRACE_ATTACH
        hits.append("ptrace")
    return "hit " + ", ".join(hits) if hits else None
"""
    run1(executor, "def tool():\n    return 1\n")
    zygotes_before = {z.proc.pid for z in executor._zygotes}
    result = run1(executor, code)
    assert result.status == "error", result
    assert proc.poll() is None, "the victim process was killed"
    assert {z.proc.pid for z in executor._zygotes} == zygotes_before, "a zygote was replaced"
    warm = run1(executor, code, cache_key="hostile:kill:1")
    assert warm.status == "error", warm
    assert proc.poll() is None
    assert_healthy(executor)


def test_exit_and_segfault_are_contained(executor: SandboxExecutor) -> None:
    cases = {
        "import os\ndef tool():\n    os._exit(0)\n": "invalid",
        "import os\ndef tool():\n    os._exit(3)\n": "killed",
        "import ctypes\ndef tool():\n    return ctypes.string_at(0)\n": "killed",
        "import os\ndef tool():\n    os.abort()\n": "killed",
    }
    for code, expected in cases.items():
        result = run1(executor, code)
        assert result.status == expected, (code, result)
        warm = run1(executor, code, cache_key="hostile:exit:" + expected)
        assert warm.status in ("killed", "invalid"), (code, warm)
    assert "SIGSEGV" in (
        run1(executor, "import ctypes\ndef tool():\n    ctypes.string_at(0)\n").error or ""
    )
    assert_healthy(executor)
    assert_healthy(executor, cache_key="hostile:exit:killed")


def test_a_tool_that_answers_early_and_lingers_is_killed(executor: SandboxExecutor) -> None:
    marker = "lg" + secrets.token_hex(3)
    code = f"""
import ctypes, os, time

def tool():
    ctypes.CDLL(None).prctl(15, {marker.encode()!r}, 0, 0, 0)  # PR_SET_NAME
    forged = b'{{"status": "ok", "value": "early", "error": null, "stdout": ""}}'
    for fd in range(3, 64):
        try:
            os.write(fd, forged)
            os.close(fd)
        except OSError:
            pass
    time.sleep(30)
"""
    started = time.monotonic()
    result = run1(executor, code, limits=FAST)
    assert time.monotonic() - started < FAST.timeout_s + 2.5
    assert result.status in ("ok", "timeout"), result  # its own answer, or the deadline
    time.sleep(0.1)
    lingering = processes_named(marker)
    for pid in lingering:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not lingering, describe(set(lingering))
    assert_healthy(executor)


# -- resources -----------------------------------------------------------------


def test_allocating_4gb_is_stopped(executor: SandboxExecutor) -> None:
    code = "def tool():\n    block = bytearray(4 * 1024 ** 3)\n    return len(block)\n"
    for key in (None, "hostile:mem:1"):
        started = time.monotonic()
        result = run1(executor, code, cache_key=key)
        assert result.status in ("error", "killed"), result
        assert time.monotonic() - started < 5
    assert_healthy(executor)


@pytest.mark.parametrize(
    "body",
    [
        "    while True:\n        pass\n",
        "    import re\n    return bool(re.match(r'(a+)+$', 'a' * 64 + 'b'))\n",
        "    return sum(range(10 ** 15))\n",
        "    import time\n    time.sleep(30)\n",
    ],
    ids=["while-true", "c-regex-backtracking", "c-level-sum", "sleep-past-deadline"],
)
def test_deadline_kills_long_calls(executor: SandboxExecutor, body: str) -> None:
    code = "def tool():\n" + body
    for key in (None, "hostile:slow:" + body[:20]):
        started = time.monotonic()
        result = run1(executor, code, limits=FAST, cache_key=key)
        elapsed = time.monotonic() - started
        assert result.status == "timeout", result
        assert elapsed < FAST.timeout_s + 2.5, elapsed
    assert_healthy(executor)


def test_deep_recursion_is_contained(executor: SandboxExecutor) -> None:
    python_level = "def tool(n=0):\n    return tool(n + 1) + 1\n"
    c_level = (
        "def tool():\n    x = []\n    for _ in range(10 ** 6):\n        x = [x]\n"
        "    return str(x)\n"
    )
    for code in (python_level, c_level):
        for key in (None, "hostile:recursion:" + str(len(code))):
            result = run1(executor, code, cache_key=key)
            assert result.status in ("error", "killed"), result
    assert_healthy(executor)


def test_huge_stdout_and_result_are_capped(executor: SandboxExecutor) -> None:
    limits = ExecLimits(timeout_s=10.0, memory_mb=512, max_output_bytes=1000)
    printed = run1(executor, "def tool():\n    print('x' * 10 ** 7)\n    return 1\n", limits=limits)
    assert printed.status == "ok" and printed.value == "1"
    assert len(printed.stdout) <= 1000
    big = run1(executor, "def tool():\n    return 'x' * 10 ** 7\n", limits=limits)
    assert big.status == "error" and "longer than 1000" in (big.error or "")
    flood = """
import os

def tool():
    for fd in range(0, 64):
        try:
            os.write(fd, b"{" + b"x" * (8 * 1024 * 1024))
        except OSError:
            pass
    return 2
"""
    for key in (None, "hostile:flood:1"):
        result = run1(executor, flood, limits=limits, cache_key=key)
        assert result.status in ("ok", "invalid", "killed"), result
        assert len(result.stdout) <= 1000 and len(result.value or "") <= 1000
    assert_healthy(executor)
    assert_healthy(executor, cache_key="hostile:flood:1")


# -- state carried from one call to the next -------------------------------------

POISON = """
import builtins, json, os

def tool():
    json.dumps = lambda *a, **k: '{"status": "ok", "value": "forged", "error": null, "stdout": ""}'
    json.encoder.JSONEncoder.encode = lambda self, o: '{"status": "ok", "value": "forged"}'
    builtins.repr = lambda o: "forged"
    builtins.str = lambda *a: "forged"
    open("poison.txt", "w").write("forged")
    return "poisoned"
"""
VICTIM_TOOL = """
import json, os

def tool():
    return json.dumps({"answer": 41 + 1}) + " " + str(os.path.exists("poison.txt"))
"""


def test_monkey_patching_never_poisons_another_call(executor: SandboxExecutor) -> None:
    expected = '{"answer": 42} False'
    # The poisoner may forge its own answer ("forged"), never another call's.
    # Verification: every example gets fresh state, even of the same tool.
    run1(executor, POISON)
    assert run1(executor, VICTIM_TOOL).value == expected
    both = POISON + VICTIM_TOOL.replace("def tool", "def victim")
    results = executor.run(both, ["tool()", "victim()", "tool()", "victim()"], NORMAL)
    assert [r.value for r in results[1::2]] == [expected, expected]
    # Warm workers: the poisoner keeps its worker; the next tool never shares it.
    run1(executor, POISON, cache_key="hostile:poison:1")
    for _ in range(3):
        result = run1(executor, VICTIM_TOOL, cache_key="hostile:victim:1")
        assert result.status == "ok" and result.value == expected, result


# -- normal tools still work ---------------------------------------------------

STDLIB_TOOL = """
import collections, datetime, decimal, fractions, functools, heapq, itertools, json, math
import random, re, statistics, string, textwrap

@functools.lru_cache(maxsize=None)
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

def tool(text):
    words = re.findall(r"[a-z]+", text.lower())
    counts = collections.Counter(words)
    parts = [
        counts.most_common(1)[0][0],
        str(math.comb(10, 3)),
        str(sum(1 for _ in itertools.permutations(range(4)))),
        (datetime.date(2024, 3, 1) - datetime.timedelta(days=1)).isoformat(),
        str(fractions.Fraction(3, 9)),
        str(decimal.Decimal("1.10") + decimal.Decimal("2.20")),
        str(heapq.nsmallest(2, [5, 1, 4])),
        str(statistics.median([3, 1, 2])),
        string.ascii_lowercase[:3],
        json.dumps({"k": fib(30)}),
        textwrap.shorten("a b c d e f", width=7),
        str(random.Random(1).randint(1, 6)),
    ]
    with open("scratch.txt", "w") as handle:
        handle.write("|".join(parts))
    with open("scratch.txt") as handle:
        return handle.read()
"""


def test_normal_stdlib_tools_work(executor: SandboxExecutor) -> None:
    expected = 'b|120|24|2024-02-29|1/3|3.30|[1, 4]|2|abc|{"k": 832040}|a [...]|2'
    call = "tool('a b b c')"
    assert run1(executor, STDLIB_TOOL, call).value == expected
    for _ in range(2):
        assert run1(executor, STDLIB_TOOL, call, cache_key="normal:stdlib:1").value == expected
    zoneinfo = (
        "import zoneinfo, datetime\n"
        "def tool():\n"
        "    tz = zoneinfo.ZoneInfo('Europe/Paris')\n"
        "    return datetime.datetime(2024, 7, 1, tzinfo=tz).utcoffset().seconds // 3600\n"
    )
    if Path("/usr/share/zoneinfo/Europe/Paris").exists():
        assert run1(executor, zoneinfo).value == "2"
