"""``python -m latm.bench.compare`` on small synthetic run directories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from latm.bench.compare import main, settings_label

PAPER_SETTINGS = {
    "n_candidates": 1,
    "direct_entry": False,
    "reject_hardcoded": False,
    "two_step": False,
}
DEFAULT_SETTINGS = {
    "n_candidates": 3,
    "direct_entry": True,
    "reject_hardcoded": True,
    "two_step": False,
}


def usage(role: str, tokens_in: int, tokens_out: int) -> dict[str, dict[str, int]]:
    return {
        role: {
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
            "calls": 1,
        }
    }


def make(task: str, ok: bool, attempts: int, seconds: float) -> dict[str, Any]:
    return {
        "task": task,
        "ok": ok,
        "error": None if ok else f"could not make a verified tool in {attempts} attempt(s)",
        "infra": False,
        "attempts": attempts,
        "tool": {"name": task} if ok else None,
        "usage": usage("maker", 1000 * attempts, 200 * attempts),
        "seconds": seconds,
        "nodes": [{"node": "propose", "seconds": seconds, "usage": {}}],
        "code": "def f(x):\n    return x\n" if ok else None,
    }


def latm_item(
    task: str,
    index: int,
    path: str | None,
    correct: bool,
    tokens: tuple[int, int] | None = None,
    *,
    error: str | None = None,
    infra: bool = False,
) -> dict[str, Any]:
    return {
        "task": task,
        "method": "latm",
        "index": index,
        "answer": None if path is None else "an answer",
        "usage": usage("user", *tokens) if tokens else {},
        "cache_hit": True,
        "path": path,
        "nodes": [{"node": "use_tool", "seconds": 0.1, "usage": {}}],
        "target": "the target",
        "correct": correct,
        "error": error,
        "infra": infra,
        "seconds": 0.5,
    }


def cot_item(task: str, method: str, index: int, correct: bool) -> dict[str, Any]:
    role = "user" if method == "cot_user" else "maker"
    return {
        "task": task,
        "method": method,
        "index": index,
        "answer": "an answer",
        "usage": usage(role, 500, 200),
        "reply": "So the answer is an answer.",
        "target": "the target",
        "correct": correct,
        "error": None,
        "infra": False,
        "seconds": 3.0,
    }


def write_run(
    path: Path,
    settings: dict[str, Any],
    tasks: list[str],
    methods: list[str],
    makes: list[dict[str, Any]],
    items: list[dict[str, Any]],
    limit: int | None = 3,
) -> Path:
    path.mkdir(parents=True)
    config = {
        "identity": {
            "maker": "maker-model",
            "user": "user-model",
            "dyck_strip_spaces": False,
            "cot_max_tokens": 512,
            "cot_prompt": "0123456789ab",
            "settings": {"maker_model": "maker-model", "max_attempts": 3, **settings},
        },
        "last_options": {"tasks": tasks, "limit": limit, "methods": methods},
    }
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    for name, records in (("make.jsonl", makes), ("items.jsonl", items)):
        lines = "".join(json.dumps(r) + "\n" for r in records)
        (path / name).write_text(lines, encoding="utf-8")
    return path


WS, CRT, DYCK = "word_sorting", "chinese_remainder_theorem", "dyck_languages"


@pytest.fixture
def paper_run(tmp_path: Path) -> Path:
    """Paper settings, all methods, on word sorting (tool made) and CRT (no tool)."""
    cot = [
        (WS, "cot_user", [True, False, False]),
        (CRT, "cot_user", [True, True, False]),
        (WS, "cot_maker", [True, True, True]),
        (CRT, "cot_maker", [True, False, False]),
    ]
    items = [
        # An infra failure, answered again below: only the latest record counts.
        latm_item(WS, 11, None, False, error="the user model x failed: down", infra=True),
        latm_item(WS, 10, "llm", True, (100, 20)),
        latm_item(WS, 11, "llm", False, (110, 30)),
        latm_item(WS, 12, "llm", True, (90, 10)),
        # Beyond the limit of 3 items: not counted.
        latm_item(WS, 13, "llm", True, (9000, 9000)),
        *(
            cot_item(task, method, 10 + i, ok)
            for task, method, oks in cot
            for i, ok in enumerate(oks)
        ),
    ]
    return write_run(
        tmp_path / "baseline",
        PAPER_SETTINGS,
        [WS, CRT],
        ["latm", "cot_user", "cot_maker"],
        [make(WS, True, 2, 100.4), make(CRT, False, 3, 50.2)],
        items,
    )


@pytest.fixture
def default_run(tmp_path: Path) -> Path:
    """Default settings, LATM only, on three tasks: direct and llm hits, one failed answer."""
    items = [
        latm_item(WS, 10, "direct", True),
        latm_item(WS, 11, "direct", True),
        latm_item(WS, 12, "llm", False, (300, 30)),
        latm_item(CRT, 10, "direct", True),
        latm_item(CRT, 11, "direct", True),
        latm_item(CRT, 12, None, False, error="the tool raised ValueError"),
    ]
    makes = [make(WS, True, 1, 20.0), make(CRT, True, 3, 30.0), make(DYCK, False, 3, 40.0)]
    return write_run(
        tmp_path / "enhanced", DEFAULT_SETTINGS, [WS, CRT, DYCK], ["latm"], makes, items
    )


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse(text: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The table's header and its rows by first cell; checks that it is a valid table."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = cells(lines[0])
    rule = cells(lines[1])
    assert all(set(c) <= {"-", ":"} and "-" in c for c in rule)
    rows = [cells(line) for line in lines[2:]]
    assert all(len(r) == len(header) for r in [rule, *rows])
    assert len({len(line) for line in lines}) == 1  # padded to aligned columns
    return header, {r[0]: dict(zip(header, r, strict=True)) for r in rows}


def run_main(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> str:
    assert main([str(a) for a in argv]) == 0
    return capsys.readouterr().out


def test_labels_from_settings() -> None:
    assert settings_label(PAPER_SETTINGS) == "paper"
    assert settings_label(DEFAULT_SETTINGS) == "default"
    assert settings_label({**PAPER_SETTINGS, "n_candidates": 3}) == "default"
    assert settings_label({**PAPER_SETTINGS, "direct_entry": True}) == "default"


def test_latm_cells_per_task(
    capsys: pytest.CaptureFixture[str], paper_run: Path, default_run: Path
) -> None:
    header, rows = parse(run_main(capsys, paper_run, default_run))
    assert header == [
        "task",
        *(f"paper {c}" for c in ("tool", "s", "LATM", "via", "tok")),
        *(f"default {c}" for c in ("tool", "s", "LATM", "via", "tok")),
        "CoT user",
        "CoT maker",
    ]
    assert list(rows) == [DYCK, WS, CRT, "**total**"]  # the paper's task order

    ws = rows[WS]
    assert ws["paper tool"] == "yes 2x1"
    assert ws["paper s"] == "100"
    assert ws["paper LATM"] == "2/3"
    assert ws["paper via"] == "3 llm"
    assert ws["paper tok"] == "120"  # (120 + 140 + 100) / 3 user tokens
    assert ws["default tool"] == "yes 1x3"
    assert ws["default s"] == "20"
    assert ws["default LATM"] == "2/3"
    assert ws["default via"] == "2 direct, 1 llm"
    assert ws["default tok"] == "110"  # (0 + 0 + 330) / 3: the direct path costs no tokens

    crt = rows[CRT]
    assert [crt[f"paper {c}"] for c in ("tool", "s", "LATM", "via", "tok")] == [
        "no 3x1",
        "50",
        "0/3",
        "-",
        "-",
    ]
    assert crt["default tool"] == "yes 3x3"
    assert crt["default LATM"] == "2/3"
    assert crt["default via"] == "2 direct, 1 none"
    assert crt["default tok"] == "0"

    dyck = rows[DYCK]
    assert [dyck[f"paper {c}"] for c in ("tool", "s", "LATM", "via", "tok")] == ["—"] * 5
    assert dyck["default tool"] == "no 3x3"
    assert dyck["default s"] == "40"
    assert dyck["default LATM"] == "0/3"
    assert dyck["CoT user"] == dyck["CoT maker"] == "—"


def test_cot_columns_and_totals(
    capsys: pytest.CaptureFixture[str], paper_run: Path, default_run: Path
) -> None:
    out = run_main(capsys, paper_run, default_run)
    _, rows = parse(out)
    assert rows[WS]["CoT user"] == "1/3"
    assert rows[CRT]["CoT user"] == "2/3"
    assert rows[WS]["CoT maker"] == "3/3"
    assert rows[CRT]["CoT maker"] == "1/3"

    total = rows["**total**"]
    assert total["paper tool"] == "1 of 2"
    assert total["paper s"] == "151"  # 100.4 + 50.2
    assert total["paper LATM"] == "2/6 (33%)"
    assert total["paper via"] == "3 llm"
    assert total["paper tok"] == "120"
    assert total["default tool"] == "2 of 3"
    assert total["default s"] == "90"
    assert total["default LATM"] == "4/9 (44%)"
    assert total["default via"] == "4 direct, 1 llm, 1 none"
    assert total["default tok"] == "55"  # 330 user tokens over the 6 answered items
    assert total["CoT user"] == "3/6 (50%)"
    assert total["CoT maker"] == "4/6 (67%)"
    assert "CoT user from paper, CoT maker from paper" in " ".join(out.split())


def test_cot_taken_from_whichever_run_has_it(
    capsys: pytest.CaptureFixture[str], paper_run: Path, default_run: Path
) -> None:
    header, rows = parse(run_main(capsys, default_run, paper_run))
    assert header[1] == "default tool"
    assert header[6] == "paper tool"
    assert rows[CRT]["CoT user"] == "2/3"
    assert rows["**total**"]["CoT maker"] == "4/6 (67%)"


def test_cot_taken_once_from_the_first_run_that_has_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, paper_run: Path
) -> None:
    items = [cot_item(WS, "cot_user", 10 + i, False) for i in range(3)]
    cot_only = write_run(tmp_path / "cot", PAPER_SETTINGS, [WS], ["cot_user"], [], items)
    out = run_main(capsys, cot_only, paper_run, "--label", f"{cot_only}=cot")
    header, rows = parse(out)
    assert header.count("CoT user") == 1 and "cot tool" not in header
    assert rows[WS]["CoT user"] == "0/3"
    assert rows[CRT]["CoT user"] == "—"
    assert rows[WS]["CoT maker"] == "3/3"
    assert "CoT user from cot, CoT maker from paper" in " ".join(out.split())


def test_labels_from_the_command_line(
    capsys: pytest.CaptureFixture[str], paper_run: Path, default_run: Path
) -> None:
    header, rows = parse(run_main(capsys, paper_run, default_run, "--label", f"{default_run}=mine"))
    assert "mine tool" in header and "default tool" not in header
    assert rows[WS]["mine via"] == "2 direct, 1 llm"


def test_repeated_labels_get_the_directory_name(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, default_run: Path
) -> None:
    other = write_run(
        tmp_path / "other",
        DEFAULT_SETTINGS,
        [WS],
        ["latm"],
        [make(WS, False, 3, 7.0)],
        [],
    )
    header, rows = parse(run_main(capsys, default_run, other))
    assert "default (enhanced) tool" in header
    assert rows[WS]["default (other) tool"] == "no 3x3"
    assert rows[CRT]["default (other) tool"] == "—"
    assert rows["**total**"]["default (other) tool"] == "0 of 1"


def test_not_a_run_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert main([str(missing)]) == 2
    assert "not a latm bench run directory" in capsys.readouterr().err
    assert not missing.exists()  # reading must not create it


def test_label_for_a_directory_not_compared(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, default_run: Path
) -> None:
    assert main([str(default_run), "--label", f"{tmp_path / 'else'}=x"]) == 2
    assert "--label" in capsys.readouterr().err


def test_runs_as_a_module(paper_run: Path, default_run: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "latm.bench.compare", str(paper_run), str(default_run)],
        capture_output=True,
        text=True,
        check=True,
    )
    _, rows = parse(done.stdout)
    assert rows["**total**"]["default LATM"] == "4/9 (44%)"
