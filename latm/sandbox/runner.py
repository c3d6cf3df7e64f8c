"""Runs one call of a generated tool; executed as a script inside the sandbox.

This file is run by a separate interpreter (``python -I -S -B runner.py JOB``)
and must depend on the standard library only. It reads a JSON job
``{"code": str, "call": str, "max_output_bytes": int}``, executes the code in a
fresh module namespace, evaluates the call expression and writes one JSON line
``{"status", "value", "error", "stdout"}`` to its standard output.
"""

import contextlib
import io
import json
import sys
import traceback


def render(value):  # type: ignore[no-untyped-def]
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


def describe(exc):  # type: ignore[no-untyped-def]
    """One line naming the exception and where in the tool it was raised."""
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == "<tool>":
            where = f" (tool line {frame.lineno})"
    return f"{type(exc).__name__}: {exc}{where}"[:2000]


def main():  # type: ignore[no-untyped-def]
    """Run the job named on the command line."""
    with open(sys.argv[1], encoding="utf-8") as handle:
        job = json.load(handle)
    cap = int(job.get("max_output_bytes", 65536))
    out = sys.stdout
    captured = io.StringIO()
    result = {"status": "ok", "value": None, "error": None, "stdout": ""}
    sys.setrecursionlimit(20000)
    try:
        namespace = {"__name__": "tool", "__builtins__": __builtins__}
        with contextlib.redirect_stdout(captured):
            exec(compile(job["code"], "<tool>", "exec"), namespace)
            value = eval(compile(job["call"], "<call>", "eval"), namespace)
        printed = captured.getvalue()
        if value is None and printed.strip():
            value = printed.strip().splitlines()[-1]
        if value is None:
            result = {"status": "error", "value": None, "stdout": "",
                      "error": "the call returned None and printed nothing"}
        else:
            result["value"] = render(value)
    except BaseException as exc:  # the tool may raise anything, SystemExit included
        result = {"status": "error", "value": None, "error": describe(exc), "stdout": ""}
    result["stdout"] = captured.getvalue()[:cap]
    if result["value"] is not None and len(result["value"]) > cap:
        result = {"status": "error", "value": None, "stdout": result["stdout"],
                  "error": f"the answer is longer than {cap} characters"}
    try:
        line = json.dumps(result)
    except Exception as exc:
        line = json.dumps({"status": "error", "value": None, "stdout": "",
                           "error": f"unserializable result: {exc}"})
    out.write("\n" + line + "\n")
    out.flush()


if __name__ == "__main__":
    main()
