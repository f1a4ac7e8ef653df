"""Release identity and trace on the audit trail.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 19:00:00+00:00

Every action of one release carries its `release_id` (`<service>@<commit[:12]>`,
shared/release.py) and the W3C trace id of the delivery that wrote it, so a release reads
as one story (docs/release.md) and release metrics are computed from the ledger with no
ETL (docs/metrics.md). Both columns are nullable (no table rewrite). No index: the metrics read
by kind and time (ix_actions_kind_started_at), and the table is pruned (docs/schema.md).
Old rows stay NULL: nothing
before this revision knew its release.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The migrate function lints the offline SQL (alembic upgrade --sql) of pending migrations
# before applying them. See docs/schema.md.
LOCK_TIMEOUT = "5s"

OPS = "ops"


def upgrade() -> None:
    """Add the two columns."""
    op.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
    op.add_column("actions", sa.Column("release_id", sa.Text(), nullable=True), schema=OPS)
    op.add_column("actions", sa.Column("trace_id", sa.Text(), nullable=True), schema=OPS)


def downgrade() -> None:
    """Drop the two columns."""
    op.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
    op.drop_column("actions", "trace_id", schema=OPS)
    op.drop_column("actions", "release_id", schema=OPS)
