"""Adapting a predictor of one device class to another from a few measurements (``adapt.py``).

Two real device classes on one CPU: ``data/demo_blocks_host_p10.jsonl`` (300 blocks of the demo's
space, onnxruntime with every graph optimization) and ``data/demo_blocks_host_opt_off_p10.jsonl``
(the same 300 blocks measured with graph optimizations off, p10 of 15 runs after 3 warm-ups on the
shared 2-core host): per block the two differ by 0.5-2.2x, not by one factor.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from profiler_server.predictor.accuracy import mape
from profiler_server.predictor.adapt import AdaptSettings, adapt_predictor, adapting
from profiler_server.predictor.fit import (
    NotEnoughData,
    TrainSettings,
    fit_predictor,
    predict_ms,
    train_ensemble,
)
from shared.encoding import encode_blocks
from shared.predictor import LatencyEnsemble

DATA = Path(__file__).parent / "data"
SMALL = TrainSettings(hidden=32, max_epochs=300, patience=40, members=3)
N_NEW = 60


def measured(name: str) -> dict[str, tuple[dict, float]]:
    rows = [json.loads(line) for line in (DATA / name).read_text().splitlines()]
    return {json.dumps(r["config"], sort_keys=True): (r["config"], r["p10_ms"]) for r in rows}


@pytest.fixture(scope="module")
def classes():
    """(base, configs, opt-off ms): the base fitted on every host block; the new class's blocks."""
    host, off = measured("demo_blocks_host_p10.jsonl"), measured("demo_blocks_host_opt_off_p10.jsonl")
    configs = [host[k][0] for k in host]
    base, _ = train_ensemble(encode_blocks(configs), np.array([host[k][1] for k in host]), 0, SMALL)
    shared = sorted(set(host) & set(off))
    return base, [off[k][0] for k in shared], np.array([off[k][1] for k in shared])


def test_adapted_beats_training_from_scratch_and_the_base_on_few_configs(classes):
    base, configs, ms = classes
    order = np.random.default_rng(0).permutation(len(configs))
    train, test = order[:N_NEW], order[N_NEW:]
    x = encode_blocks(configs)
    adapted, _ = adapt_predictor(base, x[train], ms[train], seed=0)
    scratch, _ = train_ensemble(x[train], ms[train], 0, SMALL)
    scores = {name: mape(predict_ms(model, x[test]), ms[test])
              for name, model in (("adapted", adapted), ("scratch", scratch), ("base", base))}
    assert scores["adapted"] < scores["scratch"], scores
    assert scores["adapted"] < scores["base"], scores


SLOWER = 3.0  # a device three times slower than the new class: no base member fits it unchanged


def test_each_member_starts_from_its_base_member_and_the_base_is_left_as_it_was(classes):
    base, configs, ms = classes
    before = {k: v.clone() for k, v in base.state_dict().items()}
    x = encode_blocks(configs[:30])
    refit, history = adapt_predictor(base, x, SLOWER * ms[:30], seed=1)
    assert history["chosen"].startswith("refit ridge"), history
    assert min(history["pooled_mape"], key=history["pooled_mape"].get) == history["chosen"]
    assert history["pooled_mape"]["unchanged"] > history["pooled_mape"][history["chosen"]]
    assert isinstance(refit, LatencyEnsemble) and len(refit.members) == len(base.members)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    for adapted, original in zip(refit.members, base.members, strict=True):
        # the MLP correction and the standardization are the base member's, only the affine part moved
        for name, value in original.state_dict().items():
            same = torch.equal(adapted.state_dict()[name], value)
            assert same != name.startswith("affine."), name


def test_a_fine_tune_keeps_the_epoch_its_own_fold_judges_best(classes):
    base, configs, ms = classes
    x = encode_blocks(configs[:40])
    settings = AdaptSettings(max_epochs=30, patience=30)
    plain, _ = adapt_predictor(base, x, SLOWER * ms[:40], seed=2)
    tuned, history = adapt_predictor(base, x, SLOWER * ms[:40], seed=2, settings=settings)
    assert len(history["members"]) == len(base.members)
    for member_plain, member_tuned, h in zip(plain.members, tuned.members, history["members"], strict=True):
        if h["best_epoch"] == 0:  # nothing beat the start on its fold: the start is kept as it was
            assert all(torch.equal(a, b) for a, b in zip(member_plain.state_dict().values(),
                                                         member_tuned.state_dict().values(), strict=True))
        else:
            assert not torch.equal(member_plain.net[0].weight, member_tuned.net[0].weight)


def test_too_few_configs_to_validate_every_member_is_refused(classes):
    base, configs, ms = classes
    with pytest.raises(NotEnoughData, match="measure more"):
        adapt_predictor(base, encode_blocks(configs[:5]), ms[:5])


def test_fit_with_a_base_reports_what_adapting_bought(classes):
    base, configs, ms = classes
    result = fit_predictor(configs[:120], SLOWER * ms[:120], seed=0, settings=SMALL, with_peers=False,
                           trainer=adapting(base), base=base)
    m = result.metrics
    assert m["base_mape"] == pytest.approx(mape(predict_ms(base, result.data.x[result.split.test]),
                                                result.data.y_ms[result.split.test]))
    assert m["base_mape"] > 50 and m["mape"] < m["base_mape"] / 2, m
    assert m["adaptation"]["chosen"] in m["adaptation"]["pooled_mape"]
    assert m["members"] == len(base.members)
