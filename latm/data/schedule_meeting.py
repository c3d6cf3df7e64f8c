"""The schedule_meeting task: a seeded generator of the paper's sixth task.

Each instance asks for the earliest common window of two or three people's free
time. The day has twenty 30-minute slots between 08:00 and 18:00; every person
gets 5-15 random free slots, shown as merged ``"HH:MM - HH:MM"`` ranges; the
meeting lasts 0.5, 1 or 1.5 hours. The answer is the earliest window of that
length inside everyone's free time, ``"HH:MM - HH:MM"``, or ``"No time slot works."``.

The shipped ``schedule_meeting.json`` was written by this module with
:data:`SEED` (``python -m latm.data.schedule_meeting``); the file records the
seed, and a unit test checks that regenerating it gives the same file.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

from latm.graph.state import Example

SEED = 20230526
N_INSTANCES = 250
DAY_START_MIN = 8 * 60
SLOT_MIN = 30
N_SLOTS = 20  # 08:00 - 18:00
LENGTHS_H = (0.5, 1.0, 1.5)
PEOPLE = ("A", "B", "C")
NO_SLOT = "No time slot works."
DATA_FILE = Path(__file__).with_name("schedule_meeting.json")


def clock(slot: int) -> str:
    """The time at which a slot index starts, as ``HH:MM`` (slot 20 is 18:00)."""
    minutes = DAY_START_MIN + SLOT_MIN * slot
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def merge_slots(slots: Sequence[int]) -> list[tuple[int, int]]:
    """Merge free slots into ``[start, end)`` runs of adjacent slots, earliest first."""
    runs: list[tuple[int, int]] = []
    for slot in sorted(set(slots)):
        if runs and runs[-1][1] == slot:
            runs[-1] = (runs[-1][0], slot + 1)
        else:
            runs.append((slot, slot + 1))
    return runs


def format_availability(slots: Sequence[int]) -> str:
    """Free slots as the question shows them: ``"08:00 - 09:30, 11:00 - 11:30"``."""
    return ", ".join(f"{clock(a)} - {clock(b)}" for a, b in merge_slots(slots))


def earliest_window(people_slots: Sequence[Sequence[int]], length_slots: int) -> str:
    """The earliest window of ``length_slots`` slots free for everyone, or :data:`NO_SLOT`."""
    common = set(range(N_SLOTS))
    for slots in people_slots:
        common &= set(slots)
    for start in range(N_SLOTS - length_slots + 1):
        if all(start + k in common for k in range(length_slots)):
            return f"{clock(start)} - {clock(start + length_slots)}"
    return NO_SLOT


def format_length(hours: float) -> str:
    """A meeting length as the question writes it: ``0.5``, ``1``, ``1.5``."""
    return f"{hours:g}"


def question_text(people_slots: Sequence[Sequence[int]], hours: float) -> str:
    """The question of one instance."""
    names = PEOPLE[: len(people_slots)]
    who = " and ".join(names) if len(names) == 2 else f"{', '.join(names[:-1])} and {names[-1]}"
    lines = [f"{who} want to schedule a {format_length(hours)}-hour meeting together."]
    lines += [
        f"{name}'s availability: {format_availability(slots)}"
        for name, slots in zip(names, people_slots, strict=True)
    ]
    lines.append("What time slot works best? (if multiple, choose the earliest one)")
    return "\n".join(lines)


def make_instance(rng: random.Random) -> Example:
    """Draw one instance: two or three people, a meeting length, everyone's free slots."""
    n_people = rng.choice((2, 3))
    hours = rng.choice(LENGTHS_H)
    people_slots = [sorted(rng.sample(range(N_SLOTS), rng.randint(5, 15))) for _ in range(n_people)]
    target = earliest_window(people_slots, round(hours * 60) // SLOT_MIN)
    return Example(input=question_text(people_slots, hours), target=target)


def generate(n: int = N_INSTANCES, seed: int = SEED) -> list[Example]:
    """Generate ``n`` instances deterministically from ``seed``."""
    rng = random.Random(seed)
    return [make_instance(rng) for _ in range(n)]


def document(n: int = N_INSTANCES, seed: int = SEED) -> dict[str, object]:
    """The JSON document shipped as ``schedule_meeting.json``."""
    return {
        "task": "schedule_meeting",
        "generator": "latm.data.schedule_meeting",
        "seed": seed,
        "n": n,
        "description": (
            "Earliest common meeting window of 2 or 3 people; 30-minute slots 08:00-18:00, "
            "5-15 free slots per person, meeting length 0.5/1/1.5 h. Generated for LATM "
            "(Cai et al. 2023 describe the task); regenerate with "
            "'python -m latm.data.schedule_meeting --seed SEED'."
        ),
        "examples": generate(n, seed),
    }


def dumps(doc: dict[str, object]) -> str:
    """The document as the shipped file holds it (indented JSON, final newline)."""
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write the instances as JSON (to the shipped file by default)."""
    parser = argparse.ArgumentParser(description="Generate the schedule_meeting task.")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("-n", type=int, default=N_INSTANCES)
    parser.add_argument("-o", "--output", default=str(DATA_FILE), help="'-' for stdout")
    args = parser.parse_args(argv)
    text = dumps(document(args.n, args.seed))
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
