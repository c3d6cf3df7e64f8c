"""LATM behind LangServe: a FastAPI app exposing the graph as a REST runnable.

``create_app(ctx)`` mounts the compiled graph at ``/latm`` with LangServe's
``add_routes`` (``invoke``, ``batch``, ``stream``, ``stream_log``, schemas, the
config-in-URL routes and a playground) and adds ``/healthz``. Clients use
``langserve.RemoteRunnable("http://127.0.0.1:8000/latm")``.

It is a **stateless** adapter: the graph is compiled with the store of the
context's backend (``LATM_DATABASE_URL``, else the local SQLite file, see
:func:`latm.backends.backend_for`) and no checkpointer, so threads and human
approval (which pauses and resumes a thread) are not available through it (use
the LangGraph server). Every run gets the server's context (its environment and
``latm serve`` options) with two things of the request's own:

* its **tenant**: with API keys in ``LATM_API_KEYS`` (``tenant:key`` pairs, as
  for the LangGraph server, see :mod:`latm.auth`) a request must present one
  (``x-api-key`` or ``Authorization: Bearer``) and its tools live in its key's
  namespace; without keys every client shares the server's namespace, which the
  app logs at start-up;
* its **run settings** in ``config.configurable``: exactly those the config
  schema lists (``max_attempts``, ``exec_timeout_s``, ... within the server's
  bounds). Nothing else there is ignored: a thread, checkpoint or approval key
  is refused with HTTP 422 (stateless), a deployment or identity setting (a
  model endpoint, the executor, the namespace, ...) with 403, an unknown key or
  a bad value with 422, each with a ``message`` naming the key. The config of
  the playground's ``/latm/c/{config}/...`` routes is checked the same way.

The input schema is :class:`~latm.server.schema.ServedInput` (no nullable
field, so the playground's form renders). A request whose input does not fit it
is answered with HTTP 422 and a readable ``message``; a well-formed request that
LATM cannot serve (no fitting tool, a tool that fails, ...) is answered with
HTTP 200 and ``error`` set in the output, as the graph answers everywhere.

``stream`` sends each node's progress event as it happens (``{"event": {...}}``,
the events the CLI shows) and then the output as the last chunk; every chunk,
and ``invoke``'s output, fits the one output schema
(:func:`~latm.server.schema.output_model`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.utils import ConfigurableFieldSpec
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from langserve.server import EndpointName

from latm.auth import load_api_keys, presented_key, tenant_for_key
from latm.backends import BackendError, backend_for
from latm.graph.builder import LATMGraph, build_graph
from latm.graph.context import RUN, Context, RunSettings, SettingsError, check_keys
from latm.graph.state import OutputState
from latm.server.schema import ServedInput, graph_input, output_model

log = logging.getLogger("latm.server")

TENANT_KEY = "latm_tenant"
"""The configurable key through which the app hands a request's tenant to the graph."""

RUN_FIELDS = [
    f
    for f in dataclasses.fields(RunSettings)
    if f.metadata.get("kind") == RUN and f.name != "require_approval"
]
"""The run settings a LangServe client may send (human approval needs threads: not here)."""

PATH = "/latm"
"""Where the graph's routes are mounted."""

OUTPUT_KEYS = frozenset(OutputState.__annotations__)

ENDPOINTS: tuple[EndpointName, ...] = (
    "invoke",
    "batch",
    "stream",
    "stream_log",
    "input_schema",
    "output_schema",
    "config_schema",
    "config_hashes",
    "playground",
)
"""LangServe endpoints served (``stream_events`` is left out). ``config_hashes``
serves the routes under ``/latm/c/{config}/`` that the playground calls once its
configuration form is edited; their configuration is checked as a body's is."""


def setting_annotation(f: dataclasses.Field[Any], upper: float | None) -> Any:
    """The config schema's type of a run setting: its choices, or its type and range."""
    choices = f.metadata.get("choices")
    if choices:
        return Literal[tuple(choices)]
    like = f.metadata["type"]
    extra = {"minimum": f.metadata.get("lower"), "maximum": None if upper is None else like(upper)}
    extra = {k: v for k, v in extra.items() if v is not None and like is not bool}
    return Annotated[like, Field(json_schema_extra=extra)] if extra else like


class ServedGraph(Runnable[Any, dict[str, Any]]):
    """The compiled graph with a fixed context, as LangServe serves it.

    ``invoke``/``batch`` return the graph's output; ``stream`` yields the
    progress events, then the output (see the module's doc). Its input schema is
    :class:`~latm.server.schema.ServedInput` (the graph's input without nullable
    fields), its output schema the graph's output plus ``event`` (see
    :func:`~latm.server.schema.output_model`), which every stream chunk fits.
    """

    def __init__(self, graph: LATMGraph, ctx: Context) -> None:
        """Serve ``graph``, running every request with ``ctx``."""
        self.graph, self.ctx = graph, ctx
        self.name = graph.name
        self._output = output_model(graph.get_output_schema())

    def get_input_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        """The input schema LangServe validates requests with (and the playground shows)."""
        return ServedInput

    def get_output_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        """The output of ``invoke``, and of each ``stream`` chunk."""
        return self._output

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        """The run settings a client may send in ``config.configurable``: all it may send.

        Each with its type (its choices as an enum), the deployment's value as
        default, and its range as the schema's ``minimum``/``maximum`` (checked
        by :meth:`Context.with_client_settings`, which names the bound).
        """
        bounds = self.ctx.bounds()
        return [
            ConfigurableFieldSpec(
                id=f.name,
                annotation=setting_annotation(f, bounds.get(f.name)),
                name=f.name,
                description=f.metadata["description"],
                default=getattr(self.ctx, f.name),
            )
            for f in RUN_FIELDS
        ]

    def run_args(self, config: RunnableConfig | None) -> tuple[RunnableConfig, Context]:
        """The graph's config and context for one request.

        The context is the server's, with the request's tenant (put there by the
        app, see :func:`create_app`) and run settings; the configurable keys
        are not passed on (a client may not pick a thread or checkpoint).

        Raises:
            SettingsError: The configurable holds anything but the run settings
                of :attr:`config_specs` (and the app's tenant).
        """
        rest: dict[str, Any] = dict(config or {})
        configurable = dict(rest.pop("configurable", None) or {})
        tenant = configurable.pop(TENANT_KEY, None) or self.ctx.namespace
        check_configurable(configurable)
        ctx = dataclasses.replace(self.ctx, namespace=tenant).with_client_settings(configurable)
        return cast(RunnableConfig, rest), ctx

    def _run(
        self, input: Any, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> dict[str, Any]:
        graph_config, ctx = self.run_args(config)
        out = self.graph.invoke(graph_input(input), graph_config, context=ctx)
        return {k: v for k, v in out.items() if k in OUTPUT_KEYS}

    async def _arun(
        self, input: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> dict[str, Any]:
        graph_config, ctx = self.run_args(config)
        out = await self.graph.ainvoke(graph_input(input), graph_config, context=ctx)
        return {k: v for k, v in out.items() if k in OUTPUT_KEYS}

    def invoke(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Run the graph once and return its output."""
        return self._call_with_config(self._run, input, config)

    async def ainvoke(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Run the graph once and return its output."""
        return await self._acall_with_config(self._arun, input, config)

    def _chunks(
        self, inputs: Iterator[Any], run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> Iterator[dict[str, Any]]:
        # the run's output (tracers, stream_log's final_output) is the last chunk: events
        # do not add up (+), so LangChain keeps the last one
        graph_config, ctx = self.run_args(config)
        output: dict[str, Any] = {}
        modes: Any = ["custom", "values"]
        mode: str
        chunk: Any
        for value in inputs:
            stream = self.graph.stream(
                graph_input(value), graph_config, context=ctx, stream_mode=modes
            )
            for mode, chunk in stream:
                if mode == "custom":
                    yield {"event": chunk}
                else:
                    output = {k: v for k, v in chunk.items() if k in OUTPUT_KEYS}
        yield output

    async def _achunks(
        self,
        inputs: AsyncIterator[Any],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> AsyncIterator[dict[str, Any]]:
        graph_config, ctx = self.run_args(config)
        output: dict[str, Any] = {}
        modes: Any = ["custom", "values"]
        mode: str
        chunk: Any
        async for value in inputs:
            stream = self.graph.astream(
                graph_input(value), graph_config, context=ctx, stream_mode=modes
            )
            async for mode, chunk in stream:
                if mode == "custom":
                    yield {"event": chunk}
                else:
                    output = {k: v for k, v in chunk.items() if k in OUTPUT_KEYS}
        yield output

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        """Yield ``{"event": ...}`` per progress event, then the output (one chunk)."""
        yield from self._transform_stream_with_config(iter([input]), self._chunks, config)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield ``{"event": ...}`` per progress event, then the output (one chunk)."""

        async def one() -> AsyncIterator[Any]:
            yield input

        async for chunk in self._atransform_stream_with_config(one(), self._achunks, config):
            yield chunk


STATELESS = ("thread_id", "checkpoint_id", "checkpoint_ns", "checkpoint_map", "require_approval")
"""Configurable keys of LangGraph's threads and approval, which a stateless app refuses."""


def check_configurable(configurable: Mapping[str, Any]) -> None:
    """Refuse, naming it, a configurable key the app does not honour.

    Raises:
        SettingsError: A thread, checkpoint or approval key (LangServe keeps no
            state), a deployment or identity setting (``forbidden``), or an
            unknown key.
    """
    for key in configurable:
        if key in STATELESS:
            raise SettingsError(
                f"{key!r} is not honoured: LangServe runs are stateless (no threads, "
                "checkpoints or human approval); use the LangGraph server "
                "('langgraph dev') for them"
            )
    check_keys(configurable)


def describe_errors(errors: Any) -> str:
    """One readable line for a list of validation errors (pydantic dicts or plain text)."""
    parts = []
    for err in errors if isinstance(errors, list | tuple) else [errors]:
        if not isinstance(err, dict):
            parts.append(str(err))
            continue
        where = ""
        for item in err.get("loc") or ():
            where += f"[{item}]" if isinstance(item, int) else f".{item}" if where else str(item)
        msg = str(err.get("msg") or err.get("type") or "invalid")
        parts.append(f"{where}: {msg}" if where else msg)
    return "invalid input: " + ("; ".join(parts) or "the request does not fit the input schema")


def compile_for_langserve(ctx: Context) -> LATMGraph:
    """The graph as LangServe runs it: with the context's backend's store, no checkpointer.

    The store is the one ``LATM_DATABASE_URL`` names (:func:`latm.backends.backend_for`):
    PostgreSQL, or the local SQLite file (``ctx.store_path``) when it is empty.

    Raises:
        ValueError: The context asks for human approval (LangServe is stateless),
            or its database cannot be opened.
    """
    if ctx.require_approval:
        raise ValueError(
            "human approval (LATM_REQUIRE_APPROVAL) needs threads that pause and resume; "
            "LangServe is stateless: use the LangGraph server ('langgraph dev') for approval"
        )
    try:
        store = backend_for(ctx).store
    except BackendError as exc:
        raise ValueError(f"cannot open the tool repository: {exc}") from exc
    return build_graph(store=store)


def client_configs(body: Any, config_hash: str | None = None) -> list[Mapping[str, Any]]:
    """The ``config`` objects a LangServe request sends.

    Args:
        body: The request's JSON body: its ``config`` (one, or one per batch input).
        config_hash: The ``{config_hash}`` of a ``/latm/c/{config_hash}/...`` route
            (LangServe's compressed JSON), if any.

    Raises:
        SettingsError: The config hash cannot be read.
    """
    configs: list[Any] = []
    if config_hash:
        from langserve.lzstring import LZString

        try:
            configs.append(
                json.loads(
                    cast(Any, LZString).decompressFromEncodedURIComponent(config_hash) or "null"
                )
            )
        except Exception:  # hostile text: any failure of the decoder is a bad request
            raise SettingsError("the config in the URL cannot be read") from None
    if isinstance(body, Mapping):
        config = body.get("config")
        configs.extend(config if isinstance(config, list) else [config])
    return [c for c in configs if isinstance(c, Mapping)]


def create_app(ctx: Context | None = None, *, api_keys: Mapping[str, str] | None = None) -> Any:
    """Build the FastAPI app: LATM's LangServe routes at ``/latm`` and ``/healthz``.

    Args:
        ctx: The context every run gets (with each request's tenant and run
            settings); default ``Context()`` (the environment).
        api_keys: API key → tenant; default the keys of ``LATM_API_KEYS``
            (see :mod:`latm.auth`). Empty: one namespace, ``ctx.namespace``.

    Returns:
        The ``fastapi.FastAPI`` app, ready for uvicorn.

    Raises:
        ValueError: The context asks for human approval, which LangServe cannot
            do, or the API keys cannot be used.
        ImportError: The ``server`` extra (fastapi, langserve) is not installed.
    """
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from langserve import add_routes
    from pydantic import ValidationError

    ctx = ctx or Context()
    keys = dict(load_api_keys() if api_keys is None else api_keys)
    graph = compile_for_langserve(ctx)
    if keys:
        log.warning("LATM: %d API keys: each tenant has its own tool namespace", len(keys))
    else:
        log.warning(
            "LATM: no API keys are configured (LATM_API_KEYS): every client shares the "
            "tool namespace %r",
            ctx.namespace,
        )
    app = FastAPI(
        title="LATM",
        version="0.1.0",
        description="LLMs as Tool Makers: a strong model makes verified tools, "
        "a cheap model uses them. Stateless LangServe adapter of the LATM graph.",
    )

    def unprocessable(errors: Any) -> JSONResponse:
        return JSONResponse(
            status_code=422,
            content={"message": describe_errors(errors), "detail": jsonable_encoder(errors)},
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return unprocessable(exc.errors())

    @app.exception_handler(HTTPException)
    async def refused(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code,
            content={"message": str(exc.detail), "detail": exc.detail},
            headers=exc.headers,
        )

    input_title = ServedInput.model_config.get("title")

    @app.exception_handler(ValidationError)
    async def invalid_batch_input(request: Request, exc: ValidationError) -> JSONResponse:
        # LangServe's batch endpoint validates each input without turning the
        # error into a 422; any other validation error is a server fault.
        if exc.title != input_title:
            raise exc
        return unprocessable(exc.errors(include_url=False))

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "graph": graph.name, "namespace": None if keys else ctx.namespace}

    async def per_request(config: dict[str, Any], request: Request) -> dict[str, Any]:
        """The request's tenant (from its API key) and checked run settings."""
        tenant = ctx.namespace
        if keys:
            found = tenant_for_key(keys, presented_key(request.headers))
            if found is None:
                raise HTTPException(
                    401, "a valid API key is required (x-api-key or Authorization: Bearer)"
                )
            tenant = found
        try:
            body = await request.json()
        except ValueError:
            body = None
        try:
            for sent in client_configs(body, request.path_params.get("config_hash")):
                configurable = sent.get("configurable") or {}
                check_configurable(configurable)
                ctx.with_client_settings(configurable)
        except SettingsError as exc:
            raise HTTPException(403 if exc.forbidden else 422, f"configurable: {exc}") from None
        configurable = dict(config.get("configurable") or {})
        configurable[TENANT_KEY] = tenant
        return {**config, "configurable": configurable}

    add_routes(
        app,
        ServedGraph(graph, ctx),
        path=PATH,
        enabled_endpoints=ENDPOINTS,
        per_req_config_modifier=per_request,
    )
    return app
