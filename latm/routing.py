"""Tools in an embedding space: the dispatcher's index and its calibrated decision.

Every stored tool is indexed by the questions it was verified on (its usage
demos, its validation cases and the direct-check questions of its
``solve(request)`` entry), one vector per question, as CRAFT matches a query
against several keys per tool. A request is routed by nearest neighbours: a
tool's score is the cosine similarity of the request to its closest verified
question.

Each tool carries its own acceptance region, learned from its questions alone:
how close each of them is to its nearest sibling (leave-one-out). A request at
least as close to the tool as its own questions are to each other, and clearly
closer than to the second-best tool (the margin), is a hit; one far outside
every region is a clear miss. Everything in between is *borderline*: the
dispatcher then asks the tool's ``solve(request)`` entry (a parser that rejects
the request's format is evidence against) and only if the two signals disagree
or no parser exists does it ask the user model (see
:mod:`latm.nodes.dispatcher`).

The vectors live in the tool repository's store (namespace
``("latm", <ns>, "tool_routes")``, one item per tool, float16, tagged with the
embedding model), so any ``BaseStore`` works: SQLite, PostgreSQL, in memory.
Each process keeps a flat in-memory matrix of them and refreshes it when the
repository's change stamp moves (every tool write or removal moves it).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from langchain_core.embeddings import Embeddings

from latm.embeddings import load_embeddings, local_embeddings_installed
from latm.repository import RepositoryError, ToolRecord, ToolRepository

log = logging.getLogger(__name__)

ROUTE_FORMAT = 1
SLACK = 0.02
"""How far below its own questions' closest-sibling similarity a request may fall
and still be accepted outright."""
BAND = 0.10
"""Width of the borderline band below a tool's acceptance threshold."""
MARGIN = 0.05
"""How much closer the best tool must be than the second best for an outright hit."""
STAMP_TTL_S = 1.0
"""How long a process trusts its index before re-reading the store's change stamp
(its own tool writes are seen at once; other processes' within this time)."""
MIN_THRESHOLD = 0.30
MAX_THRESHOLD = 0.97

Verdict = Literal["hit", "none", "borderline"]


def route_questions(record: ToolRecord) -> list[str]:
    """The texts a tool is indexed by: every question it was verified on.

    Its demos and verification cases (validation calls and direct checks),
    deduplicated, in order; a tool with no question is indexed by its task type
    and description.
    """
    seen: dict[str, None] = {}
    for text in [d.question for d in record.demos] + [c["input"] for c in record.verification]:
        text = text.strip()
        if text:
            seen.setdefault(text, None)
    if not seen:
        seen[f"{record.task_type.replace('_', ' ')}: {record.description}"] = None
    return list(seen)


def calibrate(vectors: np.ndarray[Any, Any]) -> float:
    """A tool's acceptance threshold (a cosine similarity) from its own question vectors.

    The smallest leave-one-out nearest-neighbour similarity among its questions,
    less :data:`SLACK`, kept within ``[MIN_THRESHOLD, MAX_THRESHOLD]``. With a
    single question there is nothing to learn from: the upper bound (strict).
    """
    if len(vectors) < 2:
        return MAX_THRESHOLD
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    nearest = sims.max(axis=1)
    return float(np.clip(nearest.min() - SLACK, MIN_THRESHOLD, MAX_THRESHOLD))


def _encode(vectors: np.ndarray[Any, Any]) -> str:
    return base64.b64encode(vectors.astype("<f2").tobytes()).decode("ascii")


def _decode(text: str, dims: int) -> np.ndarray[Any, Any]:
    raw = np.frombuffer(base64.b64decode(text), dtype="<f2").astype(np.float32)
    return raw.reshape(-1, dims)


def _unit(vectors: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


@dataclass(frozen=True)
class ToolRoutes:
    """One tool's place in the embedding space.

    Attributes:
        task_type: The tool's task type.
        version: The tool version the vectors were computed for.
        vectors: Unit vectors of its verified questions, one row each.
        threshold: Its acceptance threshold (cosine similarity).
        direct: Whether it has a ``solve(request)`` entry (a parser signal).
    """

    task_type: str
    version: int
    vectors: np.ndarray[Any, Any]
    threshold: float
    direct: bool


@dataclass(frozen=True)
class Scored:
    """A tool's score for one request."""

    task_type: str
    similarity: float
    threshold: float
    direct: bool


@dataclass(frozen=True)
class Decision:
    """What the embedding space says about a request.

    Attributes:
        verdict: ``hit`` (inside the closest tool's region, with a clear margin),
            ``none`` (no ranked tool within :data:`BAND` of its region) or
            ``borderline``.
        ranked: The closest tools, best first.
        margin: Best tool's similarity minus the second best's (1.0 with one tool).
    """

    verdict: Verdict
    ranked: list[Scored]
    margin: float

    @property
    def best(self) -> Scored | None:
        """The closest tool, if any."""
        return self.ranked[0] if self.ranked else None

    @property
    def near(self) -> list[Scored]:
        """The ranked tools inside their region or within :data:`BAND` of it."""
        return [s for s in self.ranked if s.similarity >= s.threshold - BAND]


def decide(ranked: list[Scored]) -> Decision:
    """Apply the calibrated acceptance regions and the margin to ranked tools."""
    if not ranked:
        return Decision("none", [], 0.0)
    best = ranked[0]
    margin = best.similarity - ranked[1].similarity if len(ranked) > 1 else 1.0
    if best.similarity >= best.threshold and margin >= MARGIN:
        return Decision("hit", ranked, margin)
    decision = Decision("borderline", ranked, margin)
    return decision if decision.near else Decision("none", ranked, margin)


@dataclass
class RouteIndex:
    """A flat in-memory index of every tool's question vectors, for one store and model.

    Attributes:
        embedder: The embedding function.
        name: Identifies the embedding model (stored vectors of another model
            are recomputed).
    """

    embedder: Embeddings
    name: str
    stamp: str | None = None
    generation: int = -1
    checked_at: float = -1e9
    tools: dict[str, ToolRoutes] = field(default_factory=dict)
    _state: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], list[ToolRoutes]] = field(
        default_factory=lambda: (np.zeros((0, 1), np.float32), np.zeros(0, np.int64), [])
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _routes_for(self, repo: ToolRepository, record: ToolRecord) -> ToolRoutes:
        """Load a tool's stored vectors, or embed its questions (and store them)."""
        item = repo.route_item(record.task_type)
        if (
            item is not None
            and item.get("format") == ROUTE_FORMAT
            and item.get("version") == record.version
            and item.get("embedder") == self.name
        ):
            try:
                vectors = _decode(str(item["vectors"]), int(item["dims"]))
                return ToolRoutes(
                    record.task_type,
                    record.version,
                    _unit(vectors),
                    float(item["threshold"]),
                    record.direct_entry is not None,
                )
            except (KeyError, ValueError, TypeError):
                log.warning("recomputing the unreadable route vectors of %r", record.task_type)
        questions = route_questions(record)
        vectors = _unit(np.asarray(self.embedder.embed_documents(questions), dtype=np.float32))
        routes = ToolRoutes(
            record.task_type,
            record.version,
            vectors,
            calibrate(vectors),
            record.direct_entry is not None,
        )
        value = {
            "format": ROUTE_FORMAT,
            "task_type": record.task_type,
            "version": record.version,
            "embedder": self.name,
            "dims": int(vectors.shape[1]),
            "count": len(questions),
            "threshold": routes.threshold,
            "vectors": _encode(vectors),
        }
        try:
            repo.put_route_item(record.task_type, value)
        except RepositoryError as exc:  # the vectors are recomputed next time
            log.warning("could not store the route vectors of %r: %s", record.task_type, exc)
        return routes

    def sync(self, repo: ToolRepository) -> None:
        """Bring the index up to date with the repository (cheap when nothing changed).

        A tool written by this process is seen at once; one written by another
        process once the store's change stamp is re-read, at most
        :data:`STAMP_TTL_S` later.
        """
        generation = repo.local_generation()
        now = time.monotonic()
        if generation == self.generation and now - self.checked_at < STAMP_TTL_S:
            return
        stamp = repo.route_stamp()
        if stamp == self.stamp and generation == self.generation:
            self.checked_at = now
            return
        with self._lock:
            generation = repo.local_generation()
            if stamp == self.stamp and generation == self.generation:
                return  # another thread synced while this one waited for the lock
            tools: dict[str, ToolRoutes] = {}
            for record in repo.records():
                known = self.tools.get(record.task_type)
                if known is not None and known.version == record.version:
                    tools[record.task_type] = known
                else:
                    tools[record.task_type] = self._routes_for(repo, record)
            self.add_all(tools)
            self.stamp, self.generation, self.checked_at = stamp, generation, now

    def add_all(self, tools: dict[str, ToolRoutes]) -> None:
        """Replace the index's tools (and rebuild its matrix, swapped in at once)."""
        order = sorted(tools.values(), key=lambda t: t.task_type)
        dims = next((t.vectors.shape[1] for t in order), 1)
        matrix = (
            np.ascontiguousarray(np.concatenate([t.vectors for t in order]))
            if order
            else np.zeros((0, dims), np.float32)
        )
        sizes = [len(t.vectors) for t in order]
        starts = np.cumsum([0, *sizes[:-1]]).astype(np.int64)
        self._state = (matrix, starts, order)  # one assignment: readers see old or new
        self.tools = tools

    def rank(self, query: str, limit: int = 3) -> list[Scored]:
        """The ``limit`` tools closest to ``query``, best first."""
        matrix, starts, order = self._state
        if not order:
            return []
        q = np.asarray(self.embedder.embed_query(query), dtype=np.float32)
        q /= max(float(np.linalg.norm(q)), 1e-12)
        if q.shape[0] != matrix.shape[1]:
            raise ValueError(
                f"the embedding model gives {q.shape[0]} dimensions, the index has "
                f"{matrix.shape[1]}"
            )
        per_tool = np.maximum.reduceat(matrix @ q, starts)
        k = min(limit, len(per_tool))
        top = np.argpartition(-per_tool, k - 1)[:k]
        top = top[np.argsort(-per_tool[top], kind="stable")]
        return [
            Scored(order[i].task_type, float(per_tool[i]), order[i].threshold, order[i].direct)
            for i in top
        ]


_INDEXES: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], RouteIndex]] = (
    weakref.WeakKeyDictionary()
)
_INDEXES_LOCK = threading.Lock()


def route_index(repo: ToolRepository, embedder: Embeddings, name: str) -> RouteIndex:
    """This process's index of ``repo``'s tools under one embedding model, synced."""
    key = (repo.tenant, name)
    with _INDEXES_LOCK:
        indexes = _INDEXES.setdefault(repo.store, {})
        index = indexes.get(key)
        if index is None:
            index = indexes[key] = RouteIndex(embedder, name)
    index.sync(repo)
    return index


_EMBEDDERS: dict[str, tuple[Embeddings, str]] = {}
_EMBEDDERS_LOCK = threading.Lock()


def route_embedder(spec: str) -> tuple[Embeddings, str]:
    """The embedding function a routing setting names, and its identifier.

    ``auto`` is the local model when it is installed, else the hashed bag of
    words (the test fallback; a warning says so). Anything else is as
    :func:`latm.embeddings.load_embeddings` reads it.

    Raises:
        ValueError: The setting is malformed, or names ``local`` when the local
            model is not installed.
    """
    spec = (spec or "auto").strip() or "auto"
    with _EMBEDDERS_LOCK:
        cached = _EMBEDDERS.get(spec)
        if cached is not None:
            return cached
        chosen = spec
        if spec.lower() == "auto":
            chosen = "local" if local_embeddings_installed() else "hash"
            if chosen == "hash":
                log.warning(
                    "the local embedding model is not installed (`latm local install`): the "
                    "dispatcher routes with hashed bag-of-words vectors"
                )
        loaded = load_embeddings(chosen)
        if loaded is None:
            raise ValueError("the dispatcher needs an embedding function (not 'none')")
        embedder, dims = loaded
        name = str(getattr(embedder, "name", "") or f"{chosen}:{dims}")
        _EMBEDDERS[spec] = (embedder, name)
        return embedder, name
