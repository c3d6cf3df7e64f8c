"""Reading models' replies: tool code, validation calls and call expressions.

Everything here works on the syntax tree (``ast``) only; no generated code is
ever executed in the host process.
"""

from __future__ import annotations

import ast
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

MAX_CODE_CHARS = 100_000
DIRECT_ENTRY = "solve"
"""Name of the optional entry that takes the raw request text."""
PLACEHOLDER_NAMES = frozenset({"name_of_your_function", "your_function", "function_name"})
"""Names the maker's prompt uses as placeholders; a function copied with one is renamed."""
RENAMED_ENTRY = "solve_task"
"""Name given to a tool function called ``solve`` or a placeholder name."""
AUTO_IMPORTS = frozenset(
    {
        "bisect",
        "collections",
        "datetime",
        "fractions",
        "functools",
        "heapq",
        "itertools",
        "math",
        "operator",
        "re",
        "statistics",
        "string",
    }
)
"""Standard modules whose missing ``import`` is added when the code uses them as
``module.attribute`` without importing or defining the name (small makers forget)."""
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


AST_LOCK = threading.RLock()
"""Held while CPython converts between source, C and Python syntax trees.

On Python 3.11 the converter's recursion counter is shared by every thread:
two threads parsing at once (best-of-N candidates are checked in parallel)
can corrupt it, and ``ast.parse`` or ``compile`` then raises ``SystemError:
AST constructor recursion depth mismatch``. Every parse in LATM goes through
the functions below, which take this lock.
"""


def parse_python(source: str, mode: str = "exec") -> ast.AST:
    """``ast.parse`` under :data:`AST_LOCK` (see there why)."""
    with AST_LOCK:
        return ast.parse(source, mode=mode)


def parse_module(source: str) -> ast.Module:
    """A module's syntax tree, parsed under :data:`AST_LOCK`."""
    tree = parse_python(source)
    assert isinstance(tree, ast.Module)
    return tree


def parse_expression(source: str) -> ast.Expression:
    """``ast.parse(source, mode="eval")`` under :data:`AST_LOCK`."""
    tree = parse_python(source, "eval")
    assert isinstance(tree, ast.Expression)
    return tree


def compile_tree(tree: ast.Module) -> None:
    """Compile a syntax tree (runs nothing) under :data:`AST_LOCK`, for its syntax errors."""
    with AST_LOCK:
        compile(tree, "<tool>", "exec", dont_inherit=True)


class ReplyError(ValueError):
    """A model's reply cannot be used; the message says why, for feedback."""


@dataclass(frozen=True)
class Proposal:
    """A tool proposed by the maker.

    Attributes:
        code: The tool module (imports, helpers, the tool function).
        entry: The name of the tool function.
        calls: One call expression per validation question, in order.
        direct: Whether the code defines ``solve(request)`` (one parameter).
    """

    code: str
    entry: str
    calls: list[str]
    direct: bool = False


def code_blocks(text: str) -> list[str]:
    """Return the fenced code blocks of a reply that look like Python."""
    blocks = []
    for lang, body in _FENCE.findall(text):
        if lang.lower() in ("", "python", "py", "python3"):
            blocks.append(body.strip("\n"))
    return [b for b in blocks if b.strip()]


def _parse(source: str) -> ast.Module:
    if len(source) > MAX_CODE_CHARS:
        raise ReplyError(f"the code is longer than {MAX_CODE_CHARS} characters")
    try:
        module = parse_module(source)
        # The compiler's later passes find what parsing does not (``import *`` in a
        # function, ``return`` outside one, ...). Compiling runs nothing.
        compile_tree(module)
        return module
    except SyntaxError as exc:
        raise ReplyError(f"the code has a syntax error: {exc.msg} (line {exc.lineno})") from exc
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ReplyError(f"the code cannot be parsed: {type(exc).__name__}") from exc


def _called_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id
    return None


def _is_main_guard(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.If) and "__name__" in ast.unparse(stmt.test)


def _keep(stmt: ast.stmt) -> bool:
    """Whether a top-level statement belongs in the tool module."""
    if isinstance(stmt, ast.Expr):
        return isinstance(stmt.value, ast.Constant)  # docstrings only, no demo prints
    return not _is_main_guard(stmt)


def missing_imports(module: ast.Module) -> list[str]:
    """Modules of :data:`AUTO_IMPORTS` the code uses (``re.search``) but never binds."""
    bound: set[str] = set()
    used: set[str] = set()
    for node in ast.walk(module):
        if isinstance(node, ast.Import | ast.ImportFrom):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            used.add(node.value.id)
    return sorted((used & AUTO_IMPORTS) - bound)


def parse_proposal(reply: str) -> Proposal:
    """Split the maker's reply into tool code and validation calls.

    The reply holds fenced Python: the tool function (with any imports and
    helpers) and a list ``CALLS = [tool(...), ...]`` with one call per
    validation question. Top-level demo code (prints, ``__main__`` blocks) is
    dropped from the tool, and a forgotten ``import`` of a common standard
    module the code uses (``re``, ``math``, ...) is added.

    Args:
        reply: The maker's whole reply.

    Returns:
        The proposal.

    Raises:
        ReplyError: The reply has no code, code that does not parse, or no function.
    """
    blocks = code_blocks(reply)
    if not blocks:
        stripped = reply.strip()
        if stripped.startswith(("def ", "import ", "from ")):
            blocks = [stripped]
        else:
            raise ReplyError("the reply contains no Python code block")
    source = "\n\n".join(blocks)
    module = _parse(source)
    calls: list[str] = []
    kept: list[ast.stmt] = []
    for stmt in module.body:
        if _assigns_calls(stmt):
            value = stmt.value if isinstance(stmt, ast.Assign) else None
            if isinstance(value, ast.List | ast.Tuple):
                calls = [ast.unparse(elt) for elt in value.elts]
            continue
        if _keep(stmt):
            kept.append(stmt)
    defs = [s for s in kept if isinstance(s, ast.FunctionDef) and not s.name.startswith("_")]
    functions = [s.name for s in defs]
    if not functions:
        raise ReplyError("the code defines no public function")
    direct = _defines_direct_entry(defs)
    called = Counter(name for call in calls if (name := _called_name(parse_expression(call).body)))
    fallback = [n for n in functions if n != DIRECT_ENTRY] or functions
    entry = next((n for n, _ in called.most_common() if n in functions), fallback[-1])
    clashes = set(PLACEHOLDER_NAMES & set(functions))
    if entry == DIRECT_ENTRY and not _calls_take_the_question(calls, direct):
        clashes.add(DIRECT_ENTRY)
    if clashes:
        # A data function named like the raw-question entry would be dropped with a
        # failing solve(); the prompt's placeholder is no name for a tool.
        kept, calls, entry = _renamed(kept, calls, entry, clashes, set(functions))
        direct = _defines_direct_entry(kept)
        source = ""
    code = "\n\n".join(
        (ast.get_source_segment(source, s) if source else None) or ast.unparse(s) for s in kept
    )
    _with_decorators = [s for s in kept if getattr(s, "decorator_list", None)]
    if _with_decorators:  # get_source_segment drops decorators; unparse keeps them
        code = "\n\n".join(ast.unparse(s) for s in kept)
    code = _with_missing_imports(code, ast.Module(body=kept, type_ignores=[]))
    return Proposal(code=code.strip() + "\n", entry=entry, calls=calls, direct=direct)


def _calls_take_the_question(calls: list[str], direct: bool) -> bool:
    """Whether ``solve`` is used as the raw-question entry: one text argument per call."""
    if not direct or not calls:
        return direct
    for call in calls:
        node = parse_expression(call).body
        if not (
            isinstance(node, ast.Call)
            and len(node.args) == 1
            and not node.keywords
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            return False
    return True


class _Rename(ast.NodeTransformer):
    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.name = self.names.get(node.name, node.name)
        return self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self.names.get(node.id, node.id)
        return node


def _renamed(
    kept: list[ast.stmt], calls: list[str], entry: str, clashes: set[str], taken: set[str]
) -> tuple[list[ast.stmt], list[str], str]:
    """Rename the functions in ``clashes`` (the tool's first) to free names, everywhere."""
    names: dict[str, str] = {}
    for old in sorted(clashes, key=lambda n: n != entry):
        new, n = RENAMED_ENTRY, 2
        while new in taken or new in names.values():
            new, n = f"{RENAMED_ENTRY}_{n}", n + 1
        names[old] = new
    renamer = _Rename(names)
    kept = [renamer.visit(s) for s in kept]
    calls = [ast.unparse(renamer.visit(parse_expression(c)).body) for c in calls]
    return kept, calls, names.get(entry, entry)


def _with_missing_imports(code: str, module: ast.Module) -> str:
    """``code`` (whose tree is ``module``) with the imports it forgot prepended."""
    missing = missing_imports(module)
    return "".join(f"import {name}\n" for name in missing) + "\n" + code if missing else code


def _defines_direct_entry(stmts: Sequence[ast.stmt]) -> bool:
    """Whether ``stmts`` define ``solve`` taking one argument (the raw request)."""
    return any(
        isinstance(s, ast.FunctionDef)
        and s.name == DIRECT_ENTRY
        and len(s.args.posonlyargs) + len(s.args.args) == 1
        for s in stmts
    )


def defines_direct_entry(code: str) -> bool:
    """Whether ``code`` defines ``solve`` taking one argument (the raw request).

    Raises:
        ReplyError: The code does not parse.
    """
    try:
        return _defines_direct_entry(parse_module(code).body)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ReplyError(f"the code does not parse: {exc}") from exc


def _defined(stmt: ast.stmt) -> str | None:
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return stmt.name
    return None


def attach_direct_entry(reply: str, code: str, entry: str, calls: list[str]) -> Proposal:
    """Add the ``solve(request)`` entry of the maker's reply to a verified tool.

    The reply's functions and imports are appended to ``code``; any function the
    verified code already defines (the tool itself, a helper) is kept as
    verified, so writing the entry can never break the tool.

    Raises:
        ReplyError: The reply has no code, code that does not parse, or no
            ``solve`` taking one argument.
    """
    blocks = code_blocks(reply)
    if not blocks:
        raise ReplyError("the reply contains no Python code block")
    source = "\n\n".join(blocks)
    module = _parse(source)
    known = {name for s in _parse(code).body if (name := _defined(s))}
    added = [
        s for s in module.body if _keep(s) and _defined(s) not in known and not _assigns_calls(s)
    ]
    if not _defines_direct_entry(added):
        raise ReplyError(f"the code defines no {DIRECT_ENTRY}(request) function")
    extra = "\n\n".join(ast.unparse(s) for s in added)
    combined = code.rstrip() + "\n\n\n" + extra + "\n"
    combined = _with_missing_imports(combined, _parse(combined))
    return Proposal(code=combined, entry=entry, calls=list(calls), direct=True)


def without_function(code: str, name: str) -> str:
    """``code`` without its top-level function ``name`` (a failing ``solve``, say)."""
    module = _parse(code)
    kept = [s for s in module.body if _defined(s) != name]
    if len(kept) == len(module.body):
        return code
    return "\n\n\n".join(ast.unparse(s) for s in kept) + "\n"


def _assigns_calls(stmt: ast.stmt) -> bool:
    target = stmt.targets[0] if isinstance(stmt, ast.Assign) and stmt.targets else None
    return isinstance(target, ast.Name) and target.id == "CALLS"


def function_info(code: str, entry: str) -> tuple[str, str]:
    """Return the signature line and docstring of ``entry`` in ``code``."""
    module = _parse(code)
    for stmt in module.body:
        if isinstance(stmt, ast.FunctionDef) and stmt.name == entry:
            returns = f" -> {ast.unparse(stmt.returns)}" if stmt.returns else ""
            signature = f"def {stmt.name}({ast.unparse(stmt.args)}){returns}"
            return signature, ast.get_docstring(stmt) or ""
    raise ReplyError(f"the code defines no function named {entry!r}")


def _find_call(node: ast.AST, entry: str) -> ast.expr | None:
    """The expression to evaluate in ``node``: a call of ``entry``, or one wrapping it."""
    if isinstance(node, ast.Expression | ast.Expr):
        node = node.body if isinstance(node, ast.Expression) else node.value
    elif isinstance(node, ast.Assign | ast.AnnAssign | ast.Return) and node.value is not None:
        node = node.value
    if not isinstance(node, ast.expr):
        return None
    if _called_name(node) == "print" and isinstance(node, ast.Call) and len(node.args) == 1:
        node = node.args[0]
    if any(_called_name(sub) == entry for sub in ast.walk(node)):
        return node
    return None


def parse_call(reply: str, entry: str) -> str:
    """Extract the expression that calls ``entry`` from the user model's reply.

    Accepts a bare expression, ``result = entry(...)``, ``print(entry(...))``,
    fenced or not; the last such line wins.

    Args:
        reply: The user model's reply.
        entry: The tool function's name.

    Returns:
        The call expression's source.

    Raises:
        ReplyError: No expression in the reply calls the tool.
    """
    snippets = code_blocks(reply) or [reply.strip().strip("`")]
    for snippet in reversed(snippets):
        candidates = [snippet, *reversed(snippet.splitlines())]
        for candidate in candidates:
            candidate = candidate.strip()
            if not candidate or len(candidate) > MAX_CODE_CHARS:
                continue
            try:
                module = parse_module(candidate)
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                continue
            if len(module.body) != 1:
                continue
            found = _find_call(module.body[0], entry)
            if found is not None:
                return ast.unparse(found)
    raise ReplyError(f"the reply has no Python expression that calls {entry}()")


def literal_call(expression: str, entry: str) -> str:
    """The call of ``entry`` with literal arguments in ``expression``, as source.

    The only shape of call expression that may reach a tool's sandbox from a
    model: ``entry(<literal>, ..., name=<literal>)``, where a literal is what
    :func:`ast.literal_eval` accepts (strings, numbers, booleans, ``None`` and
    tuples, lists, sets and dicts of them). No attribute access, subscript,
    name, lambda, walrus, comprehension, starred or ``**`` argument, or dunder
    keyword. A wrapper around such a call (``print(...)``, ``' '.join(...)``)
    is dropped and the call itself kept.

    Raises:
        ReplyError: The expression holds no such call.
    """
    try:
        tree = parse_expression(expression.strip())
        nodes = list(ast.walk(tree))
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ReplyError(f"the call is not a Python expression: {type(exc).__name__}") from exc
    for node in nodes:
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == entry
            and all(k.arg is not None and not k.arg.startswith("__") for k in node.keywords)
        ):
            continue
        try:
            for value in [*node.args, *(k.value for k in node.keywords)]:
                if isinstance(value, ast.Starred):
                    raise ValueError("starred argument")
                ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
            continue
        return ast.unparse(node)
    raise ReplyError(f"the call of {entry}() must take literal arguments only")
