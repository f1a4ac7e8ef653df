"""ops.rollback_decisions: rollback's journal of traffic moves, durable on its own.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 16:00:00+00:00

A traffic move is an effect outside the database: it must not sit inside the delivery's
receipt transaction, or a failed COMMIT after Cloud Run was updated loses the record of it
(docs/rollback.md, "Decisions are durable on their own"). The rollback function commits
the intent (and the `bad` mark) before calling Cloud Run and the outcome after, each in its
own transaction, keyed by the trigger; a redelivery finds the row and resumes. The
anti-flap count and our own promotion times are read from here.

Existing succeeded rollbacks in `ops.actions` are copied in, so the anti-flap window and
the alert window keep counting across the deploy of this migration.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The migrate function lints the offline SQL (alembic upgrade --sql) of pending migrations
# before applying them. See docs/schema.md.
LOCK_TIMEOUT = "5s"

OPS = "ops"


def upgrade() -> None:
    """Create ops.rollback_decisions and copy the succeeded rollbacks recorded so far."""
    op.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
    op.create_table(
        "rollback_decisions",
        sa.Column("decision_id", postgresql.UUID(as_uuid=True), nullable=False),
        # The consumer and the delivery's dedupe key (`rollback:incident:<id>:open`, ...):
        # a redelivery of the same trigger finds its decision here.
        sa.Column("trigger_key", sa.Text(), nullable=False),
        sa.Column("service", sa.Text(), nullable=False),
        sa.Column("trigger_kind", sa.Text(), nullable=False),
        sa.Column("trigger_event_id", sa.Text(), nullable=True),
        sa.Column("actor", sa.Text(), nullable=False, server_default=sa.text("'automation'")),
        sa.Column("from_revision", sa.Text(), nullable=True),
        sa.Column("to_revision", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default=sa.text("'intent'")),
        sa.Column("verdict", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("event_published", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column(
            "serving_before",
            postgresql.JSONB(),
            nullable=False,
            server_default=sa.text("'{}'::jsonb"),
        ),
        sa.Column("serving_after", postgresql.JSONB(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("decision_id", name="pk_rollback_decisions"),
        sa.UniqueConstraint("trigger_key", name="uq_rollback_decisions_trigger_key"),
        sa.CheckConstraint(
            "trigger_kind IN ('smoke', 'alert', 'manual')",
            name="ck_rollback_decisions_trigger_kind",
        ),
        sa.CheckConstraint("status IN ('intent', 'done')", name="ck_rollback_decisions_status"),
        sa.CheckConstraint(
            "(status = 'done' AND verdict IS NOT NULL AND verdict IN ('succeeded', 'failed'))"
            " OR (status = 'intent' AND verdict IS NULL)",
            name="ck_rollback_decisions_verdict",
        ),
        schema=OPS,
    )
    # The anti-flap count and promotion times: "decisions about service S since T".
    op.create_index(
        "ix_rollback_decisions_service_created_at",
        "rollback_decisions",
        ["service", sa.text("created_at DESC")],
        schema=OPS,
    )
    op.execute(
        "INSERT INTO ops.rollback_decisions (decision_id, trigger_key, service, trigger_kind,"
        " trigger_event_id, actor, from_revision, to_revision, status, verdict, reason,"
        " event_id, event_published, serving_before, serving_after, created_at, finished_at)"
        " SELECT gen_random_uuid(), 'ops.actions:' || a.id, a.service,"
        " CASE WHEN a.detail->>'trigger' IN ('smoke', 'alert', 'manual')"
        " THEN a.detail->>'trigger' ELSE 'manual' END,"
        " a.detail->>'trigger_event_id', a.actor, a.detail->>'from', a.detail->>'to',"
        " 'done', 'succeeded', COALESCE(a.detail->>'reason', 'recorded before 0002'),"
        " COALESCE(a.detail->>'event_id', 'ops.actions:' || a.id), true, '{}'::jsonb,"
        " a.detail->'serving_after', a.started_at, COALESCE(a.finished_at, a.started_at)"
        " FROM ops.actions a"
        " WHERE a.kind = 'rollback' AND a.status = 'succeeded' AND a.service IS NOT NULL"
        " AND a.detail->>'to' IS NOT NULL"
    )


def downgrade() -> None:
    """Drop the journal (the rollbacks stay in ops.actions, as before 0002)."""
    op.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
    op.drop_table("rollback_decisions", schema=OPS)
