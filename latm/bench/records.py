"""The run directory: settings, per-task and per-item records, appended as they complete.

A run lives in one directory. ``config.json`` holds what must not change between
a run and its continuation (the models, the task preparation, the graph's
settings); ``make.jsonl`` one record per task's tool making; ``items.jsonl`` one
record per answered test item and method. Records are appended and flushed one
line at a time, so a crash loses at most the line being written; reading skips a
torn last line. Records of model or sandbox failures are marked ``infra`` and
run again when the run is continued.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CONFIG = "config.json"
MAKE = "make.jsonl"
ITEMS = "items.jsonl"
STORE = "tools.sqlite"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
PLOT = "cost_vs_n.png"
OUTPUTS = (CONFIG, MAKE, ITEMS, RESULTS_JSON, RESULTS_MD, PLOT)

UNEXPECTED = "bench: unexpected "
"""Prefix of the error recorded when running an item raised instead of returning."""

_INFRA = re.compile(
    r"^(the (maker|user) model .* failed: |no (maker|user) model is configured|"
    r"cannot run generated code|" + re.escape(UNEXPECTED) + ")"
)


class RunDirError(ValueError):
    """The run directory belongs to a different run; the message says what differs."""


def is_infra_error(error: str | None) -> bool:
    """Whether an error is a failure of the machinery (model server, sandbox), not an answer.

    Such records are retried when a run is continued.
    """
    return bool(error) and bool(_INFRA.match(error or ""))


def item_key(record: dict[str, Any]) -> tuple[str, str, int]:
    """The identity of an item record: task, method, test index."""
    return (str(record["task"]), str(record["method"]), int(record["index"]))


class RunDir:
    """One benchmark run's directory, safe to append to from several threads."""

    def __init__(self, path: str | Path) -> None:
        """Open (and create) the run directory ``path``."""
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def file(self, name: str) -> Path:
        """A file of the run."""
        return self.path / name

    # --- settings ----------------------------------------------------------------------

    def check_config(self, identity: dict[str, Any]) -> None:
        """Record the run's identity, or check it against the recorded one.

        Raises:
            RunDirError: The directory holds a run with a different identity.
        """
        path = self.file(CONFIG)
        if path.exists():
            recorded = json.loads(path.read_text(encoding="utf-8")).get("identity", {})
            differs = sorted(
                k for k in set(recorded) | set(identity) if recorded.get(k) != identity.get(k)
            )
            if differs:
                detail = "; ".join(
                    f"{k}: {recorded.get(k)!r} there, {identity.get(k)!r} now" for k in differs
                )
                raise RunDirError(
                    f"{self.path} holds a run with other settings ({detail}); "
                    "continue it with the same settings, or use another --out (or --fresh)"
                )
            return
        doc = {"identity": identity}
        path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")

    def save_options(self, options: dict[str, Any]) -> None:
        """Record the options of the latest run (the report's defaults)."""
        path = self.file(CONFIG)
        doc = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        doc["last_options"] = options
        path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")

    def last_options(self) -> dict[str, Any]:
        """The options of the latest run (empty when none is recorded)."""
        path = self.file(CONFIG)
        if not path.exists():
            return {}
        options: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")).get(
            "last_options", {}
        )
        return options

    def identity(self) -> dict[str, Any]:
        """The recorded identity of the run (empty when none is recorded)."""
        path = self.file(CONFIG)
        if not path.exists():
            return {}
        identity: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")).get("identity", {})
        return identity

    def clear(self) -> None:
        """Delete what the benchmark wrote here (records, tools, reports); nothing else."""
        for name in (*OUTPUTS, STORE, f"{STORE}-wal", f"{STORE}-shm"):
            self.file(name).unlink(missing_ok=True)

    # --- records -----------------------------------------------------------------------

    def append(self, name: str, record: dict[str, Any]) -> None:
        """Append one record as a JSON line and flush it to disk.

        A torn last line (left by a crash) is ended first, so that the new
        record starts on a line of its own.
        """
        line = json.dumps(record, ensure_ascii=False) + "\n"
        path = self.file(name)
        with self._lock:
            if path.exists() and path.stat().st_size:
                with open(path, "rb") as tail:
                    tail.seek(-1, os.SEEK_END)
                    if tail.read(1) != b"\n":
                        line = "\n" + line
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())

    def read(self, name: str) -> Iterator[dict[str, Any]]:
        """The records of a JSONL file, skipping a torn or malformed line."""
        path = self.file(name)
        if not path.exists():
            return
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    yield record

    def make_records(self) -> dict[str, dict[str, Any]]:
        """The latest tool-making record of each task."""
        return {str(r["task"]): r for r in self.read(MAKE) if "task" in r}

    def item_records(self) -> dict[tuple[str, str, int], dict[str, Any]]:
        """The latest record of each (task, method, index)."""
        records: dict[tuple[str, str, int], dict[str, Any]] = {}
        for record in self.read(ITEMS):
            try:
                records[item_key(record)] = record
            except (KeyError, TypeError, ValueError):
                continue
        return records
