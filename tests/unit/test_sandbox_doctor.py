"""``latm doctor``: the tiers, the active one and why; the exit status says if code may run."""

from __future__ import annotations

import json
import sys

import pytest

from latm.cli import main
from latm.sandbox.probe import probe

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="sandbox tiers need Linux")


@linux_only
def test_doctor_json_reports_the_strongest_tier(capsys: pytest.CaptureFixture[str]) -> None:
    best = probe().strongest()
    status = main(["doctor", "--json", "--check"])
    report = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in report["tiers"]] == ["bwrap", "landlock", "subprocess"]
    if best is None:
        assert status == 1 and report["active"] is None
        assert "LATM_ALLOW_UNSANDBOXED=1" in report["reason"]
        return
    assert status == 0
    assert report["active"] == best.name and report["sandboxed"] is True
    assert report["check"]["ok"] is True
    promised = report["guarantees"]
    assert "fresh child" in promised["requests"]
    assert "namespace" in promised["warm workers"] and "idle" in promised["warm workers"]
    assert "refused" in promised["IPC and memfd"]
    assert "literal arguments" in promised["model calls"]
    if best.name == "bwrap":
        assert "PID, IPC" in promised["processes"]
    else:
        assert "seccomp" in promised["processes"] and "quota" in promised["scratch"]
    if best.config is not None and best.config.unique_uids:
        assert "uid of its own" in promised["identity"]


@linux_only
def test_doctor_prints_the_guarantees_of_each_sandboxed_tier(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for tier in ("bwrap", "landlock"):
        if not probe().tier(tier).available:
            continue
        assert main(["doctor", "--executor", tier]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert "guarantees" in out and "IPC and memfd" in out
        assert ("namespaces" in out) if tier == "bwrap" else ("quota" in out)


def test_doctor_says_tier_3_is_refused_without_opt_in(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LATM_EXECUTOR", "subprocess")
    assert main(["doctor"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "active: none" in out and "LATM_ALLOW_UNSANDBOXED=1" in out


def test_doctor_warns_when_opted_in_to_tier_3(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LATM_ALLOW_UNSANDBOXED", "1")
    assert main(["doctor", "--executor", "subprocess"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "WITHOUT isolation" in out


def test_doctor_rejects_an_unknown_executor_setting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LATM_EXECUTOR", "docker")
    assert main(["doctor"]) == 2
    assert "unknown executor" in capsys.readouterr().err
