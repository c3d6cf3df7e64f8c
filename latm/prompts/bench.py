"""Prompts of the benchmark's direct-answering baseline (few-shot chain of thought).

The tasks ship worked examples without written reasoning, so the three demos
show the question and the final answer in the required form, and the
instruction asks for step-by-step reasoning before it.
"""

COT_SYSTEM = """\
You solve reasoning problems. Think step by step, then end your reply with one line \
of the form:
So the answer is <answer>.
Write <answer> exactly in the form of the answers in the examples (for a multiple-choice \
question, the option letter in parentheses, like (A))."""

COT_DEMO = """\
Q: {question}
A: So the answer is {answer}."""

COT_USER = """\
{demos}

Q: {question}
A: Let's think step by step."""
