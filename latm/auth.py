"""Tenancy from identity: whose tools a request may see, and what it may set.

On a LangGraph server the repository namespace of a run is its caller's
*tenant*, taken from the identity that LangGraph's custom authentication gives
the request (``runtime.server_info.user``), never from the request itself. This
module holds the pieces a server needs:

* :func:`tenant_for` turns an identity into a namespace label;
* :func:`protect` registers LATM's authorization rules on any
  ``langgraph_sdk.Auth``: a run's ``context`` may hold run settings only
  (:meth:`~latm.graph.context.RunSettings.from_client`, refused with HTTP 403/422
  otherwise), threads and crons belong to their creator, and the store API
  reads only the caller's own ``("latm", <tenant>, ...)`` namespaces and never
  writes (tools are written by verified making only);
* :func:`api_key_auth` is an example authentication over API keys from the
  environment (``LATM_API_KEYS="alice:KEY1,bob:KEY2"``): each key's tenant has
  its own namespace. Without keys every caller is the deployment's one tenant
  (``LATM_NAMESPACE``), and the server says so at start-up.

A real identity provider plugs in with a few lines (see the README)::

    from langgraph_sdk import Auth
    from latm.auth import protect

    auth = protect(Auth())

    @auth.authenticate
    async def authenticate(authorization: str | None) -> str:
        return await my_provider.user_id(authorization)  # the identity names the tenant
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

from langgraph_sdk import Auth

from latm.graph.context import RunSettings, SettingsError

log = logging.getLogger("latm.auth")

API_KEYS_ENV = "LATM_API_KEYS"
"""The environment variable of :func:`api_key_auth`: ``tenant:key`` pairs, comma-separated."""

MIN_KEY_LENGTH = 16
"""Shorter API keys are refused at start-up (they could be guessed)."""

TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
"""An identity used as the namespace label as it is; any other is hashed."""

ROOT = "latm"
"""The first label of every LATM namespace in the store."""


class AuthConfigError(ValueError):
    """The API keys in the environment cannot be used (the message says why)."""


def tenant_for(identity: str) -> str:
    """The namespace label of an identity.

    A short identity of letters, digits, ``_`` and ``-`` is its own label; any
    other (an e-mail, a URL, ...) becomes ``u-`` and a hash of it, as store
    labels may not hold dots.
    """
    if TENANT.match(identity):
        return identity
    return "u-" + hashlib.sha256(identity.encode()).hexdigest()[:32]


def tenant_of_user(user: Any) -> str | None:
    """The tenant of a LangGraph user (``BaseUser`` or dict); ``None`` without one."""
    if user is None:
        return None
    identity = user.get("identity") if isinstance(user, Mapping) else None
    if identity is None:
        identity = getattr(user, "identity", None)
    if not isinstance(identity, str) or not identity:
        return None
    return tenant_for(identity)


def load_api_keys(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The API keys of :data:`API_KEYS_ENV`: key → tenant.

    Raises:
        AuthConfigError: An entry is not ``tenant:key``, a tenant is not a
            valid label, a key is shorter than :data:`MIN_KEY_LENGTH` or used twice.
    """
    raw = (environ if environ is not None else os.environ).get(API_KEYS_ENV, "")
    keys: dict[str, str] = {}
    for entry in filter(None, (e.strip() for e in re.split(r"[,\n]", raw))):
        tenant, sep, key = entry.partition(":")
        tenant, key = tenant.strip(), key.strip()
        if not sep or not tenant or not key:
            raise AuthConfigError(f"{API_KEYS_ENV}: entries are tenant:key, got {entry[:8]!r}...")
        if not TENANT.match(tenant):
            raise AuthConfigError(
                f"{API_KEYS_ENV}: tenant {tenant!r} must be 1-64 letters, digits, '_' or '-'"
            )
        if len(key) < MIN_KEY_LENGTH:
            raise AuthConfigError(
                f"{API_KEYS_ENV}: the key of tenant {tenant!r} is shorter than "
                f"{MIN_KEY_LENGTH} characters"
            )
        if key in keys:
            raise AuthConfigError(f"{API_KEYS_ENV}: one key is given to two tenants")
        keys[key] = tenant
    return keys


def tenant_for_key(keys: Mapping[str, str], presented: str | None) -> str | None:
    """The tenant whose key was presented (compared in constant time), else ``None``."""
    if not presented:
        return None
    found = None
    for key, tenant in keys.items():
        if hmac.compare_digest(key.encode(), presented.encode()):
            found = tenant
    return found


def presented_key(headers: Mapping[Any, Any]) -> str | None:
    """The API key of a request: ``x-api-key``, or ``Authorization: Bearer <key>``."""

    def header(name: str) -> str | None:
        for k, v in headers.items():
            k = k.decode("latin-1") if isinstance(k, bytes) else str(k)
            if k.lower() == name:
                return v.decode("latin-1") if isinstance(v, bytes) else str(v)
        return None

    if key := header("x-api-key"):
        return key.strip()
    scheme, _, token = (header("authorization") or "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def check_run_settings(raw: Any, where: str = "context") -> None:
    """Refuse run settings a client may not send, as an HTTP error of the server.

    Raises:
        Auth.exceptions.HTTPException: 403 for a deployment or identity
            setting, 422 for an unknown setting or a bad value; the detail names it.
    """
    try:
        RunSettings.from_client(raw)
    except SettingsError as exc:
        raise Auth.exceptions.HTTPException(
            status_code=403 if exc.forbidden else 422, detail=f"{where}: {exc}"
        ) from None


STATE_WRITE = (
    "a client may not write the graph's state (it would store a tool that skipped "
    "verification); resume a review with a run's command={'resume': ...}"
)


def check_run_payload(kwargs: Mapping[str, Any] | None) -> None:
    """Check a run, assistant or cron request.

    Its ``context`` and ``config.configurable`` may hold run settings only, and
    its ``command`` may only resume (no state ``update``, no ``goto``).
    """
    kwargs = kwargs or {}
    command = kwargs.get("command")
    writes = [k for k in command or () if k != "resume"] if isinstance(command, Mapping) else []
    if any(command.get(k) not in (None, {}, [], "") for k in writes):  # type: ignore[union-attr]
        raise Auth.exceptions.HTTPException(status_code=403, detail=f"command: {STATE_WRITE}")
    if kwargs.get("context"):
        check_run_settings(kwargs["context"])
    config = kwargs.get("config") or {}
    configurable = config.get("configurable") if isinstance(config, Mapping) else None
    if configurable:
        # LangGraph hands a run the configurable as its context when no context is sent;
        # the server's own keys (thread_id, ...) are not settings.
        settings = {k: v for k, v in configurable.items() if not _server_key(k)}
        if settings:
            check_run_settings(settings, "config.configurable")


def _server_key(key: str) -> bool:
    return key in ("thread_id", "checkpoint_id", "checkpoint_ns", "run_id") or key.startswith(
        ("langgraph_", "__", "x-", "assistant_id", "graph_id", "user_id", "cron_id")
    )


def _user_tenant(ctx: Auth.types.AuthContext) -> str:
    tenant = tenant_of_user(ctx.user)
    if tenant is None:
        raise Auth.exceptions.HTTPException(status_code=401, detail="no authenticated user")
    return tenant


def _own(value: dict[str, Any], owner: str) -> None:
    """Mark a new resource as the owner's (in place: the server keeps the same dict)."""
    if value.get("metadata") is None:
        value["metadata"] = {}
    value["metadata"]["owner"] = owner


def scope_namespace(tenant: str, namespace: tuple[str, ...] | None) -> tuple[str, ...]:
    """The store namespace a tenant's request may use.

    A namespace inside ``("latm", tenant)`` is kept; a prefix of it (``()`` or
    ``("latm",)``, a search over everyone) is narrowed to it.

    Raises:
        Auth.exceptions.HTTPException: 403 for any other namespace.
    """
    mine = (ROOT, tenant)
    ns = tuple(namespace or ())
    if ns[:2] == mine:
        return ns
    if mine[: len(ns)] == ns:
        return mine
    raise Auth.exceptions.HTTPException(
        status_code=403,
        detail=f"namespace {list(ns)} is not yours: your tools live under {list(mine)}",
    )


def protect(auth: Auth) -> Auth:
    """Register LATM's authorization rules on ``auth`` (any authentication), and return it.

    * runs, assistants and crons: their ``context`` (and ``config.configurable``)
      may hold run settings only; threads, runs and crons belong to their creator;
    * the graph's state: a run's ``command`` may only resume (a review), and
      ``update_state`` is refused, as either could store a tool that skipped verification;
    * the store: reads of the caller's own namespaces only; no writes.
    """

    @auth.on.threads.create
    async def own_new_thread(ctx: Auth.types.AuthContext, value: Any) -> None:
        _own(value, _user_tenant(ctx))

    @auth.on.threads.create_run
    async def check_run(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
        owner = _user_tenant(ctx)
        check_run_payload(value.get("kwargs"))
        _own(value, owner)
        return {"owner": owner}

    @auth.on.threads.update
    async def own_thread_metadata(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
        # a metadata patch carries "metadata"; a state update (update_state) only the thread
        if value.get("metadata") is None:
            raise Auth.exceptions.HTTPException(status_code=403, detail=STATE_WRITE)
        return {"owner": _user_tenant(ctx)}

    @auth.on.threads
    async def own_threads(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
        return {"owner": _user_tenant(ctx)}

    @auth.on.assistants.create
    async def check_new_assistant(ctx: Auth.types.AuthContext, value: Any) -> None:
        owner = _user_tenant(ctx)
        check_run_payload(value)
        _own(value, owner)

    @auth.on.assistants.update
    async def check_assistant(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
        check_run_payload(value)
        return {"owner": _user_tenant(ctx)}

    @auth.on.assistants.delete
    async def own_assistant(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
        return {"owner": _user_tenant(ctx)}

    @auth.on.crons.create
    async def check_cron(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
        owner = _user_tenant(ctx)
        check_run_payload(value.get("payload"))
        _own(value, owner)
        return {"owner": owner}

    @auth.on.crons.update
    async def check_cron_update(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
        check_run_payload(value.get("payload"))
        return {"owner": _user_tenant(ctx)}

    @auth.on.crons
    async def own_crons(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
        return {"owner": _user_tenant(ctx)}

    @auth.on.store
    async def own_store(ctx: Auth.types.AuthContext, value: Any) -> None:
        tenant = _user_tenant(ctx)
        if ctx.action in ("put", "delete"):
            raise Auth.exceptions.HTTPException(
                status_code=403,
                detail="the tool repository is written by verified tool making only",
            )
        value["namespace"] = scope_namespace(tenant, value.get("namespace"))

    return auth


def api_key_auth(environ: Mapping[str, str] | None = None) -> Auth:
    """An ``Auth`` over API keys from :data:`API_KEYS_ENV`, with :func:`protect`'s rules.

    With keys, a request must present one (``x-api-key`` or ``Authorization:
    Bearer``) and its tenant is the key's. Without keys, every request is the
    deployment's single tenant (``LATM_NAMESPACE``, default ``default``). Either
    way the mode is logged once, at start-up.

    Raises:
        AuthConfigError: The keys cannot be used.
    """
    env = environ if environ is not None else os.environ
    keys = load_api_keys(env)
    single = env.get("LATM_NAMESPACE") or "default"
    auth = Auth()
    if keys:
        tenants = sorted(set(keys.values()))
        log.warning(
            "LATM: %d API keys (%s) for %d tenants: each tenant has its own tool namespace",
            len(keys),
            API_KEYS_ENV,
            len(tenants),
        )
    else:
        log.warning(
            "LATM: no API keys are configured (%s): every client is one tenant and shares "
            "the tool namespace %r",
            API_KEYS_ENV,
            single,
        )

    @auth.authenticate
    async def authenticate(headers: dict[bytes, bytes]) -> Auth.types.MinimalUserDict:
        if not keys:
            return {"identity": single, "display_name": single}
        tenant = tenant_for_key(keys, presented_key(headers))
        if tenant is None:
            raise Auth.exceptions.HTTPException(
                status_code=401,
                detail="a valid API key is required (x-api-key or Authorization: Bearer)",
            )
        return {"identity": tenant, "display_name": tenant}

    return protect(auth)
