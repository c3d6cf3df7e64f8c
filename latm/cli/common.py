"""Helpers shared by the CLI's sub-commands."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:  # imported where used: `latm --help` must not load LangGraph
    from latm.graph.context import Context
    from latm.graph.state import Example
    from latm.repository import ToolRepository


class UserError(Exception):
    """A mistake on the user's side: printed as one clear line, no traceback."""


_UNPRINTABLE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI sequences (colours, cursor moves, ...)
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC sequences (titles, hyperlinks, clipboard)
    r"|\x1b[@-Z\\-_]?"  # other escapes, a lone ESC
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def safe_text(value: object) -> str:
    """Text from a tool or a model, safe to print on a terminal.

    Removes escape sequences and control characters (newlines and tabs stay),
    bidirectional overrides, and turns lone surrogates into ``?``.
    """
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:  # a value whose str() fails prints as nothing
        return ""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return _UNPRINTABLE.sub("", text)


class SafeConsole(Console):
    """A rich console that passes every string it prints through :func:`safe_text`.

    Rich's own styling is added after this, so colours still work; what came
    from a tool or a model (answers, errors, calls, code) cannot move the
    cursor, retitle the window or write to the clipboard.
    """

    def render_str(self, text: str, *args: Any, **kwargs: Any) -> Text:
        """Sanitize, then render as rich does."""
        return super().render_str(safe_text(text), *args, **kwargs)


console = SafeConsole(highlight=False, soft_wrap=True)
err_console = SafeConsole(stderr=True, highlight=False, soft_wrap=True)


def context_from_args(args: argparse.Namespace, **overrides: Any) -> Context:
    """The run's context: environment defaults, then the global CLI options."""
    # lazy: `latm --help` loads no graph, store or model code
    from latm.graph.context import Context

    if getattr(args, "store", None):
        overrides.setdefault("store_path", args.store)
    if getattr(args, "namespace", None):
        overrides.setdefault("namespace", args.namespace)
    try:
        return Context(**overrides)
    except ValueError as exc:  # a malformed LATM_* number, or a limit out of range
        raise UserError(f"bad setting: {exc}") from exc


def repository_from_args(args: argparse.Namespace) -> ToolRepository:
    """The repository the CLI works on (``LATM_DATABASE_URL``, else the local SQLite file)."""
    # lazy: `latm --help` loads no graph, store or model code
    from latm.backends import BackendError, backend_for
    from latm.repository import ToolRepository

    ctx = context_from_args(args)
    try:
        store = backend_for(ctx).store
    except BackendError as exc:
        raise UserError(f"cannot open the tool repository: {exc}") from exc
    return ToolRepository(store, ctx.namespace)


def load_examples(path: str) -> list[Example]:
    """Read worked examples from a JSON or JSONL file.

    Accepts a JSON list of ``{"input", "target"}`` objects (each may add a
    ``"rationale"``: how its answer follows), an object with an
    ``"examples"`` list (the BIG-Bench format), or one object per line.

    Raises:
        UserError: The file is missing, unreadable or not in one of these forms.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte {exc.start}): {exc.reason}") from exc
    try:
        data: Any = json.loads(text)
    except RecursionError as exc:
        raise UserError(f"{path} is nested too deeply to be a list of examples") from exc
    except ValueError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except RecursionError as exc:
            raise UserError(f"{path} is nested too deeply to be a list of examples") from exc
        except ValueError as exc:
            raise UserError(f"{path} is neither JSON nor JSON lines: {exc}") from exc
    if isinstance(data, dict):
        data = data.get("examples")
    if not isinstance(data, list) or not data:
        raise UserError(f"{path} holds no list of examples")
    for number, item in enumerate(data, 1):
        if not isinstance(item, dict):
            raise UserError(
                f"{path}: example {number} (of {len(data)}) is not an object with "
                "'input' and 'target'"
            )
        missing = [key for key in ("input", "target") if key not in item]
        if missing:
            raise UserError(
                f"{path}: example {number} (of {len(data)}) has no "
                f"{' and no '.join(repr(k) for k in missing)}"
            )

    # the graph's own check: the same rules (text fields, sizes) as the Python API
    from latm.graph.context import Context
    from latm.nodes.dispatcher import check_examples

    try:
        limits = Context()
    except ValueError as exc:  # a malformed LATM_* number
        raise UserError(f"bad setting: {exc}") from exc
    problem, examples = check_examples(data, limits)
    if problem:
        raise UserError(f"{path}: {problem}")
    return examples


def task_type_from_path(path: str) -> str:
    """A task type named after an examples file (``word_sorting.json`` → ``word_sorting``)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(path).name.split(".")[0]).strip("_-")
    return name[:64] or "task"
