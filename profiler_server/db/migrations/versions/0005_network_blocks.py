"""block lists of uploaded networks (training data of the network-level latency correction)

Revision ID: 0005_network_blocks
Revises: 0004_farm_control
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_network_blocks"
down_revision = "0004_farm_control"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "network_blocks",
        sa.Column("artifact_sha256", sa.String(length=64), nullable=False),
        sa.Column("blocks", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["artifact_sha256"], ["artifacts.sha256"]),
        sa.PrimaryKeyConstraint("artifact_sha256"),
    )


def downgrade() -> None:
    op.drop_table("network_blocks")
