"""Verified tools as framework-neutral specs: name, description, argument model, sandboxed call.

A :class:`ToolSpec` is built from a :class:`~latm.repository.ToolRecord` by
reading its signature with :mod:`ast` (no generated code runs in the host): each
parameter becomes a field of a pydantic model (its annotation mapped to a
JSON-schema type, ``Any`` when it has none or an unknown one; its default kept
when it is a literal; its description taken from the docstring's ``Args:``).
A :class:`ToolRunner` turns validated arguments into one call expression made
of Python literals only and evaluates it with the sandbox executor; every
failure (bad arguments, a raising, looping or crashing tool, no sandbox) comes
back as a :class:`CallOutcome` with a clear error text, never as an exception.
"""

from __future__ import annotations

import ast
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

from latm.backends import BackendError, backend_for
from latm.codeparse import parse_expression, parse_module
from latm.graph.context import Context
from latm.graph.state import cases_of
from latm.repository import RepositoryError, ToolRecord, ToolRepository
from latm.sandbox import ExecLimits, Executor, SandboxUnavailableError, get_executor
from latm.usage import retired

log = logging.getLogger(__name__)

MAX_DESCRIPTION_CHARS = 1024
"""Cap on a tool's description (some model APIs refuse longer ones)."""
MAX_CALL_CHARS = 200_000
"""Cap on the source of one call expression (the arguments rendered as literals)."""
MAX_ERROR_CHARS = 1000
"""Cap on the error text of a failed call that goes back to the agent."""
MAX_DEPTH = 32
"""How deeply arguments may nest."""
_NAME = re.compile(r"[^A-Za-z0-9_-]+")
_ARG_LINE = re.compile(r"^\s{2,}\*{0,2}([A-Za-z_][A-Za-z0-9_]*)(?:\s*\([^)]*\))?\s*:\s*(.+)$")

_SEQUENCES = {"list", "List", "Sequence", "Iterable", "Collection", "MutableSequence", "Iterator"}
_MAPPINGS = {"dict", "Dict", "Mapping", "MutableMapping", "OrderedDict", "defaultdict"}
_SETS = {"set", "Set", "AbstractSet", "MutableSet"}
_FROZEN = {"frozenset", "FrozenSet"}
_TUPLES = {"tuple", "Tuple"}
_PLAIN: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "None": type(None),
    "Any": Any,
    "object": Any,
}


class ArgumentError(ValueError):
    """Arguments that cannot be turned into a call of the tool (the message says why)."""


def is_verified(record: ToolRecord) -> bool:
    """Whether a stored tool passed its verification.

    Either every maker's call of the tool passed, or its ``solve(request)``
    entry passed every example (the two ways ``verify`` accepts a tool).
    """
    calls = cases_of(record.verification, "call")
    direct = cases_of(record.verification, "direct")
    return any(cases and all(c["passed"] for c in cases) for cases in (calls, direct))


def tool_name(record: ToolRecord) -> str:
    """The tool's name for agents: its task type, reduced to ``[A-Za-z0-9_-]``, at most 64."""
    return _NAME.sub("_", record.task_type).strip("_")[:64] or "tool"


def _annotation(node: ast.expr | None, depth: int = 0) -> Any:
    """The Python type an annotation's syntax names (``Any`` when it names no JSON type)."""
    if node is None or depth > 8:
        return Any
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # "list[str]"
        try:
            return _annotation(parse_expression(node.value).body, depth + 1)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return Any
    if isinstance(node, ast.Constant) and node.value is None:
        return type(None)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left, right = _annotation(node.left, depth + 1), _annotation(node.right, depth + 1)
        return Any if Any in (left, right) else Union[left, right]  # noqa: UP007
    name = _base_name(node.value if isinstance(node, ast.Subscript) else node)
    if not isinstance(node, ast.Subscript):
        if name in _PLAIN:
            return _PLAIN[name]
        generic = _generic(name, [])
        return generic if generic is not None else Any
    args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
    if name == "Literal":
        values = []
        for arg in args:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str | int | bool):
                values.append(arg.value)
        return Literal[tuple(values)] if values else Any
    if name == "Annotated":
        return _annotation(args[0], depth + 1)
    if name == "Optional":
        inner = _annotation(args[0], depth + 1)
        return Any if inner is Any else Union[inner, None]  # noqa: UP007
    if name == "Union":
        members = [_annotation(a, depth + 1) for a in args]
        return Any if Any in members else Union[tuple(members)]  # noqa: UP007
    if name in _TUPLES:
        if len(args) == 2 and isinstance(args[1], ast.Constant) and args[1].value is Ellipsis:
            return tuple[_annotation(args[0], depth + 1), ...]  # type: ignore[misc]
        return tuple[tuple(_annotation(a, depth + 1) for a in args)]  # type: ignore[misc]
    generic = _generic(name, [_annotation(a, depth + 1) for a in args])
    return generic if generic is not None else Any


def _generic(name: str, args: list[Any]) -> Any:
    first = args[0] if args else Any
    if name in _SEQUENCES:
        return list[first]  # type: ignore[valid-type]
    if name in _SETS:
        return set[first]  # type: ignore[valid-type]
    if name in _FROZEN:
        return frozenset[first]  # type: ignore[valid-type]
    if name in _TUPLES:
        return tuple[Any, ...]
    if name in _MAPPINGS:
        key = args[0] if len(args) == 2 and args[0] in (str, int) else str
        value = args[1] if len(args) == 2 else Any
        return dict[key, value]  # type: ignore[valid-type]
    return None


def _base_name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):  # typing.List, collections.abc.Sequence
        return node.attr
    return ""


def _literal_default(node: ast.expr) -> tuple[bool, Any]:
    """``(True, value)`` for a literal default, ``(False, None)`` for any other expression."""
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def _arg_docs(docstring: str) -> dict[str, str]:
    """Parameter descriptions from a Google-style ``Args:`` section."""
    docs: dict[str, str] = {}
    inside = False
    for line in docstring.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            inside = True
            continue
        if inside and stripped.endswith(":") and not line.startswith((" ", "\t")):
            break
        if inside and (match := _ARG_LINE.match(line)):
            docs[match.group(1)] = " ".join(match.group(2).split())[:300]
    return docs


@dataclass(frozen=True)
class Param:
    """One parameter of the tool function, as the call expression passes it.

    Attributes:
        name: The parameter's name in the function.
        field: The name of its field in the argument model (differs when the
            name is reserved by pydantic).
        kind: ``positional`` (positional-only), ``keyword`` (positional or
            keyword), ``kwonly`` (keyword-only), ``star`` (``*args``) or
            ``starstar`` (``**kwargs``).
        omit_none: ``None`` stands for the function's own default, which is no
            literal (``def f(when=date.today())``): the argument is then left out.
        default: The literal default written as source, else ``None``.
    """

    name: str
    field: str
    kind: Literal["positional", "keyword", "kwonly", "star", "starstar"]
    omit_none: bool = False
    default: str | None = None


@dataclass(frozen=True)
class ToolSpec:
    """A verified tool as agents see it.

    Attributes:
        record: The stored tool.
        name: Its name for agents (see :func:`tool_name`).
        description: What it does, how it is called, and its usage demos.
        args_model: The pydantic model of its arguments.
        params: How each argument is passed to the function.
        namespace: The repository namespace it comes from.
    """

    record: ToolRecord
    name: str
    description: str
    args_model: type[BaseModel]
    params: tuple[Param, ...]
    namespace: str

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of the arguments (an object)."""
        schema = self.args_model.model_json_schema()
        schema.pop("title", None)
        return schema

    def render_call(self, arguments: dict[str, Any]) -> str:
        """The call expression for validated arguments, made of Python literals only.

        Only the arguments given are passed, so the function's own defaults apply
        to the rest.

        Raises:
            ArgumentError: An argument cannot be written as a literal, is nested too
                deeply, the call is too large, or a positional-only argument is
                missing before a given one.
        """
        given = {
            p.name: arguments[p.field]
            for p in self.params
            if p.field in arguments and not (p.omit_none and arguments[p.field] is None)
        }
        star = next((p for p in self.params if p.kind == "star"), None)
        starred = star is not None and bool(given.get(star.name))
        # Positional slots: positional-only parameters, and with a non-empty *args every
        # parameter before it (Python fills them before *args); each is given or, before a
        # given one, takes its literal default.
        slots = [
            p for p in self.params if p.kind == "positional" or (starred and p.kind == "keyword")
        ]
        last = max((i for i, p in enumerate(slots) if p.name in given), default=-1)
        if starred:
            last = len(slots) - 1
        positional: list[str] = []
        for i, param in enumerate(slots[: last + 1]):
            if param.name in given:
                positional.append(literal(given[param.name]))
            elif param.default is not None:
                positional.append(param.default)
            else:
                after = slots[i + 1].name if i + 1 < len(slots) else star.name if star else "?"
                raise ArgumentError(f"give {param.name!r} too: it comes before {after!r}")
        keyword: list[str] = []
        for param in self.params:
            if param.name not in given or param in slots[: last + 1]:
                continue
            value = literal(given[param.name])
            if param.kind == "star":
                positional.append(f"*{value}")
            elif param.kind == "starstar":
                keyword.append(f"**{value}")
            else:
                keyword.append(f"{param.name}={value}")
        call = f"{self.record.name}({', '.join([*positional, *keyword])})"
        if len(call) > MAX_CALL_CHARS:
            raise ArgumentError(f"the arguments are too large ({len(call)} characters)")
        return call


def literal(value: Any, depth: int = 0) -> str:
    """Write a JSON-like value as a Python literal (the only thing a call may contain).

    Raises:
        ArgumentError: The value is not ``None``, a bool, number, string, list,
            tuple, set or dict of those, or it nests deeper than :data:`MAX_DEPTH`.
    """
    if depth > MAX_DEPTH:
        raise ArgumentError(f"the arguments nest deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool | str):
        return repr(value)
    if isinstance(value, int):
        try:
            return repr(value)
        except ValueError as exc:  # over the interpreter's int-to-text digit limit
            raise ArgumentError(f"an integer argument is too large: {exc}") from None
    if isinstance(value, float):
        if math.isfinite(value):
            return repr(value)
        return f"float({str(value)!r})"
    if isinstance(value, list | tuple):
        items = [literal(v, depth + 1) for v in value]
        if isinstance(value, tuple):
            return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
        return f"[{', '.join(items)}]"
    if isinstance(value, set | frozenset):
        items = sorted(literal(v, depth + 1) for v in value)
        inner = f"{{{', '.join(items)}}}" if items else "set()"
        return f"frozenset({inner})" if isinstance(value, frozenset) else inner
    if isinstance(value, dict):
        pairs = [f"{literal(k, depth + 1)}: {literal(v, depth + 1)}" for k, v in value.items()]
        return f"{{{', '.join(pairs)}}}"
    raise ArgumentError(f"an argument of type {type(value).__name__} cannot be passed to the tool")


def _function(record: ToolRecord) -> ast.FunctionDef:
    """The tool function's definition, from its signature (else from its code)."""
    sources = [f"{record.signature.rstrip().rstrip(':')}:\n    pass\n"]
    if len(record.code) <= 200_000:
        sources.append(record.code)
    for source in sources:
        try:
            module = parse_module(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        for stmt in module.body:
            if isinstance(stmt, ast.FunctionDef) and stmt.name == record.name:
                return stmt
    raise ArgumentError(f"cannot read the signature of {record.name!r}")


def _field_name(name: str, taken: set[str]) -> str:
    field_name = name
    while field_name.startswith("_") or hasattr(BaseModel, field_name) or field_name in taken:
        field_name = f"{field_name.lstrip('_')}_arg"
    taken.add(field_name)
    return field_name


def _description(record: ToolRecord) -> str:
    head = record.description.strip() or f"Solves {record.task_type.replace('_', ' ')} problems."
    parts = [head, f"Python signature: {record.signature}"]
    strength = record.strength
    if strength is not None and strength.level == "weak":
        # stored under LATM_WEAK_TOOLS=store: an agent must know its answers may be luck
        parts.insert(
            0,
            "WEAKLY VERIFIED: its examples could not rule out a lucky pass "
            f"(chance {strength.lucky_pass:.2g}); double-check its answers.",
        )
    rest = record.docstring.strip().split("\n\n", 1)
    if len(rest) > 1 and rest[1].strip():
        parts.append(" ".join(rest[1].split())[:400])
    text = "\n".join(parts)
    for demo in record.demos[:3]:
        question = " ".join(demo.question.split())
        question = question if len(question) <= 240 else question[:237] + "..."
        line = f"\nExample: {question!r} -> {demo.call[:240]} -> {demo.answer[:80]!r}"
        if len(text) + len(line) > MAX_DESCRIPTION_CHARS:
            break
        text += line
    return text[:MAX_DESCRIPTION_CHARS]


def build_spec(record: ToolRecord, namespace: str, name: str | None = None) -> ToolSpec:
    """Describe one stored tool for agents.

    Raises:
        ArgumentError: Its signature cannot be read.
    """
    func = _function(record)
    docs = _arg_docs(record.docstring)
    fields: dict[str, Any] = {}
    params: list[Param] = []
    taken: set[str] = set()
    a = func.args
    positional = [*a.posonlyargs, *a.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(a.defaults))
    defaults += list(a.defaults)
    n_posonly = len(a.posonlyargs)
    every: list[tuple[ast.arg, ast.expr | None, Literal["positional", "keyword", "kwonly"]]] = [
        (arg, default, "positional" if i < n_posonly else "keyword")
        for i, (arg, default) in enumerate(zip(positional, defaults, strict=True))
    ]
    every += [(arg, d, "kwonly") for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True)]
    for arg, default, kind in every:
        field_name = _field_name(arg.arg, taken)
        info: dict[str, Any] = {"description": docs.get(arg.arg) or f"The {arg.arg!r} argument."}
        annotation = _annotation(arg.annotation)
        omit_none, source = False, None
        if default is None:
            fields[field_name] = (annotation, Field(..., **info))
        else:
            is_literal, value = _literal_default(default)
            if is_literal:
                try:
                    source = literal(value)
                except ArgumentError:  # bytes, complex: no JSON value
                    is_literal, value = False, None
            if not is_literal:  # null (or leaving it out) keeps the function's own default
                info["description"] += f" Default: {ast.unparse(default)[:80]}."
                annotation, omit_none = (Any if annotation is Any else annotation | None), True
            fields[field_name] = (annotation, Field(value, **info))
        params.append(Param(arg.arg, field_name, kind, omit_none, source))
    if a.vararg is not None:
        field_name = _field_name(a.vararg.arg, taken)
        item = _annotation(a.vararg.annotation)
        doc = docs.get(a.vararg.arg) or "Further positional arguments."
        fields[field_name] = (list[item], Field(default_factory=list, description=doc))  # type: ignore[valid-type]
        params.append(Param(a.vararg.arg, field_name, "star"))
    if a.kwarg is not None:
        field_name = _field_name(a.kwarg.arg, taken)
        value_type = _annotation(a.kwarg.annotation)
        doc = docs.get(a.kwarg.arg) or "Further keyword arguments."
        fields[field_name] = (dict[str, value_type], Field(default_factory=dict, description=doc))  # type: ignore[valid-type]
        params.append(Param(a.kwarg.arg, field_name, "starstar"))
    model_name = "".join(p.capitalize() for p in tool_name(record).split("_") if p) + "Args"
    config = ConfigDict(protected_namespaces=(), extra="forbid")
    model = create_model(model_name, __config__=config, **fields)
    model.model_json_schema()  # a type with no JSON schema fails here, not when listed
    return ToolSpec(
        record=record,
        name=name or tool_name(record),
        description=_description(record),
        args_model=model,
        params=tuple(params),
        namespace=namespace,
    )


@dataclass(frozen=True)
class CallOutcome:
    """What one call of a tool gave: its answer text, or a clear error.

    Attributes:
        ok: Whether the tool returned an answer.
        text: The answer, or the error message.
        call: The call expression that ran (``None`` when none could be built).
    """

    ok: bool
    text: str
    call: str | None = None


@dataclass
class ToolRunner:
    """Runs tool specs in the sandbox executor, as the ``use`` node does.

    Attributes:
        context: Settings: executor choice, execution limits, retirement threshold.
        executor: The executor to run calls with (default: the context's).
        limits: Execution limits of one call (default: the context's).
    """

    context: Context = field(default_factory=Context)
    executor: Executor | None = None
    limits: ExecLimits | None = None

    def __post_init__(self) -> None:
        """Fill in the executor and limits the context chooses."""
        if self.limits is None:
            self.limits = ExecLimits(
                timeout_s=self.context.exec_timeout_s,
                memory_mb=self.context.exec_memory_mb,
                max_output_bytes=self.context.exec_max_output_bytes,
            )

    def _executor(self) -> Executor:
        if self.executor is None:
            self.executor = get_executor(
                self.context.executor, allow_unsandboxed=self.context.allow_unsandboxed
            )
        return self.executor

    def call(self, spec: ToolSpec, arguments: dict[str, Any]) -> CallOutcome:
        """Run one call of ``spec`` with arguments already validated by its model.

        Never raises: bad arguments, a failing tool and a missing sandbox all come
        back as an outcome with ``ok=False`` and a message naming the tool.
        """
        label = f"tool {spec.name} (v{spec.record.version})"
        try:
            call = spec.render_call(arguments)
        except ArgumentError as exc:
            return CallOutcome(False, f"{label}: bad arguments: {exc}")
        assert self.limits is not None
        try:
            result = self._executor().run(
                spec.record.code,
                [call],
                self.limits,
                cache_key=spec.record.worker_key(spec.namespace),
            )[0]
        except SandboxUnavailableError as exc:
            return CallOutcome(False, f"{label}: cannot run generated code: {exc}", call)
        except Exception as exc:  # the executor itself failed: say so, keep the agent running
            return CallOutcome(False, f"{label}: the executor failed: {type(exc).__name__}", call)
        if result.ok and result.value is not None:
            return CallOutcome(True, result.value, call)
        if result.ok:
            return CallOutcome(False, f"{label} returned nothing for {call[:200]}", call)
        error = f"{result.status}: {result.error}"[:MAX_ERROR_CHARS]
        return CallOutcome(False, f"{label} failed on {call[:200]}: {error}", call)


def configured_repository(context: Context) -> ToolRepository:
    """The repository a context names, opened as the CLI opens it.

    That is its database (``LATM_DATABASE_URL``) or local SQLite file
    (``LATM_STORE_PATH``), and its namespace (``LATM_NAMESPACE``).

    Raises:
        RepositoryError: The configured database cannot be opened.
    """
    try:
        return ToolRepository(backend_for(context).store, context.namespace)
    except BackendError as exc:
        raise RepositoryError(f"the tool repository is unavailable: {exc}") from exc


def exposed_records(repository: ToolRepository, context: Context) -> list[ToolRecord]:
    """The namespace's tools that agents may call: verified, and not retired.

    Raises:
        RepositoryError: The store failed.
    """
    return [
        r
        for r in repository.records()
        if is_verified(r) and retired(repository, r, context) is None
    ]


def build_specs(
    records: Sequence[ToolRecord], namespace: str, *, names: dict[str, str] | None = None
) -> list[ToolSpec]:
    """Specs for records, each under a distinct name.

    A record whose signature cannot be read is left out (with a warning).

    Args:
        records: The tools.
        namespace: Their repository namespace.
        names: Names already given, by task type (keeps a tool's name stable).
            Otherwise a tool is named after its task type; a task type that is no
            valid name is reduced to one, and numbered when that name is taken.
    """
    given = dict(names or {})
    used = set(given.values())
    # a task type that is a valid name already keeps it, whatever else sanitizes to it
    first = [r for r in records if tool_name(r) == r.task_type]
    for record in [*first, *(r for r in records if tool_name(r) != r.task_type)]:
        if record.task_type not in given:
            base = name = tool_name(record)
            n = 2
            while name in used:
                name = f"{base[:60]}_{n}"
                n += 1
            given[record.task_type] = name
            used.add(name)
    specs: list[ToolSpec] = []
    for record in records:
        name = given[record.task_type]
        try:
            specs.append(build_spec(record, namespace, name))
        except (ArgumentError, TypeError, ValueError, RecursionError) as exc:
            log.warning("tool %s is not exposed: %s", record.task_type, exc)
    return specs


def search_records(
    repository: ToolRepository, context: Context, query: str, k: int
) -> list[ToolRecord]:
    """The ``k`` verified, unretired tools that best fit ``query`` (repository search).

    Raises:
        RepositoryError: The store failed.
    """
    found = repository.search(query, limit=max(1, k) * 3)
    usable = [r for r, _ in found if is_verified(r) and retired(repository, r, context) is None]
    return usable[: max(0, k)]


__all__ = [
    "MAX_DESCRIPTION_CHARS",
    "ArgumentError",
    "CallOutcome",
    "Param",
    "RepositoryError",
    "ToolRunner",
    "ToolSpec",
    "build_spec",
    "build_specs",
    "configured_repository",
    "exposed_records",
    "is_verified",
    "literal",
    "search_records",
    "tool_name",
]
