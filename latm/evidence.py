"""How much a verification proves: the chance that luck passed it.

A maker that does not understand a task still writes code that answers
*something*. On a task with few possible answers (yes/no, five options) such
code passes a handful of checks by luck, and trying many candidates (best-of-N,
several rounds) makes a lucky pass likely. This module estimates that chance
and the other label-free signals ``verify`` uses. It is pure: no I/O, nothing
runs here.

**The estimate.** Let ``p`` be the task's answer distribution and suppose the
labelled examples are independent draws. A tool whose answers do not depend on
what the question asks (a constant, a guess, a branch on phrases that have
nothing to do with the answer) produces some outputs ``o_1..o_n`` for ``n``
checks, independent of their expected answers ``a_1..a_n``; it passes them all
with probability ``prod_i p(o_i)``. Two kinds of answers differ here:

* an answer any tool can emit without reading the question (short: under
  :data:`DISTINCTIVE_CHARS` characters, an option letter, or one shared by
  several examples, like "No time slot works."): the best blind tool emits the
  most common answer, so such a check is passed with chance ``p_max``, the most
  common answer's share (the constant tool reaches it: ``p_max ** n`` for ``n``
  such checks is the exact bound, whatever the answers turn out to be);
* a distinctive answer seen once (a sorted word list, a time slot, a large
  number): a blind tool passes only by emitting that exact text, which is as
  likely as the task repeating that answer: its share among the labelled
  examples and the check, ``1 / (m + 1)``.

The chance that a blind candidate passes every check is the product of these
per-check chances; with ``k`` candidates tried, the chance that at least one
blind candidate passes is at most ``k`` times that (the union bound): the
**lucky-pass chance** this module reports.

Estimates, from the ``m`` labelled examples of the request (answers compared
after normalization):

* ``p_max = (n_max + 1) / (m + 1)``: the top answer's share counting one more
  example with that answer (small samples err towards luck: three "Yes" and
  three "No" give 4/7, not 1/2), and at least ``1 / K`` when the questions list
  ``K`` options;
* when all ``m`` answers are different and distinctive (free-form answers:
  sorting, arithmetic), every check's chance is ``1 / (C(m, 2) + 2)``, Laplace's
  rule of succession for "two examples share an answer" after none of the
  ``C(m, 2)`` pairs did.

Only checks whose answer the maker could not copy count: not a demo's or a
reported failure's answer (the maker saw those), unless the answer is
distinctive, given by one example only, and the hard-coding check is on (code
holding it as a literal is rejected). Checks on the same example count once.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from latm.answers import normalize_answer, parse_options
from latm.graph.state import CaseReport, Example

DISTINCTIVE_CHARS = 4
"""An answer this long or longer (and no option letter) is distinctive: the
hard-coding check rejects code that holds it as a literal."""
_OPTION = re.compile(r"^\(?[A-Za-z]\)?$")
_INT = re.compile(r"(?<![\d.])\d+(?![\d.])")


def answer_key(example: Example) -> str:
    """An example's answer as compared (options as ``(X)``)."""
    return normalize_answer(example["target"], example["input"])


def distinctive(answer: str) -> bool:
    """Whether ``answer`` is long enough, and no option letter, to count as distinctive."""
    return len(answer.strip()) >= DISTINCTIVE_CHARS and not _OPTION.match(answer.strip())


def guess_chance(labelled: Sequence[Example]) -> tuple[float, bool]:
    """The chance that one check is passed by the best tool that ignores its input.

    Args:
        labelled: Every labelled example of the request.

    Returns:
        The estimated ``p_max`` (see the module docstring) and whether the answers
        are free-form (all different and distinctive).
    """
    answers = [answer_key(e) for e in labelled]
    m = len(answers)
    if m == 0:
        return 1.0, False
    counts = Counter(answers)
    if m >= 2 and len(counts) == m and all(distinctive(a) for a in answers):
        options = [len(parse_options(e["input"])) for e in labelled]
        if not any(options):
            return 1.0 / (math.comb(m, 2) + 2), True
    chance = (max(counts.values()) + 1) / (m + 1)
    n_options = [k for e in labelled if (k := len(parse_options(e["input"])))]
    if n_options:
        chance = max(chance, 1.0 / min(n_options))
    return min(chance, 1.0), False


def check_chance(answer: str, labelled: Sequence[Example]) -> float:
    """The chance that the best blind tool passes one check whose answer is ``answer``.

    Args:
        answer: The check's expected answer, normalized (:func:`answer_key`).
        labelled: Every labelled example of the request.
    """
    top, free_form = guess_chance(labelled)
    if free_form:
        return top
    counts = Counter(answer_key(e) for e in labelled)
    if distinctive(answer) and counts[answer] <= 1:
        return min(top, 1.0 / (len(labelled) + 1))
    return top


@dataclass(frozen=True)
class Evidence:
    """How strongly a tool's checks rule out a lucky pass.

    Attributes:
        cases: Labelled examples the tool was checked on and passed.
        blind: Of those, the ones whose answer the maker could not copy.
        guess_chance: Chance that the best input-blind tool passes one check
            whose answer any tool can emit (``p_max``; free-form: the chance of
            any check).
        free_form: Whether the answers are free-form (all different, distinctive).
        candidates: Candidate tools tried before this one was accepted.
        lucky_pass: ``min(1, candidates * product of the blind checks' chances)``.
        threshold: The largest lucky-pass chance that counts as verified.
        top_answer: The most common answer of the labelled examples.
    """

    cases: int
    blind: int
    guess_chance: float
    free_form: bool
    candidates: int
    lucky_pass: float
    threshold: float
    top_answer: str

    @property
    def sufficient(self) -> bool:
        """Whether the lucky-pass chance is within the threshold."""
        return self.lucky_pass <= self.threshold

    @property
    def more_needed(self) -> int | None:
        """Extra labelled examples (answers unseen by the maker) that would suffice.

        Assumes each new check is passed by luck with chance ``guess_chance``
        (the most common answer's). ``None`` when no number would do (every
        answer is the same).
        """
        if self.sufficient:
            return 0
        return more_needed(self.guess_chance, 0, self.lucky_pass, self.threshold)

    def summary(self) -> dict[str, Any]:
        """The figures, JSON-ready (for the tool record and the graph's output)."""
        return {
            "cases": self.cases,
            "blind_cases": self.blind,
            "guess_chance": self.guess_chance,
            "candidates": self.candidates,
            "lucky_pass": self.lucky_pass,
            "threshold": self.threshold,
        }

    def shortfall(self, n_demos: int) -> str:
        """Why the checks are not enough, and how many more examples would be."""
        why = (
            f"it passed {self.cases} labelled example(s), {self.blind} of them with an answer "
            f"its maker had not seen; a tool that ignores the question (always answering "
            f"{self.top_answer!r}) passes such a check with chance {self.guess_chance:.0%}, and "
            f"{self.candidates} candidate(s) were tried, so a lucky pass has a chance of up to "
            f"{self.lucky_pass:.1%} (the bound is {self.threshold:.1%})"
        )
        more = self.more_needed
        if more is None:
            ask = "give examples with different answers: every example has the same answer"
        else:
            ask = (
                f"give at least {more} more labelled example(s) beyond the {n_demos} demo(s) "
                f"(the tool is checked on every example)"
            )
        return f"{why}. To verify it, {ask}"


def more_needed(chance: float, blind: int, candidates: float, threshold: float) -> int | None:
    """The fewest extra blind checks ``e``: ``candidates * chance**(blind + e) <= threshold``.

    ``candidates`` may be any starting factor (a lucky-pass chance so far, with
    ``blind = 0``).
    """
    if candidates * chance**blind <= threshold:
        return 0
    if chance >= 1.0 or threshold <= 0:
        return None
    total = math.log(threshold / candidates) / math.log(chance)
    need = max(math.ceil(total - 1e-9), blind) - blind
    while candidates * chance ** (blind + need) > threshold:
        need += 1
    return need


def evidence(
    report: Sequence[CaseReport],
    *,
    labelled: Sequence[Example],
    seen: Collection[str],
    candidates: int,
    threshold: float,
    copy_guarded: bool,
) -> Evidence:
    """Weigh a tool's verification report.

    Args:
        report: The checks the tool passed (cases of one example count once; an
            example counts only if every check on it passed).
        labelled: Every labelled example of the request (for the answer distribution).
        seen: Inputs of the examples whose answers the maker was shown (the
            demos, failures reported in earlier rounds).
        candidates: Candidate tools tried so far (the multiple-testing count).
        threshold: The largest lucky-pass chance that counts as verified.
        copy_guarded: Whether code holding an example's distinctive answer is
            rejected (then such an answer counts as unseen).

    Returns:
        The evidence.
    """
    chance, free_form = guess_chance(labelled)
    passed: dict[str, bool] = {}
    expected: dict[str, str] = {}
    for case in report:
        passed[case["input"]] = passed.get(case["input"], True) and bool(case["passed"])
        expected[case["input"]] = normalize_answer(case["expected"], case["input"])
    cases = [text for text, ok in passed.items() if ok]
    counts = Counter(answer_key(e) for e in labelled)
    unique = {a for a, n in counts.items() if n == 1}

    def guarded(text: str) -> bool:
        # the hard-coding check rejects code holding a distinctive answer of one example
        answer = expected[text].strip()
        return copy_guarded and answer in unique and distinctive(answer)

    blind = [text for text in cases if text not in seen or guarded(text)]
    lucky = float(max(candidates, 1))
    for text in blind:
        lucky *= check_chance(expected[text], labelled)
    lucky = min(1.0, lucky)
    top = counts.most_common(1)[0][0] if counts else ""
    return Evidence(
        cases=len(cases),
        blind=len(blind),
        guess_chance=chance,
        free_form=free_form,
        candidates=max(candidates, 1),
        lucky_pass=lucky,
        threshold=threshold,
        top_answer=top,
    )


def constant(outputs: Sequence[str | None], minimum: int = 3) -> str | None:
    """The one answer given to every input, when at least ``minimum`` inputs got it.

    Args:
        outputs: A tool's normalized answers to distinct inputs (``None``: it failed).
        minimum: How many answers it takes to call the tool constant.

    Returns:
        The constant answer, or ``None`` when the answers vary (or are too few).
    """
    answered = [o for o in outputs if o is not None]
    if len(answered) >= minimum and len(set(answered)) == 1 and len(answered) == len(outputs):
        return answered[0]
    return None


def perturbations(question: str) -> list[str]:
    """Questions like ``question`` whose answers a tool must compute afresh.

    Three edits that keep a question well-formed for most tasks: the words after
    the last colon in reverse order (a list to sort, a sequence), every integer
    plus one (numbers in a puzzle), and the second and third sentences swapped
    (statements whose order does not matter). Edits that change nothing are left out.
    """
    found: list[str] = []
    head, colon, tail = question.rpartition(":")
    if colon and len(tail.split()) >= 2:
        found.append(f"{head}: {' '.join(reversed(tail.split()))}")
    if _INT.search(question):
        found.append(_INT.sub(lambda m: str(int(m.group()) + 1), question))
    sentences = re.split(r"(?<=\.) ", question)
    if len(sentences) >= 4:
        sentences[1], sentences[2] = sentences[2], sentences[1]
        found.append(" ".join(sentences))
    return [q for q in dict.fromkeys(found) if q != question]


def probes(task: str, examples: Sequence[Example], limit: int) -> list[str]:
    """Unlabelled inputs to compare candidates on: the request, then perturbed examples.

    Args:
        task: The request being answered (may be empty).
        examples: The labelled examples (their questions are perturbed).
        limit: The most probes to return.
    """
    known = {e["input"] for e in examples}
    found: list[str] = []
    if task.strip() and task not in known:
        found.append(task)
    per_example = [perturbations(e["input"]) for e in examples]
    for round_ in range(max((len(p) for p in per_example), default=0)):
        for variants in per_example:
            if round_ < len(variants) and variants[round_] not in known:
                found.append(variants[round_])
    return list(dict.fromkeys(found))[: max(limit, 0)]


def agreement(outputs: Mapping[int, Sequence[str | None]]) -> dict[int, float | None]:
    """How often each candidate's answers match the other candidates' (TroVE-style).

    Args:
        outputs: Per candidate, its normalized answers to the same probes in the
            same order (``None`` where it failed).

    Returns:
        Per candidate, the share of (probe, other candidate) pairs where both
        answered and agreed, among pairs where at least one answered; ``None``
        when there is nothing to compare (one candidate, or no answers).
    """
    scores: dict[int, float | None] = {}
    for c, mine in outputs.items():
        agree = total = 0
        for d, theirs in outputs.items():
            if d == c:
                continue
            for a, b in zip(mine, theirs, strict=False):
                if a is None and b is None:
                    continue
                total += 1
                agree += a is not None and a == b
        scores[c] = agree / total if total else None
    return scores
