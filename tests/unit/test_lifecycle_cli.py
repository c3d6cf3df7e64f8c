"""``latm tools``: statistics, version history, export and import with a content hash."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from latm.backends import open_backend
from latm.cli import main
from latm.cli.tools import content_hash
from latm.repository import ToolRecord, ToolRepository, UsageDemo

from .scripted import SORT_CODE


def record(task_type: str = "word_sorting", code: str = SORT_CODE, version: int = 1) -> ToolRecord:
    return ToolRecord(
        name="sort_words",
        task_type=task_type,
        description="Sort words alphabetically.",
        signature="def sort_words(words: list[str]) -> str",
        docstring="Sort words alphabetically.",
        code=code,
        demos=[UsageDemo(question="Sort: b a", call="sort_words(['b', 'a'])", answer="a b")],
        maker_model="m",
        verification=[],
        created_at="2026-01-01T00:00:00+00:00",
        version=version,
    )


@pytest.fixture
def repo() -> ToolRepository:
    backend = open_backend(store_path=os.environ["LATM_STORE_PATH"])
    return ToolRepository(backend.store, "default")


def test_list_and_show_give_statistics_and_history(repo, capsys, monkeypatch):
    from latm.cli import common

    monkeypatch.setattr(common.console, "width", 200)
    repo.put(record())
    repo.put(record(code=SORT_CODE.replace("sorted(words)", "sorted(set(words))"), version=2))
    v2 = repo.get("word_sorting")
    repo.record_use(v2, "ok")
    repo.record_use(v2, "timeout", "timeout: took longer than 5 s")
    repo.record_use(v2, "error", "error: ValueError: bad list")

    assert main(["tools", "list"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "word_sorting" in line)
    cells = row.split("\t")  # piped: one tab-separated line per tool, never cut
    assert cells[:6] == ["word_sorting", "2", "sort_words", "3", "2 (1 timeouts)", "active"]

    assert main(["tools", "show", "word_sorting"]) == 0
    out = capsys.readouterr().out
    assert "3 calls, 2 (1 timeouts) failures, active" in out
    assert "ValueError: bad list" in out
    assert "v1" in out and "v2" in out

    monkeypatch.setenv("LATM_MAX_TOOL_FAILURES", "2")
    assert main(["tools", "list"]) == 0
    assert "retired" in capsys.readouterr().out


def test_show_prints_long_usage_demos_in_full(repo, capsys, monkeypatch):
    from latm.cli import common

    monkeypatch.setattr(common.console, "width", 100)
    words = [f"word{i:03d}" for i in range(60)]
    long = record()
    long.demos = [
        UsageDemo(
            question="Sort: " + " ".join(words),
            call=f"sort_words({words!r})",
            answer=" ".join(words),
        )
    ]
    repo.put(long)
    assert main(["tools", "show", "word_sorting"]) == 0
    out = "".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "".join(f"sort_words({words!r})".split()) in out
    assert "word059" in out.split("Verification")[0].split("→")[1]


def test_export_then_import_into_another_namespace(repo, tmp_path, capsys):
    repo.put(record())
    repo.put(record("other_task"))
    path = tmp_path / "tools.json"
    assert main(["tools", "export", "-o", str(path)]) == 0
    doc = json.loads(path.read_text())
    assert doc["format"] == "latm-tools" and doc["sha256"] == content_hash(doc["tools"])
    assert [t["task_type"] for t in doc["tools"]] == ["other_task", "word_sorting"]

    assert main(["--namespace", "team2", "tools", "import", str(path)]) == 0
    out = capsys.readouterr().out
    assert "word_sorting: imported as v1" in out and "imported 2 tool(s)" in out
    team2 = ToolRepository(repo.store, "team2")
    assert team2.get("word_sorting").code == SORT_CODE

    # again: unchanged code is not a new version; changed code is
    assert main(["--namespace", "team2", "tools", "import", str(path)]) == 0
    assert "word_sorting: unchanged (same code as v1)" in capsys.readouterr().out
    team2.put(record(code=SORT_CODE + "\n# local edit\n"))
    assert main(["--namespace", "team2", "tools", "import", str(path)]) == 0
    assert "word_sorting: imported as v2" in capsys.readouterr().out
    assert [r.version for r in team2.versions("word_sorting")] == [1, 2]


def write(tmp_path: Any, tools: list[Any], digest: str | None = "auto", **extra: Any) -> str:
    doc: dict[str, Any] = {"format": "latm-tools", "tools": tools, **extra}
    if digest == "auto":
        doc["sha256"] = content_hash(tools)
    elif digest is not None:
        doc["sha256"] = digest
    path = tmp_path / "in.json"
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t, ok: write(t, [ok], digest="0" * 64), "content hash mismatch"),
        (lambda t, ok: write(t, [ok], digest=None), "has no sha256 content hash"),
        (lambda t, ok: write(t, [{**ok, "version": 0}]), "tool 0 is not a valid tool record"),
        (
            lambda t, ok: write(t, [{**ok, "code": "def other(x):\n    return x\n"}]),
            "does not define sort_words()",
        ),
        (
            lambda t, ok: write(t, [{**ok, "code": "def sort_words(:"}]),
            "does not define sort_words()",
        ),
        (lambda t, ok: write(t, [{**ok, "task_type": "../etc"}]), "the task type must be"),
        (lambda t, ok: write(t, [ok, ok]), "holds the task type 'word_sorting' twice"),
        (lambda t, ok: write(t, [ok], format="pickle"), "not 'latm-tools'"),
        (lambda t, ok: str(t / "missing.json"), "cannot read"),
    ],
)
def test_import_refuses_damaged_or_invalid_files_and_stores_nothing(
    repo, tmp_path, capsys, make, message
):
    ok = record().model_dump(mode="json")
    path = make(tmp_path, ok)
    assert main(["tools", "import", path]) != 0
    assert message in capsys.readouterr().err
    assert repo.records() == []


def test_import_refuses_a_tampered_export(repo, tmp_path, capsys):
    repo.put(record())
    path = tmp_path / "tools.json"
    assert main(["tools", "export", "-o", str(path)]) == 0
    text = path.read_text().replace("sorted(words)", "sorted(words)[::-1]")
    path.write_text(text)
    assert main(["--namespace", "x", "tools", "import", str(path)]) != 0
    assert "content hash mismatch" in capsys.readouterr().err
    assert ToolRepository(repo.store, "x").records() == []
