"""``rtseg-search run`` checks the farm before any training, and a rerun's changed flags either apply
or stop with the phase that pinned them: against a real server on loopback."""

from __future__ import annotations

import json

import pytest

from search_client.cli import main
from search_client.pipeline.preflight import preflight
from search_client.pipeline.settings import PipelineSettings
from search_client.remote import ProfilerClient
from testkit.live_farm import DEVICE_CLASS, LiveFarm, host_device
from testkit.live_server import free_port
from tests.search_client.pipeline.tiny import LATENCY_SIZE, TINY_SUPERNET

OTHER_CLASS = "SM-T000/testboard"  # has a predictor but no device
NEW_CLASS = "host/new-cpu"  # has a device but no predictor yet


@pytest.fixture
def farm(tmp_path, proxy_predictor):
    live = LiveFarm(tmp_path).start()
    live.add_team("vision")
    live.add_agent([host_device(), host_device("new-1", NEW_CLASS)])
    live.add_predictor(proxy_predictor)
    live.add_predictor(proxy_predictor, runtime="tflite/t1/cpu")  # a runtime no agent of the class runs
    live.add_predictor(proxy_predictor, device_class=OTHER_CLASS)
    yield live
    live.stop()


def run_args(runs, server: str, token: str | None, *extra: str, data=None) -> list[str]:
    args = ["-q", "run", "--name", "r", "--runs", str(runs), "--server", server, "--device-class", DEVICE_CLASS,
            "--latency-size", "x".join(map(str, LATENCY_SIZE)), *extra]
    if token:
        args += ["--token", token]
    if data is not None:  # the tiny supernet on the tiny synthetic data
        sets = {"model.config": TINY_SUPERNET, "data.crop": list(LATENCY_SIZE), "data.eval_size": list(LATENCY_SIZE),
                "data.scales": [1.0], "train.batch_size": 2, "train.checkpoint_every": 1, "train.warmup_iters": 1}
        args += ["--data-root", str(data), "--pretrain-iters", "3", "--max-steps", "1"]
        for key, value in sets.items():
            args += ["--set", f"{key}={json.dumps(value)}"]
    return args


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


@pytest.mark.parametrize(
    ("extra", "token", "code", "message"),
    [
        ((), "not-a-token", 2, "token refused"),
        (("--device-class", "SM-TYPO/lahaina"), None, 2, "device class 'SM-TYPO/lahaina' is unknown"),
        (("--runtime", "tflite"), None, 2, "no agent of host/test-cpu runs tflite (they run onnxruntime)"),
        (("--device-class", OTHER_CLASS), None, 2, f"no agent serves device class '{OTHER_CLASS}'"),
        (("--runtime", "onnxruntime/t4/cpu"), None, 2, "no predictor for host/test-cpu / onnxruntime/t4/cpu"),
        (("--runtime", "tensorrt"), None, 2, "--runtime 'tensorrt' is not a runtime: use one of onnxruntime, tflite"),
    ],
)
def test_preflight_failure_stops_before_training_with_one_line(farm, tmp_path, capsys, extra, token, code, message):
    token = token or farm.teams["vision"]
    assert main(run_args(tmp_path / "runs", farm.url, token, *extra)) == code
    err = one_line_error(capsys)
    assert message in err and err.startswith("rtseg-search run: error: ")
    assert not (tmp_path / "runs" / "r").exists()  # nothing trained, nothing written


def test_unreachable_server_has_its_own_exit_code(tmp_path, capsys):
    assert main(run_args(tmp_path / "runs", f"http://127.0.0.1:{free_port()}", "t")) == 3
    assert "unreachable" in one_line_error(capsys)
    assert not (tmp_path / "runs" / "r").exists()


def test_measuring_run_without_token_is_told_to_pass_one(farm, tmp_path, capsys):
    assert main(run_args(tmp_path / "runs", farm.url, None)) == 2
    assert "no token" in one_line_error(capsys)
    # without measuring, the predictor is all the run needs (it is served without a token)
    settings = PipelineSettings(name="r", runs_dir=tmp_path, device_class=DEVICE_CLASS, server=farm.url, measure=False)
    with ProfilerClient(farm.url) as client:
        assert preflight(settings, client, DEVICE_CLASS, "measure") == [
            f"server {farm.url} reachable", f"predictor v1 for {DEVICE_CLASS} / onnxruntime/t1/cpu"]


def test_passing_preflight_trains_and_a_rerun_applies_or_refuses_changed_flags(farm, tmp_path, capsys, tiny_data):
    runs, token = tmp_path / "runs", farm.teams["vision"]
    assert main(run_args(runs, farm.url, token, data=tiny_data)) == 0
    out = capsys.readouterr().out
    assert "[preflight] server" in out and "1 device(s) of host/test-cpu online for onnxruntime" in out
    assert "stopped: pretrain stopped at iteration 1/3" in out

    # search has not started: a new search budget and target apply, and are saved
    changed = ("--search-iters", "7", "--target-ms", "2.5")
    assert main(run_args(runs, farm.url, token, *changed, data=tiny_data)) == 0
    assert "stopped: pretrain stopped at iteration 2/3" in capsys.readouterr().out
    saved = PipelineSettings.load(runs / "r")
    assert (saved.search_iters, saved.target_ms) == (7, 2.5)
    checkpoints = sorted(p.name for p in (runs / "r" / "pretrain" / "checkpoints").iterdir())

    # pretraining has started: a changed pretraining budget stops the run, naming phase and the ways on
    assert main(run_args(runs, farm.url, token, *changed, data=tiny_data) + ["--pretrain-iters", "5"]) == 2
    err = one_line_error(capsys)
    assert "--pretrain-iters 3 -> 5" in err and "phase 'pretrain' already started" in err
    assert "--name" in err and "--restart-from pretrain" in err
    assert PipelineSettings.load(runs / "r").pretrain_iters == 3  # nothing changed on disk
    assert sorted(p.name for p in (runs / "r" / "pretrain" / "checkpoints").iterdir()) == checkpoints

    # --restart-from pretrain: the change applies and pretraining starts over; flags left out of this
    # shorter command keep the run's saved values
    assert main(run_args(runs, farm.url, token, data=tiny_data) + ["--pretrain-iters", "5", "--restart-from", "pretrain"]) == 0
    out = capsys.readouterr().out
    assert "[pretrain] restarting" in out and "stopped: pretrain stopped at iteration 1/5" in out
    saved = PipelineSettings.load(runs / "r")
    assert (saved.pretrain_iters, saved.search_iters, saved.target_ms) == (5, 7, 2.5)


def test_a_class_without_predictor_runs_with_a_campaign_queued_before_pretraining(farm, tmp_path, capsys, tiny_data,
                                                                                  proxy_predictor):
    runs, token = tmp_path / "runs", farm.teams["vision"]
    new_class = ["--device-class", NEW_CLASS]
    assert main(run_args(runs, farm.url, token, data=tiny_data) + new_class) == 2
    assert f"no predictor for {NEW_CLASS} / onnxruntime/t1/cpu" in one_line_error(capsys)
    assert main(run_args(runs, farm.url, token, data=tiny_data) + new_class + ["--campaign", "12"]) == 0
    out = capsys.readouterr().out
    assert "the run measures a campaign of 12 configs and fits one" in out
    assert "block configs of the supernet queued on host/new-cpu" in out and "pretrain stopped at iteration 1/3" in out
    record = json.loads((runs / "r" / "campaign.json").read_text())
    camp = farm.call("GET", f"/v1/campaigns/{record['id']}", token=token, expect=200).json()
    assert (camp["device_class"], camp["n"]) == (NEW_CLASS, 12)
    assert main(run_args(runs, farm.url, token, data=tiny_data) + new_class + ["--campaign", "12"]) == 0
    assert f"[campaign] {record['id']} queued earlier" in capsys.readouterr().out  # not queued twice

    # the agent measures the campaign; the search waits for it, then for the predictor fitted on it
    # (stored here a moment later: 12 configs are too few for the server's own fit)
    import threading

    from search_client.pipeline.campaign import await_campaign_predictor
    from search_client.pipeline.context import PipelineContext

    measure_everything(farm, "new-1", record["id"], token)
    fitted = threading.Timer(1.0, farm.add_predictor, args=(proxy_predictor,), kwargs={"device_class": NEW_CLASS})
    settings = PipelineSettings.load(runs / "r").model_copy(update={"server": farm.url, "token": token})
    with ProfilerClient(farm.url, token, cache_dir=tmp_path / "cache") as client:
        assert not client.list_predictors(NEW_CLASS, "onnxruntime/t1/cpu")
        fitted.start()
        await_campaign_predictor(PipelineContext(settings, client=client, say=print))
        assert client.list_predictors(NEW_CLASS, "onnxruntime/t1/cpu")
    fitted.join()
    out = capsys.readouterr().out
    assert f"campaign {record['id']} done" in out and "predictor v1 ready" in out


def measure_everything(farm: LiveFarm, serial: str, campaign_id: int, token: str, timeout: float = 120) -> None:
    """Lease and report every job of the campaign with a latency that grows with the job id (bounded)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = farm.call("POST", "/v1/jobs/lease", token=farm.agent_token, expect=200,
                        json={"agent_id": farm.agent_id, "serial": serial}).json()["job"]
        if job is None:
            camp = farm.call("GET", f"/v1/campaigns/{campaign_id}", token=token, expect=200).json()
            if camp["state"] != "exporting" and camp["queued"] + camp["running"] == 0:
                return
            time.sleep(0.2)
            continue
        ms = 0.5 + 0.01 * job["job_id"]
        stats = {"median_ms": ms, "mean_ms": ms, "p10_ms": ms, "p90_ms": ms, "std_ms": 0.0, "runs": 3,
                 "samples_ms": [ms] * 3, "tool": "synthetic"}
        farm.call("POST", f"/v1/jobs/{job['job_id']}/result", token=farm.agent_token, expect=200,
                  json={"lease_id": job["lease_id"], "serial": serial, "stats": stats})
    raise TimeoutError(f"campaign {campaign_id} not measured within {timeout} s")
