"""The reliability proofs' results: collected by the tests, printed and saved by the
conftest at the end of the session (a module of its own: pytest imports conftest files
under another name, so state kept there would be a second copy)."""

from __future__ import annotations

import json
import os
import re
from typing import Any

from tests.helpers import ROOT

RESULTS_FILE = ROOT / ".local" / "proof" / "reliability-results.json"
DOC = ROOT / "docs" / "reliability.md"
MATRIX: list[dict[str, Any]] = []
POOL: dict[str, Any] = {}


def full_matrix() -> bool:
    """Every row of the fault matrix (``make proof``: ``FAULT_MATRIX=full``); else the rows
    ``make test`` runs, at least one per dependency (docs/reliability.md)."""
    return os.environ.get("FAULT_MATRIX", "") == "full"


def messages_per_row() -> int:
    """``FAULT_MESSAGES`` per row (``make proof``: 12), else 6."""
    return max(6, int(os.environ.get("FAULT_MESSAGES", "6")))


MATRIX_COLUMNS = [
    ("dependency", "dependency"),
    ("function", "function"),
    ("fault", "fault"),
    ("messages", "messages"),
    ("first_try", "handled 1st try"),
    ("redelivered", "handled after redelivery"),
    ("outcomes", "outcomes"),
    ("dead_lettered", "dead-lettered (reason logged)"),
    ("lost", "lost"),
    ("duplicated", "duplicated"),
    ("recovered", "recovered, same Deps"),
]


def matrix_markdown() -> str:
    head = "| " + " | ".join(title for _, title in MATRIX_COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in MATRIX_COLUMNS) + "|"
    lines = [head, rule]
    for row in MATRIX:
        cells = []
        for key, _ in MATRIX_COLUMNS:
            value = row.get(key, "")
            if isinstance(value, bool):
                value = "yes" if value else "**no**"
            cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pool_markdown() -> str:
    if not POOL:
        return ""
    lines = ["| figure | before | after | bound |", "|---|---|---|---|"]
    for name, values in POOL["figures"].items():
        lines.append(f"| {name} | {values['before']} | {values['after']} | {values['bound']} |")
    mix = ", ".join(f"{k} {v}" for k, v in sorted(POOL["mix"].items()))
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(POOL["outcomes"].items()))
    return f"{POOL['deliveries']} deliveries ({mix}); outcomes: {outcomes}.\n\n" + "\n".join(lines)


def _replace_block(doc: str, name: str, body: str) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body}\n{end}"
    if begin in doc and end in doc:
        return re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _m: block, doc, flags=re.S)
    return doc


def save() -> None:
    """Write this run's figures (and, with RELIABILITY_WRITE_DOCS=1, the doc tables)."""
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    previous: dict[str, Any] = {}
    if RESULTS_FILE.exists():
        try:
            previous = json.loads(RESULTS_FILE.read_text())
        except ValueError:
            previous = {}
    if MATRIX:
        previous["matrix"] = MATRIX
        previous["messages_per_row"] = messages_per_row()
    if POOL:
        previous["pool"] = POOL
    RESULTS_FILE.write_text(json.dumps(previous, indent=2, sort_keys=True, default=str))
    if os.environ.get("RELIABILITY_WRITE_DOCS") == "1" and DOC.exists():
        doc = DOC.read_text()
        if MATRIX:
            doc = _replace_block(doc, "fault-matrix", matrix_markdown())
        if POOL:
            doc = _replace_block(doc, "pool-hygiene", pool_markdown())
        DOC.write_text(doc)
