"""Migration lint: the offline SQL of migrations, parsed by PostgreSQL's own parser (pglast).

Each rule has a stable id (what findings, allow annotations and runbooks name) and a
severity: ``unsafe`` findings block the run, ``destructive`` ones block too and, once a
migration allows them, mark the release ``breaking`` (old code may no longer run against
the schema; the rollback function reads that). ``info`` never blocks.

A migration allows rules with a visible comment in its file::

    # sightops: allow=drop-column,rename reason="spending_habits moved to attributes in 0007"

"Existing table": one that may have rows and users when the statement runs. Two scopes:

- ``pending`` (the migrate function): the pending migrations apply together, now, so a
  table created by an earlier pending migration, or earlier in the same one, is new;
- ``migration`` (CI, ``sightops migrations lint`` from base): nobody knows which
  migrations will ship together, so each is judged alone and only tables it creates
  itself are new.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from shared.events import LintFinding, LintSeverity
from shared.migrate._alembic import RenderedMigration
from shared.migrate._sql import ParseError

#: The runtime's dedupe table: every migrate delivery holds a row lock on it while migrating.
RECEIPTS = ("ops", "event_receipts")


@dataclass(frozen=True)
class Rule:
    id: str
    severity: LintSeverity
    summary: str
    allowable: bool = True


RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in (
        Rule(
            "add-index-non-concurrently",
            "unsafe",
            "CREATE INDEX without CONCURRENTLY on an existing table blocks its writes",
        ),
        Rule(
            "add-column-not-null-without-default",
            "unsafe",
            "ADD COLUMN ... NOT NULL without a DEFAULT fails on a table with rows",
        ),
        Rule(
            "foreign-key-without-not-valid",
            "unsafe",
            "a new foreign key on an existing table is validated under lock; add it NOT VALID",
        ),
        Rule(
            "set-not-null",
            "unsafe",
            "SET NOT NULL scans the whole table under an ACCESS EXCLUSIVE lock",
        ),
        Rule(
            "missing-lock-timeout",
            "unsafe",
            "DDL before SET lock_timeout can queue behind a long transaction and block the table",
        ),
        Rule(
            "locks-migrate-receipts",
            "unsafe",
            "DDL on ops.event_receipts waits for the migrate delivery that runs it",
        ),
        Rule("drop-column", "destructive", "DROP COLUMN breaks code that still reads it"),
        Rule("drop-table", "destructive", "DROP TABLE breaks code that still reads it"),
        Rule("rename", "destructive", "renaming a table or column breaks code using the old name"),
        Rule(
            "alter-column-type",
            "destructive",
            "ALTER COLUMN TYPE rewrites the table under lock and may break old code",
        ),
        Rule(
            "unparseable-sql",
            "unsafe",
            "the rendered SQL could not be parsed, so it cannot be checked",
            allowable=False,
        ),
        Rule(
            "invalid-allow",
            "unsafe",
            "a '# sightops: allow=' annotation names an unknown rule or gives no reason",
            allowable=False,
        ),
    )
}

_ALLOW = re.compile(r"#\s*sightops:\s*allow=(?P<rules>\S*)(?P<rest>.*)$", re.MULTILINE)
_REASON = re.compile(r'^\s+reason="(?P<reason>[^"]+)"\s*$')

Table = tuple[str, str]


@dataclass(frozen=True)
class Allowances:
    rules: frozenset[str]
    reasons: tuple[str, ...]
    problems: tuple[str, ...]


def parse_allowances(source: str) -> Allowances:
    """The rules a migration file allows, and what is wrong with its annotations."""
    rules: set[str] = set()
    reasons: list[str] = []
    problems: list[str] = []
    for match in _ALLOW.finditer(source):
        names = [n for n in match.group("rules").split(",") if n]
        reason = _REASON.match(match.group("rest"))
        unknown = [n for n in names if n not in RULES or not RULES[n].allowable]
        if not names or unknown:
            problems.append(f"unknown or non-allowable rule(s) {unknown or names}: {match[0]!r}")
        elif reason is None:
            problems.append(f'no reason="..." given: {match[0]!r}')
        else:
            rules.update(names)
            reasons.append(reason.group("reason"))
    return Allowances(frozenset(rules), tuple(reasons), tuple(problems))


def lint_migrations(
    migrations: Sequence[RenderedMigration], scope: Literal["pending", "migration"] = "pending"
) -> list[LintFinding]:
    """Findings for ``migrations`` (in apply order), with ``allowed`` set from annotations.

    ``scope`` says which tables count as new (module docstring).
    """
    created: set[Table] = set()
    findings: list[LintFinding] = []
    for migration in migrations:
        if scope == "migration":
            created = set()
        allowances = parse_allowances(migration.source)
        for problem in allowances.problems:
            findings.append(_finding("invalid-allow", migration.label, "", problem))
        for finding in _lint_one(migration, created):
            rule = RULES[finding.rule]
            allowed = rule.allowable and finding.rule in allowances.rules
            findings.append(finding.model_copy(update={"allowed": allowed}) if allowed else finding)
    return findings


def blocking(findings: Iterable[LintFinding]) -> list[LintFinding]:
    """Findings that stop a run: unsafe or destructive, and not allowed."""
    return [f for f in findings if f.severity != "info" and not f.allowed]


def destructive_migrations(findings: Iterable[LintFinding]) -> set[str]:
    """Labels of migrations with destructive findings (applied = release is breaking)."""
    return {f.migration for f in findings if f.severity == "destructive"}


def _finding(rule: str, migration: str, statement: str, message: str) -> LintFinding:
    return LintFinding(
        rule=rule,
        severity=RULES[rule].severity,
        migration=migration,
        statement=" ".join(statement.split()),
        message=message,
    )


Node = dict[str, Any]


def _unwrap(wrapped: Node) -> tuple[str, Node]:
    """``{"IndexStmt": {...}}`` -> ``("IndexStmt", {...})``."""
    [(kind, body)] = wrapped.items()
    return kind, body


def _table(rangevar: Node) -> Table:
    return (rangevar.get("schemaname") or "public", rangevar["relname"])


def _name(table: Table) -> str:
    return table[1] if table[0] == "public" else f"{table[0]}.{table[1]}"


def _is_lock_timeout_set(node: Node) -> bool | None:
    """True/False when ``node`` sets/clears lock_timeout; None when it is about another GUC."""
    if node.get("name") != "lock_timeout":
        return None
    args = node.get("args") or []
    if node.get("kind") != "VAR_SET_VALUE" or not args:
        return False  # RESET / SET ... TO DEFAULT: back to the server default (0: none)
    const = _unwrap(args[0])[1]
    if "sval" in const:
        raw = str(const["sval"].get("sval", ""))
    else:
        raw = str(const.get("ival", {}).get("ival", 0))  # the parser omits a zero
    return raw.strip().lower() not in {"0", "0ms", "0s", ""}


_BOOKKEEPING = frozenset({"TransactionStmt", "VariableShowStmt", "SelectStmt"})


def _is_bookkeeping(kind: str, node: Node) -> bool:
    """Alembic's own statements and transaction control: not the migration's DDL."""
    if kind in _BOOKKEEPING:
        return True
    return (node.get("relation") or {}).get("relname") == "alembic_version"


def _lint_one(migration: RenderedMigration, created: set[Table]) -> Iterator[LintFinding]:
    """Apply the rules statement by statement, in the order they run."""
    label = migration.label
    if "\x00" in migration.sql:  # the parser stops at NUL: what follows would go unchecked
        yield _finding(
            "unparseable-sql",
            label,
            migration.sql[: migration.sql.index("\x00")][-200:],
            "the rendered SQL contains a NUL character (PostgreSQL refuses it, and the parser "
            "would stop there, leaving the rest unchecked)",
        )
        return
    try:
        statements = migration.statements
    except ParseError as exc:
        yield _finding("unparseable-sql", label, migration.sql[:200], f"pglast: {exc}")
        return
    lock_timeout = False
    reported_lock_timeout = False
    for statement in statements:
        kind, node, sql = statement.kind, statement.node, statement.sql
        if kind == "VariableSetStmt":
            setting = _is_lock_timeout_set(node)
            if setting is not None:
                lock_timeout = setting
            continue
        if _is_bookkeeping(kind, node):
            continue
        if not lock_timeout and not reported_lock_timeout:
            reported_lock_timeout = True
            yield _finding(
                "missing-lock-timeout",
                label,
                sql,
                "set lock_timeout first (the template does: SET lock_timeout = '5s') so a "
                "statement waiting for its lock fails fast instead of blocking the table",
            )
        yield from _lint_statement(kind, node, sql, label, created)


def _lint_statement(
    kind: str, node: Node, sql: str, label: str, created: set[Table]
) -> Iterator[LintFinding]:
    def existing(table: Table) -> bool:
        return table not in created

    if kind == "CreateStmt":
        created.add(_table(node["relation"]))
    elif kind == "CreateTableAsStmt" and node.get("into"):
        created.add(_table(node["into"]["rel"]))
    elif kind == "IndexStmt":
        table = _table(node["relation"])
        yield from _receipts(table, sql, label, created)
        if not node.get("concurrent") and existing(table):
            yield _finding(
                "add-index-non-concurrently",
                label,
                sql,
                f"CREATE INDEX without CONCURRENTLY locks {_name(table)} against writes while "
                "it builds; use CREATE INDEX CONCURRENTLY inside "
                "op.get_context().autocommit_block()",
            )
    elif kind == "AlterTableStmt" and node.get("objtype") == "OBJECT_TABLE":
        table = _table(node["relation"])
        cmds = [_unwrap(c)[1] for c in node.get("cmds") or []]
        if {c.get("subtype") for c in cmds} - {"AT_ValidateConstraint"}:
            yield from _receipts(table, sql, label, created)
        if existing(table):
            for cmd in cmds:
                yield from _alter_cmd(cmd, table, sql, label)
    elif kind == "DropStmt" and node.get("removeType") == "OBJECT_TABLE":
        for names in node.get("objects") or []:
            parts = [_unwrap(item)[1]["sval"] for item in _unwrap(names)[1]["items"]]
            table = (parts[-2] if len(parts) > 1 else "public", parts[-1])
            yield from _receipts(table, sql, label, created)
            if existing(table):
                yield _finding(
                    "drop-table",
                    label,
                    sql,
                    f"DROP TABLE {_name(table)}: the running revision may still use it; drop "
                    "it in a release after the code stopped using it",
                )
            else:
                created.discard(table)
    elif kind == "RenameStmt" and node.get("relation"):
        yield from _rename(node, sql, label, created)
    elif kind == "TruncateStmt":
        for rangevar in node.get("relations") or []:
            yield from _receipts(_table(_unwrap(rangevar)[1]), sql, label, created)


def _alter_cmd(cmd: Node, table: Table, sql: str, label: str) -> Iterator[LintFinding]:
    subtype = cmd.get("subtype")
    name = _name(table)
    if subtype == "AT_AddColumn":
        column = _unwrap(cmd["def"])[1]
        constraints = [_unwrap(c)[1] for c in column.get("constraints") or []]
        contypes = {c.get("contype") for c in constraints}
        required = column.get("is_not_null") or contypes & {"CONSTR_NOTNULL", "CONSTR_PRIMARY"}
        filled = contypes & {"CONSTR_DEFAULT", "CONSTR_IDENTITY", "CONSTR_GENERATED"}
        if required and not filled:
            yield _finding(
                "add-column-not-null-without-default",
                label,
                sql,
                f"{name}.{column['colname']} is NOT NULL without a DEFAULT: fails if {name} "
                "has rows, and old code inserting without it breaks; add a DEFAULT",
            )
        if "CONSTR_FOREIGN" in contypes:
            yield _fk(label, sql, f"{name}.{column['colname']}")
    elif subtype == "AT_AddConstraint":
        constraint = _unwrap(cmd["def"])[1]
        if constraint.get("contype") == "CONSTR_FOREIGN" and not constraint.get("skip_validation"):
            yield _fk(label, sql, f"{name} ({constraint.get('conname') or 'unnamed'})")
    elif subtype == "AT_DropColumn":
        yield _finding(
            "drop-column",
            label,
            sql,
            f"DROP COLUMN {name}.{cmd.get('name')}: the running revision may still read or "
            "write it",
        )
    elif subtype == "AT_AlterColumnType":
        yield _finding(
            "alter-column-type",
            label,
            sql,
            f"ALTER COLUMN {name}.{cmd.get('name')} TYPE rewrites {name} under an ACCESS "
            "EXCLUSIVE lock and can break old code; add a new column and backfill instead",
        )
    elif subtype == "AT_SetNotNull":
        yield _finding(
            "set-not-null",
            label,
            sql,
            f"SET NOT NULL on {name}.{cmd.get('name')} scans {name} under an ACCESS EXCLUSIVE "
            "lock; add CHECK (... IS NOT NULL) NOT VALID, VALIDATE it, then SET NOT NULL",
        )


def _fk(label: str, sql: str, where: str) -> LintFinding:
    return _finding(
        "foreign-key-without-not-valid",
        label,
        sql,
        f"foreign key on {where} is validated while both tables are locked; add it with "
        "NOT VALID and VALIDATE CONSTRAINT in a later migration",
    )


def _rename(node: Node, sql: str, label: str, created: set[Table]) -> Iterator[LintFinding]:
    table = _table(node["relation"])
    rename_type = node.get("renameType")
    if rename_type in {"OBJECT_TABLE", "OBJECT_VIEW"}:
        yield from _receipts(table, sql, label, created)
        if table in created:
            created.discard(table)
            created.add((table[0], node["newname"]))
            return
        what = f"table {_name(table)} to {node['newname']}"
    elif rename_type == "OBJECT_COLUMN":
        yield from _receipts(table, sql, label, created)
        if table in created:
            return
        what = f"column {_name(table)}.{node.get('subname')} to {node['newname']}"
    else:
        return  # indexes, constraints: invisible to application code
    yield _finding(
        "rename",
        label,
        sql,
        f"renaming {what} breaks the running revision; add the new name, migrate the code, "
        "drop the old name later",
    )


def _receipts(table: Table, sql: str, label: str, created: set[Table]) -> Iterator[LintFinding]:
    if table == RECEIPTS and table not in created:
        yield _finding(
            "locks-migrate-receipts",
            label,
            sql,
            "the migrate delivery running this migration holds a row lock on "
            "ops.event_receipts, so this statement would wait for it until lock_timeout; "
            "apply it by hand before the deploy (docs/runbooks/migration-failed.md)",
        )
