"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op
${imports if imports else ""}

# revision identifiers, used by Alembic.
revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}

# The migrate function lints the offline SQL (alembic upgrade --sql) of pending migrations
# before applying them. On tables that already exist: CREATE INDEX CONCURRENTLY (inside
# op.get_context().autocommit_block()), new NOT NULL columns need a default, new foreign keys
# are added NOT VALID and validated in a later migration, no drops/renames/type changes without
# an explicit allowance. Do everything through `op` so it renders. See docs/schema.md.
LOCK_TIMEOUT = "5s"


def upgrade() -> None:
    """Upgrade schema."""
    # Fail fast instead of queueing behind a long transaction while our pending lock blocks
    # every other query on the table. Session-level SET (not SET LOCAL) so it also covers
    # autocommit_block() steps such as CREATE INDEX CONCURRENTLY.
    op.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
    ${upgrades if upgrades else ""}


def downgrade() -> None:
    """Downgrade schema."""
    op.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
    ${downgrades if downgrades else ""}
