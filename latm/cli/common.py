"""Helpers shared by the CLI's sub-commands."""

from __future__ import annotations

from rich.console import Console


class UserError(Exception):
    """A mistake on the user's side: printed as one clear line, no traceback."""


console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
