"""The ``latm`` CLI with scripted models behind it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from latm.cli import main
from latm.cli import run as cli_run
from latm.graph.context import PAPER

from .scripted import SORT_CODE, bbh, maker_reply, scripted, user_reply

EXAMPLES = bbh("word_sorting")


@pytest.fixture
def models(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Scripted maker and user models that the CLI's runs will use."""
    holder: dict[str, Any] = {"maker": scripted([]), "user": scripted([])}

    def inject(ctx: Any) -> Any:
        ctx.maker_llm, ctx.user_llm = holder["maker"], holder["user"]
        for name, value in PAPER.items():
            setattr(ctx, name, value)
        return ctx

    monkeypatch.setattr(cli_run, "configure_models", inject)
    return holder


@pytest.fixture
def examples_file(tmp_path: Any) -> str:
    path = tmp_path / "word_sorting.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in EXAMPLES[:6]) + "\n")
    return str(path)


def test_make_then_solve_then_manage_tools(models, examples_file, tmp_path, capsys):
    models["maker"] = scripted([maker_reply(SORT_CODE, [e["input"] for e in EXAMPLES[3:6]])])
    assert main(["make", "--examples", examples_file]) == 0
    err = capsys.readouterr().err
    assert "attempt 1/3" in err and "✓ #0: 3/3 checks" in err
    assert "verified: candidate #0" in err and "stored word_sorting v1" in err
    assert "lucky-pass chance" in " ".join(err.split())

    question = EXAMPLES[60]
    models["user"] = scripted([user_reply(question["input"])])
    assert main(["solve", question["input"], "--task-type", "word_sorting", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["answer"] == question["target"] and result["cache_hit"] is True

    assert main(["tools", "list"]) == 0
    assert "word_sorting" in capsys.readouterr().out
    assert main(["tools", "show", "word_sorting"]) == 0
    shown = capsys.readouterr().out
    assert "def sort_words" in shown and "3/3 passed" in shown
    flat = " ".join(shown.split())
    assert "verified: 3 labelled example(s) passed (3 with answers its maker had not seen)" in flat
    assert "lucky-pass chance" in flat
    out_file = tmp_path / "export.json"
    assert main(["tools", "export", "-o", str(out_file)]) == 0
    exported = json.loads(out_file.read_text())["tools"]
    assert [t["task_type"] for t in exported] == ["word_sorting"]

    assert main(["make", "--examples", examples_file]) == 2
    assert "exists (v1)" in capsys.readouterr().err

    assert main(["tools", "rm", "word_sorting"]) == 0
    assert main(["tools", "rm", "word_sorting"]) == 2
    assert "no tool named 'word_sorting'" in capsys.readouterr().err


def test_failed_make_exits_1_with_the_error(models, examples_file, capsys):
    models["maker"] = scripted(["no code here"] * 3)
    assert main(["make", "--examples", examples_file]) == 1
    err = capsys.readouterr().err
    assert "could not make a verified tool in 3 attempt(s)" in err
    assert main(["tools", "list"]) == 0
    assert "no tools yet" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json at all", "neither JSON nor JSON lines"),
        ("[]", "holds no list of examples"),
        ('[{"input": "q"}]', "example 1 (of 1) has no 'target'"),
        ('[{"target": "a"}, {}]', "example 1 (of 2) has no 'input'"),
        ('[{"input": "q", "target": "a"}, 3]', "example 2 (of 2) is not an object"),
    ],
)
def test_bad_examples_files_are_user_errors(models, tmp_path, capsys, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert main(["make", "--examples", str(bad)]) == 2
    assert message in capsys.readouterr().err


def test_solve_without_a_fitting_tool_or_examples_fails_clearly(models, capsys):
    assert main(["solve", "What is the capital of France?"]) == 1
    assert "no cached tool fits" in capsys.readouterr().err


def test_no_endpoint_and_no_local_install_is_a_user_error(monkeypatch, capsys):
    import latm.local as local

    def unavailable(console: Any = None) -> Any:
        raise RuntimeError("the local models are not installed")

    monkeypatch.setattr(local, "ensure_local_endpoints", unavailable, raising=False)
    assert main(["solve", "anything"]) == 2
    err = capsys.readouterr().err
    assert "the local default is unavailable" in err and "latm local install" in err


def test_demo_makes_a_tool_and_reports_accuracy(models, capsys):
    from latm.data import load_task, paper_split

    split = paper_split(load_task("word_sorting"))
    models["maker"] = scripted([maker_reply(SORT_CODE, [e["input"] for e in split["validation"]])])
    test = split["test"][:3]
    # The user model calls the tool right twice and answers the third with a wrong call.
    models["user"] = scripted(
        [
            user_reply(test[0]["input"]),
            user_reply(test[1]["input"]),
            "```python\nsort_words(['zz', 'aa', 'extra'])\n```",
        ]
    )
    assert main(["demo", "-n", "3"]) == 0
    out = capsys.readouterr().out
    assert "accuracy 2/3 = 67%" in out
    assert out.count("correct") == 2 and "wrong (expected" in out


def test_an_unsandboxed_run_says_so(models, monkeypatch, capsys):
    import latm.cli.run as run_module

    monkeypatch.setattr(run_module, "_warned", False)
    monkeypatch.setenv("LATM_ALLOW_UNSANDBOXED", "1")
    monkeypatch.setenv("LATM_EXECUTOR", "subprocess")
    main(["solve", "What is 2 + 2?"])
    assert "NO isolation" in capsys.readouterr().err


def test_make_shows_the_makers_tokens_while_it_writes(models, examples_file, monkeypatch, capsys):
    monkeypatch.setattr(cli_run, "PROGRESS_INTERVAL_S", 0.0)
    models["maker"] = scripted([maker_reply(SORT_CODE, [e["input"] for e in EXAMPLES[3:6]])])
    assert main(["make", "--examples", examples_file]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "maker writing: #0" in line]
    assert lines, "a token count while the maker writes"
    counts = [int(line.split("#0 ", 1)[1].split(" tokens", 1)[0]) for line in lines]
    assert counts == sorted(counts) and counts[-1] > 10
    assert lines[-1].rstrip().endswith(" s)")


def test_progress_counts_tokens_per_reply() -> None:
    import io

    from rich.console import Console

    buf = io.StringIO()
    progress = cli_run.MakerProgress(Console(file=buf, width=200), interval=0.0)
    for _ in range(3):
        progress.token("propose:a", "tok")
    progress.token("propose:b", "tok")
    assert "maker writing: #0 3 tokens, #1 1 tokens" in buf.getvalue().splitlines()[-1]
    progress.stop()
    progress.token("propose:c", "tok")
    assert "maker writing: #0 1 tokens (" in buf.getvalue().splitlines()[-1]


def test_help_loads_no_graph_models_or_sandbox() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from latm.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('langgraph', 'langchain_core', 'latm.graph', 'latm.sandbox') "
        "if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert "HEAVY []" in out
    for command in ("make", "solve", "tools", "demo", "local", "doctor", "bench", "serve"):
        assert command in out


@pytest.mark.parametrize("columns", ["20", "80", "400"])
def test_errors_are_never_wrapped_whatever_the_width(
    models, tmp_path, monkeypatch, capsys, columns
):
    monkeypatch.setenv("COLUMNS", columns)
    from latm.cli import common

    monkeypatch.setattr(common.err_console, "_width", None, raising=False)
    bad = tmp_path / ("a-rather-long-directory-name-" * 3) / "bad.json"
    bad.parent.mkdir()
    bad.write_text('[{"input": "q"}]')
    assert main(["make", "--examples", str(bad)]) == 2
    assert f"{bad}: example 1 (of 1) has no 'target'" in capsys.readouterr().err


def test_graph_fields_are_named_as_cli_options() -> None:
    message = cli_run.cli_terms("no cached tool fits; Pass 'examples' (pairs) or 'task_type'")
    assert "Pass examples (--examples FILE)" in message
    assert "or a task type (--task-type NAME)" in message


def test_shorten_cuts_at_a_word() -> None:
    assert cli_run.shorten("alpha beta gamma delta", 14) == "alpha beta…"
    assert cli_run.shorten("short", 14) == "short"
