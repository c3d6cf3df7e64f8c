"""What the nodes share: the run's context, repository, executor and progress events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from latm.auth import tenant_of_user
from latm.backends import BackendError, backend_for
from latm.graph.context import Context, context_of
from latm.graph.state import Candidate, Example, State
from latm.repository import RepositoryError, ToolRepository
from latm.sandbox import ExecLimits, Executor, get_executor

STALE_THREAD = (
    "this thread was paused by an older LATM whose working state this version cannot "
    "read (it has no 'making'); nothing was stored: send the request again"
)
"""The error of a node that finds no ``making`` where a tool making must have one."""


def get_context(runtime: Runtime[Context]) -> Context:
    """The run's settings: the client's run settings over the deployment's.

    An in-process caller's :class:`Context` is used as it is (full control); a
    :class:`RunSettings` (what a server's client sent) or a plain dict of run
    settings gets the deployment's settings from the environment. Embedded in a
    parent graph with its own context type, LATM reads that context's ``latm``
    field; the whole rule is :func:`~latm.graph.context.context_of`.

    Raises:
        SettingsError: A dict context names a setting a run may not choose, or a
            parent's context carries no LATM settings.
    """
    return context_of(runtime.context)


def get_tenant(runtime: Runtime[Context], ctx: Context) -> str:
    """Whose tools these are: the authenticated caller's tenant, else ``ctx.namespace``.

    On a LangGraph server with authentication the namespace follows from the
    user's identity (see :mod:`latm.auth`), never from the request; without a
    user (the CLI, the library, a server without authentication) it is the
    deployment's (or the in-process caller's) ``namespace``.
    """
    info = getattr(runtime, "server_info", None)
    tenant = tenant_of_user(info.user) if info is not None else None
    return tenant or ctx.namespace


def get_repository(runtime: Runtime[Context], ctx: Context) -> ToolRepository:
    """The tool repository of the run's tenant: the run's store, or the configured backend's.

    Raises:
        RepositoryError: The configured database cannot be opened.
    """
    tenant = get_tenant(runtime, ctx)
    if runtime.store is not None:
        return ToolRepository(runtime.store, tenant)
    try:
        return ToolRepository(backend_for(ctx).store, tenant)
    except BackendError as exc:
        raise RepositoryError(f"the tool repository is unavailable: {exc}") from exc


def get_limits(ctx: Context) -> ExecLimits:
    """Execution limits of one tool call, from the context."""
    return ExecLimits(
        timeout_s=ctx.exec_timeout_s,
        memory_mb=ctx.exec_memory_mb,
        max_output_bytes=ctx.exec_max_output_bytes,
    )


def get_tool_executor(ctx: Context) -> Executor:
    """The executor that runs generated code, as the context chooses it."""
    return get_executor(ctx.executor, allow_unsandboxed=ctx.allow_unsandboxed)


def split_examples(state: State, ctx: Context) -> tuple[list[Example], list[Example]]:
    """Split the request's examples into the maker's demos and the validation set.

    The first ``n_demos`` are demos and the next ``n_validation`` validate.
    With no examples beyond the demos, the demos validate too (a weaker check,
    which the verification report shows).
    """
    examples = list(state.get("examples") or [])
    demos = examples[: ctx.n_demos]
    validation = examples[ctx.n_demos : ctx.n_demos + ctx.n_validation] or demos
    return demos, validation


def checked_examples(examples: list[Example], ctx: Context) -> list[Example]:
    """The examples a ``solve`` entry is checked on: the demos, then the rest (capped).

    The demos are labelled too: a tool that contradicts a demo's answer is wrong
    whatever it does on the others.
    """
    return examples[: ctx.n_demos] + examples[ctx.n_demos :][: ctx.max_direct_checks]


@dataclass(frozen=True)
class ExampleSets:
    """The request's examples, split once for every check (``verify`` and ``review``).

    Attributes:
        demos: Shown to the maker with their answers.
        validation: The questions the maker's calls answer (their answers hidden).
        direct: Those a ``solve(request)`` entry is checked on (:func:`checked_examples`).
        labelled: Every example (for the evidence and the copy check).
    """

    demos: list[Example]
    validation: list[Example]
    direct: list[Example]
    labelled: list[Example]


def example_sets(state: State, ctx: Context) -> ExampleSets:
    """The request's examples as the checks use them: the one place they are split."""
    demos, validation = split_examples(state, ctx)
    labelled = list(state.get("examples") or [])
    return ExampleSets(demos, validation, checked_examples(labelled, ctx), labelled)


def emit(runtime: Runtime[Context], node: str, event: str, **data: Any) -> None:
    """Write a structured progress event to the custom stream."""
    runtime.stream_writer({"node": node, "event": event, **data})


_MESSAGE_KINDS = {"system": SystemMessage, "human": HumanMessage, "ai": AIMessage}


def to_messages(pairs: list[tuple[str, str]]) -> list[BaseMessage]:
    """Chat messages from ``(role, text)`` pairs (``system``, ``human``, ``ai``)."""
    return [_MESSAGE_KINDS[role](text) for role, text in pairs]


def message_text(message: BaseMessage) -> str:
    """A chat message's content as text (a list of content parts is printed as such)."""
    return message.content if isinstance(message.content, str) else str(message.content)


def to_pairs(messages: list[BaseMessage]) -> list[tuple[str, str]]:
    """``(role, text)`` pairs from chat messages (the inverse of :func:`to_messages`)."""
    return [(m.type, message_text(m)) for m in messages]


def transcript(candidate: Candidate) -> list[tuple[str, str]]:
    """A candidate's whole conversation with the maker, its reply last."""
    return [*candidate["prompt"], ("ai", candidate["reply"])]
