"""Where the local default keeps its server, models, pid files and logs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_cache_dir

from latm.local.spec import SERVER_BINARY, ModelSpec

ENV_LOCAL_DIR = "LATM_LOCAL_DIR"
"""Environment variable overriding the cache directory."""

ENV_LOCAL_PORT = "LATM_LOCAL_PORT"
"""Environment variable overriding the port the local server listens on."""

DEFAULT_PORT = 8723
"""Port the local server listens on (127.0.0.1 only) unless overridden."""


class LocalError(Exception):
    """Something about the local model default is wrong in a way the user can fix.

    The message is one or two plain sentences that say what to do; the CLI
    prints it without a traceback.
    """


@dataclass(frozen=True, slots=True)
class LocalPaths:
    """The layout of the local cache directory.

    Attributes:
        root: The cache directory itself.
    """

    root: Path

    @classmethod
    def from_env(cls) -> LocalPaths:
        """Use ``$LATM_LOCAL_DIR`` if set, else the platform's user cache dir for ``latm``."""
        override = os.environ.get(ENV_LOCAL_DIR, "").strip()
        root = Path(override).expanduser() if override else Path(user_cache_dir("latm")) / "local"
        return cls(root=root.absolute())

    @property
    def bin_dir(self) -> Path:
        """Directory of the built server executable."""
        return self.root / "bin"

    @property
    def server_bin(self) -> Path:
        """The built ``llama-server`` executable."""
        return self.bin_dir / SERVER_BINARY

    @property
    def server_info(self) -> Path:
        """JSON record of how and from what the server was built."""
        return self.bin_dir / "build-info.json"

    @property
    def models_dir(self) -> Path:
        """Directory of the assembled GGUF files."""
        return self.root / "models"

    def model_path(self, model: ModelSpec) -> Path:
        """Where ``model``'s assembled GGUF file lives."""
        return self.models_dir / model.filename

    @property
    def work_dir(self) -> Path:
        """Scratch space for downloads and the build; emptied after each step."""
        return self.root / "work"

    @property
    def run_dir(self) -> Path:
        """Pid file and generated server configuration."""
        return self.root / "run"

    @property
    def pid_file(self) -> Path:
        """The running server's pid file (JSON: pid, port, start time)."""
        return self.run_dir / "server.json"

    @property
    def preset_file(self) -> Path:
        """The models preset the server is started with."""
        return self.run_dir / "models.ini"

    @property
    def log_dir(self) -> Path:
        """Server and build logs."""
        return self.root / "logs"

    @property
    def server_log(self) -> Path:
        """Log of the running (or last) server."""
        return self.log_dir / "server.log"

    @property
    def build_log(self) -> Path:
        """Log of the last server build."""
        return self.log_dir / "build.log"


def port_from_env() -> int:
    """The local server's port: ``$LATM_LOCAL_PORT`` or :data:`DEFAULT_PORT`.

    Raises:
        LocalError: If the variable is set to something that is not a port number.
    """
    raw = os.environ.get(ENV_LOCAL_PORT, "").strip()
    if not raw:
        return DEFAULT_PORT
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise LocalError(f"{ENV_LOCAL_PORT}={raw!r} is not a port number (1-65535).")
    return port
