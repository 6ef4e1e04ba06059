"""Stored measurements of the older LIR / down blocks never train or judge a current predictor:
migration 0002 stamps them with their definition and retires predictors fitted on them."""

from __future__ import annotations

import json

from predictor_data import DEVICE_CLASS, RUNTIME, store_measurements, synthetic_blocks
from sqlalchemy import text

from profiler_server.db import Database, upgrade_database
from profiler_server.predictor import store


def _as_before_fig2(db: Database) -> int:
    """Rewrite stored LIR configs as the older code stored them (no definition, no clead)."""
    n = 0
    with db.engine.begin() as conn:
        for table, key in (("artifacts", "sha256"), ("measurements", "id")):
            for row_key, config in conn.execute(text(f"SELECT {key}, config FROM {table}")).all():
                config = json.loads(config)
                if config["kind"] == "lir":
                    old = {k: v for k, v in config.items() if k not in ("definition", "clead")}
                    conn.execute(text(f"UPDATE {table} SET config = :c WHERE {key} = :k"),
                                 {"c": json.dumps(old), "k": row_key})
                    n += table == "measurements"
    return n


def test_upgrade_stamps_old_blocks_and_keeps_them_out_of_training(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/old.db")
    upgrade_database(db.engine)  # stored through today's models, then taken back to the first schema
    cfgs = synthetic_blocks(40)
    store_measurements(db, DEVICE_CLASS, RUNTIME, cfgs)
    upgrade_database_down(db)
    old_lir = _as_before_fig2(db)
    assert old_lir > 0
    with db.engine.begin() as conn:  # a predictor fitted before the upgrade (raw SQL: the 0001 schema)
        conn.execute(text("INSERT INTO predictor_versions (device_class, runtime, version, state, created_at, "
                          "metrics, feature_ranges, n_train, n_test) "
                          "VALUES (:d, :r, 1, 'ready', CURRENT_TIMESTAMP, '{}', '{}', 0, 0)"), {"d": DEVICE_CLASS, "r": RUNTIME})

    upgrade_database(db.engine)

    with db.sessionmaker() as s:
        configs, _ = store.training_rows(s, DEVICE_CLASS, RUNTIME)
        assert len(configs) == len(cfgs) - old_lir and {c["kind"] for c in configs} == {"conv"}
        stamped = [json.loads(c) for (c,) in s.execute(text("SELECT config FROM measurements")).all()]
        assert sum(c.get("definition") == 1 for c in stamped) == old_lir
        keys = [k for (k,) in s.execute(text("SELECT config_key FROM artifacts WHERE kind = 'lir'")).all()]
        assert keys and all(k.startswith("v1:") for k in keys)
        assert store.latest_ready(s, DEVICE_CLASS, RUNTIME) is None  # fitted on the older blocks
    # new measurements of the current LIR are training data again
    store_measurements(db, DEVICE_CLASS, RUNTIME, [c for c in cfgs if c.kind == "lir"], seed=1)
    with db.sessionmaker() as s:
        configs, _ = store.training_rows(s, DEVICE_CLASS, RUNTIME)
        assert sum(c["kind"] == "lir" for c in configs) == old_lir

    upgrade_database_down(db)
    with db.sessionmaker() as s:
        assert s.execute(text("SELECT count(*) FROM predictor_versions WHERE state = 'ready'")).scalar() == 1


def upgrade_database_down(db: Database) -> None:
    from alembic import command

    from profiler_server.db.migrate import alembic_config

    command.downgrade(alembic_config(db.engine), "0001")
