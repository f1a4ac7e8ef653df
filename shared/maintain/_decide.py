"""Routine database care as pure functions over typed inputs (docs/maintain.md).

What a fresh build of an index would weigh (the bloat estimate), what to do with each
PostgreSQL index, and which Neo4j indexes are wrong: no I/O here, so every row of the
tables below is a plain test (tests/shared/maintain/test_decide.py).

PostgreSQL, applied in this order to each index:

| index state | action |
|---|---|
| invalid, named ``*_ccnew*`` | attention: left by a failed REINDEX CONCURRENTLY |
| invalid, named ``*_ccold*`` | attention: the old copy a REINDEX CONCURRENTLY could not drop |
| invalid, any other name | attention: a failed CREATE INDEX CONCURRENTLY (unused, still written) |
| no estimate for its access method (gin, gist, brin, hash, ...) | none |
| no statistics to estimate from (never analyzed, a column without stats, ``name``) | none |
| smaller than ``min_index_bytes`` | none |
| estimated bloat under ``reindex_bloat_ratio`` | none |
| backs an exclusion constraint (REINDEX CONCURRENTLY refuses it) | attention |
| otherwise | reindex (CONCURRENTLY), biggest reclaim first, at most ``max_reindexes`` |

Neo4j, each index (a constraint through the index it owns):

| state | result |
|---|---|
| ONLINE | fine |
| FAILED | problem, with the first line of Neo4j's failure message |
| POPULATING since less than ``graph_populating_max_s`` | listed, no problem |
| POPULATING for longer (earlier runs saw it populating too) | problem |
| anything else, or a constraint whose index is missing | problem |
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from shared.events import GraphIndexCare

#: PostgreSQL's page layout (block size comes from the server; these do not change).
PAGE_HEADER = 24
#: MAXALIGN on every 64-bit platform PostgreSQL runs on (Cloud SQL, the local stack).
MAXALIGN = 8
ITEM_ID = 4
#: B-tree: special space (BTPageOpaqueData) and the index tuple header (IndexTupleData,
#: plus IndexAttributeBitMapData when a column may be NULL). ioguix's estimate.
BTREE_OPAQUE = 16
INDEX_TUPLE_HEADER = 8
NULL_BITMAP = 4
BTREE_DEFAULT_FILLFACTOR = 90
#: pgvector (src/hnsw.h, src/ivfflat.h; calibrated on 0.6.2, docs/maintain.md): the
#: special space of its pages, the fixed part of an HNSW element tuple before the vector
#: (type, level, deleted, unused, 10 heap TIDs, the neighbour TID, padding), a neighbour
#: tuple's header and TID size, a vector's varlena header (length, dim, unused), and an
#: IVFFlat list tuple's fixed part (start and insert page).
PGVECTOR_OPAQUE = 8
HNSW_ELEMENT_FIXED = 72
HNSW_NEIGHBOR_HEADER = 4
ITEM_POINTER = 6
VECTOR_HEADER = 8
IVFFLAT_LIST_FIXED = 8
HNSW_DEFAULT_M = 16
IVFFLAT_DEFAULT_LISTS = 100
#: Bytes per dimension of the pgvector types the layout estimate knows.
BYTES_PER_DIMENSION = {"vector": 4, "halfvec": 2}

VECTOR_METHODS = frozenset({"hnsw", "ivfflat"})
_CCNEW = re.compile(r"_ccnew\d*$")
_CCOLD = re.compile(r"_ccold\d*$")


def maxalign(size: float) -> int:
    """``size`` rounded up to the platform's alignment."""
    return math.ceil(size / MAXALIGN) * MAXALIGN


@dataclass(frozen=True)
class ColumnStats:
    """One column of an index as ANALYZE saw it (``pg_stats``); ``avg_width`` None: no
    statistics for it."""

    avg_width: float | None
    null_frac: float = 0.0
    type_name: str = ""
    typmod: int = -1


@dataclass(frozen=True)
class IndexFacts:
    """Everything the decision needs about one index, read from the catalogs right after
    ANALYZE (``reltuples`` is then the number of entries a fresh build would hold)."""

    schema: str
    table: str
    name: str
    method: str
    size_bytes: int
    reltuples: float
    valid: bool = True
    exclusion: bool = False
    columns: tuple[ColumnStats, ...] = ()
    options: Mapping[str, str] = field(default_factory=dict)
    block_size: int = 8192
    index_oid: int = 0
    table_oid: int = 0

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Estimate:
    """The size a fresh build would have (None: not estimated, and why)."""

    expected_bytes: int | None
    method: str | None = None
    note: str | None = None


def btree_expected_pages(
    reltuples: float,
    columns: Sequence[ColumnStats],
    fillfactor: int = BTREE_DEFAULT_FILLFACTOR,
    block_size: int = 8192,
) -> int:
    """Pages of a freshly built B-tree holding ``reltuples`` entries: ioguix's
    statistics-based estimate (pgsql-bloat-estimation, btree_bloat.sql). Leaf pages
    filled to ``fillfactor`` with tuples of the columns' average width (NULLs weighted
    out, a null bitmap when any column has NULLs), plus the metapage. It ignores
    deduplication (PostgreSQL 13+), so for keys with many duplicates it expects more than
    a build gives: it may miss bloat there, never invent it."""
    header = INDEX_TUPLE_HEADER + (NULL_BITMAP if any(c.null_frac > 0 for c in columns) else 0)
    data = sum((1 - c.null_frac) * (c.avg_width or 0) for c in columns)
    tuple_size = maxalign(header) + (maxalign(data) if data > 0 else 0)
    usable = (block_size - BTREE_OPAQUE - PAGE_HEADER) * fillfactor / 100
    per_page = max(1, math.floor(usable / (ITEM_ID + tuple_size)))
    return 1 + math.ceil(max(reltuples, 0) / per_page)


def hnsw_expected_pages(
    elements: float, dimensions: int, bytes_per_dimension: int, m: int, block_size: int = 8192
) -> int:
    """Pages of a fresh pgvector HNSW build: one element tuple (its vector) and one
    neighbour tuple per element, kept on the same page when both fit (as the build does),
    plus the metapage. A neighbour tuple holds ``(level + 2) * m`` TIDs; levels follow
    HNSW's ``1 / ln(m)`` distribution, so the mean level is ``1 / (m - 1)``."""
    element = maxalign(HNSW_ELEMENT_FIXED + VECTOR_HEADER + bytes_per_dimension * dimensions)
    neighbors = maxalign(HNSW_NEIGHBOR_HEADER + (2 + 1 / (m - 1)) * m * ITEM_POINTER)
    usable = block_size - PAGE_HEADER - PGVECTOR_OPAQUE
    pair = element + neighbors + 2 * ITEM_ID
    count = max(elements, 0)
    if pair <= usable:
        return 1 + math.ceil(count / (usable // pair))
    return 1 + math.ceil(count * pair / usable)


def ivfflat_expected_pages(
    entries: float, dimensions: int, bytes_per_dimension: int, lists: int, block_size: int = 8192
) -> int:
    """Pages of a fresh pgvector IVFFlat build: the metapage, the list (centroid) pages,
    and each list's entries on pages of their own; every list may end on a partly filled
    page, so this is an upper bound by at most ``lists`` pages (it never invents bloat)."""
    usable = block_size - PAGE_HEADER - PGVECTOR_OPAQUE
    vector = VECTOR_HEADER + bytes_per_dimension * dimensions
    list_tuple = maxalign(IVFFLAT_LIST_FIXED + vector) + ITEM_ID
    entry = maxalign(INDEX_TUPLE_HEADER + vector) + ITEM_ID
    list_pages = math.ceil(lists / max(1, usable // list_tuple))
    entry_pages = math.ceil(max(entries, 0) / max(1, usable // entry))
    return 1 + list_pages + entry_pages + lists


def _option(options: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(options.get(name, default))
    except ValueError:
        return default


def estimate(facts: IndexFacts) -> Estimate:
    """The size a fresh build of ``facts``' index would have, by its access method."""
    if facts.reltuples < 0:
        return Estimate(None, note="never analyzed: no statistics to estimate from")
    if facts.method == "btree":
        fillfactor = _option(facts.options, "fillfactor", BTREE_DEFAULT_FILLFACTOR)
        if facts.reltuples == 0:  # empty (ANALYZE keeps no column statistics for it)
            pages = btree_expected_pages(0, (), fillfactor, facts.block_size)
            return Estimate(pages * facts.block_size, "statistics (ioguix btree estimate)")
        if not facts.columns or any(c.avg_width is None for c in facts.columns):
            return Estimate(None, note="a column has no statistics to estimate from")
        if any(c.type_name == "name" for c in facts.columns):
            return Estimate(None, note="the name type has no usable statistics")
        pages = btree_expected_pages(facts.reltuples, facts.columns, fillfactor, facts.block_size)
        return Estimate(pages * facts.block_size, "statistics (ioguix btree estimate)")
    if facts.method in VECTOR_METHODS:
        if len(facts.columns) != 1:
            return Estimate(None, note=f"{facts.method} on {len(facts.columns)} columns")
        column = facts.columns[0]
        per_dimension = BYTES_PER_DIMENSION.get(column.type_name)
        if per_dimension is None or column.typmod <= 0:
            return Estimate(None, note=f"no layout estimate for {column.type_name or '?'} here")
        entries = facts.reltuples * (1 - column.null_frac)
        if facts.method == "hnsw":
            m = max(2, _option(facts.options, "m", HNSW_DEFAULT_M))
            pages = hnsw_expected_pages(entries, column.typmod, per_dimension, m, facts.block_size)
        else:
            lists = max(1, _option(facts.options, "lists", IVFFLAT_DEFAULT_LISTS))
            pages = ivfflat_expected_pages(
                entries, column.typmod, per_dimension, lists, facts.block_size
            )
        return Estimate(pages * facts.block_size, f"pgvector {facts.method} layout")
    return Estimate(None, note=f"no bloat estimate for {facts.method} indexes")


def bloat_ratio(size_bytes: int, expected_bytes: int | None) -> float | None:
    """The share of the index a rebuild would reclaim, in [0, 1] (None: unknown)."""
    if expected_bytes is None or size_bytes <= 0:
        return None
    return max(0.0, 1 - expected_bytes / size_bytes)


@dataclass(frozen=True)
class Thresholds:
    """From ``Settings.maintain``: when a rebuild is worth it."""

    reindex_bloat_ratio: float = 0.5
    min_index_bytes: int = 8 * 1024 * 1024


Verdict = Literal["none", "reindex", "attention"]


@dataclass(frozen=True)
class IndexDecision:
    facts: IndexFacts
    estimate: Estimate
    bloat: float | None
    verdict: Verdict
    reason: str

    @property
    def reclaim_bytes(self) -> int:
        """What a rebuild would give back (0 when unknown)."""
        expected = self.estimate.expected_bytes
        return max(0, self.facts.size_bytes - expected) if expected is not None else 0


def _size(value: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"  # pragma: no cover (the loop returns)


def _pct(ratio: float) -> str:
    return f"{ratio * 100:.0f} %"


def decide_index(facts: IndexFacts, thresholds: Thresholds) -> IndexDecision:
    """What to do with one index (the table in this module's docstring). No I/O."""
    guess = estimate(facts)
    bloat = bloat_ratio(facts.size_bytes, guess.expected_bytes)

    def verdict(kind: Verdict, reason: str) -> IndexDecision:
        return IndexDecision(facts, guess, bloat, kind, reason)

    if not facts.valid:
        if _CCNEW.search(facts.name):
            return verdict(
                "attention",
                "invalid: left by a failed REINDEX CONCURRENTLY; drop it "
                "(DROP INDEX CONCURRENTLY), the original is intact",
            )
        if _CCOLD.search(facts.name):
            return verdict(
                "attention",
                "invalid: the old copy a REINDEX CONCURRENTLY could not drop; drop it "
                "(DROP INDEX CONCURRENTLY)",
            )
        return verdict(
            "attention",
            "invalid (a failed CREATE INDEX CONCURRENTLY?): queries do not use it, writes "
            "still maintain it; rebuild it (REINDEX INDEX CONCURRENTLY) or drop it",
        )
    if guess.expected_bytes is None or bloat is None:
        return verdict("none", guess.note or "not estimated")
    size = f"{_size(facts.size_bytes)}, a fresh build about {_size(guess.expected_bytes)}"
    if facts.size_bytes < thresholds.min_index_bytes:
        return verdict(
            "none", f"{size}: under the {_size(thresholds.min_index_bytes)} worth rebuilding"
        )
    if bloat < thresholds.reindex_bloat_ratio:
        return verdict(
            "none", f"{size}: bloat {_pct(bloat)}, under {_pct(thresholds.reindex_bloat_ratio)}"
        )
    if facts.exclusion:
        return verdict(
            "attention",
            f"{size}: bloat {_pct(bloat)}, but REINDEX CONCURRENTLY cannot rebuild an exclusion "
            "constraint's index; rebuild it in a maintenance window",
        )
    return verdict(
        "reindex", f"{size}: bloat {_pct(bloat)} ≥ {_pct(thresholds.reindex_bloat_ratio)}"
    )


def plan(decisions: Iterable[IndexDecision], max_reindexes: int) -> list[IndexDecision]:
    """The rebuilds, biggest reclaim first; the first ``max_reindexes`` run this time."""
    chosen = [d for d in decisions if d.verdict == "reindex"]
    chosen.sort(key=lambda d: (-d.reclaim_bytes, d.facts.qualified))
    return chosen[: max(0, max_reindexes)]


# --- Neo4j -----------------------------------------------------------------------------

#: Longest piece of Neo4j's failure message kept (its first line; the rest is a stack).
FAILURE_SHOWN = 300


@dataclass(frozen=True)
class GraphIndex:
    """One row of ``SHOW INDEXES``."""

    name: str
    type: str
    state: str
    population_percent: float | None = None
    owning_constraint: str | None = None
    failure_message: str | None = None


@dataclass(frozen=True)
class GraphConstraint:
    """One row of ``SHOW CONSTRAINTS`` (``owned_index`` None: it has no index, e.g. an
    existence constraint)."""

    name: str
    type: str
    owned_index: str | None = None


#: Earlier runs, newest first: when each ran and the Neo4j indexes it saw POPULATING.
History = Sequence[tuple[datetime, frozenset[str]]]


def populating_since(name: str, now: datetime, history: History) -> datetime:
    """When ``name`` started POPULATING as far as the records tell: the oldest run of the
    unbroken series of runs, newest first, that saw it populating (``now`` if none)."""
    since = now
    for ran_at, populating in history:
        if name not in populating:
            break
        since = min(since, ran_at)
    return since


def _first_line(message: str | None) -> str:
    line = (message or "").strip().splitlines()[0] if (message or "").strip() else ""
    return line[:FAILURE_SHOWN] + ("…" if len(line) > FAILURE_SHOWN else "")


def _span(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours < 48 else f"{hours // 24} days"


def select_graph(
    indexes: Sequence[GraphIndex], constraints: Sequence[GraphConstraint], pattern: str | None
) -> tuple[list[GraphIndex], list[GraphConstraint]]:
    """The indexes and constraints whose name (or, for an index, its constraint's name)
    matches ``pattern`` (a regular expression, ``Settings.maintain.graph_name_pattern``;
    None: all of them)."""
    if pattern is None:
        return list(indexes), list(constraints)
    wanted = re.compile(pattern)
    return (
        [i for i in indexes if wanted.search(i.name) or wanted.search(i.owning_constraint or "")],
        [c for c in constraints if wanted.search(c.name)],
    )


def decide_graph(
    indexes: Sequence[GraphIndex],
    constraints: Sequence[GraphConstraint],
    now: datetime,
    history: History,
    populating_max: timedelta,
) -> list[GraphIndexCare]:
    """The Neo4j indexes and constraints that are not ONLINE, each with its problem (None
    for one still populating within ``populating_max``). No I/O."""
    found: list[GraphIndexCare] = []
    for index in indexes:
        kind: Literal["index", "constraint"] = "constraint" if index.owning_constraint else "index"
        label = index.owning_constraint or index.name
        owner = f" (index {index.name})" if index.owning_constraint else ""
        state = index.state.upper()
        if state == "ONLINE":
            continue
        problem: str | None
        if state == "FAILED":
            message = _first_line(index.failure_message) or "no failure message"
            problem = f"FAILED{owner}: {message}"
        elif state == "POPULATING":
            since = populating_since(label, now, history)
            problem = None
            if now - since >= populating_max:
                problem = (
                    f"POPULATING{owner} for {_span(now - since)} (at least since "
                    f"{since:%Y-%m-%d %H:%M} UTC), {index.population_percent or 0:.0f} % done"
                )
        else:
            problem = f"state {state}{owner}"
        found.append(
            GraphIndexCare(
                name=label,
                kind=kind,
                type=index.type,
                state=state,
                population_percent=index.population_percent,
                problem=problem,
            )
        )
    names = {index.name for index in indexes}
    for constraint in constraints:
        if constraint.owned_index is not None and constraint.owned_index not in names:
            found.append(
                GraphIndexCare(
                    name=constraint.name,
                    kind="constraint",
                    type=constraint.type,
                    state="MISSING",
                    problem=f"its index {constraint.owned_index} is missing",
                )
            )
    return found
