"""Sight core tables (projects, personas, focus groups) and the sight-ops `ops` schema.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 17:15:00+00:00

docs/schema.md. Every table here is created by this migration, so plain CREATE INDEX and inline
foreign keys are safe: nobody else can hold a lock on, or have rows in, a table that did not
exist a moment ago. Later migrations that touch these tables must follow the rules the migrate
function's linter enforces (docs/schema.md, "Writing migrations").

Downgrade drops every table and the `ops` schema but KEEPS the `vector` extension: upgrade uses
CREATE EXTENSION IF NOT EXISTS, so the extension may predate us, and other objects in the same
database (Sight's own tables, other schemas) may depend on it. DROP EXTENSION would then either
fail or, with CASCADE, silently drop their columns. An unused extension costs nothing, and a
second upgrade just finds it there.
"""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Fail fast instead of queueing behind a long-running transaction: a DDL statement waiting for
# its lock blocks every later query on that table, so a stuck migration becomes an outage.
# Better to fail and let the migrate function report and retry. Session-level (not SET LOCAL)
# so it also covers any autocommit_block() step.
LOCK_TIMEOUT = "5s"

# Dimension of the sentence-embedding model Sight uses for personas.
EMBEDDING_DIM = 384

OPS = "ops"


def _uuid_pk() -> sa.Column[uuid.UUID]:
    return sa.Column(
        "id",
        postgresql.UUID(as_uuid=True),
        primary_key=True,
        server_default=sa.text("gen_random_uuid()"),
    )


def _created_at() -> sa.Column[datetime]:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
    )


def _empty_jsonb(name: str) -> sa.Column[Any]:
    return sa.Column(
        name, postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")
    )


def upgrade() -> None:
    """Create the Sight core tables and the ops schema."""
    op.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")

    # pgvector. Not a trusted extension: needs a superuser (cloudsqlsuperuser on Cloud SQL).
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")

    # --- Sight core ------------------------------------------------------------------------
    op.create_table(
        "projects",
        _uuid_pk(),
        sa.Column("name", sa.Text(), nullable=False),
        _created_at(),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_projects"),
    )

    op.create_table(
        "personas",
        _uuid_pk(),
        sa.Column("project_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        _empty_jsonb("attributes"),
        sa.Column("spending_habits", sa.Text(), nullable=True),
        sa.Column("embedding", Vector(EMBEDDING_DIM), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_personas"),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_personas_project_id_projects",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_personas_project_id_created_at", "personas", ["project_id", "created_at"])

    op.create_table(
        "focus_groups",
        _uuid_pk(),
        sa.Column("project_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default=sa.text("'draft'")),
        _created_at(),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_focus_groups"),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_focus_groups_project_id_projects",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "status IN ('draft', 'running', 'completed')", name="ck_focus_groups_status"
        ),
    )
    op.create_index("ix_focus_groups_project_id_status", "focus_groups", ["project_id", "status"])

    op.create_table(
        "focus_group_responses",
        _uuid_pk(),
        sa.Column("focus_group_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("persona_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_focus_group_responses"),
        sa.ForeignKeyConstraint(
            ["focus_group_id"],
            ["focus_groups.id"],
            name="fk_focus_group_responses_focus_group_id_focus_groups",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["persona_id"],
            ["personas.id"],
            name="fk_focus_group_responses_persona_id_personas",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("latency_ms >= 0", name="ck_focus_group_responses_latency_ms"),
    )
    op.create_index(
        "ix_focus_group_responses_focus_group_id", "focus_group_responses", ["focus_group_id"]
    )
    op.create_index("ix_focus_group_responses_persona_id", "focus_group_responses", ["persona_id"])

    # --- ops: sight-ops' own bookkeeping -----------------------------------------------------
    op.execute(f"CREATE SCHEMA {OPS}")

    # One row per (consumer, event id) handled: the deduplication record (docs/architecture.md, the handler runtime),
    # written in the same transaction as the handler's effect.
    op.create_table(
        "event_receipts",
        sa.Column("consumer", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.PrimaryKeyConstraint("consumer", "event_id", name="pk_event_receipts"),
        schema=OPS,
    )
    # Pruning old receipts (DELETE ... WHERE received_at < now() - interval '...').
    op.create_index("ix_event_receipts_received_at", "event_receipts", ["received_at"], schema=OPS)

    # Messages that can never be handled (bad JSON, wrong schema, unknown type): acknowledged so
    # Pub/Sub stops redelivering them, but kept here so nothing is lost and they can be counted,
    # inspected and replayed.
    op.create_table(
        "rejected_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("consumer", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=True),
        sa.Column("event_type", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=True),
        _empty_jsonb("attributes"),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.PrimaryKeyConstraint("id", name="pk_rejected_events"),
        schema=OPS,
    )
    op.create_index(
        "ix_rejected_events_received_at", "rejected_events", ["received_at"], schema=OPS
    )

    # Cloud Run revisions and what we know about their health: the rollback function picks the
    # last `good` one (recorded from smoke.passed) and never rolls back to a `bad` one.
    op.create_table(
        "revisions",
        sa.Column("service", sa.Text(), nullable=False),
        sa.Column("revision", sa.Text(), nullable=False),
        sa.Column("image", sa.Text(), nullable=True),
        sa.Column("commit_sha", sa.Text(), nullable=True),
        sa.Column("build_id", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("health", sa.Text(), nullable=False, server_default=sa.text("'unknown'")),
        sa.Column("health_reason", sa.Text(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.PrimaryKeyConstraint("service", "revision", name="pk_revisions"),
        sa.CheckConstraint("health IN ('unknown', 'good', 'bad')", name="ck_revisions_health"),
        schema=OPS,
    )

    # The audit trail: every automated or manual action. `kind` and `status` are open sets
    # (migration, rollback, freeze, notification, escalation, ...) so a new kind needs no
    # migration. `dedupe_key` makes an action idempotent: INSERT ... ON CONFLICT (dedupe_key)
    # DO NOTHING; NULL for actions that need no deduplication (NULLs never conflict).
    op.create_table(
        "actions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("service", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("trigger_event_id", sa.Text(), nullable=True),
        sa.Column("actor", sa.Text(), nullable=False, server_default=sa.text("'automation'")),
        sa.Column("dedupe_key", sa.Text(), nullable=True),
        _empty_jsonb("detail"),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_actions"),
        sa.UniqueConstraint("dedupe_key", name="uq_actions_dedupe_key"),
        schema=OPS,
    )
    op.create_index(
        "ix_actions_kind_started_at",
        "actions",
        ["kind", sa.text("started_at DESC")],
        schema=OPS,
    )
    op.create_index(
        "ix_actions_service_started_at",
        "actions",
        ["service", sa.text("started_at DESC")],
        schema=OPS,
    )


def downgrade() -> None:
    """Drop everything upgrade created, except the shared `vector` extension (see above)."""
    op.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")

    # Indexes and constraints go with their tables.
    op.drop_table("actions", schema=OPS)
    op.drop_table("revisions", schema=OPS)
    op.drop_table("rejected_events", schema=OPS)
    op.drop_table("event_receipts", schema=OPS)
    # RESTRICT (the default): if someone put other objects into `ops`, fail loudly instead of
    # dropping them.
    op.execute(f"DROP SCHEMA {OPS}")

    op.drop_table("focus_group_responses")
    op.drop_table("focus_groups")
    op.drop_table("personas")
    op.drop_table("projects")
