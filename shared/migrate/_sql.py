"""Rendered migration SQL cut into statements by PostgreSQL's own parser (pglast).

One parse serves both the linter (the parse tree) and the applier (the statement text), so
the statements that run are exactly the statements that were checked. pglast's JSON parse
tree is used rather than its Python node objects: the same tree, several times faster to
load.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pglast.parser import ParseError, parse_sql_json

__all__ = ["ParseError", "Statement", "parse_statements"]

Node = dict[str, Any]

_LEADING_COMMENTS = re.compile(r"\A(?:\s*--[^\n]*\n)*\s*")


@dataclass(frozen=True)
class Statement:
    """One SQL statement: its parse-tree node type (``IndexStmt``), node, and text."""

    kind: str
    node: Node
    sql: str

    @property
    def transaction(self) -> str | None:
        """``BEGIN``/``COMMIT``/``ROLLBACK`` for transaction control, else None."""
        if self.kind != "TransactionStmt":
            return None
        kind = str(self.node.get("kind", ""))
        return {
            "TRANS_STMT_BEGIN": "BEGIN",
            "TRANS_STMT_START": "BEGIN",
            "TRANS_STMT_COMMIT": "COMMIT",
            "TRANS_STMT_ROLLBACK": "ROLLBACK",
        }.get(kind)

    @property
    def relation(self) -> str | None:
        """The table a DML/DDL statement names directly (``relation.relname``)."""
        relation = self.node.get("relation")
        return relation.get("relname") if isinstance(relation, dict) else None


def parse_statements(sql: str) -> tuple[Statement, ...]:
    """Statements of ``sql`` in order; raises :class:`ParseError` on invalid SQL.

    Text keeps the statement as written, minus leading ``--`` comment lines (Alembic's
    ``-- Running upgrade`` markers) and the terminating semicolon.
    """
    tree = json.loads(parse_sql_json(sql))
    raw_sql = sql.encode("utf-8")  # the parser's locations are byte offsets
    out: list[Statement] = []
    for raw in tree.get("stmts", []):
        [(kind, node)] = raw["stmt"].items()
        start, length = raw.get("stmt_location", 0), raw.get("stmt_len", 0)  # 0: to the end
        text = raw_sql[start : start + length if length else None].decode("utf-8")
        text = _LEADING_COMMENTS.sub("", text).strip().rstrip(";").rstrip()
        out.append(Statement(kind, node, text))
    return tuple(out)
