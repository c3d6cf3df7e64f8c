"""Benchmark tasks shipped with LATM (BIG-Bench Hard and BIG-bench; see ``bbh/README.md``)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from latm.graph.state import Example

BBH_DIR = Path(__file__).with_name("bbh")
BBH_TASKS = (
    "word_sorting",
    "dyck_languages",
    "logical_deduction_five_objects",
    "tracking_shuffled_objects_five_objects",
    "chinese_remainder_theorem",
)


@cache
def load_task(name: str) -> tuple[Example, ...]:
    """Return the examples of a shipped task, in file order.

    Raises:
        KeyError: No task of that name is shipped.
    """
    path = BBH_DIR / f"{name}.json"
    if name not in BBH_TASKS or not path.exists():
        raise KeyError(f"unknown task {name!r}; shipped: {', '.join(BBH_TASKS)}")
    data = json.loads(path.read_text(encoding="utf-8"))
    return tuple(Example(input=e["input"], target=str(e["target"])) for e in data["examples"])


def paper_split(examples: tuple[Example, ...] | list[Example]) -> dict[str, list[Example]]:
    """The paper's split: demos 0-2, validation 5-7, test 10 onwards."""
    return {
        "demos": list(examples[0:3]),
        "validation": list(examples[5:8]),
        "test": list(examples[10:]),
    }
