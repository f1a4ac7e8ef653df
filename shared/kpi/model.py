"""The KPI document served by ``GET /v1/projects/{id}/kpis``.

One typed model is the contract: the function serialises it, the dashboard reads it, and
its JSON schema is checked into ``docs/kpi.schema.json`` (a test fails on drift).
Counts are integers >= 0; ratios and averages are ``null`` when there is nothing to
divide by, so "no data" is never confused with zero.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

#: Bump on an incompatible change (a removed or retyped field); it is part of the cache key.
SCHEMA_VERSION = 1
#: "new personas" counts personas created within this many days before ``computed_at``.
NEW_PERSONA_WINDOW_DAYS = 7


class GraphKpis(BaseModel):
    """Relationship counts from Neo4j for the project's ``Persona`` nodes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    personas: int = Field(ge=0, description="Persona nodes of the project in the graph.")
    influences: int = Field(
        ge=0, description="INFLUENCES relationships starting at the project's personas."
    )
    interested_in: int = Field(
        ge=0, description="INTERESTED_IN relationships from the project's personas to topics."
    )
    relationships_total: int = Field(ge=0, description="influences + interested_in.")


class ProjectKpis(BaseModel):
    """Dashboard KPIs of one project, computed at ``computed_at``."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_serialization_defaults_required=True
    )

    schema_version: Literal[1] = Field(
        default=1, description="Incremented on incompatible changes only."
    )
    project_id: uuid.UUID
    project_name: str
    archived_at: AwareDatetime | None = Field(
        description="When the project was archived; null while active. Archived projects "
        "are still served."
    )
    personas_total: int = Field(ge=0)
    personas_new_7d: int = Field(
        ge=0, description="Personas created in the 7 days before computed_at."
    )
    focus_groups_total: int = Field(ge=0)
    focus_groups_running: int = Field(ge=0)
    focus_groups_completed: int = Field(ge=0)
    completion_rate: float | None = Field(
        ge=0,
        le=1,
        description="focus_groups_completed / focus_groups_total; null without focus groups.",
    )
    responses_total: int = Field(ge=0, description="Answers in all of the project's focus groups.")
    avg_response_latency_ms: float | None = Field(
        ge=0, description="Mean latency_ms of the answers that have one; null if none has."
    )
    graph: GraphKpis
    computed_at: AwareDatetime = Field(description="When the computation started (UTC).")
    compute_ms: float = Field(ge=0, description="How long the computation took.")


def json_schema() -> dict[str, Any]:
    """The response's JSON schema (what is sent, so every field is required)."""
    return ProjectKpis.model_json_schema(mode="serialization")
