"""Neo4j side of maintenance: ``SHOW INDEXES`` and ``SHOW CONSTRAINTS``, read only
(docs/maintain.md, "Neo4j"). What is wrong with them is decided in ``_decide``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.maintain._decide import GraphConstraint, GraphIndex

if TYPE_CHECKING:
    from neo4j import Driver

_INDEXES = (
    "SHOW INDEXES YIELD name, type, state, populationPercent, owningConstraint, failureMessage"
    " RETURN name, type, state, populationPercent, owningConstraint, failureMessage"
)
_CONSTRAINTS = "SHOW CONSTRAINTS YIELD name, type, ownedIndex RETURN name, type, ownedIndex"


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def read_graph(driver: Driver) -> tuple[list[GraphIndex], list[GraphConstraint]]:
    """Every index and constraint of the default database, as Neo4j reports them."""
    indexes, _, _ = driver.execute_query(_INDEXES)
    constraints, _, _ = driver.execute_query(_CONSTRAINTS)
    return (
        [
            GraphIndex(
                name=str(r["name"]),
                type=str(r["type"]),
                state=str(r["state"]),
                population_percent=(
                    None if r["populationPercent"] is None else float(r["populationPercent"])
                ),
                owning_constraint=_text(r["owningConstraint"]),
                failure_message=_text(r["failureMessage"]) or None,
            )
            for r in indexes
        ],
        [
            GraphConstraint(
                name=str(r["name"]), type=str(r["type"]), owned_index=_text(r["ownedIndex"])
            )
            for r in constraints
        ],
    )
