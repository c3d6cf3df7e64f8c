"""The tool repository: verified tools kept in a LangGraph ``BaseStore``.

Tools live under the namespace ``("latm", <namespace>, "tools")``, keyed by
task type, as JSON documents validated by :class:`ToolRecord`; that is the
latest version. Every version is also kept under ``("latm", <namespace>,
"tool_versions")`` (key ``<task_type>:v<version>``), and use statistics under
``("latm", <namespace>, "tool_stats")`` (see :class:`ToolStats`). Search uses
the store's semantic index when it has one and a lexical ranking over each
tool's task type, description and demo questions otherwise. A store that fails
(the database went away) raises :class:`RepositoryError` with a clear message.

A tool is stored in one write (one ``batch`` of both records: one transaction
on SQLite, one pipelined batch on PostgreSQL), with a content hash over the record
that every read checks. Records are read one by one: a record that cannot be
read (malformed JSON, a foreign shape, an unknown schema version, a content
hash that does not match) is moved to ``("latm", <namespace>, "quarantine")``
with the reason, so it harms no other record; ``latm tools doctor`` lists and
repairs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import socket
import threading
import uuid
import weakref
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from langgraph.store.base import BaseStore, PutOp
from langgraph.store.sqlite import SqliteStore
from pydantic import BaseModel, Field, ValidationError, field_validator

from latm.graph.state import CaseReport

log = logging.getLogger(__name__)

NO_CONTENT_HASH = "no content hash"
"""Why a record stored by an older LATM (before content hashes) is quarantined on first read;
``latm tools doctor --reverify`` re-verifies such records in the sandbox and restores them."""

SCHEMA_VERSION = 1
TASK_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""A task type (the tool's key): use ``fullmatch`` (``$`` would let a final newline in)."""
TASK_TYPE_RULE = "1-64 letters, digits, '_' or '-' (starting with a letter or digit)"
_UNHASHED = ("content_sha256", "search_text")
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


class VerificationStrength(BaseModel):
    """How strongly a tool's verification rules out luck (see :mod:`latm.evidence`).

    Attributes:
        level: ``verified`` (the lucky-pass chance is within the bound) or
            ``weak`` (stored although the examples could not rule out luck).
        cases: Labelled examples the tool was checked on and passed.
        blind_cases: Of those, the ones whose answer its maker had not seen.
        guess_chance: Chance that a tool ignoring its input passes one check.
        candidates: Candidate tools tried before it was accepted.
        lucky_pass: ``candidates * guess_chance ** blind_cases`` (at most 1).
        threshold: The bound ``lucky_pass`` had to meet.
        agreement: Share of answers on unlabelled inputs on which the other
            candidates that passed agreed with it; ``None`` when none could be compared.
        compared: How many other candidates it was compared with.
        probes: How many unlabelled inputs it was run on.
    """

    level: Literal["verified", "weak"]
    cases: int
    blind_cases: int
    guess_chance: float
    candidates: int
    lucky_pass: float
    threshold: float
    agreement: float | None = None
    compared: int = 0
    probes: int = 0

    def describe(self) -> str:
        """One line for people: level, cases, lucky-pass chance, agreement."""
        level = "verified" if self.level == "verified" else "WEAKLY verified"
        text = (
            f"{level}: {self.cases} labelled example(s) passed ({self.blind_cases} with "
            f"answers its maker had not seen), {self.candidates} candidate(s) tried, "
            f"lucky-pass chance {self.lucky_pass:.2g} (bound {self.threshold:.2g})"
        )
        if self.agreement is not None:
            text += (
                f"; agreement {self.agreement:.0%} with {self.compared} other passing "
                f"candidate(s) on {self.probes} unlabelled input(s)"
            )
        return text


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
        strength: How strongly the verification rules out luck; ``None`` for
            tools stored before it was recorded (or after a person's approval).
        schema_version: Version of this record format (a newer, unknown one is refused).
        make_id: The tool-making run that stored it: a resumed run finds its own
            tool here and never stores a second version.
        content_sha256: Hash of the stored record (see :func:`content_sha256`),
            set by :meth:`ToolRepository.put` and checked on every read.
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
    strength: VerificationStrength | None = None
    schema_version: int = SCHEMA_VERSION
    make_id: str | None = None
    content_sha256: str | None = None

    @field_validator("task_type")
    @classmethod
    def _task_type(cls, value: str) -> str:
        # requests and imports must match TASK_TYPE; a stored record at least holds
        # no control character (a newline in a key breaks listings and logs)
        if not value or len(value) > 200 or not value.isprintable():
            raise ValueError("the task type must be printable text without control characters")
        return value

    @field_validator("schema_version")
    @classmethod
    def _schema_version(cls, value: int) -> int:
        if not 1 <= value <= SCHEMA_VERSION:
            raise ValueError(
                f"unknown record schema version {value} (this LATM reads 1 to {SCHEMA_VERSION})"
            )
        return value

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

    def worker_key(self, tenant: str) -> str:
        """The warm-worker key of this tool version in ``tenant``'s namespace.

        Every run of stored tool code goes through this key, so a warm worker serves
        one tool version of one tenant: identical code in two namespaces never
        shares a process.
        """
        return f"{tenant}\0{self.cache_key}"


def _new_stamp() -> dict[str, str]:
    return {"stamp": uuid.uuid4().hex}


def content_sha256(value: dict[str, Any]) -> str:
    """The sha256 of a stored record's canonical JSON, without its hash and search text."""
    body = {k: v for k, v in value.items() if k not in _UNHASHED}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


UseStatus = Literal["ok", "error", "timeout", "call_error"]


class RepositoryError(RuntimeError):
    """The store behind the repository failed (the database is gone, refuses, ...)."""


class _Unreadable(Exception):
    """A stored value is not even JSON (the store cannot decode it)."""


@dataclass
class _Row:
    """A stored record read on its own (``key``, decoded ``value``)."""

    namespace: tuple[str, ...]
    key: str
    value: Any


class ToolStats(BaseModel):
    """Use statistics of one tool version, summed over every process that used it.

    Attributes:
        task_type: The tool's task type.
        version: The tool version they count.
        calls: Runs of the tool at use time.
        failures: Runs that did not return an answer through the tool's fault
            (raised, timed out, died, or the code did not load); these retire it.
        timeouts: Failures that were timeouts.
        call_failures: Runs of a call the user model wrote that failed while the
            tool still passed its own usage demos: the call's fault, not the
            tool's, so they never retire it.
        last_error: The latest failure's message.
        last_error_at: When it happened (ISO 8601).
        last_used_at: When the tool last ran (ISO 8601).
    """

    task_type: str
    version: int
    calls: int = 0
    failures: int = 0
    timeouts: int = 0
    call_failures: int = 0
    last_error: str | None = None
    last_error_at: str | None = None
    last_used_at: str | None = None


_STAMP_KEY = "~stamp"  # not a task type (those match [A-Za-z0-9][A-Za-z0-9_-]*)
_GENERATION: weakref.WeakKeyDictionary[BaseStore, dict[str, int]] = weakref.WeakKeyDictionary()
_GENERATION_LOCK = threading.Lock()
_SHARD = f"{socket.gethostname()}-{os.getpid()}"
_STATS_LOCK = threading.Lock()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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
        self.tenant = namespace
        self.namespace = ("latm", namespace, "tools")
        self.versions_namespace = ("latm", namespace, "tool_versions")
        self.stats_namespace = ("latm", namespace, "tool_stats")
        self.quarantine_namespace = ("latm", namespace, "quarantine")
        self.routes_namespace = ("latm", namespace, "tool_routes")

    @contextmanager
    def guard(self, doing: str) -> Iterator[None]:
        """Turn a failure of the store into a :class:`RepositoryError` saying what failed."""
        try:
            yield
        except (RepositoryError, _Unreadable):
            raise
        except Exception as exc:
            detail = " ".join(str(exc).split())[:300]
            raise RepositoryError(
                f"the tool repository is unavailable ({doing}): {type(exc).__name__}: {detail}"
            ) from exc

    # ------------------------------------------------------------ quarantine

    def quarantine(self, namespace: tuple[str, ...], key: str, value: Any, reason: str) -> None:
        """Move an unreadable record out of the way, keeping it (and why) for ``tools doctor``.

        Never raises: a record that cannot be moved stays skipped.
        """
        log.warning("quarantining unreadable record %s/%s: %s", "/".join(namespace), key, reason)
        entry = {
            "namespace": list(namespace),
            "key": key,
            "reason": reason[:1000],
            "value": value,
            "at": _now(),
        }
        qkey = f"{namespace[-1]}:{key}:{hashlib.sha256(repr(value).encode()).hexdigest()[:8]}"
        try:
            self.store.batch(
                [
                    PutOp(self.quarantine_namespace, qkey, entry, index=False),
                    PutOp(namespace, key, None),
                ]
            )
        except Exception as exc:
            log.warning("could not quarantine %s: %s", key, exc)

    def quarantined(self) -> list[dict[str, Any]]:
        """The quarantined records: where they were, why, and their stored value."""
        with self.guard("listing quarantined records"):
            rows = self._items(self.quarantine_namespace)
        return sorted(
            (r.value for r in rows if isinstance(r.value, dict)),
            key=lambda v: (str(v.get("at")), str(v.get("key"))),
        )

    def _raw_rows(self, namespace: tuple[str, ...]) -> list[_Row]:
        """Read a SQLite namespace row by row, quarantining rows that are not JSON."""
        if not isinstance(self.store, SqliteStore):
            raise RepositoryError(f"the store cannot decode a record under {'/'.join(namespace)}")
        prefix = ".".join(namespace)
        with self.store.lock:
            raw = self.store.conn.execute(
                "SELECT key, value FROM store WHERE prefix = ?", (prefix,)
            ).fetchall()
        rows = []
        for key, text in raw:
            try:
                value = json.loads(text) if isinstance(text, str | bytes) else text
            except ValueError as exc:
                shown = text if isinstance(text, str) else repr(text)
                self.quarantine(namespace, key, {"raw": shown[:100_000]}, f"not JSON: {exc}")
                continue
            rows.append(_Row(namespace, key, value))
        return rows

    def _load(
        self, value: Any, key: str, namespace: tuple[str, ...] | None = None
    ) -> ToolRecord | None:
        """A record as stored, checked; an unreadable one is quarantined and ``None`` returned."""
        problem: str
        try:
            record = ToolRecord.model_validate(value)
            if record.content_sha256 is None:
                problem = NO_CONTENT_HASH
            elif content_sha256(value) != record.content_sha256:
                problem = "content hash mismatch: the record was changed after it was stored"
            else:
                return record
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "record"
            problem = f"not a tool record ({exc.error_count()} errors; {where}: {first['msg']})"
        self.quarantine(namespace or self.namespace, key, value, problem)
        return None

    def _get_item(self, namespace: tuple[str, ...], key: str) -> Any:
        try:
            item = self.store.get(namespace, key)
        except ValueError:  # the stored value is not JSON
            for row in self._raw_rows(namespace):
                if row.key == key:
                    return row
            return None
        return item

    # ------------------------------------------------------------ tools

    def get(self, task_type: str) -> ToolRecord | None:
        """Return the tool stored for ``task_type``, or ``None``."""
        with self.guard(f"reading tool {task_type!r}"):
            item = self._get_item(self.namespace, task_type)
        return self._load(item.value, item.key) if item else None

    def put(self, record: ToolRecord) -> ToolRecord:
        """Store ``record`` as the latest tool of its task type, keeping every version.

        Both records (the version and the latest) go in one ``batch`` (one
        transaction on SQLite): a process killed meanwhile leaves both or neither.

        Returns:
            The record as stored (with its content hash).
        """
        places = [
            (self.versions_namespace, f"{record.task_type}:v{record.version}"),
            (self.namespace, record.task_type),
        ]
        return self._write(record, f"storing tool {record.task_type!r}", places)

    def _write(
        self,
        record: ToolRecord,
        doing: str,
        places: Sequence[tuple[tuple[str, ...], str]],
        also: tuple[PutOp, ...] = (),
    ) -> ToolRecord:
        """Seal ``record`` with its content hash and write it to ``places`` in one batch.

        The latest record (under :attr:`namespace`) is written searchable, a
        version record plain; ``also`` and the route indexes' change stamp go in
        the same write.

        Returns:
            The record as stored (with its content hash).
        """
        value = record.model_dump(mode="json", exclude={"content_sha256"})
        value["content_sha256"] = content_sha256(value)
        stored = ToolRecord.model_validate(value)
        ops = [
            PutOp(ns, key, {**value, "search_text": record.search_text}, index=["search_text"])
            if ns == self.namespace
            else PutOp(ns, key, value, index=False)
            for ns, key in places
        ]
        ops += [*also, PutOp(self.routes_namespace, _STAMP_KEY, _new_stamp(), index=False)]
        with self.guard(doing):
            self.store.batch(ops)
        self._bump_generation()
        return stored

    def made_by(self, task_type: str, make_id: str) -> ToolRecord | None:
        """The version of ``task_type`` that the tool-making run ``make_id`` stored, if any."""
        found = [r for r in self.versions(task_type) if r.make_id == make_id]
        return found[-1] if found else None

    def delete(self, task_type: str) -> bool:
        """Remove a tool with its version history and statistics; returns whether it existed."""
        with self.guard(f"removing tool {task_type!r}"):
            existed = self._get_item(self.namespace, task_type) is not None
            for item in self._items(self.versions_namespace, {"task_type": task_type}):
                self.store.delete(self.versions_namespace, item.key)
            for item in self._items(self.stats_namespace, {"task_type": task_type}):
                self.store.delete(self.stats_namespace, item.key)
            if existed:
                self.store.delete(self.namespace, task_type)
            self.store.delete(self.routes_namespace, task_type)
        self.touch_routes()
        return existed

    def _page(self, namespace: tuple[str, ...], where: dict[str, Any] | None, offset: int) -> Any:
        try:
            return self.store.search(namespace, filter=where, limit=100, offset=offset)
        except ValueError as exc:  # a stored value is not JSON
            raise _Unreadable(str(exc)) from exc

    def _items(self, namespace: tuple[str, ...], where: dict[str, Any] | None = None) -> list[Any]:
        """Every record of ``namespace`` (matching ``where``), read one by one if need be."""
        items: list[Any] = []
        offset = 0
        try:
            while True:
                page = self._page(namespace, where, offset)
                items.extend(item for item in page if item.namespace == namespace)
                if len(page) < 100:
                    return items
                offset += 100
        except _Unreadable:
            rows = self._raw_rows(namespace)
            return [
                r
                for r in rows
                if not where
                or (
                    isinstance(r.value, dict) and all(r.value.get(k) == v for k, v in where.items())
                )
            ]

    def is_empty(self) -> bool:
        """Whether the namespace holds no tool record at all (one cheap read)."""
        with self.guard("reading the tools"):
            try:
                return not self.store.search(self.namespace, limit=1)
            except ValueError:  # a stored value is not JSON: there is a record
                return False

    def records(self) -> list[ToolRecord]:
        """All readable tools (their latest versions), sorted by task type."""
        with self.guard("listing tools"):
            items = self._items(self.namespace)
        loaded = (self._load(item.value, item.key) for item in items)
        return sorted((r for r in loaded if r is not None), key=lambda r: r.task_type)

    def versions(self, task_type: str) -> list[ToolRecord]:
        """Every readable stored version of a tool, oldest first."""
        with self.guard(f"reading the versions of {task_type!r}"):
            items = self._items(self.versions_namespace, {"task_type": task_type})
        loaded = (self._load(item.value, item.key, self.versions_namespace) for item in items)
        found = [r for r in loaded if r is not None and r.task_type == task_type]
        return sorted(found, key=lambda r: r.version)

    def all_versions(self) -> list[ToolRecord]:
        """Every readable stored version of every tool."""
        with self.guard("listing tool versions"):
            items = self._items(self.versions_namespace)
        loaded = (self._load(item.value, item.key, self.versions_namespace) for item in items)
        return sorted((r for r in loaded if r is not None), key=lambda r: (r.task_type, r.version))

    def next_version(self, task_type: str) -> int:
        """The version number a new tool for ``task_type`` gets (past every kept version)."""
        current = self.get(task_type)
        known = [r.version for r in self.versions(task_type)]
        if current is not None:
            known.append(current.version)
        return max(known, default=0) + 1

    def check(self, repair: bool = False) -> list[str]:
        """Read every record of the namespace one by one; report (and repair) what is wrong.

        Unreadable records are quarantined by the reading itself. Then each task
        type's latest record is compared with its newest readable version: a
        missing or stale latest record (a damaged or quarantined one, or a
        version stored by an older LATM in a second write that never came) is
        reported, and with ``repair`` rewritten from that version.

        Returns:
            One line per problem found (empty when the namespace is sound).
        """
        before = {(q.get("key"), q.get("at")) for q in self.quarantined()}
        latest = {r.task_type: r for r in self.records()}
        newest: dict[str, ToolRecord] = {}
        for record in self.all_versions():
            newest[record.task_type] = record
        with self.guard("reading the statistics"):
            for item in self._items(self.stats_namespace):
                try:
                    ToolStats.model_validate(item.value)
                except ValidationError as exc:
                    self.quarantine(self.stats_namespace, item.key, item.value, str(exc)[:300])
        problems = [
            f"quarantined {'/'.join(q.get('namespace') or [])} {q.get('key')}: {q.get('reason')}"
            for q in self.quarantined()
            if (q.get("key"), q.get("at")) not in before
        ]
        for task_type, version in sorted(newest.items()):
            current = latest.get(task_type)
            if current is not None and current.version >= version.version:
                continue
            have = f"v{current.version}" if current else "no readable latest record"
            line = f"{task_type}: {have}, but v{version.version} is stored"
            if repair:
                self.put(version)
                line += f"; latest set to v{version.version}"
            problems.append(line)
        for task_type, current in sorted(latest.items()):
            if task_type not in newest:
                line = f"{task_type}: v{current.version} has no version record"
                if repair:
                    self.put(current)
                    line += "; version record written"
                problems.append(line)
        return problems

    def legacy_records(self) -> list[tuple[str, tuple[str, ...], str, ToolRecord]]:
        """Quarantined tool records that only lack a content hash (stored by an older LATM).

        Returns:
            ``(quarantine key, original namespace, original key, record)`` of each
            one that is otherwise a valid tool record.
        """
        with self.guard("listing quarantined records"):
            rows = self._items(self.quarantine_namespace)
        found: list[tuple[str, tuple[str, ...], str, ToolRecord]] = []
        for row in rows:
            entry = row.value
            if not isinstance(entry, dict) or entry.get("reason") != NO_CONTENT_HASH:
                continue
            try:
                record = ToolRecord.model_validate(entry.get("value"))
            except ValidationError:
                continue
            namespace = tuple(str(part) for part in entry.get("namespace") or ())
            if namespace in (self.namespace, self.versions_namespace):
                found.append((row.key, namespace, str(entry.get("key")), record))
        return found

    def restore_legacy(
        self, qkey: str, namespace: tuple[str, ...], key: str, record: ToolRecord
    ) -> ToolRecord:
        """Put a re-verified legacy record back where it was, now with its content hash.

        One write: the record returns to its place and leaves the quarantine together.
        The caller must have re-verified it (see ``latm tools doctor --reverify``).
        """
        leave = PutOp(self.quarantine_namespace, qkey, None)
        doing = f"restoring tool {record.task_type!r}"
        return self._write(record, doing, [(namespace, key)], (leave,))

    def purge_quarantine(self) -> int:
        """Delete every quarantined record; returns how many there were."""
        with self.guard("purging the quarantine"):
            items = self._items(self.quarantine_namespace)
            for item in items:
                self.store.delete(self.quarantine_namespace, item.key)
        return len(items)

    def stats(self, task_type: str, version: int) -> ToolStats:
        """The use statistics of one tool version (zero when it was never used)."""
        total = ToolStats(task_type=task_type, version=version)
        with self.guard(f"reading the statistics of {task_type!r}"):
            items = self._items(self.stats_namespace, {"task_type": task_type, "version": version})
        for item in items:
            try:
                shard = ToolStats.model_validate(item.value)
            except ValidationError:
                log.warning("skipping unreadable statistics record %r", item.key)
                continue
            total.calls += shard.calls
            total.failures += shard.failures
            total.timeouts += shard.timeouts
            total.call_failures += shard.call_failures
            if (shard.last_error_at or "") > (total.last_error_at or ""):
                total.last_error, total.last_error_at = shard.last_error, shard.last_error_at
            if (shard.last_used_at or "") > (total.last_used_at or ""):
                total.last_used_at = shard.last_used_at
        return total

    def record_use(
        self, record: ToolRecord, status: UseStatus, error: str | None = None
    ) -> ToolStats:
        """Count one use of a tool version: a success, an error, a timeout or a ``call_error``.

        A ``call_error`` is a failed call the user model wrote; it never retires the tool.

        Each process writes its own record (its shard), under a lock, so that
        replicas never overwrite each other's counts; :meth:`stats` sums them.

        Returns:
            The summed statistics after this use.
        """
        key = f"{record.task_type}:v{record.version}:{_SHARD}"
        with _STATS_LOCK, self.guard(f"recording a use of {record.task_type!r}"):
            item = self._get_item(self.stats_namespace, key)
            try:
                shard = ToolStats.model_validate(item.value if item else {})
            except ValidationError:
                shard = ToolStats(task_type=record.task_type, version=record.version)
            now = _now()
            shard.calls += 1
            shard.last_used_at = now
            if status == "call_error":
                shard.call_failures += 1
                shard.last_error = (error or status)[:500]
                shard.last_error_at = now
            elif status != "ok":
                shard.failures += 1
                shard.timeouts += status == "timeout"
                shard.last_error = (error or status)[:500]
                shard.last_error_at = now
            self.store.put(self.stats_namespace, key, shard.model_dump(mode="json"), index=False)
        return self.stats(record.task_type, record.version)

    # --- the dispatcher's route index (see latm.routing) ---------------------------

    def touch_routes(self) -> None:
        """Move the change stamp that tells every process's route index to refresh."""
        self._bump_generation()
        with self.guard("marking the tools changed"):
            self.store.put(self.routes_namespace, _STAMP_KEY, _new_stamp(), index=False)

    def _bump_generation(self) -> None:
        with _GENERATION_LOCK:
            counts = _GENERATION.setdefault(self.store, {})
            counts[self.tenant] = counts.get(self.tenant, 0) + 1

    def local_generation(self) -> int:
        """How often this process changed the tools of this store and namespace."""
        with _GENERATION_LOCK:
            return _GENERATION.get(self.store, {}).get(self.tenant, 0)

    def route_stamp(self) -> str | None:
        """The current change stamp (``None`` before the first write)."""
        with self.guard("reading the tools' change stamp"):
            item = self.store.get(self.routes_namespace, _STAMP_KEY)
        stamp = item.value.get("stamp") if item is not None else None
        return stamp if isinstance(stamp, str) else None

    def route_item(self, task_type: str) -> dict[str, Any] | None:
        """A tool's stored route vectors (a JSON dict), or ``None``."""
        with self.guard(f"reading the route vectors of {task_type!r}"):
            item = self.store.get(self.routes_namespace, task_type)
        return dict(item.value) if item is not None else None

    def put_route_item(self, task_type: str, value: dict[str, Any]) -> None:
        """Store a tool's route vectors (not indexed by the store)."""
        with self.guard(f"storing the route vectors of {task_type!r}"):
            self.store.put(self.routes_namespace, task_type, value, index=False)

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
        try:
            with self.guard("searching tools"):
                try:
                    items = self.store.search(self.namespace, query=query, limit=limit)
                except ValueError as exc:  # a stored value is not JSON: read one by one
                    raise _Unreadable(str(exc)) from exc
        except _Unreadable:
            items = []
        if items and all(item.score is not None for item in items):
            found = [(self._load(i.value, i.key), float(i.score or 0.0)) for i in items]
            return [(r, s) for r, s in found if r is not None]
        records = {r.task_type: r for r in self.records()}
        ranked = lexical_rank(query, {k: r.search_text for k, r in records.items()})
        return [(records[key], score) for key, score in ranked[:limit]]
