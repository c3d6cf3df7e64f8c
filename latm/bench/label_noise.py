"""How often does tool making store a tool for a task whose answers are noise?

Run ``python -m latm.bench.label_noise [--trials 50]``. Each trial draws a task
whose answers are random (yes/no for navigation-style questions, an option
letter for five-option questions), so no tool can be right by understanding it,
and makes a tool through the graph with the default settings and a scripted
maker that writes plausible wrong code: a constant answer, a tool that
recognises phrases of the demos (``if step == "Take 1 step"``) and answers the
rest by a default, and heuristics that read the question but not the way the
answers were made. Every candidate reply picks one of them at random, with a
``solve(request)`` entry or without one, as the real maker's portfolio does.

It prints, per task and number of labelled examples, the share of trials that
stored a tool (*false stores*: every stored tool here is wrong) and how many of
those were stored as verified. The script uses only the graph's public input
and the repository, so it measures any version of LATM alike.

``--bench-split`` prints instead, for each of the six bench tasks with the
bench's examples (3 demos, 3 validation), the lucky-pass chance a right tool
would have (with a verified ``solve``, or calls only; 3 or 9 candidates tried)
and whether it is within the default bound.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from langgraph.store.memory import InMemoryStore
from pydantic import Field

from latm import evidence
from latm.data import TASKS as BENCH_TASKS
from latm.data import load_task, paper_split
from latm.graph import Context, InputState
from latm.graph.builder import build_graph
from latm.graph.state import passed_cases
from latm.repository import ToolRepository

DIRECTIONS = ("left", "right", "forward", "backward")
OBJECTS = ("a red book", "a blue cup", "a green pen", "a white box", "a black hat")


def navigate(rng: random.Random) -> dict[str, str]:
    """A navigation-style yes/no question with a random answer (label noise)."""
    steps = []
    for _ in range(rng.randint(3, 6)):
        n = rng.randint(1, 9)
        steps.append(f"Take {n} step{'s' if n > 1 else ''} {rng.choice(DIRECTIONS)}.")
    lead = "Always face forward. " if rng.random() < 0.5 else ""
    question = (
        "If you follow these instructions, do you return to the starting point? "
        f"{lead}{' '.join(steps)}\nOptions:\n- Yes\n- No"
    )
    return {"input": question, "target": rng.choice(("Yes", "No"))}


def options(rng: random.Random) -> dict[str, str]:
    """A five-option question with a random answer letter (label noise)."""
    things = rng.sample(OBJECTS, 5)
    order = ", ".join(things)
    lines = "\n".join(f"({letter}) {thing}" for letter, thing in zip("ABCDE", things, strict=True))
    question = (
        f"On a shelf there are five objects in this order: {order}. "
        f"The {rng.choice(('first', 'second', 'third'))} object was moved {rng.randint(1, 4)} "
        f"places. Which object is in the middle?\nOptions:\n{lines}"
    )
    return {"input": question, "target": f"({rng.choice('ABCDE')})"}


TASKS: dict[str, Callable[[random.Random], dict[str, str]]] = {
    "yes_no": navigate,
    "five_options": options,
}


def _yes_no_tools(demos: Sequence[dict[str, str]], rng: random.Random) -> list[str]:
    """Bodies of ``answer(question: str) -> str`` that are wrong for the noise task."""
    fragments = []
    for demo in demos:
        step = demo["input"].split("? ", 1)[1].split(". ")[0].replace("Always face forward", "")
        fragments.append((step.strip(" .") or "Take 1 step", demo["target"]))
    matcher = "".join(
        f"    for part in question.split('. '):\n"
        f"        if part.strip(' .') == {frag!r}:\n            return {ans!r}\n"
        for frag, ans in fragments
    )
    default = rng.choice(("Yes", "No"))
    return [
        f"    return {default!r}\n",
        matcher + f"    return {default!r}\n",
        "    import re\n"
        "    total = sum(int(n) for n in re.findall(r'Take (\\d+)', question))\n"
        "    return 'Yes' if total % 2 == 0 else 'No'\n",
        "    left = question.count('left')\n    right = question.count('right')\n"
        "    return 'Yes' if left == right else 'No'\n",
        "    return 'Yes' if len(question) % 2 else 'No'\n",
        "    return 'Yes' if 'backward' in question else 'No'\n",
    ]


def _option_tools(demos: Sequence[dict[str, str]], rng: random.Random) -> list[str]:
    default = rng.choice("ABCDE")
    first = demos[0]["input"].split(": ", 1)[1].split(",")[0]
    return [
        f"    return '({default})'\n",
        f"    if {first!r} in question.split('.')[0]:\n"
        f"        return {demos[0]['target']!r}\n    return '({default})'\n",
        "    import re\n"
        "    moved = int(re.search(r'moved (\\d+)', question).group(1))\n"
        "    return '(' + 'ABCDE'[moved % 5] + ')'\n",
        "    lines = [l for l in question.splitlines() if l.startswith('(')]\n"
        "    return max(lines, key=len)[:3]\n",
        "    return '(' + 'ABCDE'[len(question) % 5] + ')'\n",
    ]


SOLVE = '\n\ndef solve(request: str) -> str:\n    """Answer it."""\n    return answer(request)\n'


def wrong_reply(
    task: str, demos: Sequence[dict[str, str]], questions: Sequence[str], rng: random.Random
) -> str:
    """A maker reply with a plausible wrong tool, its calls and maybe ``solve``."""
    bodies = (_yes_no_tools if task == "yes_no" else _option_tools)(demos, rng)
    body = rng.choice(bodies)
    code = f'def answer(question: str) -> str:\n    """Answer the question."""\n{body}'
    if rng.random() < 0.5:
        code += SOLVE
    calls = "\n".join(f"    answer({q!r})," for q in questions)
    return f"```python\n{code}\nCALLS = [\n{calls}\n]\n```\n"


class NoiseMaker(GenericFakeChatModel):
    """A scripted maker that answers every request with a fresh wrong tool."""

    task: str
    demos: list[dict[str, str]]
    questions: list[str]
    rng: Any
    lock: Any = Field(default_factory=threading.Lock, exclude=True)
    messages: Iterator[Any] = Field(default_factory=lambda: iter(()))

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> NoiseMaker:
        """Tools are not used: the same model."""
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        with self.lock:
            text = wrong_reply(self.task, self.demos, self.questions, self.rng)
        self.messages = iter([AIMessage(content=text)])
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


def trial(task: str, n_examples: int, seed: int, **settings: Any) -> tuple[bool, str | None]:
    """Make a tool for one noise task; whether one was stored and its level."""
    rng = random.Random(seed)
    examples = [TASKS[task](rng) for _ in range(n_examples)]
    store = InMemoryStore()
    known = {"exec_timeout_s", "max_retries"}
    maker = NoiseMaker(
        task=task, demos=examples[:3], questions=[e["input"] for e in examples[3:6]], rng=rng
    )
    fields = {k: v for k, v in settings.items() if k in Context.__dataclass_fields__ or k in known}
    ctx = Context(maker_llm=maker, user_llm=maker, **fields)
    request = cast(InputState, {"examples": examples, "task_type": task})
    build_graph(store=store).invoke(request, context=ctx)
    record = ToolRepository(store, ctx.namespace).get(task)
    if record is None:
        return False, None
    strength = getattr(record, "strength", None)
    return True, strength.level if strength is not None else "unmarked"


def measure(
    task: str, n_examples: int, trials: int, seed: int = 0, **settings: Any
) -> dict[str, Any]:
    """Run ``trials`` trials; the false-store counts."""
    stored = verified = crashed = 0
    for i in range(trials):
        try:
            ok, level = trial(task, n_examples, seed * 10_000 + i, **settings)
        except Exception:  # the graph must never raise: counted (nothing was stored)
            crashed += 1
            continue
        stored += ok
        verified += level in ("verified", "unmarked")
    return {
        "task": task,
        "examples": n_examples,
        "trials": trials,
        "stored": stored,
        "verified": verified,
        "crashed": crashed,
    }


def bench_split_table(threshold: float = 0.01) -> list[str]:
    """Markdown rows: the evidence a right tool gets from each bench task's examples."""
    rows = [
        "| task | checked by | blind checks | top answer's chance | 3 candidates | 9 candidates |",
        "|---|---|---|---|---|---|",
    ]
    for task in BENCH_TASKS:
        split = paper_split(load_task(task))
        demos, validation = split["demos"], split["validation"]
        labelled = demos + validation
        for how, checked in (("solve", labelled), ("calls", validation)):
            report = passed_cases(checked, "direct")
            cells = []
            for k in (3, 9):
                found = evidence.evidence(
                    report,
                    labelled=labelled,
                    seen={e["input"] for e in demos},
                    candidates=k,
                    threshold=threshold,
                    copy_guarded=True,
                )
                verdict = "verified" if found.sufficient else f"needs {found.more_needed} more"
                cells.append(f"{found.lucky_pass:.2g} ({verdict})")
            rows.append(
                f"| {task} | {how} | {found.blind} | {found.guess_chance:.2f} | "
                + " | ".join(cells)
                + " |"
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print the false-store rates."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--examples", type=int, nargs="+", default=[6, 15, 33])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--weak-store",
        action="store_true",
        help="store tools the examples cannot verify, marked weak (LATM_WEAK_TOOLS=store)",
    )
    parser.add_argument(
        "--bench-split",
        action="store_true",
        help="print the evidence a right tool gets from each bench task's 6 examples",
    )
    args = parser.parse_args(argv)
    if args.bench_split:
        print("\n".join(bench_split_table()))
        return 0
    extra = {"weak_tools": "store"} if args.weak_store else {}
    print("| task | examples | trials | false stores | of them as verified | crashed | time |")
    print("|---|---|---|---|---|---|---|")
    for task in args.tasks:
        for n in args.examples:
            start = time.monotonic()
            r = measure(task, n, args.trials, args.seed, exec_timeout_s=2.0, max_retries=0, **extra)
            print(
                f"| {task} | {n} | {r['trials']} | {r['stored']} ({r['stored'] / r['trials']:.0%})"
                f" | {r['verified']} | {r['crashed']} | {time.monotonic() - start:.0f} s |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
