"""The benchmark's tasks: the paper's split, the item limit and the Dyck option."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latm.data import TASKS, load_task, paper_split
from latm.graph.state import Example

TEST_START = 10
"""Index of the first test example in a task's file (the paper's split)."""


@dataclass(frozen=True)
class BenchItem:
    """One test question with its index in the task's file (its stable id)."""

    index: int
    input: str
    target: str


@dataclass(frozen=True)
class BenchTask:
    """One task as the benchmark runs it.

    Attributes:
        name: The task's name (also the tool's task type).
        demos: Examples 0-2: the maker's demos, and the CoT baselines' shots.
        validation: Examples 5-7: the held-out examples that verify the tool.
        test: The test items run (10 onwards, cut to the limit).
        n_test_total: How many test items the task has without the limit.
    """

    name: str
    demos: list[Example]
    validation: list[Example]
    test: list[BenchItem]
    n_test_total: int


def strip_dyck_spaces(example: Example) -> Example:
    """The paper's Dyck preparation: no spaces in the sequence and the target.

    The task description before ``Input:`` keeps its spaces. A rationale is
    dropped: it is written for the spaced form.
    """
    head, sep, sequence = example["input"].rpartition("Input: ")
    text = f"{head}{sep}{sequence.replace(' ', '')}" if sep else example["input"]
    return Example(input=text, target=example["target"].replace(" ", ""))


MIN_FILE_EXAMPLES = TEST_START + 1
"""A task file needs demos (0-2), validation (5-7) and at least one test item (10)."""


class TaskFileError(ValueError):
    """A task file cannot be read or does not hold enough ``{input, target}`` examples."""


def read_task_file(path: str | Path) -> tuple[str, tuple[Example, ...]]:
    """Read a user's task file of ``{input, target}`` examples.

    Accepted: a JSON list of ``{input, target}`` objects (each may add a
    ``rationale``), an object with an ``examples`` list (the BIG-Bench format),
    or one object per line (JSON lines).

    Returns:
        The SHA-256 of the file's bytes (a run is tied to the file it started
        with) and its examples in file order.

    Raises:
        TaskFileError: The file is unreadable, malformed, or has fewer than
            :data:`MIN_FILE_EXAMPLES` examples.
    """
    try:
        raw = Path(path).read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskFileError(f"cannot read the task file {path}: {exc}") from exc
    data: Any
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise TaskFileError(f"{path} is neither JSON nor JSON lines: {exc}") from exc
    if isinstance(data, dict):
        data = data.get("examples")
    if not isinstance(data, list):
        raise TaskFileError(f"{path} holds no list of examples")
    examples: list[Example] = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or "input" not in item or "target" not in item:
            raise TaskFileError(f"{path}: example {i} needs 'input' and 'target'")
        example = Example(input=str(item["input"]), target=str(item["target"]))
        if isinstance(item.get("rationale"), str) and item["rationale"].strip():
            example["rationale"] = item["rationale"]
        examples.append(example)
    if len(examples) < MIN_FILE_EXAMPLES:
        raise TaskFileError(
            f"{path} has {len(examples)} example(s); the benchmark's split needs at least "
            f"{MIN_FILE_EXAMPLES}: demos 0-2, validation 5-7, test items from 10 on"
        )
    return hashlib.sha256(raw).hexdigest(), tuple(examples)


def prepare_task(
    name: str,
    *,
    limit: int | None = None,
    dyck_strip_spaces: bool = False,
    rationales: bool = False,
    task_file: str | None = None,
) -> BenchTask:
    """Load a task and split it as the paper did.

    Args:
        name: One of :data:`latm.data.TASKS`, or the name given to ``task_file``.
        limit: Run only the first ``limit`` test items (all when ``None``).
        dyck_strip_spaces: Strip spaces from Dyck sequences and targets (the
            paper's preparation of that task; shipped tasks only).
        rationales: Give the demos their reasoning (shown to the maker and in
            the CoT shots): the shipped one, or the file's ``rationale`` fields.
        task_file: Read the examples from this file (see :func:`read_task_file`)
            instead of a shipped task.

    Raises:
        KeyError: No such task.
        TaskFileError: The task file cannot be used.
        ValueError: The limit is below 1.
    """
    if limit is not None and limit < 1:
        raise ValueError("the limit must be at least 1")
    if task_file is not None:
        examples = list(read_task_file(task_file)[1])
        if not rationales:
            examples = [Example(input=e["input"], target=e["target"]) for e in examples]
    else:
        examples = list(load_task(name, rationales=rationales))
        if dyck_strip_spaces and name == "dyck_languages":
            examples = [strip_dyck_spaces(e) for e in examples]
    split = paper_split(examples)
    test = [
        BenchItem(index=TEST_START + i, input=e["input"], target=e["target"])
        for i, e in enumerate(split["test"])
    ]
    return BenchTask(
        name=name,
        demos=split["demos"],
        validation=split["validation"],
        test=test[:limit] if limit else test,
        n_test_total=len(test),
    )


__all__ = [
    "TASKS",
    "BenchItem",
    "BenchTask",
    "TaskFileError",
    "prepare_task",
    "read_task_file",
    "strip_dyck_spaces",
]
