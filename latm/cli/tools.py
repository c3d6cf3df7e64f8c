"""``latm tools``: list, show, remove, export and import the repository's tools.

Export writes JSON (never pickle): ``{"format": "latm-tools", "tools": [...],
"sha256": ...}``, where ``sha256`` is taken over the canonical JSON of the tool
list (sorted keys, no spaces, UTF-8). Import checks that hash and every record
(its fields, task type, schema version, and that its code parses and defines
its function), then re-verifies every tool in the sandbox against its own
stored verification cases (its usage demos' calls, and its ``solve`` entry on
its direct checks) before it stores anything: an edited tool whose hash was
recomputed still has to pass. A tool whose task type exists becomes a new
version unless its code is unchanged. Imported code runs only in the sandbox.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from datetime import UTC, datetime
from typing import Any

from rich.markup import escape

from latm.answers import is_correct
from latm.cli.common import (
    UserError,
    console,
    context_from_args,
    repository_from_args,
    safe_text,
)
from latm.codeparse import ReplyError, function_info
from latm.graph.context import Context
from latm.nodes.common import get_limits, get_tool_executor
from latm.nodes.dispatcher import check_task_type
from latm.nodes.verify import run_checks
from latm.repository import (
    NO_CONTENT_HASH,
    RepositoryError,
    ToolRecord,
    ToolRepository,
    ToolStats,
)
from latm.sandbox import ExecResult, SandboxUnavailableError

FORMAT = "latm-tools"
FORMAT_VERSION = 1


def register(subparsers: Any) -> None:
    """Add the ``tools`` sub-command group."""
    parser = subparsers.add_parser("tools", help="inspect and manage the tool repository")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="list the tools").set_defaults(func=list_tools)
    show = actions.add_parser("show", help="show one tool: docs, demos, code, verification")
    show.add_argument("task_type")
    show.set_defaults(func=show_tool)
    rm = actions.add_parser("rm", help="remove a tool")
    rm.add_argument("task_type")
    rm.set_defaults(func=remove_tool)
    export = actions.add_parser("export", help="export tools as JSON")
    export.add_argument("task_type", nargs="*", help="tools to export (default: all)")
    export.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    export.set_defaults(func=export_tools)
    imp = actions.add_parser("import", help="import tools from an export (checks its sha256)")
    imp.add_argument("file", help="a JSON file written by 'latm tools export'")
    imp.set_defaults(func=import_tools)
    doctor = actions.add_parser(
        "doctor", help="check every stored record; list (and repair) what is unreadable"
    )
    doctor.add_argument(
        "--repair", action="store_true", help="rewrite stale or missing latest records"
    )
    doctor.add_argument(
        "--reverify",
        action="store_true",
        help="re-verify tools stored by an older LATM (no content hash) in the sandbox and "
        "restore those that pass",
    )
    doctor.add_argument(
        "--purge", action="store_true", help="delete the quarantined records (after reading them)"
    )
    doctor.set_defaults(func=doctor_tools)


def list_tools(args: argparse.Namespace) -> int:
    """Print a table of the tools with their use statistics."""
    from rich.table import Table

    repo = repository_from_args(args)
    limit = context_from_args(args).max_tool_failures
    records = _guarded(repo.records)
    if not records:
        console.print("no tools yet: make one with 'latm make --examples FILE'")
        return 0
    columns = ("task type", "version", "function", "uses", "failures", "status", "created")
    rows = []
    for r in records:
        stats = _guarded(lambda r=r: repo.stats(r.task_type, r.version))
        rows.append(
            [
                r.task_type,
                str(r.version),
                r.name,
                str(stats.calls),
                _failures(stats),
                _status(stats, limit),
                r.created_at,
                r.description,
            ]
        )
    if not console.is_terminal:
        # piped or captured: one tab-separated line per tool, never cut or wrapped
        # (written directly: rich would expand the tabs)
        for line in ((*columns, "description"), *rows):
            sys.stdout.write("\t".join(safe_text(cell).replace("\t", " ") for cell in line) + "\n")
        return 0
    table = Table()
    for column in columns:
        table.add_column(column, no_wrap=column in ("task type", "function"))
    table.add_column("description", overflow="fold", ratio=1)
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    console.print(table)
    return 0


def doctor_tools(args: argparse.Namespace) -> int:
    """Read every record one by one, quarantine the unreadable, report and repair the rest."""
    repo = repository_from_args(args)
    problems = _guarded(lambda: repo.check(repair=args.repair))
    if args.reverify:
        ctx = context_from_args(args)
        for qkey, namespace, key, record in _guarded(repo.legacy_records):
            where = f"{'/'.join(namespace)} {key}"
            if problem := reverify(record, ctx):
                console.print(f"{escape(where)}: stays quarantined: {escape(problem)}")
                continue
            _guarded(lambda q=qkey, n=namespace, k=key, r=record: repo.restore_legacy(q, n, k, r))
            console.print(f"{escape(where)}: re-verified in the sandbox and restored")
    quarantined = _guarded(repo.quarantined)
    for line in problems:
        console.print(escape(line))
    if quarantined:
        console.print(f"{len(quarantined)} quarantined record(s):")
        for q in quarantined:
            where = "/".join(q.get("namespace") or [])
            console.print(
                f"  {escape(where)} {escape(str(q.get('key')))}: {escape(str(q.get('reason')))}"
            )
        legacy = sum(q.get("reason") == NO_CONTENT_HASH for q in quarantined)
        if legacy and not args.reverify:
            console.print(
                f"{legacy} of them were stored by an older LATM (no content hash): "
                "re-verify and restore them with 'latm tools doctor --reverify'"
            )
    if args.purge:
        console.print(f"purged {_guarded(repo.purge_quarantine)} quarantined record(s)")
        quarantined = []
    unrepaired = [p for p in problems if not p.startswith("quarantined") and ";" not in p]
    if not problems and not quarantined:
        console.print("the repository is sound")
    return 1 if unrepaired else 0


def _guarded(read: Any) -> Any:

    try:
        return read()
    except RepositoryError as exc:
        raise UserError(str(exc)) from exc


def _failures(stats: ToolStats) -> str:
    return (
        f"{stats.failures} ({stats.timeouts} timeouts)" if stats.timeouts else str(stats.failures)
    )


def _status(stats: ToolStats, limit: int) -> str:
    return "retired" if limit > 0 and stats.failures >= limit else "active"


def _get(args: argparse.Namespace) -> Any:
    record = _guarded(lambda: repository_from_args(args).get(args.task_type))
    if record is None:
        raise UserError(f"no tool named {args.task_type!r} (see 'latm tools list')")
    return record


def show_tool(args: argparse.Namespace) -> int:
    """Print one tool in full."""
    from rich.syntax import Syntax
    from rich.table import Table

    r = _get(args)
    console.print(f"[bold]{r.task_type}[/] v{r.version} — {escape(r.description)}")
    console.print(f"[dim]made by {r.maker_model} at {r.created_at}[/]\n")
    console.print(Syntax(safe_text(r.code), "python", line_numbers=False))
    console.print("[bold]Usage demos[/]")
    for d in r.demos:
        console.print(f"  Q: {escape(d.question)}\n  → {escape(d.call)} = {escape(d.answer)!r}")
    passed = sum(c["passed"] for c in r.verification)
    console.print(f"[bold]Verification[/]: {passed}/{len(r.verification)} passed")
    strength = r.strength.describe() if r.strength else "strength not recorded"
    console.print(f"  {escape(strength)}")
    repo = repository_from_args(args)
    limit = context_from_args(args).max_tool_failures
    stats = _guarded(lambda: repo.stats(r.task_type, r.version))
    console.print(
        f"[bold]Use[/]: {stats.calls} calls, {_failures(stats)} failures, "
        f"{_status(stats, limit)}; last used {stats.last_used_at or 'never'}"
    )
    if stats.last_error:
        console.print(f"  last error ({stats.last_error_at}): {escape(stats.last_error[:300])}")
    history = Table(title="Versions")
    for column in ("version", "created", "maker", "verification", "uses", "failures"):
        history.add_column(column, overflow="fold")  # folded, never cut, whatever the width
    for v in _guarded(lambda: repo.versions(r.task_type)):
        vs = _guarded(lambda v=v: repo.stats(v.task_type, v.version))
        checks = f"{sum(c['passed'] for c in v.verification)}/{len(v.verification)}"
        history.add_row(
            f"v{v.version}", v.created_at, v.maker_model, checks, str(vs.calls), _failures(vs)
        )
    console.print(history)
    return 0


def remove_tool(args: argparse.Namespace) -> int:
    """Delete one tool."""
    if not _guarded(lambda: repository_from_args(args).delete(args.task_type)):
        raise UserError(f"no tool named {args.task_type!r} (see 'latm tools list')")
    console.print(f"removed {args.task_type}")
    return 0


def export_tools(args: argparse.Namespace) -> int:
    """Write tools as a JSON document ``{"format", "tools": [...], "sha256"}``."""
    repo = repository_from_args(args)
    if args.task_type:
        records = []
        for name in args.task_type:
            record = _guarded(lambda name=name: repo.get(name))
            if record is None:
                raise UserError(f"no tool named {name!r} (see 'latm tools list')")
            records.append(record)
    else:
        records = _guarded(repo.records)
    text = json.dumps(export_document(records, repo.tenant), indent=2, ensure_ascii=False)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
        except OSError as exc:
            raise UserError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
        console.print(f"exported {len(records)} tool(s) to {args.output}")
    else:
        sys.stdout.write(text + "\n")
    return 0


def content_hash(tools: list[dict[str, Any]]) -> str:
    """The sha256 of the canonical JSON of a tool list (sorted keys, no spaces, UTF-8)."""
    canonical = json.dumps(tools, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def export_document(records: list[ToolRecord], namespace: str) -> dict[str, Any]:
    """The JSON document an export writes."""
    tools = [r.model_dump(mode="json") for r in records]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "namespace": namespace,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "tools": tools,
        "sha256": content_hash(tools),
    }


def check_record(raw: Any, index: int) -> ToolRecord:
    """Validate one imported tool record.

    Raises:
        UserError: The record is not a readable, self-consistent tool.
    """
    from pydantic import ValidationError

    # lazy: `latm --help` loads no graph, store or model code
    from latm.repository import ToolRecord

    where = f"tool {index}"
    if isinstance(raw, dict) and (problem := check_task_type(raw.get("task_type"))):
        raise UserError(f"{where}: " + problem.replace("'task_type'", "the task type"))
    try:
        record = ToolRecord.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "record"
        raise UserError(f"{where} is not a valid tool record: {field}: {first['msg']}") from exc
    where = f"tool {index} ({record.task_type!r})"
    for entry in filter(None, (record.name, record.direct_entry)):
        try:
            function_info(record.code, entry)
        except ReplyError as exc:
            raise UserError(f"{where}: its code does not define {entry}(): {exc}") from exc
    return record


def parse_document(text: str, source: str) -> list[ToolRecord]:
    """Read and check an export: its format, its content hash and every record.

    Raises:
        UserError: The document is not an intact LATM export.
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UserError(f"{source} is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise UserError(f"{source} is nested too deeply to be a LATM tools export") from exc
    if not isinstance(data, dict) or not isinstance(data.get("tools"), list):
        raise UserError(f"{source} is not a LATM tools export (no 'tools' list)")
    if data.get("format", FORMAT) != FORMAT:
        raise UserError(f"{source} is a {data.get('format')!r} document, not {FORMAT!r}")
    if data.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise UserError(
            f"{source} has format_version {data.get('format_version')!r}; this LATM reads "
            f"{FORMAT_VERSION}: nothing was imported"
        )
    expected = data.get("sha256")
    if not isinstance(expected, str):
        raise UserError(
            f"{source} has no sha256 content hash: export it again with 'latm tools export'"
        )
    actual = content_hash(data["tools"])
    if actual != expected:
        raise UserError(
            f"{source}: content hash mismatch (file says {expected[:16]}..., content is "
            f"{actual[:16]}...): the file was changed or damaged; nothing was imported"
        )
    records = [check_record(raw, i) for i, raw in enumerate(data["tools"])]
    seen: set[str] = set()
    for record in records:
        if record.task_type in seen:
            raise UserError(f"{source} holds the task type {record.task_type!r} twice")
        seen.add(record.task_type)
    return records


def reverify(record: ToolRecord, ctx: Context) -> str | None:
    """Re-run a tool's stored verification cases in the sandbox; why it fails, or ``None``.

    The cases are its usage demos (a call and its verified answer) and, when it
    has a ``solve`` entry, its direct checks (the raw question and the expected
    answer). A tool with no such case cannot be re-verified and is refused.
    """
    cases = [(d.call, d.question, d.answer) for d in record.demos]
    if record.direct_entry:
        cases += [
            (f"{record.direct_entry}({c['input']!r})", c["input"], c["expected"])
            for c in record.verification
            if c.get("check") == "direct" and c["passed"]
        ]
    if not cases:
        return "it has no verification cases to re-run"
    try:
        executor = get_tool_executor(ctx)
    except SandboxUnavailableError as exc:
        raise UserError(f"cannot re-verify imported tools: {exc}") from exc

    def passes(i: int, result: ExecResult) -> bool:
        _, question, answer = cases[i]
        return result.ok and is_correct(result.value, answer, question)

    checks = [("case", call) for call, _, _ in cases]
    results = run_checks(
        executor, record.code, checks, get_limits(ctx), passes, frozenset({"case"})
    )
    for i, result in enumerate(results):
        if result is not None and not passes(i, result):
            call, _, answer = cases[i]
            got = f"{result.status}: {result.error}" if not result.ok else repr(result.value)
            return f"re-verification failed: {call[:80]} should give {answer!r}, got {got[:120]}"
    return None


def import_records(repo: ToolRepository, records: list[ToolRecord]) -> list[str]:
    """Store checked records; one line per tool saying what happened."""
    lines = []
    for record in records:
        current = repo.get(record.task_type)
        if current is not None and current.code == record.code:
            lines.append(f"{record.task_type}: unchanged (same code as v{current.version})")
            continue
        version = repo.next_version(record.task_type)
        repo.put(record.model_copy(update={"version": version, "make_id": None}))
        lines.append(f"{record.task_type}: imported as v{version}")
    return lines


def import_tools(args: argparse.Namespace) -> int:
    """Import tools from an export file, after checking its hash and records."""
    try:
        with open(args.file, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise UserError(f"cannot read {args.file}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{args.file} is not UTF-8 text: {exc}") from exc
    records = parse_document(text, args.file)
    ctx = context_from_args(args)
    for i, record in enumerate(records):
        if problem := reverify(record, ctx):
            raise UserError(f"tool {i} ({record.task_type!r}): {problem}; nothing was imported")
    repo = repository_from_args(args)
    for line in _guarded(lambda: import_records(repo, records)):
        console.print(line)
    console.print(f"imported {len(records)} tool(s) from {args.file}")
    return 0
