"""``latm bench --task-file``: a user's own ``{input, target}`` task, split and reported as
the shipped ones are (scripted models, the real graph and sandbox)."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from latm.bench.tasks import TaskFileError, prepare_task, read_task_file
from latm.cli import main
from latm.cli import run as cli_run
from latm.graph.context import PAPER, Context
from latm.prompts.bench import COT_SYSTEM

WORDS = [
    "apple pear fig",
    "red green blue violet",
    "one two",
    "sun moon star comet",
    "north south",
    "cat dog bird",
    "left right up down",
    "tea coffee",
    "alpha beta gamma",
    "x y z w v",
    "oak elm ash",
    "river lake sea",
    "salt pepper",
    "mars venus earth",
]
EXAMPLES = [
    {"input": f"Reverse the order of the words: {w}", "target": " ".join(reversed(w.split()))}
    for w in WORDS
]
CODE = '''\
def reverse_words(text: str) -> str:
    """Reverse the order of the words of a text."""
    return " ".join(reversed(text.split()))
'''


def words(question: str) -> str:
    return question.split(": ", 1)[1]


class TaskModel(BaseChatModel):
    """Answers from the prompt: the tool (maker), a call of it (user), CoT (both).

    The maker's CoT is always right; the user's only on even test indexes.
    """

    role: str

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        object.__setattr__(self, "_lock", threading.Lock())
        object.__setattr__(self, "kinds", Counter())

    @property
    def _llm_type(self) -> str:
        return "task-fake"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kwargs: Any) -> ChatResult:
        text = "\n".join(str(m.content) for m in messages)
        kind = "cot" if COT_SYSTEM in text else ("make" if self.role == "maker" else "use")
        with self._lock:
            self.kinds[kind] += 1
        last = str(messages[-1].content)
        asked = [i for i, e in enumerate(EXAMPLES) if e["input"] in last]
        if kind == "make":
            calls = "\n".join(f"    reverse_words({words(e['input'])!r})," for e in EXAMPLES[5:8])
            reply = f"```python\n{CODE}\nCALLS = [\n{calls}\n]\n```"
        elif kind == "use":
            reply = f"```python\nreverse_words({words(EXAMPLES[asked[-1]]['input'])!r})\n```"
        else:
            index = asked[-1]
            right = self.role == "maker" or index % 2 == 0
            reply = f"So the answer is {EXAMPLES[index]['target'] if right else 'nope'}."
        usage = {"input_tokens": 100, "output_tokens": 10, "total_tokens": 110}
        message = AIMessage(content=reply, usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=message)])


@pytest.fixture
def models(monkeypatch: pytest.MonkeyPatch) -> dict[str, TaskModel]:
    holder = {"maker": TaskModel(role="maker"), "user": TaskModel(role="user")}

    def inject(ctx: Context) -> Context:
        return dataclasses.replace(
            ctx,
            maker_llm=holder["maker"],
            user_llm=holder["user"],
            exec_timeout_s=2.0,
            max_retries=0,
            **PAPER,
        )

    monkeypatch.setattr(cli_run, "configure_models", inject)
    return holder


def write_jsonl(path: Path, examples: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return path


def test_a_task_file_is_split_as_the_shipped_tasks(tmp_path: Path) -> None:
    file = tmp_path / "reverse.json"
    file.write_text(json.dumps({"examples": EXAMPLES}))
    task = prepare_task("reverse", task_file=str(file))
    assert [d["input"] for d in task.demos] == [e["input"] for e in EXAMPLES[0:3]]
    assert [v["input"] for v in task.validation] == [e["input"] for e in EXAMPLES[5:8]]
    assert [i.index for i in task.test] == [10, 11, 12, 13] and task.n_test_total == 4
    assert prepare_task("reverse", task_file=str(file), limit=2).test[1].target == "sea lake river"
    jsonl = write_jsonl(tmp_path / "r.jsonl", EXAMPLES)
    assert read_task_file(jsonl)[1] == read_task_file(file)[1]
    assert read_task_file(jsonl)[0] != read_task_file(file)[0]  # the digest of the bytes


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (json.dumps(EXAMPLES[:10]), "has 10 example(s); the benchmark's split needs at least 11"),
        (json.dumps([{"input": "q"}] * 11), "example 0 needs 'input' and 'target'"),
        ("{not json\n", "neither JSON nor JSON lines"),
        (json.dumps({"rows": []}), "holds no list of examples"),
    ],
)
def test_unusable_task_files_are_clear_errors(tmp_path, content, message):
    file = tmp_path / "bad.json"
    file.write_text(content)
    with pytest.raises(TaskFileError) as caught:
        read_task_file(file)
    assert message in str(caught.value)


def test_cli_benches_a_task_file_end_to_end(models, tmp_path, capsys):
    file = write_jsonl(tmp_path / "reverse_words.jsonl", EXAMPLES)
    out = tmp_path / "run"
    argv = ["bench", "--task-file", str(file), "--out", str(out), "--no-plot"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out

    results = json.loads((out / "results.json").read_text())
    assert list(results["tasks"]) == ["reverse_words"]
    assert results["options"]["task_file"] == str(file)
    task = results["tasks"]["reverse_words"]
    assert task["make"]["ok"] and "def reverse_words" in task["make"]["code"]
    methods = task["methods"]
    assert (methods["latm"]["correct"], methods["latm"]["answered"]) == (4, 4)
    assert (methods["cot_user"]["correct"], methods["cot_maker"]["correct"]) == (2, 4)
    assert "| reverse_words | LATM (tool) | 4/4 = 100% |" in stdout
    assert models["maker"].kinds == Counter({"make": 1, "cot": 4})

    # The report alone is rebuilt from the run's own task file.
    (out / "results.json").unlink()
    assert main(["bench", "--out", str(out), "--report-only", "--no-plot"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["tasks"]["reverse_words"]["methods"] == methods

    # A changed file does not continue the run it did not start, nor rebuild its report.
    write_jsonl(
        file, [*EXAMPLES, {"input": "Reverse the order of the words: a b", "target": "b a"}]
    )
    capsys.readouterr()
    assert main(argv) == 2
    assert "task_file_sha256" in " ".join(capsys.readouterr().err.split())
    assert main(["bench", "--out", str(out), "--report-only", "--no-plot"]) == 2
    assert "changed since the run" in " ".join(capsys.readouterr().err.split())


def test_cli_task_file_mistakes_are_clear_errors(models, tmp_path, capsys):
    short = write_jsonl(tmp_path / "short.jsonl", EXAMPLES[:5])
    assert main(["bench", "--task-file", str(short), "--out", str(tmp_path / "r")]) == 2
    assert "needs at least 11" in " ".join(capsys.readouterr().err.split())
    good = write_jsonl(tmp_path / "good.jsonl", EXAMPLES)
    argv = ["bench", "--task-file", str(good), "--tasks", "word_sorting"]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 2
    assert "exclude each other" in capsys.readouterr().err
    argv = ["bench", "--task-file", str(good), "--task-name", "../x", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "--task-name '../x'" in capsys.readouterr().err
    assert sum(models["maker"].kinds.values()) == 0
