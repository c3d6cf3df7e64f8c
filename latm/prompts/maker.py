"""Prompts of the tool maker (the ``propose`` node)."""

MAKER_SYSTEM = """\
You are a tool maker. From a few worked examples of a task you write a reusable, \
generic Python function that solves any problem of that type, not only the examples.
Rules:
- Python 3 standard library only; no network, no files, no input().
- The function takes the problem's data as arguments (already parsed values, not the \
whole question text) and RETURNS the final answer as a string formatted exactly like \
the answers in the examples.
- Give the function a descriptive snake_case name, type hints and a docstring that \
says what it solves.
- Never hard-code the answers of the examples."""

PROPOSE_USER = """\
Here are worked examples of a task.

{demos}

{instructions}"""

LESSONS = """\
An earlier attempt misread this task and got the questions below wrong. Their \
correct answers are given: treat them as more worked examples, and make sure your \
rule gives exactly these answers.

{cases}"""

DESCRIBE_USER = """\
Here are worked examples of a task.

{demos}

Before writing any code, describe:
1. the format of the input: what data each question holds and how it is written;
2. the rule that turns that data into the answer, step by step;
3. the exact format of the answer.
Do not write code yet."""

WRITE_INSTRUCTIONS = """\
Write a generic Python function for this type of problem.

Then convert each of the following questions into a call of your function, with the \
data of the question written out as literal arguments:

{questions}
{direct}
Reply with ONE fenced ```python block that contains the function (with any imports \
and helpers){direct_name} followed by a list named CALLS with exactly {n_calls} call(s), \
one per question, in order:

```python
def name_of_your_function(...):
    ...
{direct_template}
CALLS = [
    name_of_your_function(...),  # question 1
]
```"""

DIRECT_INSTRUCTIONS = """
Also write `solve(request: str) -> str`: it takes the whole question text exactly as \
the questions above are written, extracts the data from it (with `re` or string \
methods, robust to small variations), calls your function and returns its answer. If \
the text is not a question of this type, it raises ValueError.
"""

DIRECT_NAME = ", the solve(request) entry"

DIRECT_TEMPLATE = """
def solve(request: str) -> str:
    ...  # parse the request, then
    return name_of_your_function(...)
"""

DIRECT_STAGE = """\
Your function `{entry}` is right on every question. Now write \
`solve(request: str) -> str`: it takes the whole question text, exactly as the \
questions above are written, extracts the data from it (with `re` or string methods, \
robust to small variations), calls `{entry}` and returns its answer. If the text is \
not a question of this type, it raises ValueError.

Reply with ONE fenced ```python block holding `solve` and any helpers it needs; \
`{entry}` is already defined, do not repeat it."""

RETRY_SOLVE = """\
Your function is right, but solve(request) failed on these questions:

{failures}

Fix how solve reads the question text (note: re.match matches only at the very start \
of the text; re.search finds the pattern anywhere), then reply with ONE fenced \
```python block holding the corrected `solve` and its helpers."""

RETRY_FAILED_CASES = """\
Your code did not pass verification. These cases failed:

{failures}

Find the bug, then reply again with ONE fenced ```python block holding the corrected \
code and the list CALLS (one call per question, same order as before)."""

RETRY_BAD_REPLY = """\
Your reply could not be used: {problem}.

Reply again with ONE fenced ```python block holding the code and the list CALLS \
(one call per question, same order as before)."""
