"""The tool repository: verified tools kept in a LangGraph ``BaseStore``.

Tools live under the namespace ``("latm", <namespace>, "tools")``, keyed by
task type, as JSON documents validated by :class:`ToolRecord`. Search uses the
store's semantic index when it has one and a lexical ranking over each tool's
task type, description and demo questions otherwise.
"""

from __future__ import annotations

import logging
import math
import re
import sqlite3
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from langgraph.store.base import BaseStore
from langgraph.store.sqlite import SqliteStore
from platformdirs import user_data_dir
from pydantic import BaseModel, Field, ValidationError

from latm.graph.state import CaseReport

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    (
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "were",
        "what",
        "which",
        "with",
        "you",
        "your",
    )
)


class UsageDemo(BaseModel):
    """How one question is turned into a call of the tool (from verification)."""

    question: str
    call: str
    answer: str


class ToolRecord(BaseModel):
    """A verified tool as stored in the repository.

    Attributes:
        name: The tool function's name.
        task_type: The kind of task it solves (the repository key).
        description: What it solves, in a sentence or two.
        signature: The function's ``def`` line.
        docstring: The function's docstring.
        code: The tool module's source.
        demos: Usage demos: question, call and answer.
        maker_model: The model that wrote it.
        verification: The report of the verification it passed.
        created_at: ISO 8601 time of wrapping.
        version: 1 for the first tool of a task type, then counting up.
        direct_entry: The verified entry that takes the raw request text
            (``solve``), which answers cache hits without a model call; ``None``
            when the tool has none.
        schema_version: Version of this record format.
    """

    name: str
    task_type: str
    description: str
    signature: str
    docstring: str
    code: str
    demos: list[UsageDemo]
    maker_model: str
    verification: list[CaseReport]
    created_at: str
    version: int = Field(ge=1)
    direct_entry: str | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def search_text(self) -> str:
        """The text that search matches requests against."""
        questions = "\n".join(d.question for d in self.demos)
        return f"{self.task_type.replace('_', ' ')}\n{self.description}\n{questions}"

    @property
    def cache_key(self) -> str:
        """Identifies this exact tool version for warm executors."""
        import hashlib

        digest = hashlib.sha256(self.code.encode()).hexdigest()[:16]
        return f"{self.task_type}:{self.version}:{digest}"


def _tokens(text: str) -> list[str]:
    return [t for t in _WORD.findall(text.lower()) if t not in _STOP and len(t) > 1]


def lexical_rank(query: str, docs: dict[str, str]) -> list[tuple[str, float]]:
    """Rank documents against a query by TF-IDF cosine similarity.

    Args:
        query: The request text.
        docs: Document text by key.

    Returns:
        ``(key, score)`` pairs with a score above zero, best first.
    """
    tokenized = {key: Counter(_tokens(text)) for key, text in docs.items()}
    n = len(tokenized)
    df: Counter[str] = Counter()
    for counts in tokenized.values():
        df.update(counts.keys())

    def vector(counts: Counter[str]) -> dict[str, float]:
        return {t: c * (math.log((1 + n) / (1 + df[t])) + 1) for t, c in counts.items()}

    q = vector(Counter(_tokens(query)))
    q_norm = math.sqrt(sum(v * v for v in q.values())) or 1.0
    ranked = []
    for key, counts in tokenized.items():
        d = vector(counts)
        d_norm = math.sqrt(sum(v * v for v in d.values())) or 1.0
        score = sum(w * d.get(t, 0.0) for t, w in q.items()) / (q_norm * d_norm)
        if score > 0:
            ranked.append((key, score))
    ranked.sort(key=lambda pair: (-pair[1], pair[0]))
    return ranked


class ToolRepository:
    """Verified tools of one namespace, over any LangGraph ``BaseStore``."""

    def __init__(self, store: BaseStore, namespace: str = "default") -> None:
        """Open the repository.

        Args:
            store: The LangGraph store that holds the tools.
            namespace: The tenant or app whose tools these are.
        """
        self.store = store
        self.namespace = ("latm", namespace, "tools")

    def _load(self, value: dict[str, Any], key: str) -> ToolRecord | None:
        try:
            return ToolRecord.model_validate(value)
        except ValidationError as exc:
            log.warning("skipping unreadable tool record %r: %s", key, exc.error_count())
            return None

    def get(self, task_type: str) -> ToolRecord | None:
        """Return the tool stored for ``task_type``, or ``None``."""
        item = self.store.get(self.namespace, task_type)
        return self._load(item.value, item.key) if item else None

    def put(self, record: ToolRecord) -> None:
        """Store ``record`` under its task type, replacing any older version."""
        value = record.model_dump(mode="json")
        value["search_text"] = record.search_text
        self.store.put(self.namespace, record.task_type, value, index=["search_text"])

    def delete(self, task_type: str) -> bool:
        """Remove a tool; returns whether it existed."""
        if self.store.get(self.namespace, task_type) is None:
            return False
        self.store.delete(self.namespace, task_type)
        return True

    def records(self) -> list[ToolRecord]:
        """All readable tools, sorted by task type."""
        records = []
        offset = 0
        while True:
            items = self.store.search(self.namespace, limit=100, offset=offset)
            for item in items:
                record = self._load(item.value, item.key)
                if record:
                    records.append(record)
            if len(items) < 100:
                break
            offset += 100
        return sorted(records, key=lambda r: r.task_type)

    def next_version(self, task_type: str) -> int:
        """The version number a new tool for ``task_type`` gets."""
        current = self.get(task_type)
        return current.version + 1 if current else 1

    def search(self, query: str, limit: int = 3) -> list[tuple[ToolRecord, float]]:
        """Find the tools that best fit a request.

        Uses the store's semantic index when it has one (items come back
        scored); otherwise ranks every tool lexically.

        Args:
            query: The request text.
            limit: How many tools to return at most.

        Returns:
            ``(record, score)`` pairs, best first.
        """
        items = self.store.search(self.namespace, query=query, limit=limit)
        if items and all(item.score is not None for item in items):
            found = [(self._load(i.value, i.key), float(i.score or 0.0)) for i in items]
            return [(r, s) for r, s in found if r is not None]
        records = {r.task_type: r for r in self.records()}
        ranked = lexical_rank(query, {k: r.search_text for k, r in records.items()})
        return [(records[key], score) for key, score in ranked[:limit]]


_LOCAL_STORES: dict[str, SqliteStore] = {}
_LOCAL_LOCK = threading.Lock()


def default_store_path() -> Path:
    """Where the local SQLite repository lives when no path is configured."""
    return Path(user_data_dir("latm", appauthor=False)) / "tools.sqlite"


def open_local_store(path: str | Path | None = None) -> SqliteStore:
    """Open (once per process and path) the local SQLite store.

    Args:
        path: The SQLite file; ``None`` for :func:`default_store_path`.

    Returns:
        A ready ``SqliteStore``.
    """
    resolved = Path(path).expanduser() if path else default_store_path()
    key = str(resolved.resolve()) if resolved.exists() else str(resolved)
    with _LOCAL_LOCK:
        store = _LOCAL_STORES.get(key)
        if store is None:
            resolved.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(resolved), check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            store = SqliteStore(conn)
            store.setup()
            _LOCAL_STORES[key] = store
        return store
