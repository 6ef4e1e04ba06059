"""ProfilerClient against the real server app served by uvicorn on 127.0.0.1 (SQLite in tmp)."""

from __future__ import annotations

import logging

import pytest
import torch

from search_client.remote import ProfilerClient, RemoteError, ServiceUnavailable
from shared.config import ConvConfig, LIRConfig
from shared.encoding import encode_blocks
from testkit.live_farm import ADMIN, LiveFarm
from tests.search_client.pipeline.tiny import macs_proxy_predictor

DEVICE = "host/test-cpu"
RUNTIME = "onnxruntime/t1/cpu"
BLOCKS = [ConvConfig(cin=3, cout=8, stride=2, h=64, w=128), LIRConfig(cin=16, cmid=32, cout=16, h=8, w=16)]


@pytest.fixture(scope="module")
def predictor():
    return macs_proxy_predictor()


@pytest.fixture
def live(tmp_path, predictor):
    server = LiveFarm(tmp_path).start()
    server.add_predictor(predictor, DEVICE, RUNTIME, version=1)
    yield server
    server.stop()


def test_fetch_rebuilds_the_servers_predictor_and_caches_it_by_version(live, tmp_path, predictor):
    token = ADMIN
    with ProfilerClient(live.url, token, cache_dir=tmp_path / "cache") as client:
        first = client.fetch_predictor(DEVICE, RUNTIME)
        assert (first.version, first.from_cache, first.offline) == (1, False, False)
        x = encode_blocks(BLOCKS)
        torch.testing.assert_close(first.model(x), predictor(x))  # the same module, the same numbers
    with ProfilerClient(live.url, token, cache_dir=tmp_path / "cache") as client:
        again = client.fetch_predictor(DEVICE, "onnxruntime")  # bare runtime name resolves to the same key
        assert again.from_cache and again.path == first.path  # ETag matched: 304, no new download
        live.add_predictor(macs_proxy_predictor(seed=1), DEVICE, RUNTIME, version=2)
        newer = client.fetch_predictor(DEVICE, RUNTIME)
        assert newer.version == 2 and not newer.from_cache and newer.path != first.path


def test_service_down_falls_back_to_the_newest_cached_predictor_and_says_so(live, tmp_path, caplog):
    cache = tmp_path / "cache"
    with ProfilerClient(live.url, None, cache_dir=cache) as client:
        fetched = client.fetch_predictor(DEVICE, RUNTIME)
    live.stop()
    with caplog.at_level(logging.WARNING, logger="search_client.remote"):
        with ProfilerClient(live.url, None, cache_dir=cache) as client:
            offline = client.fetch_predictor(DEVICE, RUNTIME)
    assert offline.offline and offline.version == fetched.version
    assert "unreachable" in caplog.text and "cached predictor" in caplog.text
    with ProfilerClient(live.url, None, cache_dir=tmp_path / "empty") as client:
        with pytest.raises(ServiceUnavailable, match="no cached predictor"):
            client.fetch_predictor(DEVICE, RUNTIME)


def test_unknown_device_class_error_lists_the_known_ones(live, tmp_path):
    with ProfilerClient(live.url, ADMIN, cache_dir=tmp_path / "c") as client:
        with pytest.raises(RemoteError, match=DEVICE.replace("/", ".")) as err:
            client.fetch_predictor("SM-X000/none", RUNTIME)
        assert "SM-X000/none" in str(err.value)
        with pytest.raises(RemoteError, match="404") as err:
            client.predict("SM-X000/none", RUNTIME, BLOCKS)
        assert DEVICE in str(err.value)


def test_predict_matches_the_local_predictor(live, tmp_path, predictor):
    with ProfilerClient(live.url, ADMIN, cache_dir=tmp_path / "c") as client:
        answer = client.predict(DEVICE, RUNTIME, BLOCKS)
    local = predictor(encode_blocks(BLOCKS))
    assert answer.total_ms == pytest.approx(float(local.detach().sum()), rel=1e-4)
    assert answer.predictor.version == 1


def test_uploaded_network_without_an_agent_times_out_with_a_hint(live, tmp_path):
    from shared.export import export_block_onnx

    with ProfilerClient(live.url, ADMIN, cache_dir=tmp_path / "c") as client:
        job = client.upload_network(export_block_onnx(BLOCKS[0]), DEVICE, "onnxruntime", "tiny conv")
        assert client.get_job(job.job_id).state == "queued"
        with pytest.raises(RemoteError, match="is an agent for"):
            client.wait_job(job.job_id, timeout=0.5, poll=0.1)
        calls = client.calls
    assert calls >= 3


def test_bad_token_is_a_clear_error(live, tmp_path):
    with ProfilerClient(live.url, "wrong-token", cache_dir=tmp_path / "c") as client:
        with pytest.raises(RemoteError, match="401"):
            client.create_campaign(device_class=DEVICE, n=1)
