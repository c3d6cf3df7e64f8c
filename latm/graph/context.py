"""The settings of a LATM run, split by who may choose them.

* :class:`RunSettings` is what a *run* may choose: attempts, candidates, human
  approval, timeouts and sizes, each within the bounds the deployment sets. It
  is the graph's context schema, so on a LangGraph server (and in Studio's
  form) it is all a client can send as ``context``; a value of the wrong type or
  beyond a bound is refused with a :class:`SettingsError`.
* :class:`Context` adds the *deployment* settings: the model endpoints and the
  names of their key variables, the executor and the unsandboxed opt-in, the
  database and store path, the namespace, the lease and review TTLs and the
  upper bounds of every run setting. They come from the environment (or the
  server's configuration); a client can never send them. In-process Python
  code builds a ``Context`` and keeps full control, injected models included:
  ``graph.invoke(..., context=Context(maker_llm=model, max_attempts=5))``.

Every field reads its default from an environment variable (``env`` in its
metadata) when the object is created. A run setting's upper bound is read from
``<its variable>_MAX`` (e.g. ``LATM_MAX_ATTEMPTS_MAX``), with the default in its
metadata. Adding a setting is one line in the class of its kind::

    my_limit: int = run_setting(10, "LATM_MY_LIMIT", "What it limits.", lower=1, upper=100)
    my_secret_url: str = deployment_setting("", "LATM_MY_SECRET_URL", "Where it goes.")

On a server the graph's nodes see a ``Context``: the client's run settings over
the deployment's (:meth:`Context.for_run`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from langchain_core.language_models import BaseChatModel

from latm.graph.state import Role

RUN = "run"
DEPLOYMENT = "deployment"
TRUE = ("1", "true", "yes", "on")


class SettingsError(ValueError):
    """A setting a run may not have: not a run setting, the wrong type or beyond a bound.

    Attributes:
        forbidden: The setting belongs to the deployment (or to the caller's
            identity), not to a run; otherwise its value is invalid.
    """

    def __init__(self, message: str, *, forbidden: bool = False) -> None:
        """Keep ``message`` and whether the setting is forbidden outright."""
        super().__init__(message)
        self.forbidden = forbidden


def _parse(raw: str, like: type, env: str) -> Any:
    if like is bool:
        return raw.strip().lower() in TRUE
    try:
        return like(raw)
    except ValueError:
        raise SettingsError(f"{env}={raw!r} is not a valid {like.__name__}") from None


def _env_default(env: str, default: Any, like: type) -> Any:
    raw = os.environ.get(env)
    return default if raw is None or raw == "" else _parse(raw, like, env)


def _setting(
    kind: str,
    default: Any,
    env: str | None,
    doc: str,
    like: type | None,
    **bounds: Any,
) -> Any:
    like = like or type(default)
    metadata = {"kind": kind, "env": env, "description": doc, "type": like, **bounds}
    if env is None:
        return field(default=default, metadata=metadata)
    return field(default_factory=lambda: _env_default(env, default, like), metadata=metadata)


def run_setting(
    default: Any,
    env: str,
    doc: str,
    *,
    lower: float | None = None,
    upper: float | None = None,
    only_on: bool = False,
    choices: tuple[str, ...] | None = None,
    at_most_deployment: bool = False,
    zero_is_none: bool = False,
) -> Any:
    """A setting a run (and so a server's client) may choose.

    Args:
        default: The default when its environment variable is unset.
        env: The environment variable holding the deployment's default.
        doc: What it sets (shown in the README's table).
        lower: The smallest value allowed.
        upper: The default upper bound; the deployment sets its own in ``<env>_MAX``.
        only_on: A switch that a run may turn on but not off when the deployment has it on.
        choices: The values allowed, strictest first.
        at_most_deployment: A run may lower it (or pick an earlier choice), never go
            beyond the deployment's own value: the deployment's value is its bound.
        zero_is_none: 0 means no limit at all (the loosest value).
    """
    return _setting(
        RUN,
        default,
        env,
        doc,
        None,
        lower=lower,
        upper=upper,
        only_on=only_on,
        choices=choices,
        at_most_deployment=at_most_deployment,
        zero_is_none=zero_is_none,
    )


def deployment_setting(default: Any, env: str | None, doc: str, *, like: type | None = None) -> Any:
    """A setting only the deployment chooses (its environment or in-process code).

    Args:
        default: The default when its environment variable is unset.
        env: The environment variable holding it (``None``: in-process only).
        doc: What it sets.
        like: Its type, when the default (``None``) does not say.
    """
    return _setting(DEPLOYMENT, default, env, doc, like)


def _kind_fields(cls: type, kind: str) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("kind") == kind]


def default_of(f: dataclasses.Field[Any]) -> Any:
    """A field's default now (a setting's default factory reads the environment)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def upper_bound_env(f: dataclasses.Field[Any]) -> str:
    """The environment variable of a run setting's upper bound."""
    return f"{f.metadata['env']}_MAX"


def deployment_bounds() -> dict[str, float]:
    """The deployment's upper bound of each bounded run setting (from the environment)."""
    return {
        f.name: float(_env_default(upper_bound_env(f), f.metadata["upper"], float))
        for f in _kind_fields(RunSettings, RUN)
        if f.metadata.get("upper") is not None
    }


def _type_ok(value: Any, like: type) -> bool:
    if like is bool:
        return isinstance(value, bool)
    if like is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if like is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, like)


@dataclass(kw_only=True)
class RunSettings:
    """What a run may choose, within the deployment's bounds (the graph's context schema).

    A client of a server sends these as the run's ``context``; the deployment's
    environment gives their defaults and upper bounds. Each field's metadata
    holds its description and environment variable.
    """

    # ------------------------------------------------------------ run settings
    max_attempts: int = run_setting(
        3, "LATM_MAX_ATTEMPTS", "Rounds of proposals before the maker gives up.", lower=1, upper=10
    )
    n_demos: int = run_setting(3, "LATM_N_DEMOS", "Examples shown to the maker.", lower=1, upper=16)
    n_validation: int = run_setting(
        3,
        "LATM_N_VALIDATION",
        "Held-out examples the tool must pass; they become its usage demos.",
        lower=1,
        upper=32,
    )
    n_candidates: int = run_setting(
        3,
        "LATM_N_CANDIDATES",
        "Candidate tools proposed per round, in parallel (the paper: 1).",
        lower=1,
        upper=8,
    )
    candidate_temperature: float = run_setting(
        0.8,
        "LATM_CANDIDATE_TEMPERATURE",
        "Sampling temperature of the candidates after the first.",
        lower=0.0,
        upper=2.0,
    )
    direct_entry: bool = run_setting(
        True,
        "LATM_DIRECT_ENTRY",
        "Ask for a solve(request) entry, verify it and answer hits with it, no model call.",
    )
    max_direct_checks: int = run_setting(
        50,
        "LATM_MAX_DIRECT_CHECKS",
        "Examples the direct entry is checked on, at most.",
        lower=1,
        upper=200,
    )
    reject_hardcoded: bool = run_setting(
        True,
        "LATM_REJECT_HARDCODED",
        "Reject tools whose code holds an example's answer or input as a literal.",
    )
    two_step: bool = run_setting(
        False, "LATM_TWO_STEP", "The maker first describes the input and rule, then codes."
    )
    exec_timeout_s: float = run_setting(
        5.0, "LATM_EXEC_TIMEOUT", "Wall-clock limit of one tool call, seconds.", upper=60.0
    )
    exec_memory_mb: int = run_setting(
        512, "LATM_EXEC_MEMORY_MB", "Memory limit of one tool call, MiB.", lower=32, upper=4096
    )
    exec_max_output_bytes: int = run_setting(
        65_536,
        "LATM_EXEC_MAX_OUTPUT",
        "Cap on a tool's answer and output, bytes.",
        lower=1,
        upper=1_048_576,
    )
    dispatch_candidates: int = run_setting(
        3, "LATM_DISPATCH_K", "Tools the dispatcher shows the user model.", lower=1, upper=20
    )
    lease_wait_s: float = run_setting(
        900.0,
        "LATM_LEASE_WAIT",
        "How long a request waits for another run making the same tool, seconds.",
        lower=0.0,
        upper=3600.0,
    )
    require_approval: bool = run_setting(
        False,
        "LATM_REQUIRE_APPROVAL",
        "Pause before storing a new tool until a person approves, rejects or edits it "
        "(needs a checkpointer; a run cannot turn it off when the deployment has it on).",
        only_on=True,
    )
    # How much evidence a stored tool needs (see latm.evidence and the README's "What
    # verified means"): a run may make it stricter, never looser than the deployment.
    lucky_pass_max: float = run_setting(
        0.01,
        "LATM_LUCKY_PASS_MAX",
        "Largest chance that a tool ignoring its input would have passed the checks, times "
        "the candidates tried, for a tool to count as verified (a run may only lower it).",
        lower=0.0,
        upper=1.0,
        at_most_deployment=True,
    )
    weak_tools: str = run_setting(
        "reject",
        "LATM_WEAK_TOOLS",
        "A tool that passed every check when the examples cannot rule out luck: 'reject' "
        "(store nothing) or 'store' (store it marked weakly verified); a run may only pick "
        "'reject' when the deployment stores them.",
        choices=("reject", "store"),
        at_most_deployment=True,
    )
    dispatch: str = run_setting(
        "embedding",
        "LATM_DISPATCH",
        "How a request without task_type finds its tool: 'embedding' (calibrated regions in "
        "the tools' embedding space; a model only on borderline cases) or 'llm' (search, "
        "then the user model confirms on every request).",
        choices=("embedding", "llm"),
    )
    run_deadline_s: float = run_setting(
        900.0,
        "LATM_RUN_DEADLINE",
        "Wall-clock bound on one run from the request's arrival, seconds: past it no maker "
        "call or verification round starts and a pending model call is abandoned; 0 for none "
        "(a run may only shorten the deployment's).",
        lower=0.0,
        at_most_deployment=True,
        zero_is_none=True,
    )
    agreement_probes: int = run_setting(
        6,
        "LATM_AGREEMENT_PROBES",
        "Unlabelled inputs that candidates which passed are run on to compare their "
        "answers; 0 turns it off (a run may only lower it: it costs sandbox calls).",
        lower=0,
        upper=50,
        at_most_deployment=True,
    )

    # What a client is told when it names one of these (they are not run settings).
    IDENTITY_SETTINGS: ClassVar[dict[str, str]] = {
        "namespace": "the tool namespace comes from the caller's identity (the server's "
        "authentication), not from a run",
    }

    def __new__(cls, *args: Any, **kwargs: Any) -> RunSettings:
        """Refuse, by name, a setting a run may not choose (LangGraph builds a client's here)."""
        if cls is RunSettings and kwargs:
            unknown = {k: v for k, v in kwargs.items() if k not in _run_names()}
            if unknown:
                cls.from_client(unknown)  # raises, naming the first
        return super().__new__(cls)

    def __post_init__(self) -> None:
        """Check every run setting's type and bounds (raises :class:`SettingsError`)."""
        self.check(self.bounds(), deployment=None if isinstance(self, Context) else _env_values)

    def bounds(self) -> dict[str, float]:
        """The upper bounds the run settings must keep: the deployment's."""
        return deployment_bounds()

    def check(
        self,
        bounds: Mapping[str, float],
        *,
        deployment: Callable[[dataclasses.Field[Any]], Any] | None,
    ) -> None:
        """Raise :class:`SettingsError` for a run setting of the wrong type or out of bounds.

        Args:
            bounds: The upper bound of each bounded setting.
            deployment: For a client's values, the deployment's value of a setting
                (an ``only_on`` switch may not be turned off, an
                ``at_most_deployment`` setting not loosened); ``None`` in process.
        """
        for f in _kind_fields(RunSettings, RUN):
            value, like = getattr(self, f.name), f.metadata["type"]
            if not _type_ok(value, like):
                kind = "a number" if like in (int, float) else f"a {like.__name__}"
                if like is int:
                    kind = "a whole number"
                raise SettingsError(f"setting {f.name!r} must be {kind}, not {value!r}")
            lower, upper = f.metadata.get("lower"), bounds.get(f.name)
            if lower is not None and value < lower:
                raise SettingsError(f"setting {f.name!r} must be at least {lower:g}, not {value!r}")
            if like is float and f.metadata.get("lower") is None and value <= 0:
                raise SettingsError(f"setting {f.name!r} must be above 0, not {value!r}")
            if upper is not None and value > upper:
                raise SettingsError(
                    f"setting {f.name!r}={value!r} is above this deployment's bound {upper:g} "
                    f"(the deployment sets it in {upper_bound_env(f)})"
                )
            choices = f.metadata.get("choices")
            if choices is not None and value not in choices:
                allowed = ", ".join(repr(c) for c in choices)
                raise SettingsError(f"setting {f.name!r} must be one of {allowed}, not {value!r}")
            if deployment is not None and f.metadata.get("at_most_deployment"):
                mine = deployment(f)
                if choices is not None and mine in choices:
                    looser = choices.index(value) > choices.index(mine)
                elif f.metadata.get("zero_is_none"):
                    looser = (value or math.inf) > (mine or math.inf)
                else:
                    looser = value > mine
                if looser:
                    raise SettingsError(
                        f"setting {f.name!r}={value!r} is looser than this deployment's "
                        f"{mine!r} ({f.metadata['env']}); a run may only make it stricter",
                        forbidden=True,
                    )
            deployment_on = deployment is not None and f.metadata.get("only_on") and deployment(f)
            if deployment_on and not value:
                raise SettingsError(
                    f"setting {f.name!r} is on in this deployment "
                    f"({f.metadata['env']}); a run cannot turn it off",
                    forbidden=True,
                )

    @classmethod
    def from_client(cls, raw: Any) -> RunSettings:
        """The run settings a client sent, checked: every refusal names the setting and why.

        Args:
            raw: The client's ``context`` (a JSON object); ``None`` is empty.

        Raises:
            SettingsError: ``raw`` is not an object, names a setting a run may
                not choose (a deployment or identity setting, or an unknown
                one), or holds a value of the wrong type or beyond a bound.
        """
        return RunSettings(**check_keys(raw))


def check_keys(raw: Any) -> dict[str, Any]:
    """A client's settings, if every key names a run setting.

    Raises:
        SettingsError: ``raw`` is not an object, or names a deployment, identity or
            unknown setting.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise SettingsError("the run's context must be an object of run settings")
    allowed = {f.name for f in _kind_fields(RunSettings, RUN)}
    deployment = {f.name: f for f in _kind_fields(Context, DEPLOYMENT)}
    for key in raw:
        if key in allowed:
            continue
        if key in RunSettings.IDENTITY_SETTINGS:
            raise SettingsError(
                f"setting {key!r} cannot be sent: {RunSettings.IDENTITY_SETTINGS[key]}",
                forbidden=True,
            )
        if key in deployment:
            env = deployment[key].metadata.get("env")
            where = f" ({env})" if env else ""
            raise SettingsError(
                f"setting {key!r} is a deployment setting: only the server's "
                f"environment{where} sets it, never a run",
                forbidden=True,
            )
        raise SettingsError(f"unknown setting {key!r}; a run may set: {', '.join(sorted(allowed))}")
    return dict(raw)


def _env_values(f: dataclasses.Field[Any]) -> Any:
    """The deployment's value of a run setting: its environment's default."""
    return default_of(f)


def _run_names() -> set[str]:
    return {f.name for f in _kind_fields(RunSettings, RUN)}


def run_settings_table() -> list[tuple[str, str, Any, float | None, str]]:
    """Each run setting: name, environment variable, default, upper bound and description."""
    return [
        (
            f.name,
            f.metadata["env"],
            default_of(f),
            f.metadata.get("upper"),
            f.metadata["description"],
        )
        for f in _kind_fields(RunSettings, RUN)
    ]


@dataclass(frozen=True)
class ModelSettings:
    """One role's model, as the deployment configures it (see :meth:`Context.model`).

    Attributes:
        name: The model name.
        base_url: Its OpenAI-compatible base URL (``None``: OpenAI's).
        api_key_env: The environment variable holding its key.
        temperature: Its sampling temperature.
        max_tokens: The cap on its reply length.
        llm: A model object injected in process, used instead of building one.
    """

    name: str
    base_url: str | None
    api_key_env: str
    temperature: float
    max_tokens: int
    llm: BaseChatModel | None


@dataclass(kw_only=True)
class Context(RunSettings):
    """The run settings plus the deployment's: everything the nodes read.

    Only in-process code builds one (a client's ``context`` becomes
    :class:`RunSettings`, merged with the deployment's settings by
    :meth:`for_run`). Its run settings are checked against its own ``limits``.
    """

    # ----------------------------------------------------- deployment settings
    maker_model: str = deployment_setting("gpt-4o", "LATM_MAKER_MODEL", "Model of the maker.")
    maker_base_url: str | None = deployment_setting(
        None,
        "LATM_MAKER_BASE_URL",
        "OpenAI-compatible base URL of the maker; unset means OpenAI's.",
        like=str,
    )
    maker_api_key_env: str = deployment_setting(
        "OPENAI_API_KEY", "LATM_MAKER_API_KEY_ENV", "Variable holding the maker's API key."
    )
    maker_temperature: float = deployment_setting(
        0.0, "LATM_MAKER_TEMPERATURE", "Sampling temperature of the maker."
    )
    maker_max_tokens: int = deployment_setting(
        2048, "LATM_MAKER_MAX_TOKENS", "Cap on the maker's reply length."
    )
    user_model: str = deployment_setting(
        "gpt-4o-mini", "LATM_USER_MODEL", "Model of the tool user and dispatcher."
    )
    user_base_url: str | None = deployment_setting(
        None, "LATM_USER_BASE_URL", "OpenAI-compatible base URL of the user model.", like=str
    )
    user_api_key_env: str = deployment_setting(
        "OPENAI_API_KEY", "LATM_USER_API_KEY_ENV", "Variable holding the user model's API key."
    )
    user_temperature: float = deployment_setting(
        0.0, "LATM_USER_TEMPERATURE", "Sampling temperature of the user model."
    )
    user_max_tokens: int = deployment_setting(
        512, "LATM_USER_MAX_TOKENS", "Cap on the user model's reply length."
    )
    request_timeout_s: float = deployment_setting(
        300.0, "LATM_REQUEST_TIMEOUT", "Timeout of one model request, seconds."
    )
    max_retries: int = deployment_setting(
        2, "LATM_MAX_RETRIES", "Retries of a failed model request."
    )
    executor: str = deployment_setting(
        "auto", "LATM_EXECUTOR", "Executor of generated code; auto picks the strongest isolation."
    )
    allow_unsandboxed: bool = deployment_setting(
        False, "LATM_ALLOW_UNSANDBOXED", "Run generated code even without OS-level isolation."
    )
    namespace: str = deployment_setting(
        "default",
        "LATM_NAMESPACE",
        "Tool namespace of the CLI and library, and of a server without authentication.",
    )
    store_path: str | None = deployment_setting(
        None, "LATM_STORE_PATH", "SQLite file of the local repository.", like=str
    )
    database_url: str = deployment_setting(
        "", "LATM_DATABASE_URL", "Where tools and checkpoints live: empty (SQLite) or postgresql://"
    )
    embeddings: str = deployment_setting(
        "", "LATM_EMBEDDINGS", "Embedding function of the semantic index (see latm.embeddings)."
    )
    route_embeddings: str = deployment_setting(
        "auto",
        "LATM_ROUTE_EMBEDDINGS",
        "The dispatcher's embedding model: auto, local, local:contextual, hash[:DIMS], "
        "openai:MODEL or PROVIDER:MODEL.",
    )
    max_request_chars: int = deployment_setting(
        20_000, "LATM_MAX_REQUEST_CHARS", "Longest task text accepted, characters."
    )
    max_example_chars: int = deployment_setting(
        20_000,
        "LATM_MAX_EXAMPLE_CHARS",
        "Longest example field (input, target, rationale) accepted, characters.",
    )
    max_examples: int = deployment_setting(
        2_000, "LATM_MAX_EXAMPLES", "Most examples one request may carry."
    )
    max_reply_chars: int = deployment_setting(
        200_000,
        "LATM_MAX_REPLY_CHARS",
        "Longest model reply accepted; a longer one is a model failure, not kept.",
    )
    max_tool_failures: int = deployment_setting(
        5, "LATM_MAX_TOOL_FAILURES", "Use-time failures that retire a tool version; 0 never."
    )
    lease_ttl_s: float = deployment_setting(
        600.0, "LATM_LEASE_TTL", "How long a tool-making lease lasts without renewal, seconds."
    )
    review_ttl_s: float = deployment_setting(
        86_400.0, "LATM_REVIEW_TTL", "How long a run paused for approval keeps its lease."
    )
    limits: dict[str, float] = field(
        default_factory=lambda: deployment_bounds(),
        metadata={
            "kind": DEPLOYMENT,
            "description": "Upper bound of each bounded run setting (<its variable>_MAX).",
        },
    )
    maker_llm: BaseChatModel | None = field(
        default=None,
        repr=False,
        compare=False,
        metadata={"kind": DEPLOYMENT, "description": "A maker model object (in-process only)."},
    )
    user_llm: BaseChatModel | None = field(
        default=None,
        repr=False,
        compare=False,
        metadata={"kind": DEPLOYMENT, "description": "A user model object (in-process only)."},
    )

    def model(self, role: Role) -> ModelSettings:
        """The settings of the ``maker`` or ``user`` model."""
        if role == "maker":
            return ModelSettings(
                self.maker_model,
                self.maker_base_url,
                self.maker_api_key_env,
                self.maker_temperature,
                self.maker_max_tokens,
                self.maker_llm,
            )
        return ModelSettings(
            self.user_model,
            self.user_base_url,
            self.user_api_key_env,
            self.user_temperature,
            self.user_max_tokens,
            self.user_llm,
        )

    def __post_init__(self) -> None:
        """Check the run settings against ``limits`` and the deployment settings."""
        super().__post_init__()
        if self.max_tool_failures < 0 or self.lease_ttl_s <= 0 or self.review_ttl_s <= 0:
            raise ValueError("Context tool lifecycle settings must not be negative")
        for name in ("max_request_chars", "max_example_chars", "max_examples", "max_reply_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"Context.{name} must be at least 1")

    def bounds(self) -> dict[str, float]:
        """The upper bounds of the run settings: this context's ``limits``."""
        return dict(self.limits or {})

    @classmethod
    def for_run(cls, run: RunSettings) -> Context:
        """The deployment's settings (from the environment) with ``run``'s run settings."""
        if isinstance(run, Context):
            return run
        values = {f.name: getattr(run, f.name) for f in _kind_fields(RunSettings, RUN)}
        ctx = cls()
        for name, value in values.items():
            setattr(ctx, name, value)
        ctx.check(ctx.bounds(), deployment=_env_values)
        return ctx

    def with_client_settings(self, raw: Any) -> Context:
        """This context with a client's run settings, this context being the deployment.

        The client's keys must name run settings, and its values keep this
        context's bounds, ``only_on`` switches and ``at_most_deployment`` values.

        Raises:
            SettingsError: As :meth:`RunSettings.from_client` says.
        """
        sent = check_keys(raw)
        ctx = dataclasses.replace(self, **sent)
        ctx.check(self.bounds(), deployment=lambda f: getattr(self, f.name))
        return ctx


PAPER = {
    "n_candidates": 1,
    "direct_entry": False,
    "reject_hardcoded": False,
    "two_step": False,
    "weak_tools": "store",
}
"""The settings that reproduce the paper: one proposal per round, three validation
examples, and the user model writing every call of the tool. The paper stored every
tool that passed its checks: so does this, marking one the examples cannot tell from
a lucky guess as weakly verified."""


def paper_context(**overrides: Any) -> Context:
    """A context with the paper-faithful settings (:data:`PAPER`), then ``overrides``."""
    return Context(**{**PAPER, **overrides})
