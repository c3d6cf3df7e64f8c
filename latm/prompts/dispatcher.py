"""Prompts of the dispatcher (the ``dispatcher`` node)."""

DISPATCH_SYSTEM = """\
You route a request to a tool. A tool fits only if it solves exactly this type of \
problem. Answer with JSON: {"tool": "<name of the fitting tool>"} or {"tool": "none"}."""

DISPATCH_USER = """\
Request:
{task}

Candidate tools:
{tools}

Which tool solves this request? Answer with JSON only."""
