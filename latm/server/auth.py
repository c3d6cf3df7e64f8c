"""The LangGraph server's authentication: API keys from the environment (``langgraph.json``).

``langgraph.json`` names :data:`auth` (``"auth": {"path": "latm.server.auth:auth"}``).
With ``LATM_API_KEYS="alice:KEY1,bob:KEY2"`` each key's tenant gets its own tool
namespace; without it every client shares one, which the server logs at start-up.
To plug in another identity provider, point ``langgraph.json`` at your own
``Auth`` built with :func:`latm.auth.protect` (see :mod:`latm.auth`).
"""

from __future__ import annotations

from latm.auth import api_key_auth

auth = api_key_auth()
"""The server's ``Auth``: API keys from ``LATM_API_KEYS`` and LATM's authorization rules."""
