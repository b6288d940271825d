"""change.origin replaces change.manual: automation | manual | fail_open

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:05:00

A fail-open restore used to be told apart only by its reason text; the
origin is now stored. Existing rows: ``manual`` -> ``manual``, a reason
starting with "fail open" -> ``fail_open``, the rest ``automation``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("change", schema=None) as batch_op:
        batch_op.add_column(sa.Column("origin", sa.String(length=16), nullable=False, server_default="automation"))
    change = sa.table("change", sa.column("origin", sa.String), sa.column("manual", sa.Boolean), sa.column("reason", sa.Text))
    op.execute(change.update().where(change.c.manual.is_(True)).values(origin="manual"))
    op.execute(change.update().where(change.c.manual.is_(False), change.c.reason.like("fail open%")).values(origin="fail_open"))
    with op.batch_alter_table("change", schema=None) as batch_op:
        batch_op.drop_column("manual")


def downgrade() -> None:
    with op.batch_alter_table("change", schema=None) as batch_op:
        batch_op.add_column(sa.Column("manual", sa.Boolean(), nullable=False, server_default=sa.false()))
    change = sa.table("change", sa.column("origin", sa.String), sa.column("manual", sa.Boolean))
    op.execute(change.update().where(change.c.origin == "manual").values(manual=True))
    with op.batch_alter_table("change", schema=None) as batch_op:
        batch_op.drop_column("origin")
