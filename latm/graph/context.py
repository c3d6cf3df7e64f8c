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

Every field reads its default from the environment variable named after it,
``LATM_<FIELD NAME>`` (``env`` in its metadata), when the object is created; a
few older names stay accepted as aliases (``aliases`` in its metadata: e.g.
``LATM_EXEC_TIMEOUT`` for ``exec_timeout_s``), the field's own name winning when
both are set. A run setting's upper bound is read from ``<its variable>_MAX``
(e.g. ``LATM_MAX_ATTEMPTS_MAX``, or an alias's ``_MAX``), with the default in its
metadata. Each field's description and current default are in the graph's
context JSON schema (what Studio's form shows). Adding a setting is one line in
the class of its kind::

    my_limit: int = run_setting(10, "What it limits.", lower=1, upper=100)
    my_secret_url: str = deployment_setting("", "Where it goes.")

On a server the graph's nodes see a ``Context``: the client's run settings over
the deployment's (:meth:`Context.for_run`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
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


def _env_default(names: tuple[str, ...], default: Any, like: type) -> Any:
    """The value of the first of ``names`` set in the environment, else ``default``."""
    for env in names:
        raw = os.environ.get(env)
        if raw is not None and raw != "":
            return _parse(raw, like, env)
    return default


def env_name(name: str) -> str:
    """The environment variable of the setting ``name``: ``LATM_<NAME>``."""
    return f"LATM_{name.upper()}"


def _setting(
    kind: str,
    default: Any,
    doc: str,
    like: type | None,
    *,
    env: bool = True,
    aliases: tuple[str, ...] = (),
    **bounds: Any,
) -> Any:
    like = like or type(default)
    metadata: dict[str, Any] = {
        "kind": kind,
        "env": None,  # LATM_<FIELD>, set when its class is created (_Settings)
        "description": doc,
        "type": like,
        **bounds,
    }
    if env:
        metadata["aliases"] = aliases

    def current() -> Any:
        return _env_default(env_names(made.metadata), default, like)

    def schema_default(schema: dict[str, Any]) -> None:
        # Studio's form shows the default, bounds and choices the deployment gives now.
        value = current()
        if value is not None:
            schema["default"] = value
        if bounds.get("lower") is not None:
            schema["minimum"] = bounds["lower"]
        if bounds.get("upper") is not None:
            upper = _env_default(upper_bound_envs(made), bounds["upper"], float)
            schema["maximum"] = int(upper) if like is int and upper == int(upper) else upper
        if bounds.get("choices") is not None:
            schema["enum"] = list(bounds["choices"])

    metadata["json_schema_extra"] = schema_default
    if env:
        made: dataclasses.Field[Any] = field(default_factory=current, metadata=metadata)
    else:
        made = field(default=default, metadata=metadata)
    return made


def env_names(metadata: Mapping[str, Any]) -> tuple[str, ...]:
    """A setting's environment variables: its own (``LATM_<FIELD>``) first, then its aliases.

    When both are set, the field's own name wins.
    """
    own = metadata.get("env")
    return ((own,) if own else ()) + tuple(metadata.get("aliases", ()))


def run_setting(
    default: Any,
    doc: str,
    *,
    aliases: tuple[str, ...] = (),
    lower: float | None = None,
    upper: float | None = None,
    only_on: bool = False,
    choices: tuple[str, ...] | None = None,
    at_most_deployment: bool = False,
    zero_is_none: bool = False,
) -> Any:
    """A setting a run (and so a server's client) may choose.

    Its environment variable is ``LATM_<FIELD NAME>``; its upper bound's is that
    name with ``_MAX``.

    Args:
        default: The default when its environment variable is unset.
        doc: What it sets (Studio's form and the README's table show it).
        aliases: Older environment variable names still read (the field's own wins).
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
        doc,
        None,
        aliases=aliases,
        lower=lower,
        upper=upper,
        only_on=only_on,
        choices=choices,
        at_most_deployment=at_most_deployment,
        zero_is_none=zero_is_none,
    )


def deployment_setting(
    default: Any,
    doc: str,
    *,
    like: type | None = None,
    env: bool = True,
    aliases: tuple[str, ...] = (),
) -> Any:
    """A setting only the deployment chooses (its environment or in-process code).

    Args:
        default: The default when its environment variable is unset.
        doc: What it sets.
        like: Its type, when the default (``None``) does not say.
        env: Read from ``LATM_<FIELD NAME>``; ``False``: in-process only.
        aliases: Older environment variable names still read (the field's own wins).
    """
    return _setting(DEPLOYMENT, default, doc, like, env=env, aliases=aliases)


class _Settings:
    """Names each setting's environment variable after its field: ``LATM_<FIELD>``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Fill in ``env`` in the metadata of each setting the subclass declares."""
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            if isinstance(value, dataclasses.Field) and "aliases" in value.metadata:
                value.metadata = MappingProxyType({**value.metadata, "env": env_name(name)})


def _kind_fields(cls: type, kind: str) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("kind") == kind]


def default_of(f: dataclasses.Field[Any]) -> Any:
    """A field's default now (a setting's default factory reads the environment)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def upper_bound_env(f: dataclasses.Field[Any]) -> str:
    """The environment variable of a run setting's upper bound: ``LATM_<FIELD>_MAX``."""
    return f"{f.metadata['env']}_MAX"


def upper_bound_envs(f: dataclasses.Field[Any]) -> tuple[str, ...]:
    """Every variable a run setting's upper bound is read from, its own first, then aliases."""
    return tuple(f"{env}_MAX" for env in env_names(f.metadata))


def deployment_bounds() -> dict[str, float]:
    """The deployment's upper bound of each bounded run setting (from the environment)."""
    return {
        f.name: float(_env_default(upper_bound_envs(f), f.metadata["upper"], float))
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
class RunSettings(_Settings):
    """What a run may choose, within the deployment's bounds (the graph's context schema).

    A client of a server sends these as the run's ``context``; the deployment's
    environment gives their defaults and upper bounds. Each field's metadata
    holds its description and environment variable.
    """

    # ------------------------------------------------------------ run settings
    max_attempts: int = run_setting(
        3, "Rounds of proposals before the maker gives up.", lower=1, upper=10
    )
    n_demos: int = run_setting(3, "Examples shown to the maker.", lower=1, upper=16)
    n_validation: int = run_setting(
        3,
        "Held-out examples the tool must pass; they become its usage demos.",
        lower=1,
        upper=32,
    )
    n_candidates: int = run_setting(
        3,
        "Candidate tools proposed per round, in parallel (the paper: 1).",
        lower=1,
        upper=8,
    )
    candidate_temperature: float = run_setting(
        0.8,
        "Sampling temperature of the candidates after the first.",
        lower=0.0,
        upper=2.0,
    )
    direct_entry: bool = run_setting(
        True,
        "Ask for a solve(request) entry, verify it and answer hits with it, no model call.",
    )
    max_direct_checks: int = run_setting(
        50,
        "Examples the direct entry is checked on, at most.",
        lower=1,
        upper=200,
    )
    reject_hardcoded: bool = run_setting(
        True,
        "Reject tools whose code holds an example's answer or input as a literal.",
    )
    two_step: bool = run_setting(False, "The maker first describes the input and rule, then codes.")
    exec_timeout_s: float = run_setting(
        5.0,
        "Wall-clock limit of one tool call, seconds.",
        upper=60.0,
        aliases=("LATM_EXEC_TIMEOUT",),
    )
    exec_memory_mb: int = run_setting(
        512, "Memory limit of one tool call, MiB.", lower=32, upper=4096
    )
    exec_max_output_bytes: int = run_setting(
        65_536,
        "Cap on a tool's answer and output, bytes.",
        lower=1,
        upper=1_048_576,
        aliases=("LATM_EXEC_MAX_OUTPUT",),
    )
    dispatch_candidates: int = run_setting(
        3,
        "Tools the dispatcher shows the user model.",
        lower=1,
        upper=20,
        aliases=("LATM_DISPATCH_K",),
    )
    lease_wait_s: float = run_setting(
        900.0,
        "How long a request waits for another run making the same tool, seconds.",
        lower=0.0,
        upper=3600.0,
        aliases=("LATM_LEASE_WAIT",),
    )
    require_approval: bool = run_setting(
        False,
        "Pause before storing a new tool until a person approves, rejects or edits it "
        "(needs a checkpointer; a run cannot turn it off when the deployment has it on).",
        only_on=True,
    )
    # How much evidence a stored tool needs (see latm.evidence and the README's "What
    # verified means"): a run may make it stricter, never looser than the deployment.
    lucky_pass_max: float = run_setting(
        0.01,
        "Largest chance that a tool ignoring its input would have passed the checks, times "
        "the candidates tried, for a tool to count as verified (a run may only lower it).",
        lower=0.0,
        upper=1.0,
        at_most_deployment=True,
    )
    weak_tools: str = run_setting(
        "reject",
        "A tool that passed every check when the examples cannot rule out luck: 'reject' "
        "(store nothing) or 'store' (store it marked weakly verified); a run may only pick "
        "'reject' when the deployment stores them.",
        choices=("reject", "store"),
        at_most_deployment=True,
    )
    dispatch: str = run_setting(
        "embedding",
        "How a request without task_type finds its tool: 'embedding' (calibrated regions in "
        "the tools' embedding space; a model only on borderline cases) or 'llm' (search, "
        "then the user model confirms on every request).",
        choices=("embedding", "llm"),
    )
    run_deadline_s: float = run_setting(
        900.0,
        "Wall-clock bound on one run from the request's arrival, seconds: past it no maker "
        "call or verification round starts and a pending model call is abandoned; 0 for none "
        "(a run may only shorten the deployment's).",
        lower=0.0,
        at_most_deployment=True,
        zero_is_none=True,
        aliases=("LATM_RUN_DEADLINE",),
    )
    agreement_probes: int = run_setting(
        6,
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

    @property
    def label(self) -> str:
        """The model's name, or the injected object's class name."""
        return self.name if self.llm is None else type(self.llm).__name__


@dataclass(kw_only=True)
class Context(RunSettings):
    """The run settings plus the deployment's: everything the nodes read.

    Only in-process code builds one (a client's ``context`` becomes
    :class:`RunSettings`, merged with the deployment's settings by
    :meth:`for_run`). Its run settings are checked against its own ``limits``.
    """

    # ----------------------------------------------------- deployment settings
    maker_model: str = deployment_setting("gpt-4o", "Model of the maker.")
    maker_base_url: str | None = deployment_setting(
        None,
        "OpenAI-compatible base URL of the maker; unset means OpenAI's.",
        like=str,
    )

    maker_api_key_env: str = deployment_setting(
        "OPENAI_API_KEY", "Variable holding the maker's API key."
    )
    maker_temperature: float = deployment_setting(0.0, "Sampling temperature of the maker.")
    maker_max_tokens: int = deployment_setting(2048, "Cap on the maker's reply length.")
    user_model: str = deployment_setting("gpt-4o-mini", "Model of the tool user and dispatcher.")
    user_base_url: str | None = deployment_setting(
        None, "OpenAI-compatible base URL of the user model.", like=str
    )
    user_api_key_env: str = deployment_setting(
        "OPENAI_API_KEY", "Variable holding the user model's API key."
    )
    user_temperature: float = deployment_setting(0.0, "Sampling temperature of the user model.")
    user_max_tokens: int = deployment_setting(512, "Cap on the user model's reply length.")
    request_timeout_s: float = deployment_setting(
        300.0, "Timeout of one model request, seconds.", aliases=("LATM_REQUEST_TIMEOUT",)
    )

    max_retries: int = deployment_setting(2, "Retries of a failed model request.")
    executor: str = deployment_setting(
        "auto", "Executor of generated code; auto picks the strongest isolation."
    )
    allow_unsandboxed: bool = deployment_setting(
        False, "Run generated code even without OS-level isolation."
    )
    namespace: str = deployment_setting(
        "default",
        "Tool namespace of the CLI and library, and of a server without authentication.",
    )
    store_path: str | None = deployment_setting(
        None, "SQLite file of the local repository.", like=str
    )
    database_url: str = deployment_setting(
        "", "Where tools and checkpoints live: empty (SQLite) or postgresql://"
    )
    embeddings: str = deployment_setting(
        "", "Embedding function of the semantic index (see latm.embeddings)."
    )
    route_embeddings: str = deployment_setting(
        "auto",
        "The dispatcher's embedding model: auto, local, local:contextual, hash[:DIMS], "
        "openai:MODEL or PROVIDER:MODEL.",
    )
    max_request_chars: int = deployment_setting(20_000, "Longest task text accepted, characters.")
    max_example_chars: int = deployment_setting(
        20_000,
        "Longest example field (input, target, rationale) accepted, characters.",
    )
    max_examples: int = deployment_setting(2_000, "Most examples one request may carry.")
    max_reply_chars: int = deployment_setting(
        200_000,
        "Longest model reply accepted; a longer one is a model failure, not kept.",
    )
    max_tool_failures: int = deployment_setting(
        5, "Use-time failures that retire a tool version; 0 never."
    )
    lease_ttl_s: float = deployment_setting(
        600.0,
        "How long a tool-making lease lasts without renewal, seconds.",
        aliases=("LATM_LEASE_TTL",),
    )
    review_ttl_s: float = deployment_setting(
        86_400.0,
        "How long a run paused for approval keeps its lease.",
        aliases=("LATM_REVIEW_TTL",),
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
        """The settings of the ``maker`` or ``user`` model: its ``<role>_*`` fields, one view."""
        if role not in ("maker", "user"):
            raise ValueError(f"no model role {role!r}; the roles are 'maker' and 'user'")
        return ModelSettings(
            name=getattr(self, f"{role}_model"),
            base_url=getattr(self, f"{role}_base_url"),
            api_key_env=getattr(self, f"{role}_api_key_env"),
            temperature=getattr(self, f"{role}_temperature"),
            max_tokens=getattr(self, f"{role}_max_tokens"),
            llm=getattr(self, f"{role}_llm"),
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


EMBED_KEY = "latm"
"""The attribute (or key) of a parent graph's context that holds LATM's settings."""


def context_of(value: Any) -> Context:
    """LATM's settings from the context a run (or a parent graph) gives the graph.

    The rule, in order:

    * ``None`` (no context at all): the deployment's settings (:class:`Context`).
    * A :class:`Context` (or a subclass): used as it is, in-process control.
    * A :class:`RunSettings` (or a subclass, a parent's own context type
      included): its run settings over the deployment's.
    * A mapping with a ``"latm"`` key, or any other object with a ``latm``
      attribute (a parent graph's own context type): the value found there, read
      by this same rule (``None`` there: the deployment's settings).
    * Any other mapping: a client's run settings (:meth:`RunSettings.from_client`).

    Anything else is a parent graph's context that carries no LATM settings:
    refused with a :class:`SettingsError` saying how to pass them, rather than
    running silently on the defaults (another namespace, other models).

    Raises:
        SettingsError: The context carries no LATM settings, or a mapping names
            a setting a run may not choose.
    """
    if value is None:
        return Context()
    if isinstance(value, Context):
        return value
    if isinstance(value, RunSettings):
        return Context.for_run(value)
    if isinstance(value, Mapping):
        if EMBED_KEY in value:
            return _embedded(value[EMBED_KEY], type(value).__name__)
        try:
            return Context.for_run(RunSettings.from_client(value))
        except SettingsError as exc:
            if exc.forbidden or not str(exc).startswith("unknown setting"):
                raise
            raise SettingsError(
                f"{exc} (a parent graph's own context? put LATM's settings under its "
                f"'{EMBED_KEY}' key)"
            ) from None
    if hasattr(value, EMBED_KEY):
        return _embedded(getattr(value, EMBED_KEY), type(value).__name__)
    raise SettingsError(
        f"LATM got a context of type {type(value).__name__}, which holds no LATM settings "
        "(a parent graph's own context?). Give that context a 'latm' field holding a "
        "latm.graph.Context (or RunSettings), or make its type a subclass of Context, "
        "or pass context=Context(...) when invoking LATM's graph inside a node"
    )


def _embedded(value: Any, holder: str) -> Context:
    if isinstance(value, Mapping):  # a client's run settings, as they are
        return Context.for_run(RunSettings.from_client(value))
    if value is None or isinstance(value, RunSettings):
        return context_of(value)
    raise SettingsError(
        f"the 'latm' field of the {holder} context must be a latm.graph.Context, "
        f"RunSettings or a mapping of run settings, not {type(value).__name__}"
    )
