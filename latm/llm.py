"""Building the maker and user chat models and calling them.

Both roles are reached through ``langchain_openai.ChatOpenAI``, so any
OpenAI-compatible server works (OpenAI, vLLM, llama.cpp, Ollama, ...). Models
are built inside nodes from the run's :class:`~latm.graph.context.Context`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any, TypeVar

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import BaseModel, ValidationError

from latm.graph.context import Context
from latm.graph.state import Role, TokenUsage

NO_KEY = "sk-no-key-required"
M = TypeVar("M", bound=BaseModel)


class ModelError(RuntimeError):
    """A model could not be built or reached; the message says which and why."""


def build_model(
    ctx: Context, role: Role, *, temperature: float | None = None, seed: int | None = None
) -> BaseChatModel:
    """Return the chat model for ``role`` (``maker`` or ``user``).

    An injected model (``ctx.maker_llm``/``ctx.user_llm``) wins; otherwise a
    ``ChatOpenAI`` is built from the deployment's settings of the role
    (:meth:`~latm.graph.context.Context.model`). A custom base URL without a key
    gets a placeholder key, as local servers need none.

    Args:
        ctx: The run's context.
        role: Which model.
        temperature: Overrides the role's temperature (best-of-N candidates).
        seed: Sampling seed, for servers that honour it.

    Raises:
        ModelError: No API key and no base URL are configured.
    """
    settings = ctx.model(role)
    if settings.llm is not None:
        return settings.llm
    from langchain_openai import ChatOpenAI

    api_key = os.environ.get(settings.api_key_env) or (NO_KEY if settings.base_url else None)
    if api_key is None:
        upper = role.upper()
        raise ModelError(
            f"no {role} model is configured: set {settings.api_key_env} for OpenAI, or "
            f"LATM_{upper}_BASE_URL (and LATM_{upper}_MODEL) for another OpenAI-compatible server"
        )
    return ChatOpenAI(
        model=settings.name,
        base_url=settings.base_url,
        api_key=api_key,  # type: ignore[arg-type]
        temperature=temperature if temperature is not None else settings.temperature,
        seed=seed,
        max_completion_tokens=settings.max_tokens,
        timeout=ctx.request_timeout_s,
        max_retries=ctx.max_retries,
        stream_usage=True,  # custom base URLs default to off: streamed runs would count 0 tokens
    )


def usage_of(message: BaseMessage) -> TokenUsage:
    """Token usage a model reported for one reply (zeros when it reported none)."""
    meta = getattr(message, "usage_metadata", None) or {}
    input_tokens = int(meta.get("input_tokens", 0))
    output_tokens = int(meta.get("output_tokens", 0))
    return TokenUsage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=int(meta.get("total_tokens", input_tokens + output_tokens)),
        calls=1,
    )


def _describe(role: Role, ctx: Context, exc: Exception) -> str:
    settings = ctx.model(role)
    name, url = settings.name, settings.base_url or "OpenAI"
    if settings.llm is not None:
        name, url = type(settings.llm).__name__, "in-process"
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"the {role} model {name!r} at {url} failed: {type(exc).__name__}: {detail}"


def invoke(
    ctx: Context,
    role: Role,
    messages: Sequence[BaseMessage],
    *,
    temperature: float | None = None,
    seed: int | None = None,
    config: RunnableConfig | None = None,
) -> tuple[AIMessage, dict[str, TokenUsage]]:
    """Call the ``role`` model once (``temperature``/``seed`` as in :func:`build_model`).

    ``config`` is passed to the model's call (tags, metadata, callbacks of this
    one call).

    Returns:
        The reply and the usage update for the state (``{role: usage}``).

    Raises:
        ModelError: The model cannot be built, reached or answered with an error.
    """
    model = build_model(ctx, role, temperature=temperature, seed=seed)
    try:
        reply = model.invoke(list(messages), config)
    except Exception as exc:  # connection refused, HTTP errors, timeouts, bad keys
        raise ModelError(_describe(role, ctx, exc)) from exc
    if not isinstance(reply, AIMessage):
        reply = AIMessage(content=str(reply.content))
    _check_size(ctx, role, reply)
    usage: dict[str, TokenUsage] = {role: usage_of(reply)}
    return reply, usage


def _check_size(ctx: Context, role: Role, reply: BaseMessage) -> None:
    """Refuse a reply longer than ``ctx.max_reply_chars`` (it is not kept anywhere)."""
    size = len(reply.content) if isinstance(reply.content, str) else len(str(reply.content))
    if size > ctx.max_reply_chars:
        raise ModelError(
            f"the {role} model's reply is {size} characters long; the limit is "
            f"{ctx.max_reply_chars} (LATM_MAX_REPLY_CHARS)"
        )


_JSON = re.compile(r"\{.*\}", re.DOTALL)


def invoke_structured(
    ctx: Context,
    role: Role,
    messages: Sequence[BaseMessage],
    schema: type[M],
    *,
    config: RunnableConfig | None = None,
) -> tuple[M | None, dict[str, TokenUsage]]:
    """Call the ``role`` model for a reply of the shape ``schema``.

    ``config`` is passed to the model's call, as in :func:`invoke`.

    A ``ChatOpenAI`` model is asked for JSON-schema structured output; any
    other model is called plainly. Either way the JSON object in the reply's
    text is parsed, so a model that ignores the schema but writes JSON works.

    Returns:
        The parsed object (``None`` when the reply holds none) and the usage update.

    Raises:
        ModelError: The model cannot be built, reached or answered with an error.
    """
    model = build_model(ctx, role)
    runnable: Runnable[LanguageModelInput, Any] = model
    if type(model).__name__ == "ChatOpenAI":
        runnable = model.with_structured_output(schema, method="json_schema", include_raw=True)
    try:
        out = runnable.invoke(list(messages), config)
    except Exception as exc:
        raise ModelError(_describe(role, ctx, exc)) from exc
    raw = out["raw"] if isinstance(out, dict) else out
    _check_size(ctx, role, raw)
    usage: dict[str, TokenUsage] = {role: usage_of(raw)}
    parsed = out.get("parsed") if isinstance(out, dict) else None
    if isinstance(parsed, schema):
        return parsed, usage
    text = raw.content if isinstance(raw.content, str) else json.dumps(raw.content)
    match = _JSON.search(text)
    if match:
        try:
            return schema.model_validate_json(match.group(0)), usage
        except ValidationError:
            pass
    return None, usage
