"""The KPI aggregates: one SQL statement and one Cypher query, both index-driven.

SQL: every subquery is bounded by ``project_id`` and answered from an index
(``ix_personas_project_id_created_at`` as an index-only scan for both persona counts,
``ix_focus_groups_project_id_status`` for the groups, then
``ix_focus_group_responses_focus_group_id`` once per group: the LATERAL keeps the cost
proportional to the project's own answers, where a join would let the planner hash the
whole responses table). One statement is one snapshot, so
the numbers are mutually consistent. Cypher: ``NodeIndexSeek`` on
``:Persona(project_id)``, then ``COUNT {}`` per persona, which Neo4j answers from the
node's relationship degree without expanding the relationships.
tests/shared/kpi/test_queries.py checks both plans on seeded data.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from shared.db import transaction
from shared.errors import PermanentError, TransientError
from shared.graph import raise_if_transient
from shared.kpi.model import NEW_PERSONA_WINDOW_DAYS, GraphKpis, ProjectKpis

if TYPE_CHECKING:
    import neo4j
    from neo4j import Driver
    from sqlalchemy.engine import Engine


class ProjectNotFoundError(PermanentError):
    """No project with this id exists (404; never cached)."""


KPI_SQL = """
SELECT p.name, p.archived_at,
       per.total AS personas_total, per.new AS personas_new,
       fg.total AS focus_groups_total, fg.running AS focus_groups_running,
       fg.completed AS focus_groups_completed,
       resp.total AS responses_total, resp.avg_latency AS avg_latency
FROM projects p
CROSS JOIN (
    SELECT count(*) AS total, count(*) FILTER (WHERE created_at >= :since) AS new
    FROM personas WHERE project_id = :project_id
) per
CROSS JOIN (
    SELECT count(*) AS total,
           count(*) FILTER (WHERE status = 'running') AS running,
           count(*) FILTER (WHERE status = 'completed') AS completed
    FROM focus_groups WHERE project_id = :project_id
) fg
CROSS JOIN (
    SELECT coalesce(sum(per_group.n), 0) AS total,
           sum(per_group.latency_sum)::float8 / nullif(sum(per_group.latency_n), 0)
               AS avg_latency
    FROM focus_groups g
    CROSS JOIN LATERAL (
        SELECT count(*) AS n, sum(r.latency_ms) AS latency_sum,
               count(r.latency_ms) AS latency_n
        FROM focus_group_responses r WHERE r.focus_group_id = g.id
    ) per_group
    WHERE g.project_id = :project_id
) resp
WHERE p.id = :project_id
"""

KPI_CYPHER = """
MATCH (p:Persona {project_id: $project_id})
RETURN count(p) AS personas,
       sum(COUNT { (p)-[:INFLUENCES]->() }) AS influences,
       sum(COUNT { (p)-[:INTERESTED_IN]->() }) AS interested_in
"""

#: Neo4j's codes for a transaction that outlived its timeout (client- or server-set).
_NEO4J_TIMED_OUT = "Neo.ClientError.Transaction.TransactionTimedOut"

ACTIVE_PROJECTS_SQL = "SELECT id FROM projects WHERE archived_at IS NULL ORDER BY id"


def sql_aggregates(engine: Engine, project_id: uuid.UUID, now: datetime) -> dict[str, Any] | None:
    """The PostgreSQL half, or None when the project does not exist."""
    since = now - timedelta(days=NEW_PERSONA_WINDOW_DAYS)
    with transaction(engine) as conn:
        row = (
            conn.execute(text(KPI_SQL), {"project_id": project_id, "since": since})
            .mappings()
            .first()
        )
    return dict(row) if row is not None else None


def read_single(
    driver: Driver, cypher: str, params: dict[str, Any], timeout_s: float
) -> neo4j.Record:
    """One record from an auto-commit read, bounded by ``timeout_s``; an outage or the
    timeout becomes ``TransientError`` at once.

    Without a timeout Neo4j lets a transaction run forever (``db.transaction.timeout`` is
    unlimited by default), so a slow or blocked graph would hang the request. Also
    deliberately without the driver's managed-transaction retries (up to 10 s): a request
    should fail fast to its stale value or a 503, not hold callers past their bounded wait.
    """
    import neo4j

    try:
        with driver.session(default_access_mode=neo4j.READ_ACCESS) as session:
            return session.run(neo4j.Query(cypher, timeout=timeout_s), params).single(strict=True)
    except neo4j.exceptions.ClientError as exc:
        if (exc.code or "").startswith(_NEO4J_TIMED_OUT):
            raise TransientError(f"neo4j query timed out after {timeout_s:g}s") from exc
        raise
    except Exception as exc:
        raise_if_transient(exc)
        raise


def graph_aggregates(driver: Driver, project_id: uuid.UUID, timeout_s: float) -> GraphKpis:
    """The Neo4j half (see :func:`read_single` for its failure modes)."""
    record = read_single(driver, KPI_CYPHER, {"project_id": str(project_id)}, timeout_s)
    influences = int(record["influences"] or 0)
    interested_in = int(record["interested_in"] or 0)
    return GraphKpis(
        personas=int(record["personas"]),
        influences=influences,
        interested_in=interested_in,
        relationships_total=influences + interested_in,
    )


def compute_project_kpis(
    engine: Engine,
    driver: Driver,
    project_id: uuid.UUID,
    now: datetime,
    *,
    graph_timeout_s: float = 30.0,
) -> ProjectKpis:
    """All KPIs of one project; ``ProjectNotFoundError`` if it does not exist.

    ``graph_timeout_s`` bounds the Cypher query as the engine's statement timeout bounds
    the SQL one (the service passes ``DB_STATEMENT_TIMEOUT_MS``).
    """
    started = time.perf_counter()
    row = sql_aggregates(engine, project_id, now)
    if row is None:
        raise ProjectNotFoundError(f"project {project_id} does not exist")
    graph = graph_aggregates(driver, project_id, graph_timeout_s)
    total = int(row["focus_groups_total"])
    completed = int(row["focus_groups_completed"])
    avg_latency = row["avg_latency"]
    return ProjectKpis(
        project_id=project_id,
        project_name=row["name"],
        archived_at=row["archived_at"],
        personas_total=int(row["personas_total"]),
        personas_new_7d=int(row["personas_new"]),
        focus_groups_total=total,
        focus_groups_running=int(row["focus_groups_running"]),
        focus_groups_completed=completed,
        completion_rate=round(completed / total, 4) if total else None,
        responses_total=int(row["responses_total"]),
        avg_response_latency_ms=round(float(avg_latency), 2) if avg_latency is not None else None,
        graph=graph,
        computed_at=now,
        compute_ms=round((time.perf_counter() - started) * 1000, 2),
    )


def active_project_ids(engine: Engine) -> list[uuid.UUID]:
    """Projects that are not archived: what a scheduled refresh precomputes."""
    with transaction(engine) as conn:
        return [uuid.UUID(str(pid)) for pid in conn.execute(text(ACTIVE_PROJECTS_SQL)).scalars()]
