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
        ('[{"input": "q"}]', "example 0 needs 'input' and 'target'"),
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
