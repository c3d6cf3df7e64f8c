"""The runtime context of a LATM run: models, limits and the repository namespace.

Nodes read it through ``runtime: Runtime[Context]``. Every field has a default
taken from an environment variable (named in its description) when the
context is created, so ``Context()`` picks up the deployment's settings and a
caller can still override any field per run: ``graph.invoke(..., context=Context(max_attempts=5))``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


def _env_str(name: str, default: str | None) -> Any:
    return field(default_factory=lambda: os.environ.get(name) or default)


def _env_float(name: str, default: float) -> Any:
    return field(default_factory=lambda: float(os.environ.get(name) or default))


def _env_int(name: str, default: int) -> Any:
    return field(default_factory=lambda: int(os.environ.get(name) or default))


def _env_bool(name: str, default: bool) -> Any:
    def read() -> bool:
        raw = os.environ.get(name)
        if raw is None or raw == "":
            return default
        return raw.strip().lower() in ("1", "true", "yes", "on")

    return field(default_factory=read)


@dataclass(kw_only=True)
class Context:
    """Settings of one LATM run (maker and user models, limits, repository).

    Attributes:
        maker_model: Model name of the tool maker (env ``LATM_MAKER_MODEL``).
        maker_base_url: OpenAI-compatible base URL of the maker; ``None`` means
            OpenAI's (env ``LATM_MAKER_BASE_URL``).
        maker_api_key_env: Name of the env var holding the maker's API key
            (env ``LATM_MAKER_API_KEY_ENV``, default ``OPENAI_API_KEY``).
        maker_temperature: Sampling temperature of the maker (env ``LATM_MAKER_TEMPERATURE``).
        maker_max_tokens: Cap on the maker's reply length (env ``LATM_MAKER_MAX_TOKENS``).
        user_model: Model name of the tool user and dispatcher (env ``LATM_USER_MODEL``).
        user_base_url: OpenAI-compatible base URL of the user (env ``LATM_USER_BASE_URL``).
        user_api_key_env: Name of the env var holding the user's API key
            (env ``LATM_USER_API_KEY_ENV``, default ``OPENAI_API_KEY``).
        user_temperature: Sampling temperature of the user (env ``LATM_USER_TEMPERATURE``).
        user_max_tokens: Cap on the user's reply length (env ``LATM_USER_MAX_TOKENS``).
        request_timeout_s: Timeout of one model request (env ``LATM_REQUEST_TIMEOUT``).
        max_retries: Retries of a failed model request (env ``LATM_MAX_RETRIES``).
        max_attempts: Proposals the maker may make before giving up (env ``LATM_MAX_ATTEMPTS``).
        n_demos: Examples shown to the maker (env ``LATM_N_DEMOS``).
        n_validation: Held-out examples the maker writes calls for; the tool must
            pass them, and they become its usage demos (env ``LATM_N_VALIDATION``).
        n_candidates: Candidate tools the maker proposes per round, in parallel;
            the best verified one wins (env ``LATM_N_CANDIDATES``; the paper: 1).
        candidate_temperature: Sampling temperature of candidates after the first,
            so that they differ (env ``LATM_CANDIDATE_TEMPERATURE``).
        direct_entry: Ask for a ``solve(request: str) -> str`` entry that parses the
            raw request, verify it on every example beyond the demos, and answer
            cache hits with it without any model call (env ``LATM_DIRECT_ENTRY``;
            the paper: off, the user model writes every call).
        max_direct_checks: Cap on the examples the direct entry is checked on
            (env ``LATM_MAX_DIRECT_CHECKS``).
        reject_hardcoded: Reject tools whose code holds an example's answer or input
            as a literal (env ``LATM_REJECT_HARDCODED``; the paper: off).
        two_step: Have the maker first describe the input format and the rule, then
            write the code (env ``LATM_TWO_STEP``).
        exec_timeout_s: Wall-clock limit of one tool call (env ``LATM_EXEC_TIMEOUT``).
        exec_memory_mb: Memory limit of one tool call in MiB (env ``LATM_EXEC_MEMORY_MB``).
        exec_max_output_bytes: Cap on a tool's answer and output (env ``LATM_EXEC_MAX_OUTPUT``).
        executor: Which executor runs generated code (env ``LATM_EXECUTOR``,
            ``auto`` picks the strongest isolation available).
        allow_unsandboxed: Run generated code even without OS-level isolation
            (env ``LATM_ALLOW_UNSANDBOXED``; off by default).
        namespace: Repository namespace, one per tenant or app (env ``LATM_NAMESPACE``).
        dispatch_candidates: Tools the dispatcher shows the user model (env ``LATM_DISPATCH_K``).
        store_path: SQLite file of the local repository, used when the graph
            runs without a store (env ``LATM_STORE_PATH``; default in the user data dir).
        maker_llm: A chat model object to use as the maker instead of building one
            (in-process only; for tests and custom providers).
        user_llm: Likewise for the user model.
        database_url: Where the tools (and checkpoints) live: empty for the local
            SQLite file at ``store_path``, or ``postgresql://...`` for PostgreSQL
            (env ``LATM_DATABASE_URL``; see :mod:`latm.backends`).
        embeddings: The embedding function of the repository's semantic index:
            ``none``, ``hash[:DIMS]``, ``openai:MODEL`` or ``PROVIDER:MODEL``; empty
            means none on SQLite and ``hash`` on PostgreSQL (env ``LATM_EMBEDDINGS``).
        max_tool_failures: Use-time failures after which the dispatcher retires a
            tool version (stops routing to it; re-makes it when examples are
            given); 0 never retires (env ``LATM_MAX_TOOL_FAILURES``).
        lease_ttl_s: How long a tool maker's lease lasts without renewal; a dead
            maker's lease lapses after it (env ``LATM_LEASE_TTL``).
        lease_wait_s: How long a request waits for another run making the same
            tool before it gives up with an error (env ``LATM_LEASE_WAIT``).
        require_approval: Pause before storing a new tool until a person approves,
            rejects or edits it (env ``LATM_REQUIRE_APPROVAL``; off by default;
            needs a checkpointer, as on the LangGraph server).
        review_ttl_s: How long a run paused for approval keeps its tool-making
            lease, so that no other run starts making the same tool while a
            person reviews (env ``LATM_REVIEW_TTL``; a day).
        dispatch: How a request without ``task_type`` finds its tool: ``embedding``
            (nearest verified questions with calibrated acceptance regions; a model
            is asked only on borderline cases) or ``llm`` (search, then the user
            model confirms a candidate on every request) (env ``LATM_DISPATCH``).
        route_embeddings: The dispatcher's embedding model: ``auto`` (the local
            model when installed, else the hashed bag of words), ``local``,
            ``local:contextual``, ``hash[:DIMS]``, ``openai:MODEL`` or
            ``PROVIDER:MODEL`` (env ``LATM_ROUTE_EMBEDDINGS``).
        lucky_pass_max: The largest chance that a tool ignoring its input would
            have passed the checks, times the candidates tried, for a tool to
            count as verified (env ``LATM_LUCKY_PASS_MAX``; 1 %).
        weak_tools: What to do with a tool that passed every check when the
            examples cannot rule out luck: ``reject`` (store nothing; the error
            says how many more examples are needed) or ``store`` (store it marked
            weakly verified, with its lucky-pass chance) (env ``LATM_WEAK_TOOLS``).
        agreement_probes: Unlabelled inputs (the request, perturbed example
            questions) that candidates which passed are run on to compare their
            answers; 0 turns the comparison off (env ``LATM_AGREEMENT_PROBES``).
        run_deadline_s: Wall-clock bound on one run from the request's arrival:
            past it no maker call or verification round starts and a pending
            model call is abandoned, with a clear error; 0 for none (env
            ``LATM_RUN_DEADLINE``; a run setting, capped by the deployment's).
        max_request_chars: Longest ``task`` text accepted (env
            ``LATM_MAX_REQUEST_CHARS``; a deployment bound).
        max_example_chars: Longest example field (input, target, rationale)
            accepted (env ``LATM_MAX_EXAMPLE_CHARS``; a deployment bound).
        max_examples: Most examples one request may carry (env
            ``LATM_MAX_EXAMPLES``; a deployment bound).
        max_reply_chars: Longest model reply accepted; a longer one is a model
            failure and is not kept in the state (env ``LATM_MAX_REPLY_CHARS``;
            a deployment bound).
    """

    maker_model: str = _env_str("LATM_MAKER_MODEL", "gpt-4o")
    maker_base_url: str | None = _env_str("LATM_MAKER_BASE_URL", None)
    maker_api_key_env: str = _env_str("LATM_MAKER_API_KEY_ENV", "OPENAI_API_KEY")
    maker_temperature: float = _env_float("LATM_MAKER_TEMPERATURE", 0.0)
    maker_max_tokens: int = _env_int("LATM_MAKER_MAX_TOKENS", 2048)
    user_model: str = _env_str("LATM_USER_MODEL", "gpt-4o-mini")
    user_base_url: str | None = _env_str("LATM_USER_BASE_URL", None)
    user_api_key_env: str = _env_str("LATM_USER_API_KEY_ENV", "OPENAI_API_KEY")
    user_temperature: float = _env_float("LATM_USER_TEMPERATURE", 0.0)
    user_max_tokens: int = _env_int("LATM_USER_MAX_TOKENS", 512)
    request_timeout_s: float = _env_float("LATM_REQUEST_TIMEOUT", 300.0)
    max_retries: int = _env_int("LATM_MAX_RETRIES", 2)
    max_attempts: int = _env_int("LATM_MAX_ATTEMPTS", 3)
    n_demos: int = _env_int("LATM_N_DEMOS", 3)
    n_validation: int = _env_int("LATM_N_VALIDATION", 3)
    n_candidates: int = _env_int("LATM_N_CANDIDATES", 3)
    candidate_temperature: float = _env_float("LATM_CANDIDATE_TEMPERATURE", 0.8)
    direct_entry: bool = _env_bool("LATM_DIRECT_ENTRY", True)
    max_direct_checks: int = _env_int("LATM_MAX_DIRECT_CHECKS", 50)
    reject_hardcoded: bool = _env_bool("LATM_REJECT_HARDCODED", True)
    two_step: bool = _env_bool("LATM_TWO_STEP", False)
    exec_timeout_s: float = _env_float("LATM_EXEC_TIMEOUT", 5.0)
    exec_memory_mb: int = _env_int("LATM_EXEC_MEMORY_MB", 512)
    exec_max_output_bytes: int = _env_int("LATM_EXEC_MAX_OUTPUT", 65_536)
    executor: str = _env_str("LATM_EXECUTOR", "auto")
    allow_unsandboxed: bool = _env_bool("LATM_ALLOW_UNSANDBOXED", False)
    namespace: str = _env_str("LATM_NAMESPACE", "default")
    dispatch_candidates: int = _env_int("LATM_DISPATCH_K", 3)
    store_path: str | None = _env_str("LATM_STORE_PATH", None)
    maker_llm: Any = field(default=None, repr=False, compare=False)
    user_llm: Any = field(default=None, repr=False, compare=False)
    database_url: str = _env_str("LATM_DATABASE_URL", "")
    embeddings: str = _env_str("LATM_EMBEDDINGS", "")
    max_tool_failures: int = _env_int("LATM_MAX_TOOL_FAILURES", 5)
    lease_ttl_s: float = _env_float("LATM_LEASE_TTL", 600.0)
    lease_wait_s: float = _env_float("LATM_LEASE_WAIT", 900.0)
    require_approval: bool = _env_bool("LATM_REQUIRE_APPROVAL", False)
    review_ttl_s: float = _env_float("LATM_REVIEW_TTL", 86_400.0)
    # -- dispatcher in an embedding space (both are deployment settings) --
    dispatch: str = _env_str("LATM_DISPATCH", "embedding")  # deployment
    route_embeddings: str = _env_str("LATM_ROUTE_EMBEDDINGS", "auto")  # deployment
    # How much evidence a stored tool needs (see latm.evidence and the README's
    # "What verified means"). Deployment bounds: a run may make them stricter
    # (a lower lucky_pass_max, weak_tools "reject"), never looser.
    lucky_pass_max: float = _env_float("LATM_LUCKY_PASS_MAX", 0.01)  # deployment bound
    weak_tools: str = _env_str("LATM_WEAK_TOOLS", "reject")  # deployment bound
    agreement_probes: int = _env_int("LATM_AGREEMENT_PROBES", 6)  # deployment bound (cost)
    # Reliability bounds. run_deadline_s is a run setting (a run may ask for a
    # shorter one); the size limits are deployment bounds (a run must not raise them).
    run_deadline_s: float = _env_float("LATM_RUN_DEADLINE", 900.0)
    max_request_chars: int = _env_int("LATM_MAX_REQUEST_CHARS", 20_000)
    max_example_chars: int = _env_int("LATM_MAX_EXAMPLE_CHARS", 20_000)
    max_examples: int = _env_int("LATM_MAX_EXAMPLES", 2_000)
    max_reply_chars: int = _env_int("LATM_MAX_REPLY_CHARS", 200_000)

    def __post_init__(self) -> None:
        """Check the numeric settings."""
        for name in (
            "max_attempts",
            "n_demos",
            "n_validation",
            "n_candidates",
            "max_direct_checks",
            "dispatch_candidates",
            "max_request_chars",
            "max_example_chars",
            "max_examples",
            "max_reply_chars",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"Context.{name} must be at least 1")
        if (
            self.max_tool_failures < 0
            or self.lease_ttl_s <= 0
            or self.review_ttl_s <= 0
            or self.lease_wait_s < 0
        ):
            raise ValueError("Context tool lifecycle settings must not be negative")
        if self.run_deadline_s < 0:
            raise ValueError("Context.run_deadline_s must not be negative (0: no deadline)")
        if self.dispatch not in ("embedding", "llm"):
            raise ValueError("Context.dispatch must be 'embedding' or 'llm'")
        if self.exec_timeout_s <= 0 or self.exec_memory_mb < 32:
            raise ValueError("Context execution limits are too small")
        if not 0.0 <= self.lucky_pass_max <= 1.0 or self.agreement_probes < 0:
            raise ValueError("Context.lucky_pass_max must be in [0, 1], agreement_probes >= 0")
        if self.weak_tools not in ("reject", "store"):
            raise ValueError("Context.weak_tools must be 'reject' or 'store'")


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
