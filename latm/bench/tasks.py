"""The benchmark's tasks: the paper's split, the item limit and the Dyck option."""

from __future__ import annotations

from dataclasses import dataclass

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


def prepare_task(
    name: str,
    *,
    limit: int | None = None,
    dyck_strip_spaces: bool = False,
    rationales: bool = False,
) -> BenchTask:
    """Load a task and split it as the paper did.

    Args:
        name: One of :data:`latm.data.TASKS`.
        limit: Run only the first ``limit`` test items (all when ``None``).
        dyck_strip_spaces: Strip spaces from Dyck sequences and targets (the
            paper's preparation of that task).
        rationales: Give the demos their shipped reasoning (shown to the maker and
            in the CoT shots).

    Raises:
        KeyError: No such task.
        ValueError: The limit is below 1.
    """
    if limit is not None and limit < 1:
        raise ValueError("the limit must be at least 1")
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


__all__ = ["TASKS", "BenchItem", "BenchTask", "prepare_task", "strip_dyck_spaces"]
