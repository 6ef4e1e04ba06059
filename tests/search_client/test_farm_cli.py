"""``rtseg-farm`` lab commands against a real server on loopback with two teams: the tables read
right, ``--json`` carries the same data, and each team sees and steers only its own work."""

from __future__ import annotations

import json

import pytest

from profiler_server.predictor.fit import TrainSettings
from search_client.farm_cli import main
from testkit.live_farm import ADMIN, DEVICE_CLASS, SERIAL, LiveFarm, host_device
from testkit.live_server import free_port
from tests.profiler_server.predictor.predictor_data import store_measurements, synthetic_blocks


def conv(cout: int) -> dict:
    return {"kind": "conv", "cin": 3, "cout": cout, "kernel": 3, "stride": 1, "h": 8, "w": 8}


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    """vision: a campaign of 3 jobs, one of them leased by the agent; robotics: a campaign of 2."""
    live = LiveFarm(tmp_path_factory.mktemp("farm")).start()
    for team in ("vision", "robotics"):
        live.add_team(team)
    live.add_agent([host_device()])
    live.campaigns = {}
    for team, couts in (("vision", (5, 6, 7)), ("robotics", (9, 10))):
        body = {"device_class": DEVICE_CLASS, "configs": [conv(c) for c in couts], "wait_s": 60}
        live.campaigns[team] = live.call("POST", "/v1/campaigns", token=live.teams[team], json=body, expect=201).json()
    lease = {"agent_id": live.agent_id, "serial": SERIAL}
    live.leased = live.call("POST", "/v1/jobs/lease", token=live.agent_token, json=lease, expect=200).json()["job"]
    yield live
    live.stop()


def farm_cli(capsys, farm: LiveFarm, token: str, *argv: str) -> tuple[int, str, str]:
    code = main(["--server", farm.url, "--token", token, *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def table(text: str) -> list[list[str]]:
    """Rows of an aligned table, split on runs of two or more spaces."""
    import re

    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines()]


def test_status_table_and_json_count_the_queue(farm, capsys):
    code, out, _ = farm_cli(capsys, farm, farm.teams["vision"], "status")
    assert code == 0
    fields = dict(line.split(":", 1) for line in out.strip().splitlines())
    assert fields["devices online"].strip() == "1" and fields["running"].strip() == "1"
    code, out, _ = farm_cli(capsys, farm, farm.teams["vision"], "status", "--json")
    status = json.loads(out)
    assert (status["devices_online"], status["running"]) == (1, 1)
    assert status["queue_depth"] == int(fields["queue depth"]) == 4  # 5 jobs, one leased


def test_devices_table_shows_runtimes_and_the_current_job(farm, capsys):
    code, out, _ = farm_cli(capsys, farm, farm.teams["robotics"], "--json", "devices")
    devices = json.loads(out)
    assert code == 0 and [d["serial"] for d in devices] == [SERIAL]
    assert devices[0]["info"]["runtimes"] == ["onnxruntime"] and devices[0]["current_job"]["id"] == farm.leased["job_id"]
    code, out, _ = farm_cli(capsys, farm, farm.teams["robotics"], "devices")
    header, row = table(out)
    cells = dict(zip(header, row, strict=True))
    assert cells["SERIAL"] == SERIAL and cells["CLASS"] == DEVICE_CLASS and cells["ONLINE"] == "yes"
    assert cells["RUNTIMES"] == "onnxruntime" and cells["CURRENT JOB"].startswith(str(farm.leased["job_id"]))


def test_campaigns_each_team_sees_its_own_and_admin_all(farm, capsys):
    ids = {team: c["id"] for team, c in farm.campaigns.items()}
    code, out, _ = farm_cli(capsys, farm, farm.teams["vision"], "campaigns")
    header, *rows = table(out)
    assert code == 0 and header[:3] == ["ID", "TEAM", "STATE"]
    assert [(int(r[0]), r[1]) for r in rows] == [(ids["vision"], "vision")]
    assert "0/3" in rows[0][header.index("PROGRESS")]
    code, out, _ = farm_cli(capsys, farm, ADMIN, "campaigns", "--json")
    page = json.loads(out)
    assert page["total"] == 2 and {c["team"] for c in page["items"]} == {"vision", "robotics"}
    code, out, _ = farm_cli(capsys, farm, ADMIN, "campaigns", "--limit", "1")
    assert len(table(out)) == 3 and out.strip().endswith("1 of 2 shown (--limit)")  # header, one row, note
    code, out, _ = farm_cli(capsys, farm, ADMIN, "campaigns", "--state", "done")
    assert out.strip() == "no campaigns in state done"


def test_cancel_only_by_the_owner_and_the_queue_shrinks(farm, capsys):
    vision = farm.campaigns["vision"]["id"]
    code, _, err = farm_cli(capsys, farm, farm.teams["robotics"], "cancel", str(vision))
    assert code == 2 and err.count("\n") == 1 and "belongs to another team" in err
    code, out, _ = farm_cli(capsys, farm, farm.teams["vision"], "cancel", str(vision), "--json")
    assert code == 0 and json.loads(out)["state"] == "cancelled"
    code, out, _ = farm_cli(capsys, farm, farm.teams["vision"], "campaigns", "--state", "cancelled")
    assert [int(r[0]) for r in table(out)[1:]] == [vision]
    code, out, _ = farm_cli(capsys, farm, ADMIN, "status", "--json")
    assert json.loads(out)["queue_depth"] == 2  # robotics' 2 jobs; vision's leased job still runs
    code, _, err = farm_cli(capsys, farm, farm.teams["vision"], "cancel", str(vision))
    assert code == 2 and "409" in err


def test_tokens_list_and_revoke(farm, capsys):
    extra = farm.call("POST", "/v1/tokens", json={"role": "agent", "name": "spare agent"}, expect=201).json()["token"]
    code, out, _ = farm_cli(capsys, farm, ADMIN, "tokens", "--json")
    items = json.loads(out)
    spare = next(t for t in items if t["name"] == "spare agent")
    assert code == 0 and all("token" not in t for t in items)
    code, out, _ = farm_cli(capsys, farm, farm.teams["vision"], "tokens")
    header, *rows = table(out)
    assert code == 0 and {r[header.index("TEAM")] for r in rows} == {"vision"}  # never another team's
    code, out, _ = farm_cli(capsys, farm, ADMIN, "tokens", "revoke", str(spare["id"]))
    assert code == 0 and out.startswith(f"token {spare['id']} (agent, spare agent) revoked at ")
    resp = farm.call("GET", "/v1/devices", token=extra)
    assert resp.status_code == 401  # refused at once
    code, _, err = farm_cli(capsys, farm, ADMIN, "tokens", "revoke")
    assert code == 2 and "needs the token's ID" in err


def test_fit_waits_for_the_new_version(farm, capsys):
    db = farm.app.state.db
    farm.app.state.predictor.settings = TrainSettings(hidden=16, max_epochs=40, patience=10)
    store_measurements(db, "SM-F000/fitboard", "onnxruntime/t1/cpu", synthetic_blocks(120))
    code, out, _ = farm_cli(capsys, farm, farm.teams["vision"], "fit", "--device-class", "SM-F000/fitboard",
                            "--wait", "--timeout", "120", "--json")
    row = json.loads(out)
    assert code == 0 and row["state"] == "ready" and row["version"] == 1 and row["runtime"] == "onnxruntime/t1/cpu"
    code, out, _ = farm_cli(capsys, farm, farm.teams["vision"], "fit", "--device-class", "SM-F000/fitboard", "--wait")
    assert code == 0 and "SM-F000/fitboard onnxruntime/t1/cpu v2 ready; MAPE" in out
    code, _, err = farm_cli(capsys, farm, farm.teams["vision"], "fit", "--device-class", "SM-NONE/x")
    assert code == 2 and "run a campaign first" in err and err.count("\n") == 1


def test_fit_adapts_from_a_base_and_says_so(farm, capsys):
    db = farm.app.state.db
    farm.app.state.predictor.settings = TrainSettings(hidden=16, max_epochs=40, patience=10)
    store_measurements(db, "SM-B000/baseboard", "onnxruntime/t1/cpu", synthetic_blocks(120))
    store_measurements(db, "SM-B001/nextboard", "onnxruntime/t1/cpu", synthetic_blocks(30, seed=4), slowdown=2.0)
    vision = farm.teams["vision"]
    assert farm_cli(capsys, farm, vision, "fit", "--device-class", "SM-B000/baseboard", "--wait")[0] == 0
    code, out, _ = farm_cli(capsys, farm, vision, "fit", "--device-class", "SM-B001/nextboard", "--base",
                            "SM-B000/baseboard", "--wait")
    assert code == 0 and "adapted from SM-B000/baseboard onnxruntime/t1/cpu v1" in out and "before adapting" in out
    code, _, err = farm_cli(capsys, farm, vision, "fit", "--device-class", "SM-B001/nextboard", "--base", "SM-NONE/x")
    assert code == 2 and "404" in err and "SM-NONE/x" in err and err.count("\n") == 1
    code, _, err = farm_cli(capsys, farm, vision, "fit", "--device-class", "SM-B001/nextboard", "--base-version", "2")
    assert code == 2 and "need --base" in err


def test_unreachable_server_and_bad_token_exit_with_one_line(farm, capsys):
    code = main(["--server", f"http://127.0.0.1:{free_port()}", "--token", "x", "status"])
    err = capsys.readouterr().err
    assert code == 3 and "unreachable" in err and err.count("\n") == 1
    code, _, err = farm_cli(capsys, farm, "not-a-token", "devices")
    assert code == 2 and "401" in err and err.count("\n") == 1


def test_every_console_script_prints_its_version(capsys):
    from importlib.metadata import version

    from android_harness.cli import build_parser as agent_parser
    from profiler_server.cli import parse_args as server_args
    from search_client.cli import all_commands
    from search_client.cli import build_parser as search_parser

    expected = version("rtseg-farm")
    for prog, parse in (("profiler-server", server_args), ("phone-agent", agent_parser().parse_args),
                        ("rtseg-search", search_parser(all_commands()).parse_args), ("rtseg-farm", main)):
        with pytest.raises(SystemExit) as exit_:
            parse(["--version"])
        assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"{prog} {expected}"
