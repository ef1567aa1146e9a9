"""`mgw migrate status|plan|up`: what has run, what would run, and what to rebuild after.

A migration that changes a projection's table may leave rows the projector would now
fold differently. Which projector owns which table is declared in code
(``Projector.tables``), so `plan` and `up` name the projectors a migration touches and
the `mgw rebuild` to run. A file may also say so itself with a line
``-- rebuild: <projector>`` (a data fix a table scan cannot see)."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from core.db import (
    MIGRATIONS_DIR,
    MigrationEdited,
    applied_migrations,
    ensure_migrations_table,
    file_checksum,
    migrate,
    migration_files,
)
from projections.registry import PROJECTORS

# statements that name a table they change
_TOUCH = re.compile(
    r"\b(?:CREATE\s+(?:UNLOGGED\s+)?TABLE(?:\s+IF\s+NOT\s+EXISTS)?|ALTER\s+TABLE(?:\s+IF\s+EXISTS)?"
    r"(?:\s+ONLY)?|DROP\s+TABLE(?:\s+IF\s+EXISTS)?|TRUNCATE(?:\s+TABLE)?|INSERT\s+INTO|UPDATE"
    r"|DELETE\s+FROM|CREATE\s+(?:UNIQUE\s+)?INDEX(?:\s+CONCURRENTLY)?(?:\s+IF\s+NOT\s+EXISTS)?"
    r"(?:\s+\w+)?\s+ON(?:\s+ONLY)?)\s+(?:public\.)?\"?([a-z_][a-z0-9_]*)",
    re.IGNORECASE,
)
_CREATED = re.compile(
    r"\bCREATE\s+(?:UNLOGGED\s+)?TABLE(?:\s+IF\s+NOT\s+EXISTS)?\s+(?:public\.)?\"?([a-z_][a-z0-9_]*)",
    re.IGNORECASE,
)
# `DO UPDATE SET` and the like: a keyword where the pattern expects a name
_KEYWORDS = frozenset({"on", "set", "only", "if", "from", "where", "table", "index"})
_DECLARED = re.compile(r"^--\s*rebuild:\s*([\w, ]+)$", re.IGNORECASE | re.MULTILINE)
_COMMENT = re.compile(r"--[^\n]*")
_DOLLAR = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")


@dataclass
class Migration:
    name: str
    state: str  # applied | pending | edited | missing (recorded, file gone)
    checksum: str | None
    applied_at: str | None = None
    recorded_checksum: str | None = None
    tables: list[str] = field(default_factory=list)
    rebuild: list[str] = field(default_factory=list)
    #: each statement's head, whitespace folded: what `plan` summarises
    statements: list[str] = field(default_factory=list)


def statements(sql: str) -> list[str]:
    """The file's statements, split on the semicolons outside quotes, dollar-quoted
    bodies and comments, whitespace folded and comments left out."""
    out: list[str] = []
    cur: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j
            cur.append(" ")
            continue
        if sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
            cur.append(" ")
            continue
        if c == "'" or c == '"':
            j = i + 1
            while j < n:
                if sql[j] == c and sql[j + 1 : j + 2] == c:  # '' inside a literal
                    j += 2
                    continue
                if sql[j] == c:
                    break
                j += 1
            cur.append(sql[i : j + 1])
            i = j + 1
            continue
        tag = _DOLLAR.match(sql, i) if c == "$" else None
        if tag:
            j = sql.find(tag.group(0), tag.end())
            j = n if j < 0 else j + len(tag.group(0))
            cur.append(sql[i:j])
            i = j
            continue
        if c == ";":
            text = " ".join("".join(cur).split())
            if text:
                out.append(text)
            cur = []
        else:
            cur.append(c)
        i += 1
    text = " ".join("".join(cur).split())
    if text:
        out.append(text)
    return out


def _summary(statement: str, width: int = 76) -> str:
    return statement if len(statement) <= width else statement[: width - 1].rstrip() + "…"


def touched_tables(sql: str) -> list[str]:
    """Tables a migration's statements create, alter, fill or index (comments ignored)."""
    body = _COMMENT.sub("", sql)
    return sorted({m.group(1).lower() for m in _TOUCH.finditer(body)} - _KEYWORDS)


def rebuild_advice(sql: str, tables: list[str], existing: set[str] | None = None) -> list[str]:
    """Projectors to rebuild: those owning a table the file changes but did not create
    and that holds rows already (``existing``: tables in the database now; a projector
    fills a new table from the log's start on its own), and any the file names."""
    owners = {t: p.name for p in PROJECTORS for t in p.tables}
    created = {m.group(1).lower() for m in _CREATED.finditer(_COMMENT.sub("", sql))}
    names = {
        owners[t]
        for t in tables
        if t in owners and t not in created and (existing is None or t in existing)
    }
    for m in _DECLARED.finditer(sql):
        names |= {n.strip() for n in m.group(1).split(",") if n.strip()}
    return sorted(names)


def _describe(
    path: Path, state: str, recorded: tuple[Any, str | None] | None, existing: set[str] | None
) -> Migration:
    sql = path.read_text()
    tables = touched_tables(sql)
    return Migration(
        name=path.name,
        state=state,
        checksum=file_checksum(path),
        applied_at=recorded[0].isoformat() if recorded else None,
        recorded_checksum=recorded[1] if recorded else None,
        tables=tables,
        rebuild=rebuild_advice(sql, tables, existing),
        statements=[_summary(st) for st in statements(sql)],
    )


def status(conninfo: str, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration file and every recorded one, in order, without changing anything
    (the bookkeeping table is created if the database has never been migrated)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        ensure_migrations_table(conn)
        done = applied_migrations(conn)
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        existing = {r[0] for r in rows.fetchall()}
    out: list[Migration] = []
    files = {p.name: p for p in migration_files(directory)}
    for name in sorted(set(files) | set(done)):
        rec = done.get(name)
        if name not in files:
            assert rec is not None
            out.append(Migration(name, "missing", None, rec[0].isoformat(), rec[1]))
            continue
        m = _describe(
            files[name], "pending" if rec is None else "applied", rec, None if rec else existing
        )
        if rec is not None and rec[1] is not None and rec[1] != m.checksum:
            m.state = "edited"
        out.append(m)
    return out


def _print_table(rows: list[Migration]) -> None:
    for m in rows:
        when = (m.applied_at or "")[:19].replace("T", " ")
        mark = {"applied": " ", "pending": "+", "edited": "!", "missing": "?"}[m.state]
        unknown = m.state == "applied" and m.recorded_checksum is None
        note = "  (no checksum recorded)" if unknown else ""
        print(f"{mark} {m.name:<34} {m.state:<8} {when:<19} {(m.checksum or '')[:12]}{note}")
    counts = {s: sum(m.state == s for m in rows) for s in ("applied", "pending", "edited")}
    print(
        f"{counts['applied']} applied, {counts['pending']} pending, {counts['edited']} edited"
        + ("  (! = changed since it ran: `mgw migrate up` refuses)" if counts["edited"] else "")
    )
    if any(m.state == "applied" and m.recorded_checksum is None for m in rows):
        print(
            "applied before checksums were kept: the next `mgw migrate up` records each such"
            " file's checksum as it is now"
        )


def run_status(conninfo: str, *, as_json: bool, directory: Path = MIGRATIONS_DIR) -> int:
    rows = status(conninfo, directory)
    if as_json:
        print(json.dumps({"migrations": [asdict(m) for m in rows]}))
    else:
        _print_table(rows)
    return 1 if any(m.state == "edited" for m in rows) else 0


def run_plan(
    conninfo: str, *, as_json: bool, show_sql: bool = True, directory: Path = MIGRATIONS_DIR
) -> int:
    rows = status(conninfo, directory)
    pending = [m for m in rows if m.state == "pending"]
    edited = [m for m in rows if m.state == "edited"]
    rebuild = sorted({p for m in pending for p in m.rebuild})
    if as_json:
        out = {
            "pending": [
                {**asdict(m), "sql": (directory / m.name).read_text()} if show_sql else asdict(m)
                for m in pending
            ],
            "edited": [m.name for m in edited],
            "rebuild": rebuild,
        }
        print(json.dumps(out))
        return 1 if edited else 0
    if not pending:
        print("nothing to apply: the database has every migration")
    for m in pending:
        print(f"-- {m.name}  (sha256 {m.checksum})")
        print(f"-- {len(m.statements)} statement(s):")
        for st in m.statements:
            print(f"--   {st}")
        print(f"-- touches: {', '.join(m.tables) or 'no table'}")
        if m.rebuild:
            print(f"-- projections to rebuild after: {', '.join(m.rebuild)}")
        if show_sql:
            print((directory / m.name).read_text().rstrip())
        print()
    for m in edited:
        print(f"! {m.name} was edited after it ran: `mgw migrate up` will refuse")
    _advise(rebuild)
    return 1 if edited else 0


def run_up(
    conninfo: str, *, as_json: bool, allow_edited: bool = False, directory: Path = MIGRATIONS_DIR
) -> int:
    before = {m.name: m for m in status(conninfo, directory)}
    try:
        applied = migrate(conninfo, directory, allow_edited=allow_edited)
    except MigrationEdited as exc:
        if as_json:
            print(json.dumps({"error": str(exc), "edited": [e[0] for e in exc.edited]}))
        else:
            print(f"mgw migrate: {exc}", file=sys.stderr)
        return 1
    rebuild = sorted({p for n in applied for p in before[n].rebuild})
    if as_json:
        print(json.dumps({"applied": applied, "rebuild": rebuild}))
        return 0
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    _advise(rebuild)
    return 0


def _advise(rebuild: list[str]) -> None:
    for name in rebuild:
        print(
            f"then: `mgw rebuild {name}` (while everything runs) rebuilds the {name} projection"
            " from the log under the new schema; readers keep the old one until the switch"
        )
