"""A throwaway PostgreSQL cluster on a free loopback port, for the Postgres backend tests.

The server binaries come from the system (Debian's ``postgresql-15``, installed with
pgvector by ``.ci/postgres-setup.sh``). As root, the cluster runs as the ``postgres``
user (PostgreSQL refuses to run as root) from a temporary directory it owns.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path


def find_bin() -> Path | None:
    """The directory of ``pg_ctl``/``initdb``, or ``None`` when PostgreSQL is not installed."""
    for pg_ctl in sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True):
        return Path(pg_ctl).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgCluster:
    """One PostgreSQL server in a temporary directory, listening on 127.0.0.1 only."""

    def __init__(self, bin_dir: Path) -> None:
        """Prepare (not start) a cluster using the binaries in ``bin_dir``."""
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="latm-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self.has_vector = False

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_root else []
        return subprocess.run(
            [*prefix, *argv], check=check, capture_output=True, text=True, timeout=120
        )

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser; returns its output."""
        out = self._run(
            str(self.bin / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-qtAc",
            sql,
        )
        return out.stdout.strip()

    def start(self) -> PgCluster:
        """Create the cluster (first time) and start it; waits until it accepts connections."""
        if not (self.data / "PG_VERSION").exists():
            self._run(
                str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust"
            )
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-o",
            options,
            "start",
        )
        if self.psql("SELECT 1 FROM pg_roles WHERE rolname = 'latm'") != "1":
            self.psql("CREATE ROLE latm LOGIN PASSWORD 'latm'")
        available = self.psql("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")
        self.has_vector = available == "1"
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate`` is like a crash)."""
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False
        )

    def remove(self) -> None:
        """Stop the server and delete its files."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def new_database(self) -> str:
        """A fresh database owned by ``latm`` (with ``vector`` when available); its URL."""
        name = "t_" + uuid.uuid4().hex[:12]
        self.psql(f"CREATE DATABASE {name} OWNER latm")
        if self.has_vector:
            self.psql("CREATE EXTENSION IF NOT EXISTS vector", database=name)
        return f"postgresql://latm:latm@127.0.0.1:{self.port}/{name}"
