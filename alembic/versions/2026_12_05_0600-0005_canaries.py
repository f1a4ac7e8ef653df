"""ops.canaries: one row per canary release, the state the canary function decides on.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 06:00:00+00:00

The canary function (docs/canary.md, "The function") keeps each release's traffic steps
here: the split it set last (`percent`, the plan's `steps`), when the step started, the
latest evidence, and the history of its decisions. Every decision re-reads its row under
the per-service lock, so a doubled tick or request decides nothing twice. At most one
canary per service is active (running, held or frozen): a partial unique index says so.
`outbox` keeps events whose publication failed after a decision was committed; the next
tick publishes them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The migrate function lints the offline SQL (alembic upgrade --sql) of pending migrations
# before applying them. See docs/schema.md.
LOCK_TIMEOUT = "5s"

OPS = "ops"


def upgrade() -> None:
    """Create ops.canaries and its one-active-canary-per-service index."""
    op.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
    op.create_table(
        "canaries",
        sa.Column("release_id", sa.Text(), nullable=False),
        sa.Column("project", sa.Text(), nullable=False),
        sa.Column("region", sa.Text(), nullable=False),
        sa.Column("service", sa.Text(), nullable=False),
        sa.Column("revision", sa.Text(), nullable=False),
        # the revision that served 100 % when the canary started (NULL: none did; stopped)
        sa.Column("stable_revision", sa.Text(), nullable=True),
        sa.Column("commit_sha", sa.Text(), nullable=False),
        sa.Column("build_id", sa.Text(), nullable=True),
        sa.Column("tag_url", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        # the canary's share of traffic as the last decision set it
        sa.Column("percent", sa.Integer(), nullable=False),
        sa.Column("steps", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.Column("max_step_s", sa.Float(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("request_event_id", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_analysis_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("evidence", postgresql.JSONB(), nullable=True),
        sa.Column(
            "history", postgresql.JSONB(), nullable=False, server_default=sa.text("'[]'::jsonb")
        ),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("trace_id", sa.Text(), nullable=True),
        sa.Column(
            "outbox", postgresql.JSONB(), nullable=False, server_default=sa.text("'[]'::jsonb")
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.PrimaryKeyConstraint("release_id", name="pk_canaries"),
        sa.CheckConstraint(
            "status IN ('running', 'promoted', 'rolled_back', 'held', 'frozen', 'stopped')",
            name="ck_canaries_status",
        ),
        sa.CheckConstraint("percent BETWEEN 0 AND 100", name="ck_canaries_percent"),
        schema=OPS,
    )
    # One active canary per service: ticks, the CLI and a second request find it here.
    op.create_index(
        "uq_canaries_active_service",
        "canaries",
        ["service"],
        unique=True,
        schema=OPS,
        postgresql_where=sa.text("status IN ('running', 'held', 'frozen')"),
    )


def downgrade() -> None:
    """Drop ops.canaries (every decision is also in ops.actions, kind 'canary')."""
    op.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
    op.drop_table("canaries", schema=OPS)
