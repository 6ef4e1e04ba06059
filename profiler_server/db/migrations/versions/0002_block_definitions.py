"""stamp stored LIR and down configs with their block definition (1)

Configs of the LIR and down blocks measured before their Fig. 2 form (definition 2: a leading 3x3
conv, and a second depthwise conv in the down block) were stored without a ``definition`` field.
This stamps them ``"definition": 1`` in artifacts and measurements, so they never parse as, train
or judge a predictor of the current blocks; their artifact config keys get a ``v1:`` prefix so a
campaign never finds an old artifact for a new config. Predictor versions fitted before (feature
encoding version 1, which knew only the older blocks) go from ``ready`` to ``outdated``: no longer
served, still listed. Downgrade undoes all three.

Revision ID: 0002_block_definitions
Revises: 0001
Create Date: 2026-11-30
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0002_block_definitions"
down_revision = "0001"
branch_labels = None
depends_on = None

REDEFINED = ("lir", "down")
OLD_KEY_PREFIX = "v1:"


def _rows(conn: sa.Connection, table: str, key: str) -> list[tuple]:
    return conn.execute(sa.text(f"SELECT {key}, config FROM {table} WHERE config IS NOT NULL")).all()


def _load(value) -> dict | None:
    config = json.loads(value) if isinstance(value, str) else value
    return config if isinstance(config, dict) else None


def _stamp(conn: sa.Connection, table: str, key: str, upgrade: bool) -> None:
    for row_key, value in _rows(conn, table, key):
        config = _load(value)
        if config is None or config.get("kind") not in REDEFINED:
            continue
        if upgrade and "definition" not in config:
            config = {**config, "definition": 1}
        elif not upgrade and config.get("definition") == 1:
            config = {k: v for k, v in config.items() if k != "definition"}
        else:
            continue
        conn.execute(
            sa.text(f"UPDATE {table} SET config = :config WHERE {key} = :key"),
            {"config": json.dumps(config), "key": row_key},
        )


def _rekey_artifacts(conn: sa.Connection, upgrade: bool) -> None:
    kinds = ", ".join(f"'{k}'" for k in REDEFINED)
    rows = conn.execute(
        sa.text(f"SELECT sha256, config_key FROM artifacts WHERE kind IN ({kinds}) AND config_key IS NOT NULL")
    ).all()
    for sha, key in rows:
        if upgrade and not key.startswith(OLD_KEY_PREFIX):
            new = OLD_KEY_PREFIX + key
        elif not upgrade and key.startswith(OLD_KEY_PREFIX):
            new = key[len(OLD_KEY_PREFIX):]
        else:
            continue
        conn.execute(sa.text("UPDATE artifacts SET config_key = :k WHERE sha256 = :s"), {"k": new, "s": sha})


def upgrade() -> None:
    conn = op.get_bind()
    _stamp(conn, "artifacts", "sha256", upgrade=True)
    _stamp(conn, "measurements", "id", upgrade=True)
    _rekey_artifacts(conn, upgrade=True)
    conn.execute(sa.text("UPDATE predictor_versions SET state = 'outdated' WHERE state = 'ready'"))


def downgrade() -> None:
    conn = op.get_bind()
    _stamp(conn, "artifacts", "sha256", upgrade=False)
    _stamp(conn, "measurements", "id", upgrade=False)
    _rekey_artifacts(conn, upgrade=False)
    conn.execute(sa.text("UPDATE predictor_versions SET state = 'ready' WHERE state = 'outdated'"))
