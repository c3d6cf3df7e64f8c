"""The schedule_meeting generator, the task loader and the benchmark's split."""

from __future__ import annotations

import json
import re

import pytest

from latm.bench.tasks import prepare_task, strip_dyck_spaces
from latm.data import BBH_TASKS, TASKS, load_task, paper_split
from latm.data import schedule_meeting as sm

_RANGE = re.compile(r"(\d\d):(\d\d) - (\d\d):(\d\d)")


def minutes(hh: str, mm: str) -> int:
    return int(hh) * 60 + int(mm)


def parse_question(question: str) -> tuple[float, dict[str, list[tuple[int, int]]]]:
    """Meeting hours and each person's free ranges in minutes, read back from the text."""
    hours = float(re.search(r"schedule a ([\d.]+)-hour meeting", question).group(1))
    people = {}
    for name, ranges in re.findall(r"^(\w)'s availability: (.*)$", question, re.MULTILINE):
        people[name] = [(minutes(a, b), minutes(c, d)) for a, b, c, d in _RANGE.findall(ranges)]
    return hours, people


def brute_force_answer(hours: float, people: dict[str, list[tuple[int, int]]]) -> str:
    """The earliest common window, minute by minute (independent of the generator)."""
    need = int(hours * 60)
    for start in range(8 * 60, 18 * 60 - need + 1):
        if all(
            any(a <= start and start + need <= b for a, b in ranges) for ranges in people.values()
        ):
            end = start + need
            return f"{start // 60:02d}:{start % 60:02d} - {end // 60:02d}:{end % 60:02d}"
    return "No time slot works."


def test_generator_is_deterministic_per_seed():
    assert sm.generate(20, seed=7) == sm.generate(20, seed=7)
    assert sm.generate(20, seed=7) != sm.generate(20, seed=8)


def test_shipped_file_is_the_generator_output_for_its_recorded_seed():
    shipped = json.loads(sm.DATA_FILE.read_text(encoding="utf-8"))
    assert shipped["seed"] == sm.SEED and shipped["n"] == len(shipped["examples"]) == 250
    assert sm.DATA_FILE.read_text(encoding="utf-8") == sm.dumps(sm.document(250, shipped["seed"]))


@pytest.mark.parametrize("seed", [sm.SEED, 1, 2])
def test_every_instance_follows_the_spec_and_its_answer_is_right(seed):
    examples = sm.generate(250, seed=seed)
    sizes, lengths, answers = set(), set(), set()
    for ex in examples:
        q = ex["input"]
        hours, people = parse_question(q)
        assert q.endswith("What time slot works best? (if multiple, choose the earliest one)")
        names = list(people)
        assert names in (["A", "B"], ["A", "B", "C"])
        who = "A and B" if len(names) == 2 else "A, B and C"
        assert q.startswith(f"{who} want to schedule a {hours:g}-hour meeting together.\n")
        lengths.add(hours)
        for ranges in people.values():
            free = sum(b - a for a, b in ranges) // 30
            assert 5 <= free <= 15
            assert all(8 * 60 <= a < b <= 18 * 60 and a % 30 == 0 == b % 30 for a, b in ranges)
            # adjacent slots are merged: ranges are sorted and never touch
            assert all(ranges[i][1] < ranges[i + 1][0] for i in range(len(ranges) - 1))
        sizes.add(len(names))
        assert ex["target"] == brute_force_answer(hours, people)
        answers.add(ex["target"] == sm.NO_SLOT)
    assert sizes == {2, 3} and lengths == {0.5, 1.0, 1.5} and answers == {True, False}


def test_format_helpers():
    assert sm.merge_slots([3, 0, 1, 5, 4]) == [(0, 2), (3, 6)]
    assert sm.format_availability([0, 1, 19]) == "08:00 - 09:00, 17:30 - 18:00"
    assert sm.earliest_window([[0, 2, 3, 4], [2, 3, 4, 9]], 3) == "09:00 - 10:30"
    assert sm.earliest_window([[0, 2, 3, 4], [2, 3, 4, 9]], 4) == sm.NO_SLOT


def test_cli_writes_the_document(tmp_path):
    out = tmp_path / "sm.json"
    assert sm.main(["--seed", "3", "-n", "5", "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["seed"] == 3 and doc["examples"] == sm.generate(5, seed=3)


def test_loader_serves_all_six_tasks_and_keeps_the_demo_choices():
    assert set(BBH_TASKS) < set(TASKS) and "schedule_meeting" in TASKS and len(TASKS) == 6
    assert list(load_task("schedule_meeting")) == sm.generate()
    with pytest.raises(KeyError, match="unknown task"):
        load_task("nope")


@pytest.mark.parametrize("task", TASKS)
def test_paper_split_of_every_task(task):
    examples = load_task(task)
    split = paper_split(examples)
    assert split["demos"] == list(examples[0:3])
    assert split["validation"] == list(examples[5:8])
    assert len(split["test"]) == 240 and split["test"][0] == examples[10]
    prepared = prepare_task(task, limit=4)
    assert [i.index for i in prepared.test] == [10, 11, 12, 13]
    assert prepared.test[2].input == examples[12]["input"]
    assert prepared.n_test_total == 240
    assert len(prepare_task(task).test) == 240


def test_dyck_space_stripping_is_optional_and_keeps_the_instruction():
    plain = prepare_task("dyck_languages", limit=1)
    stripped = prepare_task("dyck_languages", limit=1, dyck_strip_spaces=True)
    item, raw = stripped.test[0], plain.test[0]
    head, seq = raw.input.rsplit("Input: ", 1)
    assert " " in seq and " " in head
    assert item.input == f"{head}Input: {seq.replace(' ', '')}"
    assert item.target == raw.target.replace(" ", "")
    assert all(" " not in d["target"] for d in stripped.demos + stripped.validation)
    # Other tasks are untouched by the option.
    assert prepare_task("word_sorting", limit=2, dyck_strip_spaces=True) == prepare_task(
        "word_sorting", limit=2
    )
    assert strip_dyck_spaces({"input": "no marker", "target": "a b"}) == {
        "input": "no marker",
        "target": "ab",
    }


def test_limit_must_be_positive():
    with pytest.raises(ValueError):
        prepare_task("word_sorting", limit=0)
