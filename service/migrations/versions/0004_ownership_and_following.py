"""Ownership as data (models.shared), tenants as rows to lock, and a job's event files read
by offset (jobs.follow_offsets, jobs.follow_errors)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 06:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("writes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("shared", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("follow_offsets", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("follow_errors", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("follow_errors")
        batch_op.drop_column("follow_offsets")
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_column("shared")
    op.drop_table("tenants")
