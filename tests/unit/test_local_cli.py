"""``latm local ...`` on the command line: clear messages, exit codes, no tracebacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from latm.cli import local as cli_local
from latm.cli import main
from latm.local import server as local_server
from latm.local.paths import LocalError


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "local-cache"
    monkeypatch.setenv("LATM_LOCAL_DIR", str(root))
    return root


def test_local_without_action_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["local"]) == 2
    out = capsys.readouterr().out
    for action in ("install", "start", "stop", "status"):
        assert action in out


def test_status_on_an_empty_cache_says_what_to_do(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["local", "status"]) == 1
    out = capsys.readouterr().out
    assert str(cache) in out.replace("\n", "")
    assert "latm local install" in out and "not running" in out


def test_start_without_install_is_a_user_error(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["local", "start"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "latm local install" in err
    assert "Traceback" not in err


def test_bad_port_is_a_user_error(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["local", "start", "--port", "70000"]) == 2
    assert "not a port number" in capsys.readouterr().err


def test_bad_port_env_is_a_user_error(
    cache: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LATM_LOCAL_PORT", "abc")
    assert main(["local", "status"]) == 1
    monkeypatch.setattr(local_server, "missing_parts", lambda _p: [])
    capsys.readouterr()
    assert main(["local", "start"]) == 2
    assert "LATM_LOCAL_PORT='abc' is not a port number" in capsys.readouterr().err


def test_stop_when_nothing_runs(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["local", "stop"]) == 0
    assert "not running" in capsys.readouterr().out


def test_install_errors_are_one_line_without_traceback(
    cache: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def failing_install(**kwargs: Any) -> None:
        seen.update(kwargs)
        raise LocalError("Not enough free disk space for x: need 2.0 GiB, 0.1 GiB free.")

    monkeypatch.setattr(cli_local, "install", failing_install)
    assert main(["local", "install", "--verify"]) == 2
    err = capsys.readouterr().err
    assert "Not enough free disk space" in err and "Traceback" not in err
    assert seen["verify"] is True and seen["rebuild"] is False


def test_status_names_a_missing_embedding_model(
    cache: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_local, "missing_parts", lambda _p: [])  # server and LLMs in place
    main(["local", "status"])
    out = " ".join(capsys.readouterr().out.split())
    assert "all-minilm-l6-v2 (embeddings)" in out and "Installed: no" in out
