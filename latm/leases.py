"""Leases: one maker per new task.

When N requests for the same new task arrive at once, exactly one makes the
tool; the others wait for it and then use it. On a miss the dispatcher takes a
*lease* on the task's key (its ``task_type``; without one, ``ex-`` and a hash
of the examples, since the tool's name is only known after the maker names its
function). The lease is released by ``wrap`` once the tool is stored, or by the
node that ends the making with an error; it is renewed by ``propose`` and
``verify`` and lapses ``Context.lease_ttl_s`` after its last renewal, so a dead
maker blocks nobody for long. A request that finds the lease held polls the
store until the holder reports a new tool (it then answers from it, a cache
hit), the lease lapses (it takes over), or ``Context.lease_wait_s`` passes (a
clear error). The node wrapper that renews and releases it is
:func:`latm.nodes.wrappers.holds_lease`.

A tenant's lease records live in its :class:`LeaseBook` (a store and a tenant),
beside, not inside, its tool repository. The book uses only the ``BaseStore``
API (get, put, search, delete), so it works the same on SQLite, PostgreSQL, the
in-memory store and the store a LangGraph server supplies. As a store has no
compare-and-set, mutual exclusion is Lamport's bakery algorithm over store
records: each contender writes a "choosing" record, then a ticket one above
every ticket it sees, then waits until no one is choosing and no live ticket is
smaller. It is exact as long as each store operation is atomic and a finished
write is seen by later reads, which SQLite, PostgreSQL and the in-memory store
give.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langgraph.config import get_config
from langgraph.store.base import BaseStore

from latm.graph.context import Context
from latm.graph.state import Example
from latm.repository import ToolRecord, ToolRepository

log = logging.getLogger(__name__)

POLL_S = 0.1
"""How often a waiting request looks at the store again (with some jitter)."""


def lease_key(task_type: str | None, examples: list[Example]) -> str:
    """The key of the tool a miss would make: its task type, or a hash of the examples."""
    if task_type:
        return task_type
    canonical = json.dumps(
        [[e["input"], e["target"]] for e in examples], ensure_ascii=False, separators=(",", ":")
    )
    return "ex-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Ticket:
    """One contender's record in a lease's bakery.

    Attributes:
        owner: Who holds it: the run's thread (a resumed thread or a retry on it is
            the same owner and takes its own lease back at once), else a fresh id.
        choosing: Still picking its number (Lamport's bakery).
        number: Its place in line.
        expires_at: When it lapses without renewal.
        proc: The holder's process (``host:pid:start``), to tell a dead holder.
        run: The holder's graph run in that process (``None`` when unknown).
        review: Held through a person's review (a paused run has no live process).
    """

    owner: str
    choosing: bool
    number: int
    expires_at: float
    proc: str | None = None
    run: str | None = None
    review: bool = False

    @classmethod
    def parse(cls, value: Any) -> Ticket | None:
        """Read a ticket record; ``None`` when it is not one (foreign or corrupt)."""
        try:
            return cls(
                owner=str(value["owner"]),
                choosing=bool(value["choosing"]),
                number=int(value["number"]),
                expires_at=float(value["expires_at"]),
                proc=str(value["proc"]) if value.get("proc") else None,
                run=str(value["run"]) if value.get("run") else None,
                review=bool(value.get("review", False)),
            )
        except (AttributeError, KeyError, TypeError, ValueError):
            return None


def _start_token(pid: int) -> str:
    """When a process started (ticks since boot), so that a reused pid is not taken for it."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


HOST = socket.gethostname()
PROC = f"{HOST}:{os.getpid()}:{_start_token(os.getpid())}"
"""This process, as a lease ticket records its holder."""


def _process_gone(proc: str) -> bool:
    """Whether the process ``host:pid:start`` provably no longer runs (on this host only)."""
    host, _, rest = proc.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != HOST or not pid_text.isdigit():
        return False  # another host: only the TTL can tell
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, owned by someone else
        return False
    now = _start_token(pid)
    return start not in ("", "?") and now != "?" and now != start


def holder_gone(ticket: Ticket) -> bool:
    """Whether a ticket's holder provably ended.

    It did when its run in this process is over, or its process on this host is
    dead. A ticket held through a review never did (no run holds it).
    """
    if ticket.review or ticket.proc is None:
        return False
    if ticket.proc == PROC:
        return ticket.run is not None and not GUARD.is_live(ticket.run)
    return _process_gone(ticket.proc)


class LeaseBook:
    """A tenant's lease records in a store: the tickets of each lease and the made markers.

    Args:
        store: The LangGraph store (the same one as the tenant's tools).
        tenant: Whose leases these are.
    """

    def __init__(self, store: BaseStore, tenant: str) -> None:
        """Open the book (nothing is read or written yet)."""
        self.store = store
        self.tenant = tenant

    @classmethod
    def of(cls, repo: ToolRepository) -> LeaseBook:
        """The lease book beside a tool repository (same store, same tenant)."""
        return cls(repo.store, repo.tenant)

    def _leases(self, key: str) -> tuple[str, ...]:
        return ("latm", self.tenant, "leases", key)

    def _made(self) -> tuple[str, ...]:
        return ("latm", self.tenant, "made")

    def tickets(self, key: str) -> list[Ticket]:
        """The live tickets of a lease; lapsed, orphaned and unreadable ones are removed."""
        ns = self._leases(key)
        now = time.time()
        live = []
        for item in self.store.search(ns, limit=1000):
            ticket = Ticket.parse(item.value)
            if ticket is None or ticket.expires_at < now or holder_gone(ticket):
                self.store.delete(ns, item.key)
                continue
            live.append(ticket)
        return live

    def write(self, key: str, ticket: Ticket) -> None:
        """Write (or replace) a contender's ticket."""
        value = {
            "owner": ticket.owner,
            "choosing": ticket.choosing,
            "number": ticket.number,
            "expires_at": ticket.expires_at,
            "proc": ticket.proc,
            "run": ticket.run,
            "review": ticket.review,
        }
        self.store.put(self._leases(key), ticket.owner, value, index=False)

    def drop(self, key: str, owner: str) -> None:
        """Remove an owner's ticket (the lease is given back)."""
        self.store.delete(self._leases(key), owner)

    def made(self, key: str) -> dict[str, Any] | None:
        """The marker of the last tool made under ``key`` (``None`` when none)."""
        item = self.store.get(self._made(), key)
        return item.value if item and isinstance(item.value, dict) else None

    def mark_made(self, key: str, made: ToolRecord) -> None:
        """Tell the waiters on ``key`` which tool was made."""
        marker = {
            "id": uuid.uuid4().hex,
            "task_type": made.task_type,
            "version": made.version,
            "at": time.time(),
        }
        self.store.put(self._made(), key, marker, index=False)


@dataclass
class Claim:
    """The outcome of a miss: make the tool (holding ``lease``), use a new one, or fail."""

    kind: Literal["make", "hit", "error"]
    lease: dict[str, Any] | None = None
    record: ToolRecord | None = None
    error: str | None = None
    waited_s: float = 0.0


def _fresh_tool(
    repo: ToolRepository, key: str, task_type: str | None, seen: tuple[Any, int]
) -> ToolRecord | None:
    """A tool made by someone else since ``seen`` (the ``made`` marker and version then)."""
    made = LeaseBook.of(repo).made(key)
    if made is not None and made.get("id") != seen[0]:
        record = repo.get(str(made.get("task_type") or ""))
        if record is not None:
            return record
    if task_type:
        record = repo.get(task_type)
        if record is not None and record.version > seen[1]:
            return record
    return None


def claim(
    repo: ToolRepository,
    ctx: Context,
    task_type: str | None,
    examples: list[Example],
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> Claim:
    """Take the lease to make a tool, or wait for the run that holds it.

    Args:
        repo: The tool repository.
        ctx: The run's context (lease TTL and wait).
        task_type: The requested task type, if any.
        examples: The request's examples (the lease key without a task type).
        sleep: How to wait between polls (tests pass a fake).

    Returns:
        ``make`` with the lease to hold (released when the run ends, however it
        ends: see :class:`LeaseGuard`); ``hit`` with a tool another run made
        meanwhile; or ``error`` when the wait timed out.
    """
    with repo.guard("taking the tool-making lease"):
        got = _claim(repo, ctx, task_type, examples, sleep)
    if got.lease is not None:
        GUARD.hold(repo, got.lease)
    return got


def _owner() -> str:
    """Who holds a lease: the run's thread when it has one, else a fresh id.

    A run resumed from its checkpoint, or a retry on the same thread, is the
    same owner, so it takes its own lease back at once.
    """
    try:
        thread = get_config().get("configurable", {}).get("thread_id")
    except RuntimeError:  # called outside a graph run
        thread = None
    return _owner_of_thread(thread) if thread else uuid.uuid4().hex


def _owner_of_thread(thread: Any) -> str:
    """The lease owner of every run on ``thread``."""
    return "thread-" + hashlib.sha256(str(thread).encode()).hexdigest()[:32]


def _claim(
    repo: ToolRepository,
    ctx: Context,
    task_type: str | None,
    examples: list[Example],
    sleep: Callable[[float], None],
) -> Claim:
    key = lease_key(task_type, examples)
    owner = _owner()
    run = GUARD.current_run()
    started = time.monotonic()
    book = LeaseBook.of(repo)
    made = book.made(key)
    current = repo.get(task_type) if task_type else None
    seen = (made.get("id") if made else None, current.version if current else 0)

    def ticket(choosing: bool, number: int) -> Ticket:
        return Ticket(owner, choosing, number, time.time() + ctx.lease_ttl_s, PROC, run)

    book.write(key, ticket(True, 0))
    number = 1 + max((t.number for t in book.tickets(key)), default=0)
    book.write(key, ticket(False, number))
    lease = {"key": key, "owner": owner, "number": number, "id": uuid.uuid4().hex}
    blockers: list[Ticket] = []
    while True:
        fresh = _fresh_tool(repo, key, task_type, seen)
        if fresh is not None:
            release(repo, lease)
            return Claim("hit", record=fresh, waited_s=time.monotonic() - started)
        blockers = [
            t
            for t in book.tickets(key)
            if t.owner != owner and (t.choosing or (t.number, t.owner) < (number, owner))
        ]
        if not blockers:
            return Claim("make", lease=lease, waited_s=time.monotonic() - started)
        if time.monotonic() - started >= ctx.lease_wait_s:
            release(repo, lease)
            return Claim(
                "error",
                error=(
                    f"another run is making the tool for {key!r}; gave up waiting for it "
                    f"after {ctx.lease_wait_s:g} s (its lease lapses {ctx.lease_ttl_s:g} s "
                    "after its last sign of life). Try again later."
                ),
                waited_s=time.monotonic() - started,
            )
        sleep(POLL_S * (0.5 + random.random()))


def _lease_id(lease: dict[str, Any]) -> str:
    """One taking of a lease (a later one by the same owner is another)."""
    return str(lease.get("id") or (lease["key"], lease["owner"], lease["number"]))


def renew(
    repo: ToolRepository,
    lease: dict[str, Any],
    ctx: Context,
    ttl_s: float | None = None,
    *,
    review: bool = False,
) -> None:
    """Extend a held lease by ``ttl_s`` (default ``ctx.lease_ttl_s``): a sign of life.

    A lease its run already gave back (the run ended while this node still
    ran on, e.g. after a cancellation) is not brought back.

    Args:
        repo: The tool repository.
        lease: The lease.
        ctx: The run's context.
        ttl_s: How long from now it lasts.
        review: Hold it through a person's review: the run's end does not release it.
    """
    if GUARD.closed(lease):
        return
    GUARD.hold(repo, lease, review=review)
    ttl = ctx.lease_ttl_s if ttl_s is None else ttl_s
    ticket = Ticket(
        lease["owner"],
        False,
        int(lease["number"]),
        time.time() + ttl,
        PROC,
        None if review else GUARD.current_run(),
        review,
    )
    LeaseBook.of(repo).write(lease["key"], ticket)


def release(repo: ToolRepository, lease: dict[str, Any], made: ToolRecord | None = None) -> None:
    """Give a lease back; with ``made``, first tell the waiters which tool was made.

    Raises:
        Exception: The store failed (the run's end tries once more, see :class:`LeaseGuard`).
    """
    GUARD.close(lease)
    book = LeaseBook.of(repo)
    if made is not None:
        book.mark_made(lease["key"], made)
    book.drop(lease["key"], lease["owner"])
    GUARD.forget(lease)


class LeaseGuard(BaseCallbackHandler):
    """Gives back the leases a graph run still holds when the run ends, however it ends.

    The compiled graph carries one guard in its config (see ``build_graph``), so
    LangChain's callbacks tell it when a run of the graph starts and ends: with
    its output, an exception, a cancellation (``CancelledError`` of an async
    caller or ``runs.cancel`` on a server), a closed stream (``GeneratorExit``)
    or ``KeyboardInterrupt``. A lease taken in a run (:func:`claim`) is held
    under that run until :func:`release` or the run's end, which releases it:
    no lease outlives its run, except one held through a person's review
    (:func:`renew` with ``review``), which a resumed thread takes back. A
    holder's later renewal of a released lease is ignored, and other requests
    treat a ticket whose run is over as free (:func:`holder_gone`).
    """

    run_inline = True  # the run map must be current when the next node starts
    raise_error = False

    def __init__(self) -> None:
        """An empty map of runs."""
        super().__init__()
        self._lock = threading.Lock()
        self._root_of: dict[UUID, UUID] = {}
        self._members: dict[UUID, set[UUID]] = {}
        self._held: dict[UUID, dict[str, tuple[ToolRepository, dict[str, Any]]]] = {}
        self._review: set[str] = set()
        self._closed: OrderedDict[str, None] = OrderedDict()

    # --- callbacks
    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Note a run: the root of a graph run, or a run inside one."""
        with self._lock:
            root = self._root_of.get(parent_run_id) if parent_run_id is not None else None
            if root is None:
                root = run_id
                self._members[root] = set()
            self._root_of[run_id] = root
            self._members[root].add(run_id)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """A run ended with its output: at a graph run's end, release what it holds."""
        self._ended(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """A run ended with an exception, a cancellation or an interrupt: likewise."""
        self._ended(run_id)

    def _ended(self, run_id: UUID) -> None:
        with self._lock:
            if self._root_of.get(run_id) != run_id:
                return
            for member in self._members.pop(run_id, set()):
                self._root_of.pop(member, None)
            held = self._held.pop(run_id, {})
            leases = [
                (repo, lease) for lid, (repo, lease) in held.items() if lid not in self._review
            ]
        if not leases:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a sync caller's thread: release now
            self._release_all(leases)
        else:  # never block an event loop on the store (a server's store may need the loop)
            threading.Thread(
                target=self._release_all, args=(leases,), name="latm-lease-release", daemon=True
            ).start()

    @staticmethod
    def _release_all(leases: list[tuple[ToolRepository, dict[str, Any]]]) -> None:
        for repo, lease in leases:
            try:
                release(repo, lease)
                log.info("released the tool-making lease on %s at its run's end", lease["key"])
            except Exception as exc:  # the store is gone: the TTL ends it
                log.warning("could not release the lease on %s: %s", lease.get("key"), exc)

    # --- runs
    def current_run(self) -> str | None:
        """The graph run the calling node belongs to (``None`` outside a guarded run)."""
        try:
            callbacks = get_config().get("callbacks")
        except RuntimeError:
            return None
        parent = getattr(callbacks, "parent_run_id", None)
        with self._lock:
            root = self._root_of.get(parent) if parent is not None else None
        return str(root) if root is not None else None

    def is_live(self, run: str) -> bool:
        """Whether a graph run of this process is still going."""
        try:
            key = UUID(run)
        except ValueError:
            return False
        with self._lock:
            return key in self._members

    # --- leases
    def hold(self, repo: ToolRepository, lease: dict[str, Any], *, review: bool = False) -> None:
        """Hold ``lease`` under the calling node's run (and through a review with ``review``)."""
        lid = _lease_id(lease)
        run = self.current_run()
        with self._lock:
            if review:
                self._review.add(lid)
            if run is not None:
                root = UUID(run)
                if root in self._members:
                    self._held.setdefault(root, {})[lid] = (repo, lease)

    def close(self, lease: dict[str, Any]) -> None:
        """Mark ``lease`` given back: no renewal brings it back."""
        lid = _lease_id(lease)
        with self._lock:
            self._closed[lid] = None
            while len(self._closed) > 10_000:
                self._closed.popitem(last=False)
            self._review.discard(lid)

    def closed(self, lease: dict[str, Any]) -> bool:
        """Whether ``lease`` was given back."""
        with self._lock:
            return _lease_id(lease) in self._closed

    def forget(self, lease: dict[str, Any]) -> None:
        """Stop holding ``lease`` (it was released)."""
        lid = _lease_id(lease)
        with self._lock:
            for held in self._held.values():
                held.pop(lid, None)


GUARD = LeaseGuard()
"""The process's lease guard; ``build_graph`` puts it in the compiled graph's callbacks."""
