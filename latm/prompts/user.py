"""Prompts of the tool user (the ``use`` node)."""

USE_SYSTEM = """\
You answer questions by calling a Python tool. Reply with ONE Python expression that \
calls the tool, with the data of the question written out as literal arguments, in \
a fenced ```python block. Do not answer the question yourself and do not define \
anything."""

USE_USER = """\
The tool:

```python
{signature}
    \"\"\"{docstring}\"\"\"
```

How questions are turned into calls:

{demos}

Question: {question}
Call:"""
