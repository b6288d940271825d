"""target_endpoint.circuit_breaker: the endpoint's own trip rules as Azure shows them

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:40:00

An APIM pool member can be tripped by API Management itself (its backend's
circuit-breaker rules, on 429s and 5xx). regionguard reads the rules, never
changes them, and shows them on the target page: a JSON list of one line per rule.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("target_endpoint", schema=None) as batch_op:
        batch_op.add_column(sa.Column("circuit_breaker", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("target_endpoint", schema=None) as batch_op:
        batch_op.drop_column("circuit_breaker")
