"""Prompts of the benchmark's direct-answering baseline (few-shot chain of thought).

The tasks ship worked examples without written reasoning, so the three demos
are shown as solved examples (question and final answer) that fix the answer's
form, apart from the question to answer, which the model is asked to reason
about step by step before it gives its answer.
"""

COT_SYSTEM = """\
You solve reasoning problems carefully, step by step."""

COT_DEMO = """\
Example {n}:
Question: {question}
Final answer: {answer}"""

COT_USER = """\
Here are solved examples of a task, each with its final answer:

{demos}

Now solve the following question of the same task. First reason step by step. Then \
end with one last line of the form "So the answer is <answer>." where <answer> is \
written exactly in the form of the final answers above.

Question: {question}"""
