"""lease owner, fit owner, JSON null configs stored as SQL NULL

Jobs remember the agent that holds their lease (only that agent renews or releases it); predictor
versions remember the team that asked for the fit (per-team limit on running fits). Configs of
whole-network artifacts and their measurements were stored as the JSON text ``null``, which an
``IS NOT NULL`` filter lets through: they become SQL NULL.

Revision ID: 0003_lease_owner
Revises: 0002_block_definitions
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_lease_owner"
down_revision = "0002_block_definitions"
branch_labels = None
depends_on = None


def _json_null_to_sql_null(table: str) -> None:
    # PostgreSQL's json type has no equality operator: compare its text form.
    column = "config::text" if op.get_bind().dialect.name == "postgresql" else "config"
    op.execute(f"UPDATE {table} SET config = NULL WHERE {column} = 'null'")


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("leased_by_agent", sa.String(length=64), nullable=True))
    with op.batch_alter_table("predictor_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("team_id", sa.Integer(), nullable=True))
    _json_null_to_sql_null("artifacts")
    _json_null_to_sql_null("measurements")


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite >= 3.35 and PostgreSQL): a batch copy of ``jobs`` would drop a table
    # that measurements reference, which SQLite's foreign keys refuse once jobs hold rows.
    op.drop_column("predictor_versions", "team_id")
    op.drop_column("jobs", "leased_by_agent")
