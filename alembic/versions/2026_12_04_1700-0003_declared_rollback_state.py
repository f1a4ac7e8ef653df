"""Declared columns for what rollback reads back: health evidence time and breaking runs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 17:00:00+00:00

Rollback decided on two JSON keys of the audit trail (`ops.actions.detail`): the time of
the evidence behind a revision's health (`evidence_time` of its `health` actions) and
whether a migration run was `breaking`. The audit trail records what happened; what a
decision reads back now lives in declared columns (docs/rollback.md, docs/schema.md):

- `ops.revisions.health_evidence_at`: the time of the evidence behind `health`; a mark
  older than it changes nothing (null: no evidence recorded, any mark applies);
- `ops.actions.breaking`: migrate sets it on a run that committed a destructive migration;
  rollback's freeze rule reads it.

Both are backfilled from the detail keys they replace (the writers keep writing those keys,
so the audit rows read as before). Both additions are nullable or have a constant default
(no table rewrite); the backfills touch only `health` and `migration` rows. Downgrade drops
the two columns: the code before 0003 reads the detail keys, which are still written.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The migrate function lints the offline SQL (alembic upgrade --sql) of pending migrations
# before applying them. See docs/schema.md.
LOCK_TIMEOUT = "5s"

OPS = "ops"


def upgrade() -> None:
    """Add the two columns and carry the detail keys over."""
    op.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
    op.add_column(
        "revisions",
        sa.Column("health_evidence_at", sa.DateTime(timezone=True), nullable=True),
        schema=OPS,
    )
    op.add_column(
        "actions",
        sa.Column("breaking", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        schema=OPS,
    )
    # Every applied mark wrote a `health` action with its evidence time, and a mark is
    # applied only when at least as new as every earlier one: the latest is the maximum.
    op.execute(
        "UPDATE ops.revisions AS r SET health_evidence_at = e.at"
        " FROM (SELECT service, detail->>'revision' AS revision,"
        " max(CAST(detail->>'evidence_time' AS timestamptz)) AS at"
        " FROM ops.actions WHERE kind = 'health' AND service IS NOT NULL"
        " AND detail->>'revision' IS NOT NULL AND detail->>'evidence_time' IS NOT NULL"
        " GROUP BY 1, 2) AS e"
        " WHERE r.service = e.service AND r.revision = e.revision"
        " AND r.health_evidence_at IS NULL"
    )
    op.execute(
        "UPDATE ops.actions SET breaking = true"
        " WHERE kind = 'migration' AND detail->>'breaking' = 'true' AND NOT breaking"
    )


def downgrade() -> None:
    """Drop the two columns (the detail keys are still written, as before 0003)."""
    op.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
    op.drop_column("actions", "breaking", schema=OPS)
    op.drop_column("revisions", "health_evidence_at", schema=OPS)
