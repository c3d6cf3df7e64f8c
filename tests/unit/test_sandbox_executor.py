"""The sandboxed executor's behaviour: rendering, warm pool, tiers, refusal, cleanup."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import latm.sandbox as sandbox
from latm.sandbox import (
    ExecLimits,
    RefusingExecutor,
    SandboxUnavailableError,
    SubprocessExecutor,
    UnsandboxedExecutor,
    get_executor,
    resolve,
)
from latm.sandbox.executor import SandboxExecutor
from latm.sandbox.probe import ProbeReport, TierStatus, choose, probe, run_probe, smoke_test

LIMITS = ExecLimits(timeout_s=10.0, memory_mb=512, max_output_bytes=65536)

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="sandbox tiers need Linux")


def _strongest() -> TierStatus:
    status = probe().strongest()
    if status is None or status.config is None:
        reasons = "; ".join(f"{t.name}: {t.reason}" for t in probe().tiers if t.sandboxed)
        pytest.skip(f"no sandboxed tier available here ({reasons})")
    return status


@pytest.fixture(scope="module", params=["bwrap", "landlock"])
def tier(request: pytest.FixtureRequest) -> TierStatus:
    status = probe().tier(request.param)
    if not status.available:
        pytest.skip(f"tier {status.level} ({status.name}) unavailable here: {status.reason}")
    return status


@pytest.fixture
def executor(tier: TierStatus) -> Iterator[SandboxExecutor]:
    assert tier.config is not None
    ex = SandboxExecutor(tier.config, max_workers=2, max_calls_per_worker=3)
    try:
        yield ex
    finally:
        ex.close()


# -- rendering: the same answers as the floor -----------------------------------

RENDER_CODE = """
def text():
    return "a b"

def integer():
    return 7

def integral_float():
    return 3.0

def other_float():
    return 0.25

def listing():
    return [1, "x", (2.5, True)]

def printed():
    print("first")
    print("last line")

def silent():
    pass

def raises():
    raise ValueError("bad input")

print("module output")
"""
RENDER_CALLS = [
    "text()",
    "integer()",
    "integral_float()",
    "other_float()",
    "listing()",
    "printed()",
    "silent()",
    "raises()",
    "undefined_name",
    "1 +",
]


@linux_only
def test_answers_match_the_unsandboxed_floor(executor: SandboxExecutor) -> None:
    floor = SubprocessExecutor().run(RENDER_CODE, RENDER_CALLS, LIMITS)
    fresh = executor.run(RENDER_CODE, RENDER_CALLS, LIMITS)
    warm = executor.run(RENDER_CODE, RENDER_CALLS[:3], LIMITS, cache_key="render:1:x")
    for expected, got in zip(floor, fresh, strict=True):
        assert (got.status, got.value, got.error, got.stdout) == (
            expected.status,
            expected.value,
            expected.error,
            expected.stdout,
        )
    assert [r.value for r in fresh[:7]] == [
        "a b",
        "7",
        "3",
        "0.25",
        "1 x 2.5 True",
        "last line",
        "module output",
    ]
    assert fresh[7].error == "ValueError: bad input (tool line 25)"
    silent = executor.run("def f():\n    pass\n", ["f()"], LIMITS)[0]
    assert silent.status == "error"
    assert silent.error == "the call returned None and printed nothing"
    for expected, got in zip(floor[:3], warm, strict=True):
        assert (got.status, got.value, got.stdout) == (
            expected.status,
            expected.value,
            expected.stdout,
        )


@linux_only
def test_a_tool_whose_module_raises_fails_every_call(executor: SandboxExecutor) -> None:
    code = "print('half')\nraise RuntimeError('broken module')\ndef f():\n    return 1\n"
    for key in (None, "broken:1:x"):
        results = executor.run(code, ["f()", "f()"], LIMITS, cache_key=key)
        for result in results:
            assert result.status == "error"
            assert result.error == "RuntimeError: broken module (tool line 2)"
            assert result.stdout == "half\n"


# -- warm workers -----------------------------------------------------------------

COUNTER = "calls = 0\n\ndef tick():\n    global calls\n    calls += 1\n    return calls\n"


@linux_only
def test_verification_gets_fresh_state_per_call(executor: SandboxExecutor) -> None:
    results = executor.run(COUNTER, ["tick()"] * 4, LIMITS)
    assert [r.value for r in results] == ["1", "1", "1", "1"]


def _worker_pid(executor: SandboxExecutor, key: str, code: str) -> int | None:
    slot = executor._slots.get((key, _sha(code), LIMITS))
    return slot.proc.pid if slot is not None and slot.proc is not None else None


@linux_only
def test_warm_worker_is_dedicated_and_recycled_after_n_calls(executor: SandboxExecutor) -> None:
    pids = []
    for _ in range(7):
        result = executor.run(COUNTER, ["tick()"], LIMITS, cache_key="c:1:a")[0]
        assert result.value == "1"  # every call executes the module afresh
        pids.append(_worker_pid(executor, "c:1:a", COUNTER))
    # max_calls_per_worker=3: one worker for calls 1-3, the next for 4-6, ...
    assert pids[0] == pids[1] == pids[2] != pids[3] == pids[4] == pids[5] != pids[6]
    # Another tool version (key or code) never shares the worker.
    executor.run(COUNTER, ["tick()"], LIMITS, cache_key="c:2:b")
    assert _worker_pid(executor, "c:2:b", COUNTER) not in pids
    same_key_new_code = COUNTER + "# v2\n"
    executor.run(same_key_new_code, ["tick()"], LIMITS, cache_key="c:1:a")
    assert _worker_pid(executor, "c:1:a", same_key_new_code) not in (*pids, None)


@linux_only
def test_warm_worker_is_recycled_after_any_failure(executor: SandboxExecutor) -> None:
    code = COUNTER + "\ndef fail():\n    raise KeyError('x')\n"
    key = "c:fail:1"
    executor.run(code, ["tick()"], LIMITS, cache_key=key)
    first = _worker_pid(executor, key, code)
    results = executor.run(code, ["fail()", "tick()"], LIMITS, cache_key=key)
    assert results[0].status == "error"
    assert results[1].value == "1"
    second = _worker_pid(executor, key, code)
    assert first is not None and second is not None and first != second
    timeout = ExecLimits(timeout_s=0.5, memory_mb=512, max_output_bytes=1000)
    slow = code + "\ndef hang():\n    while True:\n        pass\n"
    results = executor.run(slow, ["tick()", "hang()", "tick()"], timeout, cache_key=key)
    assert [r.status for r in results] == ["ok", "timeout", "ok"]
    assert results[2].value == "1"


@linux_only
def test_pool_keeps_at_most_max_workers_and_a_spare(executor: SandboxExecutor) -> None:
    for n in range(4):
        assert executor.run(COUNTER, ["tick()"], LIMITS, cache_key=f"lru:{n}:x")[0].ok
    stats = executor.stats()
    assert stats["warm_workers"] <= 2
    assert stats["spare"] == 1


@linux_only
def test_a_new_tool_takes_the_prestarted_spare(executor: SandboxExecutor) -> None:
    executor.run(COUNTER, ["tick()"], LIMITS, cache_key="spare:0:x")
    spare = executor._spare
    assert spare is not None
    spare_proc = spare.result(timeout=30)
    executor.run(COUNTER, ["tick()"], LIMITS, cache_key="spare:1:x")
    slot = executor._slots[("spare:1:x", _sha(COUNTER), LIMITS)]
    assert slot.proc is spare_proc
    assert executor._spare is not None and executor._spare is not spare


def _sha(code: str) -> str:
    import hashlib

    return hashlib.sha256(code.encode()).hexdigest()


@linux_only
def test_threads_share_one_executor_safely(executor: SandboxExecutor) -> None:
    errors: list[str] = []

    def worker(n: int) -> None:
        code = f"def f(x):\n    return x * {n}\n"
        for i in range(5):
            key = f"thread:{n % 2}:{n}" if i % 2 else None
            result = executor.run(code, [f"f({i})"], LIMITS, cache_key=key)[0]
            if result.value != str(i * n):
                errors.append(f"{n}/{i}: {result}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(1, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors


@linux_only
def test_close_leaves_no_sandbox_process(tier: TierStatus) -> None:
    assert tier.config is not None
    ex = SandboxExecutor(tier.config)
    ex.run(COUNTER, ["tick()"], LIMITS)
    ex.run(COUNTER, ["tick()"], LIMITS, cache_key="close:1:x")
    assert ex._spare is not None
    spare = ex._spare.result(timeout=30)
    procs = [*ex.processes(), spare]
    pids = [p.pid for p in procs if p is not None]
    children = _descendants(pids)
    assert len(pids) == 3
    if tier.name == "bwrap":
        assert children  # bubblewrap's init and the interpreter inside each sandbox
    ex.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(pids + children):
        time.sleep(0.05)
    assert not _alive(pids + children)
    with pytest.raises(SandboxUnavailableError):
        ex.run(COUNTER, ["tick()"], LIMITS)


def _descendants(roots: list[int]) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = set(roots)
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier}
        found += frontier
    return found


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


# -- tiers, the choice and the refusal ----------------------------------------------


def _report(*available: str) -> ProbeReport:
    return ProbeReport(
        tiers=(
            TierStatus("bwrap", 1, "bwrap" in available, True, "bwrap reason"),
            TierStatus("landlock", 2, "landlock" in available, True, "landlock reason"),
            TierStatus("subprocess", 3, True, False, "no isolation"),
        ),
        facts=(),
    )


def test_choice_prefers_the_strongest_tier_and_refuses_without_opt_in() -> None:
    assert choose(_report("bwrap", "landlock"), "auto", False).tier.name == "bwrap"  # type: ignore[union-attr]
    assert choose(_report("landlock"), "auto", False).tier.name == "landlock"  # type: ignore[union-attr]
    refused = choose(_report(), "auto", False)
    assert refused.tier is None
    assert "LATM_ALLOW_UNSANDBOXED=1" in refused.reason
    assert "bwrap reason" in refused.reason and "landlock reason" in refused.reason
    opted = choose(_report(), "auto", True)
    assert opted.tier is not None and opted.tier.name == "subprocess"
    assert "NO isolation" in opted.reason
    assert choose(_report("landlock"), "bwrap", True).tier is None  # explicit: no fallback
    assert choose(_report("bwrap"), "subprocess", False).tier is None
    assert choose(_report("bwrap"), "subprocess", True).tier.name == "subprocess"  # type: ignore[union-attr]


def test_subprocess_tier_refuses_without_the_opt_in() -> None:
    executor = get_executor("subprocess")
    assert isinstance(executor, RefusingExecutor)
    with pytest.raises(SandboxUnavailableError, match="LATM_ALLOW_UNSANDBOXED=1"):
        executor.run("def f():\n    return 1\n", ["f()"], LIMITS)


def test_subprocess_tier_with_opt_in_runs_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    executor = get_executor("subprocess", allow_unsandboxed=True)
    assert isinstance(executor, UnsandboxedExecutor)
    assert executor.sandboxed is False
    assert "NO isolation" in sandbox.describe_isolation(executor)
    with caplog.at_level(logging.WARNING, logger="latm.sandbox"):
        result = executor.run("def f():\n    return 1\n", ["f()"], LIMITS)[0]
    assert result.value == "1"
    assert any("WITHOUT isolation" in r.getMessage() for r in caplog.records)


def test_unknown_executor_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown executor"):
        resolve("docker")
    # The executor a run asks for refuses with the reason instead of raising.
    for name in ("docker", "nonsense", "\ud800"):
        executor = get_executor(name)
        assert executor.name == "unavailable"
        with pytest.raises(SandboxUnavailableError, match="unknown executor"):
            executor.run("def f():\n    return 1\n", ["f()"], LIMITS)


@linux_only
def test_get_executor_returns_one_cached_instance_per_tier() -> None:
    best = _strongest()
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(get_executor("auto"))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(e) for e in seen}) == 1
    executor = seen[0]
    assert isinstance(executor, SandboxExecutor) and executor.name == best.name
    assert get_executor(best.name) is executor
    assert executor.run("def f():\n    return 2\n", ["f()"], LIMITS)[0].value == "2"


@linux_only
def test_probe_falls_back_to_tier_2_when_namespaces_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not probe().tier("landlock").available:
        pytest.skip(f"tier 2 unavailable here: {probe().tier('landlock').reason}")
    folder = Path(tempfile.mkdtemp(prefix="latm-fake-bwrap-"))
    fake = folder / "bwrap"
    fake.write_text(
        "#!/bin/sh\necho 'bwrap: No permissions to create a new namespace' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    folder.chmod(0o755)
    real_which = sandbox.probe.shutil.which
    monkeypatch.setattr(
        sandbox.probe.shutil,
        "which",
        lambda name, *a, **k: str(fake) if name == "bwrap" else real_which(name, *a, **k),
    )
    try:
        report = run_probe()
    finally:
        fake.unlink()
        folder.rmdir()
    bwrap = report.tier("bwrap")
    assert not bwrap.available
    assert "namespaces refused" in bwrap.reason and "No permissions" in bwrap.reason
    assert report.strongest() is not None and report.strongest().name == "landlock"  # type: ignore[union-attr]


@linux_only
def test_probe_reports_facts_for_doctor() -> None:
    facts = dict(probe().facts)
    assert {"sandbox user", "landlock", "seccomp", "interpreter", "bubblewrap"} <= set(facts)
    if os.geteuid() == 0:
        assert "dropped from root" in facts["sandbox user"]


@linux_only
@pytest.mark.parametrize("abi", [1, 3, 5])
def test_older_landlock_abis_still_hold(tier: TierStatus, abi: int) -> None:
    """Without Landlock's TCP rules (ABI < 4) or signal scoping (ABI < 6), seccomp still holds."""
    assert tier.config is not None
    if tier.config.landlock_abi < abi:
        pytest.skip(f"the kernel's Landlock ABI is {tier.config.landlock_abi}")
    config = dataclasses.replace(tier.config, landlock_abi=abi)
    assert smoke_test(config) is None
    ex = SandboxExecutor(config, prestart=False)
    try:
        code = (
            "import os, socket\n"
            "def tool():\n"
            "    hits = []\n"
            "    for name, attempt in (\n"
            "        ('passwd', lambda: open('/etc/passwd').read()),\n"
            "        ('write', lambda: open('/tmp/latm-abi-probe', 'w').write('x')),\n"
            "        ('socket', lambda: socket.socket()),\n"
            "        ('signal', lambda: os.kill(os.getppid(), 0)),\n"
            "    ):\n"
            "        try:\n"
            "            attempt()\n"
            "            hits.append(name)\n"
            "        except OSError:\n"
            "            pass\n"
            "    return 'hit ' + ' '.join(hits) if hits else 'sealed'\n"
        )
        for key in (None, f"abi:{abi}:x"):
            assert ex.run(code, ["tool()"], LIMITS, cache_key=key)[0].value == "sealed"
        assert not Path("/tmp/latm-abi-probe").exists()
    finally:
        ex.close()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("    while True:\n        pass\n", "timeout"),
        ("    import time\n    time.sleep(30)\n", "timeout"),
        ("    return len(bytearray(4 * 1024 ** 3))\n", "error"),
        ("    import os\n    os._exit(3)\n", "killed"),
        ("    import os\n    os.write(1, b'x' * (64 * 1024 * 1024))\n    return 5\n", "ok"),
        ("    print('y' * 10 ** 7)\n    return 'z' * 10 ** 6\n", "error"),
    ],
    ids=["while-true", "sleep", "4gb", "exit", "stdout-flood", "huge-result"],
)
def test_forced_tier_3_still_contains_resource_abuse(body: str, expected: str) -> None:
    executor = get_executor("subprocess", allow_unsandboxed=True)
    limits = ExecLimits(timeout_s=1.0, memory_mb=512, max_output_bytes=1000)
    started = time.monotonic()
    result = executor.run("def tool():\n" + body, ["tool()"], limits)[0]
    assert result.status == expected, result
    assert time.monotonic() - started < 4
    assert len(result.stdout) <= 1000 and len(result.value or "") <= 1000


@linux_only
def test_older_bubblewrap_without_optional_options_still_holds() -> None:
    status = probe().tier("bwrap")
    if not status.available or status.config is None:
        pytest.skip(f"tier 1 (bwrap) unavailable here: {status.reason}")
    optional = {"--disable-userns", "--size", "--perms"}
    old = dataclasses.replace(status.config, bwrap_options=status.config.bwrap_options - optional)
    assert smoke_test(old) is None
