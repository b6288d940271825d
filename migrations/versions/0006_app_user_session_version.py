"""app_user.session_version: logout, a new password and disabling end every session of a user

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 12:00:00

Dashboard sessions are signed cookies: before this, a cookie copied before a
logout still worked until it expired (12 h). A session now carries the user's
version at login and is honoured only while it matches; logout, a password
change and disabling the account add one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("app_user", schema=None) as batch_op:
        batch_op.add_column(sa.Column("session_version", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("app_user", schema=None) as batch_op:
        batch_op.drop_column("session_version")
