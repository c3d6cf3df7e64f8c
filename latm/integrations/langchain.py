"""LATM's verified tools as LangChain tools, for any agent (ReAct agents, ``ToolNode``).

>>> from latm.integrations.langchain import as_langchain_tools
>>> tools = as_langchain_tools(ToolRepository(store, "default"))  # doctest: +SKIP
>>> agent = create_react_agent(model, tools)  # doctest: +SKIP

Each tool's arguments come from the verified function's signature, its
description from the docstring and usage demos, and every call runs in the
sandbox executor: an agent never runs generated code in its own process. A
failure (bad arguments, a raising, looping or crashing tool, no sandbox) comes
back to the agent as an error ``ToolMessage`` (``status="error"``), never as
an exception.

For a large repository, :class:`LatmToolkit` offers what langgraph-bigtool does:
a ``retrieve_tools`` tool over the repository's search, and a model wrapper
that binds only the retrieved tools (:func:`create_tool_retrieving_agent`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, ToolMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from pydantic import BaseModel, Field, ValidationError

from latm.graph.context import Context
from latm.integrations.tools import (
    ToolRunner,
    ToolSpec,
    build_specs,
    configured_repository,
    exposed_records,
    search_records,
)
from latm.repository import ToolRepository
from latm.sandbox import ExecLimits, Executor

RETRIEVE_TOOLS = "retrieve_tools"
"""The name of the tool that finds the tools fitting a request."""


def _invalid(name: str) -> Callable[[ValidationError], str]:
    def message(exc: ValidationError) -> str:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        return f"invalid arguments for tool {name}: {problems}"

    return message


def spec_tool(spec: ToolSpec, runner: ToolRunner) -> StructuredTool:
    """A LangChain tool that runs one tool spec in the sandbox."""

    def run(**arguments: Any) -> str:
        outcome = runner.call(spec, arguments)
        if not outcome.ok:
            raise ToolException(outcome.text)  # turned into an error ToolMessage
        return outcome.text

    return StructuredTool.from_function(
        func=run,
        name=spec.name,
        description=spec.description,
        args_schema=spec.args_model,
        infer_schema=False,
        handle_tool_error=True,
        handle_validation_error=_invalid(spec.name),
        metadata=spec_tool_metadata(spec),
    )


class _RetrieveArgs(BaseModel):
    query: str = Field(description="What the tools should do: the request, or a few keywords.")


class LatmToolkit:
    """The verified tools of one repository namespace, as LangChain tools.

    The tools are built from the repository when asked for; a tool keeps the
    code of the version it was built from.
    """

    def __init__(
        self,
        repository: ToolRepository | None = None,
        *,
        context: Context | None = None,
        executor: Executor | None = None,
        limits: ExecLimits | None = None,
    ) -> None:
        """Open the toolkit.

        Args:
            repository: The repository; its namespace is the one exposed.
                Default: the one the context names (as the CLI opens it).
            context: Settings (executor choice, execution limits, retirement
                threshold, repository); default: the environment's.
            executor: The executor that runs calls (default: the context's sandbox).
            limits: Limits of one call (default: the context's).
        """
        self.context = context or Context()
        self.repository = repository or configured_repository(self.context)
        self.runner = ToolRunner(self.context, executor, limits)
        self._lock = threading.Lock()
        # an entry no task type can have: keeps the retriever's name for it
        self._names: dict[str, str] = {"\0retriever": RETRIEVE_TOOLS}
        self._tools: dict[str, BaseTool] = {}

    def _build(self, specs: list[ToolSpec]) -> list[BaseTool]:
        tools: list[BaseTool] = []
        with self._lock:
            for spec in specs:
                known = self._tools.get(spec.name)
                if known is None or known.metadata != spec_tool_metadata(spec):
                    known = self._tools[spec.name] = spec_tool(spec, self.runner)
                self._names[spec.record.task_type] = spec.name
                tools.append(known)
        return tools

    def get_tools(self, task_types: Sequence[str] | None = None) -> list[BaseTool]:
        """Every verified, unretired tool of the namespace (or those of ``task_types``).

        Raises:
            RepositoryError: The store failed.
        """
        records = exposed_records(self.repository, self.context)
        if task_types is not None:
            wanted = set(task_types)
            records = [r for r in records if r.task_type in wanted]
        return self._build(build_specs(records, self.repository.tenant, names=self._names))

    def retrieve_tools(self, query: str, k: int = 3) -> list[BaseTool]:
        """The ``k`` tools that best fit ``query``, by the repository's search.

        Raises:
            RepositoryError: The store failed.
        """
        records = search_records(self.repository, self.context, query, k)
        return self._build(build_specs(records, self.repository.tenant, names=self._names))

    def retrieve_tools_tool(self, k: int = 3) -> BaseTool:
        """A ``retrieve_tools(query)`` tool for agents: names and describes the fitting tools.

        Its message's artifact is the list of tool names, which
        :meth:`selecting_model` binds to the model on the next turn.
        """

        def retrieve(query: str) -> tuple[str, list[str]]:
            try:
                tools = self.retrieve_tools(query, k)
            except Exception as exc:  # the store failed: tell the agent, keep it running
                raise ToolException(f"cannot search the tools: {type(exc).__name__}") from exc
            if not tools:
                return "No tool fits this request.", []
            lines = [f"{t.name}: {t.description.splitlines()[0]}" for t in tools]
            return "Tools you can call now:\n" + "\n".join(lines), [t.name for t in tools]

        return StructuredTool.from_function(
            func=retrieve,
            name=RETRIEVE_TOOLS,
            description="Find the tools that fit a request among the many this agent has; "
            "they become callable on your next turn.",
            args_schema=_RetrieveArgs,
            infer_schema=False,
            response_format="content_and_artifact",
            handle_tool_error=True,
        )

    def selecting_model(
        self, model: BaseChatModel, retriever: BaseTool
    ) -> Callable[[Any, Any], Runnable[Any, BaseMessage]]:
        """A dynamic model for ``create_react_agent``: binds ``retriever`` and the tools it found.

        Args:
            model: A tool-calling chat model.
            retriever: The tool from :meth:`retrieve_tools_tool`.
        """

        def bind(state: Any, runtime: Any) -> Runnable[Any, BaseMessage]:
            messages = state.get("messages", []) if isinstance(state, dict) else state.messages
            selected: dict[str, None] = {}
            for message in messages:
                if isinstance(message, ToolMessage) and message.name == RETRIEVE_TOOLS:
                    for name in message.artifact or []:
                        selected[str(name)] = None
            with self._lock:
                tools = [self._tools[n] for n in selected if n in self._tools]
            return model.bind_tools([retriever, *tools])

        return bind


def spec_tool_metadata(spec: ToolSpec) -> dict[str, Any]:
    """The metadata :func:`spec_tool` gives a tool (identifies the version it runs)."""
    return {
        "latm_namespace": spec.namespace,
        "latm_task_type": spec.record.task_type,
        "latm_version": spec.record.version,
    }


def as_langchain_tools(
    repository: ToolRepository | None = None,
    *,
    context: Context | None = None,
    executor: Executor | None = None,
    limits: ExecLimits | None = None,
    task_types: Sequence[str] | None = None,
) -> list[BaseTool]:
    """The verified tools of a repository namespace as LangChain tools.

    Args:
        repository: The repository; only its namespace's tools are exposed. Default:
            the one the context names (``LATM_DATABASE_URL`` or ``LATM_STORE_PATH``, and
            ``LATM_NAMESPACE``), as the CLI opens it.
        context: Settings (executor choice, limits, retirement); default: the environment's.
        executor: The executor that runs calls (default: the context's sandbox).
        limits: Limits of one call (default: the context's).
        task_types: Only these tools (default: all verified, unretired ones).

    Returns:
        One ``StructuredTool`` per tool, named after its task type.

    Raises:
        RepositoryError: The store failed.
    """
    toolkit = LatmToolkit(repository, context=context, executor=executor, limits=limits)
    return toolkit.get_tools(task_types)


def create_tool_retrieving_agent(
    model: BaseChatModel,
    repository: ToolRepository | None = None,
    *,
    k: int = 3,
    context: Context | None = None,
    executor: Executor | None = None,
    **agent_kwargs: Any,
) -> Any:
    """A ReAct agent that first retrieves the few tools it needs (as langgraph-bigtool does).

    The model sees only ``retrieve_tools`` until it calls it; then the ``k`` tools
    found are bound on its next turn. Every verified tool can be executed.

    Args:
        model: A tool-calling chat model.
        repository: The repository whose namespace's tools are offered (default:
            the one the context names).
        k: How many tools one retrieval returns.
        context: Settings; default: the environment's.
        executor: The executor that runs calls (default: the context's sandbox).
        **agent_kwargs: Passed to ``langgraph.prebuilt.create_react_agent``
            (``prompt``, ``checkpointer``, ...).

    Returns:
        The compiled agent graph.
    """
    from langgraph.prebuilt import create_react_agent

    toolkit = LatmToolkit(repository, context=context, executor=executor)
    retriever = toolkit.retrieve_tools_tool(k)
    tools = [retriever, *toolkit.get_tools()]
    return create_react_agent(toolkit.selecting_model(model, retriever), tools, **agent_kwargs)


__all__ = [
    "RETRIEVE_TOOLS",
    "LatmToolkit",
    "as_langchain_tools",
    "create_tool_retrieving_agent",
    "spec_tool",
]
