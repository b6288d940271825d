"""login_throttle: failed sign-ins counted per submitted name, whether or not such a user exists

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 15:00:00

Before this, only an existing user's failures were counted in the database
(in a flag row per user) and locked the account; a name that is no account
was limited per web process and address only. The answers told the two
apart (a lock for a real name, never for an unknown one), and the limit for
unknown names did not hold across web processes. Now every submitted name
is counted alike, keyed by the SHA-256 of its normal form (no submitted
text is stored), in a table of bounded size whose rows expire.

The old per-user counts are dropped: at worst a lock in force during the
upgrade ends early.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_throttle",
        sa.Column("name_key", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.JSON(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name_key", name=op.f("pk_login_throttle")),
    )
    with op.batch_alter_table("login_throttle", schema=None) as batch_op:
        batch_op.create_index("ix_login_throttle_updated_at", ["updated_at"], unique=False)
    op.execute(sa.text("DELETE FROM flag WHERE key LIKE 'login\\_failures:%' ESCAPE '\\'"))


def downgrade() -> None:
    with op.batch_alter_table("login_throttle", schema=None) as batch_op:
        batch_op.drop_index("ix_login_throttle_updated_at")
    op.drop_table("login_throttle")
