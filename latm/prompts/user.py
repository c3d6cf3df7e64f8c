"""Prompts of the tool user (the ``use`` node).

The usage demos are sent as earlier turns of the conversation (question, then the
call as the model's reply): small user models copy the shape of a worked turn far
more faithfully than a list of demos inside one message, and are less tempted to
reuse a demo's arguments for the new question.
"""

USE_SYSTEM = """\
You answer questions by calling this Python tool:

```python
{signature}
    \"\"\"{docstring}\"\"\"
```

For each question, reply with ONE Python expression that calls the tool, with the \
data of THAT question written out as literal arguments, in a fenced ```python block. \
Do not answer the question yourself and do not define anything."""

USE_USER = """\
Question: {question}"""

USE_CALL = """\
```python
{call}
```"""
