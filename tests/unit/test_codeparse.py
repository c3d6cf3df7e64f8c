from __future__ import annotations

import pytest

from latm.codeparse import ReplyError, function_info, parse_call, parse_proposal

REPLY = '''Sure.

```python
import re

def _helper(x):
    return x

def sort_words(words: list[str]) -> str:
    """Sort words."""
    return " ".join(sorted(words))

print(sort_words(["b", "a"]))

if __name__ == "__main__":
    print("demo")

CALLS = [
    sort_words(["b", "a"]),
    sort_words(["d", "c"]),
]
```
'''


def test_proposal_splits_code_and_calls_and_drops_demo_code():
    p = parse_proposal(REPLY)
    assert p.entry == "sort_words"
    assert p.calls == ["sort_words(['b', 'a'])", "sort_words(['d', 'c'])"]
    assert "import re" in p.code and "def _helper" in p.code
    assert "print(" not in p.code and "__main__" not in p.code and "CALLS" not in p.code


def test_proposal_across_two_blocks_and_unfenced_code():
    two = "```python\ndef f(x):\n    return x\n```\nand\n```py\nCALLS = [f(1)]\n```"
    assert parse_proposal(two).calls == ["f(1)"]
    assert parse_proposal("def g(x):\n    return x\n").entry == "g"


FORGETFUL = """```python
from collections import Counter as C

def parse(text: str) -> str:
    numbers = [int(n) for n in re.findall(r"\\d+", text)]
    return str(math.prod(numbers)) + str(C(text)) + str(len(string))

def count(words, string):
    return words.split()
```"""


def test_forgotten_imports_of_common_modules_are_added_and_nothing_else():
    p = parse_proposal(FORGETFUL)
    lines = p.code.splitlines()
    # `re` and `math` are used as modules and bound nowhere in the module
    assert lines[:2] == ["import math", "import re"]
    # a name the code binds itself (here `re`) is left alone
    rebinding = FORGETFUL.replace("return words.split()", "re = words\n    return re.split()")
    assert "import re" not in parse_proposal(rebinding).code
    # `string` is a parameter somewhere, `Counter` came in under another name
    assert "import string" not in p.code and "import collections" not in p.code
    # already imported: nothing is added
    assert parse_proposal(REPLY).code.startswith("import re\n\ndef _helper")


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ("I cannot do that.", "no Python code block"),
        ("```python\ndef f(:\n```", "syntax error"),
        ("```python\nx = 1\n```", "defines no public function"),
        ("```python\ndef f(x):\n    from math import *\n    return x\n```", r"import \* only"),
        ("```python\nreturn 1\ndef f(x):\n    return x\n```", "'return' outside function"),
    ],
)
def test_unusable_replies(reply, message):
    with pytest.raises(ReplyError, match=message):
        parse_proposal(reply)


def test_function_info():
    code = parse_proposal(REPLY).code
    assert function_info(code, "sort_words") == (
        "def sort_words(words: list[str]) -> str",
        "Sort words.",
    )
    with pytest.raises(ReplyError):
        function_info(code, "missing")


@pytest.mark.parametrize(
    "reply",
    [
        "sort_words(['a', 'b'])",
        "```python\nsort_words(['a', 'b'])\n```",
        "```python\nresult = sort_words(['a', 'b'])\n```",
        "Call:\n```python\nprint(sort_words(['a', 'b']))\n```",
        "Here you go: `sort_words(['a', 'b'])`\nsort_words(['a', 'b'])",
    ],
)
def test_parse_call_accepts_common_shapes(reply):
    assert parse_call(reply, "sort_words") == "sort_words(['a', 'b'])"


def test_parse_call_keeps_wrapping_expressions_and_rejects_answers():
    assert parse_call("' '.join(sort_words(['a']))", "sort_words") == "' '.join(sort_words(['a']))"
    with pytest.raises(ReplyError, match=r"calls sort_words\(\)"):
        parse_call("The answer is 'a b'", "sort_words")
    with pytest.raises(ReplyError):
        parse_call("other(['a'])", "sort_words")


def test_a_tool_function_named_solve_is_renamed_not_lost() -> None:
    from latm.codeparse import DIRECT_ENTRY, RENAMED_ENTRY, without_function

    reply = (
        "```python\ndef solve(words: list[str]) -> str:\n"
        "    return ' '.join(sorted(words))\n\n"
        "CALLS = [solve(['b', 'a']), solve(['d', 'c'])]\n```"
    )
    proposal = parse_proposal(reply)
    assert proposal.entry == RENAMED_ENTRY and not proposal.direct
    assert proposal.calls == [f"{RENAMED_ENTRY}(['b', 'a'])", f"{RENAMED_ENTRY}(['d', 'c'])"]
    # dropping a failing solve() entry can no longer drop the tool itself
    assert f"def {RENAMED_ENTRY}(" in without_function(proposal.code, DIRECT_ENTRY)


def test_the_prompts_placeholder_name_is_never_kept() -> None:
    from latm.codeparse import RENAMED_ENTRY

    reply = (
        "```python\ndef name_of_your_function(words):\n    return ' '.join(sorted(words))\n\n"
        "def solve(request: str) -> str:\n"
        "    return name_of_your_function(request.split(':')[-1].split())\n\n"
        "CALLS = [name_of_your_function(['b', 'a'])]\n```"
    )
    proposal = parse_proposal(reply)
    assert proposal.entry == RENAMED_ENTRY and proposal.direct
    assert "name_of_your_function" not in proposal.code + "".join(proposal.calls)
    assert f"return {RENAMED_ENTRY}(request" in proposal.code


def test_a_renamed_tool_does_not_clash_with_an_existing_function() -> None:
    reply = (
        "```python\ndef solve_task(x):\n    return x\n\n"
        "def solve(words):\n    return solve_task(' '.join(sorted(words)))\n\n"
        "CALLS = [solve(['b', 'a'])]\n```"
    )
    proposal = parse_proposal(reply)
    assert proposal.entry == "solve_task_2"
    assert "def solve_task(x)" in proposal.code and "def solve_task_2(words)" in proposal.code


def test_a_solve_entry_called_with_the_question_text_keeps_its_name() -> None:
    reply = (
        "```python\ndef solve(request: str) -> str:\n    return 'Yes'\n\n"
        "CALLS = [solve('Is it? Options: Yes, No'), solve('And this?')]\n```"
    )
    proposal = parse_proposal(reply)
    assert proposal.entry == "solve" and proposal.direct
