"""token revocation time and last use; owners of uploaded networks

Revision ID: 0004_farm_control
Revises: 0003_lease_owner
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_farm_control"
down_revision = "0003_lease_owner"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("revoked_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(), nullable=True))
    op.create_table(
        "artifact_owners",
        sa.Column("artifact_sha256", sa.String(length=64), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["artifact_sha256"], ["artifacts.sha256"]),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"]),
        sa.PrimaryKeyConstraint("artifact_sha256", "team_id"),
    )
    # Uploads made before this revision: their owners are the teams that queued jobs for them.
    op.execute(
        "INSERT INTO artifact_owners (artifact_sha256, team_id, created_at) "
        "SELECT DISTINCT j.artifact_sha256, j.team_id, CURRENT_TIMESTAMP FROM jobs j "
        "JOIN artifacts a ON a.sha256 = j.artifact_sha256 WHERE a.kind = 'network'"
    )


def downgrade() -> None:
    op.drop_table("artifact_owners")
    op.drop_column("tokens", "last_used_at")  # plain DROP COLUMN, as in 0003's downgrade
    op.drop_column("tokens", "revoked_at")
