"""Runs calls of a generated tool; executed inside the sandbox, never in the host.

Standard library only, and compatible with Python 3.8 and later: this module
runs under whatever interpreter the sandbox user can read, either as a script
(``python -I -S -B runner.py JOB``, the unhardened floor) or shipped as source
into a sandbox process (:mod:`latm.sandbox.server`).

As a script it reads a JSON job ``{"code": str, "call": str,
"max_output_bytes": int}``, executes the code in a fresh module namespace,
evaluates the call expression and writes one JSON line ``{"status", "value",
"error", "stdout"}`` to its standard output.

Rendering rules (the graph relies on them): a ``str`` is returned as is, ints
and bools as ``str()``, integral floats without the ``.0``, other floats with
``repr()``, lists and tuples rendered item by item and joined by spaces. A call
that returns ``None`` but printed something answers with its last printed line;
one that returns ``None`` and printed nothing is an error.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback
from typing import Any

RECURSION_LIMIT = 20000


def render(value: Any) -> str:
    """Render a tool's return value as answer text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (list, tuple)):
        return " ".join(render(item) for item in value)
    return str(value)


def describe(exc: BaseException) -> str:
    """One line naming the exception and where in the tool it was raised."""
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == "<tool>":
            where = f" (tool line {frame.lineno})"
    return f"{type(exc).__name__}: {exc}{where}"[:2000]


def new_namespace(fresh_builtins: bool = False) -> dict[str, Any]:
    """A fresh module namespace for a tool.

    Args:
        fresh_builtins: Give the module its own copy of the builtins, so that
            what it rebinds there stays in this namespace (warm workers).
    """
    if not fresh_builtins:
        return {"__name__": "tool", "__builtins__": __builtins__}
    shared = __builtins__ if isinstance(__builtins__, dict) else vars(__builtins__)
    return {"__name__": "tool", "__builtins__": dict(shared)}


def _finish(value: Any, printed: str) -> dict[str, Any]:
    """Turn a call's return value and printed output into a result dict."""
    result: dict[str, Any] = {"status": "ok", "value": None, "error": None, "stdout": ""}
    if value is None and printed.strip():
        value = printed.strip().splitlines()[-1]
    if value is None:
        result = {
            "status": "error",
            "value": None,
            "stdout": "",
            "error": "the call returned None and printed nothing",
        }
    else:
        result["value"] = render(value)
    return result


def _seal(result: dict[str, Any], printed: str, cap: int) -> dict[str, Any]:
    """Attach the capped printed output and enforce the answer cap."""
    result["stdout"] = printed[:cap]
    if result["value"] is not None and len(result["value"]) > cap:
        result = {
            "status": "error",
            "value": None,
            "stdout": result["stdout"],
            "error": f"the answer is longer than {cap} characters",
        }
    return result


def _error(exc: BaseException) -> dict[str, Any]:
    return {"status": "error", "value": None, "error": describe(exc), "stdout": ""}


def failed(exc: BaseException, cap: int) -> dict[str, Any]:
    """The result dict of a call whose module could not even be compiled."""
    return _seal(_error(exc), "", cap)


def execute(code: Any, call: str, cap: int, *, fresh_builtins: bool = False) -> dict[str, Any]:
    """Execute ``code`` in a fresh namespace, evaluate ``call`` and return the result dict.

    Args:
        code: The tool module's source, or its compiled code object.
        call: A Python expression evaluated against the module.
        cap: Cap on the answer length and on the captured printed output.
        fresh_builtins: Give the module its own copy of the builtins.

    Returns:
        ``{"status": "ok"|"error", "value", "error", "stdout"}``.
    """
    sys.setrecursionlimit(RECURSION_LIMIT)
    captured = io.StringIO()
    try:
        namespace = new_namespace(fresh_builtins)
        if isinstance(code, str):
            code = compile(code, "<tool>", "exec")
        with contextlib.redirect_stdout(captured):
            exec(code, namespace)
            value = eval(compile(call, "<call>", "eval"), namespace)
        result = _finish(value, captured.getvalue())
    except BaseException as exc:  # the tool may raise anything, SystemExit included
        result = _error(exc)
    return _seal(result, captured.getvalue(), cap)


def dumps(result: dict[str, Any]) -> str:
    """Serialize a result dict, falling back to an error when it cannot be."""
    try:
        return json.dumps(result)
    except Exception as exc:
        return json.dumps(
            {
                "status": "error",
                "value": None,
                "stdout": "",
                "error": f"unserializable result: {exc}",
            }
        )


def main() -> None:
    """Run the job named on the command line."""
    with open(sys.argv[1], encoding="utf-8") as handle:
        job = json.load(handle)
    cap = int(job.get("max_output_bytes", 65536))
    out = sys.stdout
    line = dumps(execute(job["code"], job["call"], cap))
    out.write("\n" + line + "\n")
    out.flush()


if __name__ == "__main__":
    main()
