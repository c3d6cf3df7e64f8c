"""Storage backends chosen by one setting: SQLite (embedded, the default) or PostgreSQL.

``Context.database_url`` (env ``LATM_DATABASE_URL``) picks the backend:

* empty: the local SQLite file at ``Context.store_path`` (a ``SqliteStore`` for the
  tools, a ``SqliteSaver`` checkpointer in the same file);
* ``postgresql://user:password@host:port/db``: a ``PostgresStore`` with a pgvector
  index for the dispatcher's semantic search (embeddings from
  ``Context.embeddings``, see :mod:`latm.embeddings`) and a ``PostgresSaver``
  checkpointer, sharing one connection pool. Needs the ``postgres`` extra.

Backends are opened once per process and setting (:func:`open_backend`), with
their tables set up, so every run of a process shares one pool.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from langgraph.store.base import BaseStore
from langgraph.store.sqlite import SqliteStore
from platformdirs import user_data_dir

from latm.embeddings import load_embeddings
from latm.graph.context import Context

if TYPE_CHECKING:  # a type only: the checkpointer modules load when a backend opens
    from langgraph.checkpoint.base import BaseCheckpointSaver

Kind = Literal["sqlite", "postgres"]
POOL_SIZE = 16
CONNECT_TIMEOUT_S = 5
POOL_TIMEOUT_S = 10.0


class BackendError(RuntimeError):
    """The configured database cannot be used: a clear message, no traceback needed."""


def redact(url: str) -> str:
    """A database URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def backend_kind(database_url: str | None) -> Kind:
    """Which backend a URL names.

    Raises:
        BackendError: The URL names neither SQLite nor PostgreSQL.
    """
    url = (database_url or "").strip()
    if not url or url.startswith("sqlite:"):
        return "sqlite"
    if url.split(":", 1)[0] in ("postgres", "postgresql"):
        return "postgres"
    raise BackendError(
        f"unsupported database URL {redact(url)!r}: leave it empty for the local SQLite file, "
        "or use postgresql://user:password@host:port/database"
    )


@dataclass
class Backend:
    """An opened backend: the store of the tool repository and a checkpointer factory.

    Attributes:
        kind: ``sqlite`` or ``postgres``.
        where: The SQLite file or the PostgreSQL URL (password redacted).
        store: The LangGraph store holding the tools.
        semantic: Whether the store has a semantic (vector) index.
    """

    kind: Kind
    where: str
    store: BaseStore
    semantic: bool
    _make_checkpointer: Any = field(repr=False)
    _close: Any = field(repr=False, default=None)
    _checkpointer: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def checkpointer(self) -> BaseCheckpointSaver[Any]:
        """The backend's checkpointer (``SqliteSaver`` or ``PostgresSaver``), set up once."""
        with self._lock:
            if self._checkpointer is None:
                self._checkpointer = self._make_checkpointer()
            return self._checkpointer  # type: ignore[no-any-return]

    def close(self) -> None:
        """Close the backend's connections (the process-wide cache forgets it)."""
        with _LOCK:
            for key, value in list(_BACKENDS.items()):
                if value is self:
                    del _BACKENDS[key]
        if self._close is not None:
            self._close()


def setup_with_retries(setup: Any, attempts: int = 30) -> None:
    """Run a store's ``setup()``, again while another process runs the same migrations.

    Several processes opening a new database at once race on its migration table
    (one gets a unique-key or lock error); the loser waits and re-reads how far
    the winner got.
    """
    for attempt in range(attempts):
        try:
            setup()
            return
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 + 0.05 * attempt)


def default_store_path() -> Path:
    """Where the local SQLite repository lives when no path is configured."""
    return Path(user_data_dir("latm", appauthor=False)) / "tools.sqlite"


def open_local_store(path: str | Path | None = None) -> BaseStore:
    """The local SQLite store at ``path`` (``None``: :func:`default_store_path`).

    The SQLite backend's store: opened once per process and file, like every backend.
    """
    return open_backend(store_path=str(path) if path else None).store


_BACKENDS: dict[tuple[str, str, str], Backend] = {}
_LOCK = threading.Lock()


def _sqlite_path(url: str, store_path: str | None) -> Path:
    if url.startswith("sqlite:"):
        rest = url[len("sqlite:") :]
        rest = rest[2:] if rest.startswith("//") else rest
        if rest:
            return Path(rest).expanduser()
    return Path(store_path).expanduser() if store_path else default_store_path()


def _open_sqlite(url: str, store_path: str | None, embeddings: str) -> Backend:
    from langgraph.checkpoint.sqlite import SqliteSaver

    path = _sqlite_path(url, store_path)
    index = load_embeddings(embeddings)
    if index is not None and not hasattr(sqlite3.Connection, "enable_load_extension"):
        raise BackendError(
            "this Python's sqlite3 cannot load extensions, so SQLite has no semantic index "
            "here: set LATM_EMBEDDINGS=none (lexical search) or use PostgreSQL"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    if index is None:
        store = SqliteStore(conn)
    else:
        embed, dims = index
        store = SqliteStore(conn, index={"dims": dims, "embed": embed, "fields": ["search_text"]})
    setup_with_retries(store.setup)

    def checkpointer() -> SqliteSaver:
        conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        saver = SqliteSaver(conn)
        setup_with_retries(saver.setup)
        return saver

    return Backend("sqlite", str(path), store, index is not None, checkpointer)


def _open_postgres(url: str, embeddings: str) -> Backend:
    try:
        import psycopg
        from langgraph.checkpoint.postgres import PostgresSaver
        from langgraph.store.postgres import PostgresStore
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool
    except ImportError as exc:
        raise BackendError(
            "a PostgreSQL database URL needs the 'postgres' extra: pip install 'latm[postgres]' "
            f"({exc})"
        ) from exc
    where = redact(url)
    index = load_embeddings(embeddings or "hash")
    try:  # one plain connection first: fail fast, with the server's own reason
        psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S).close()
    except psycopg.Error as exc:
        detail = " ".join(str(exc).split())
        raise BackendError(f"cannot connect to PostgreSQL at {where}: {detail}") from exc
    pool: ConnectionPool[Any] = ConnectionPool(
        url,
        min_size=1,
        max_size=POOL_SIZE,
        timeout=POOL_TIMEOUT_S,
        open=False,
        check=ConnectionPool.check_connection,
        kwargs={
            "autocommit": True,
            "prepare_threshold": 0,
            "row_factory": dict_row,
            "connect_timeout": CONNECT_TIMEOUT_S,
        },
    )
    try:
        pool.open(wait=True, timeout=POOL_TIMEOUT_S)
        config: Any = None
        if index is not None:
            embed, dims = index
            config = {
                "dims": dims,
                "embed": embed,
                "fields": ["search_text"],
                "distance_type": "cosine",
            }
        store = PostgresStore(pool, index=config)
        setup_with_retries(store.setup)
    except Exception as exc:
        pool.close()
        raise BackendError(
            f"cannot use the PostgreSQL database {where}: {type(exc).__name__}: {exc}".strip()
        ) from exc

    def checkpointer() -> PostgresSaver:
        saver = PostgresSaver(pool)
        setup_with_retries(saver.setup)
        return saver

    return Backend("postgres", where, store, index is not None, checkpointer, pool.close)


def open_backend(
    database_url: str | None = None, *, store_path: str | None = None, embeddings: str = ""
) -> Backend:
    """Open (once per process and setting) the backend a database URL names.

    Args:
        database_url: Empty for the local SQLite file, or a ``postgresql://`` URL.
        store_path: The SQLite file when the URL is empty (``None``: the user data dir).
        embeddings: The semantic index's embedding function (:mod:`latm.embeddings`);
            empty means none on SQLite and ``hash`` on PostgreSQL.

    Returns:
        The backend, its tables set up.

    Raises:
        BackendError: The URL is unsupported, the extra is missing or the database
            cannot be reached.
    """
    url = (database_url or "").strip()
    kind = backend_kind(url)
    where = str(_sqlite_path(url, store_path)) if kind == "sqlite" else url
    same = str(Path(where).resolve()) if kind == "sqlite" and Path(where).exists() else where
    key = (kind, same, embeddings.strip())
    with _LOCK:
        backend = _BACKENDS.get(key)
        if backend is None:
            try:
                if kind == "sqlite":
                    backend = _open_sqlite(url, store_path, embeddings)
                else:
                    backend = _open_postgres(url, embeddings)
            except ValueError as exc:  # a malformed embeddings setting
                raise BackendError(str(exc)) from exc
            except sqlite3.Error as exc:
                raise BackendError(f"cannot open the SQLite file {where}: {exc}") from exc
            _BACKENDS[key] = backend
        return backend


def backend_for(ctx: Context) -> Backend:
    """The backend a run's context names."""
    return open_backend(ctx.database_url, store_path=ctx.store_path, embeddings=ctx.embeddings)
