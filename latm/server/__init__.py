"""LATM behind LangServe: a FastAPI app exposing the graph as a REST runnable.

``create_app(ctx)`` mounts the compiled graph at ``/latm`` with LangServe's
``add_routes`` (``invoke``, ``batch``, ``stream``, ``stream_log``,
``stream_events``, schemas and a playground) and adds ``/healthz``. Clients use
``langserve.RemoteRunnable("http://127.0.0.1:8000/latm")``.

It is a **stateless** adapter: LangServe drops ``thread_id`` and injects no
store, so the graph is compiled here with the local SQLite repository
(``ctx.store_path``) and no checkpointer; human approval, which needs to pause
and resume a thread, is not available through it (use the LangGraph server).
Every run gets the server's context (its environment and ``latm serve``
options). A request whose input does not fit the input schema is answered
with HTTP 422 and a readable ``message``; a well-formed request that LATM cannot
serve (no fitting tool, a tool that fails, ...) is answered with HTTP 200 and
``error`` set in the output, as the graph answers everywhere.

``stream`` sends each node's progress event as it happens (``{"event": {...}}``,
the events the CLI shows) and then the output (``{"output": {...}}``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import BaseModel

if TYPE_CHECKING:
    from langserve.server import EndpointName

from latm.graph.builder import LATMGraph, build_graph
from latm.graph.context import Context
from latm.graph.state import InputState, OutputState
from latm.repository import open_local_store

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
    "playground",
)
"""LangServe endpoints served (``stream_events`` is left out)."""


class ServedGraph(Runnable[InputState, dict[str, Any]]):
    """The compiled graph with a fixed context, as LangServe serves it.

    ``invoke``/``batch`` return the graph's output; ``stream`` yields the
    progress events, then the output (see the module's doc). The input and
    output schemas are the graph's.
    """

    def __init__(self, graph: LATMGraph, ctx: Context) -> None:
        """Serve ``graph``, running every request with ``ctx``."""
        self.graph, self.ctx = graph, ctx
        self.name = graph.name

    def get_input_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        """The graph's input schema (LangServe validates requests with it)."""
        return self.graph.get_input_schema(config)

    def get_output_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        """The graph's output schema."""
        return self.graph.get_output_schema(config)

    def invoke(
        self, input: InputState, config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Run the graph once and return its output."""
        return dict(self.graph.invoke(input, config, context=self.ctx))

    async def ainvoke(
        self, input: InputState, config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Run the graph once and return its output."""
        return dict(await self.graph.ainvoke(input, config, context=self.ctx))

    def stream(
        self, input: InputState, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        """Yield ``{"event": ...}`` per progress event, then ``{"output": ...}``."""
        output: dict[str, Any] = {}
        modes: Any = ["custom", "values"]
        mode: str
        chunk: Any
        for mode, chunk in self.graph.stream(input, config, context=self.ctx, stream_mode=modes):
            if mode == "custom":
                yield {"event": chunk}
            else:
                output = {k: v for k, v in chunk.items() if k in OUTPUT_KEYS}
        yield {"output": output}

    async def astream(
        self, input: InputState, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield ``{"event": ...}`` per progress event, then ``{"output": ...}``."""
        output: dict[str, Any] = {}
        modes: Any = ["custom", "values"]
        mode: str
        chunk: Any
        async for mode, chunk in self.graph.astream(
            input, config, context=self.ctx, stream_mode=modes
        ):
            if mode == "custom":
                yield {"event": chunk}
            else:
                output = {k: v for k, v in chunk.items() if k in OUTPUT_KEYS}
        yield {"output": output}


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
    """The graph as LangServe runs it: with the local SQLite repository and no checkpointer."""
    if ctx.require_approval:
        raise ValueError(
            "human approval (LATM_REQUIRE_APPROVAL) needs threads that pause and resume; "
            "LangServe is stateless: use the LangGraph server ('langgraph dev') for approval"
        )
    return build_graph(store=open_local_store(ctx.store_path))


def create_app(ctx: Context | None = None) -> Any:
    """Build the FastAPI app: LATM's LangServe routes at ``/latm`` and ``/healthz``.

    Args:
        ctx: The context every run gets; default ``Context()`` (the environment).

    Returns:
        The ``fastapi.FastAPI`` app, ready for uvicorn.

    Raises:
        ValueError: The context asks for human approval, which LangServe cannot do.
        ImportError: The ``server`` extra (fastapi, langserve) is not installed.
    """
    from fastapi import FastAPI, Request
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from langserve import add_routes
    from pydantic import ValidationError

    ctx = ctx or Context()
    graph = compile_for_langserve(ctx)
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

    input_title = graph.input_schema.__name__

    @app.exception_handler(ValidationError)
    async def invalid_batch_input(request: Request, exc: ValidationError) -> JSONResponse:
        # LangServe's batch endpoint validates each input without turning the
        # error into a 422; any other validation error is a server fault.
        if exc.title != input_title:
            raise exc
        return unprocessable(exc.errors(include_url=False))

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "graph": graph.name, "namespace": ctx.namespace}

    add_routes(
        app,
        ServedGraph(graph, ctx),
        path=PATH,
        enabled_endpoints=ENDPOINTS,
    )
    return app
