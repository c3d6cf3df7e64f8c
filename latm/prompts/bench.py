"""Prompts of the benchmark's direct-answering baseline (few-shot chain of thought).

The three demos are shown as solved examples (question, the reasoning when the
run gives demos theirs, and final answer) that fix the answer's form; the model
is asked to reason about the question step by step before it gives its answer.
"""

COT_SYSTEM = """\
You solve reasoning problems carefully, step by step."""

COT_DEMO = """\
Example {n}:
Question: {question}
{reasoning}Final answer: {answer}"""

COT_REASONING = """\
Reasoning: {rationale}
"""

COT_USER = """\
Here are solved examples of a task, each with its final answer:

{demos}

Now solve the following question of the same task. First reason step by step. Then \
end with one last line of the form "So the answer is <answer>." where <answer> is \
written exactly in the form of the final answers above.

Question: {question}"""
