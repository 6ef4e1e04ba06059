"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright; no browser
is downloaded) against a live ``profiler-server`` process on loopback with two registered devices, a
finished campaign with its fitted predictor, a running campaign and a measured network: every page
shows them, cancel works without a reload, ``/docs`` renders from the server's own assets, and a
screenshot of each page is written under ``runs/dashboard/``."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest
import torch
from farm_helpers import ADMIN, DEVICE_CLASS, LiveServer, bearer, small_configs, stats

from shared.export import export_module_onnx

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(__file__).resolve().parents[2] / "runs" / "dashboard"
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")


class Lab:
    """The test plays the agent through the real HTTP protocol (lease, report with temperatures)."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=120)
        admin = bearer(ADMIN)
        self.tokens = {n: self.http.post("/v1/teams", json={"name": n}, headers=admin).json()["token"]
                       for n in ("vision", "audio")}  # fmt: skip
        self.team = bearer(self.tokens["vision"])
        self.agent = bearer(self.http.post("/v1/tokens", json={"role": "agent"}, headers=admin).json()["token"])
        devices = [{"serial": s, "device_class": DEVICE_CLASS, "kind": "host"} for s in ("phone-1", "phone-2")]
        r = self.http.post("/v1/agents", json={"name": "bench", "devices": devices}, headers=self.agent)
        self.agent_id = r.json()["agent_id"]

    def lease(self, serial: str) -> dict | None:
        body = {"agent_id": self.agent_id, "serial": serial}
        return self.http.post("/v1/jobs/lease", json=body, headers=self.agent).json()["job"]

    def report(self, job: dict, serial: str, median: float) -> None:
        body = {"lease_id": job["lease_id"], "serial": serial,
                "stats": {**stats(median), "temp_before_c": 38.0, "temp_after_c": 41.5}}  # fmt: skip
        assert self.http.post(f"/v1/jobs/{job['job_id']}/result", json=body, headers=self.agent).status_code == 200

    def measure_all(self, serial: str, latency_of) -> None:
        for _ in range(500):  # bounded
            job = self.lease(serial)
            if job is None:
                return
            config = self.http.get(f"/v1/jobs/{job['job_id']}", headers=bearer(ADMIN)).json()
            self.report(job, serial, latency_of(config))
        raise AssertionError("queue did not drain")

    def wait_predictor(self, timeout: float = 240) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = [p for p in self.http.get("/v1/predictors").json() if p["state"] == "ready"]
            if ready:
                return ready[0]
            time.sleep(1)
        raise AssertionError("no predictor became ready")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    data = tmp_path_factory.mktemp("dashboard") / "data"
    data.mkdir()
    server = LiveServer(data, env={"RTSEG_OFFLINE_AFTER_S": "3600"}).start(timeout=240)
    lab = Lab(server.url)
    lab.url = server.url
    configs = small_configs(60)
    r = lab.http.post("/v1/campaigns", json={"device_class": DEVICE_CLASS, "configs": configs}, headers=lab.team)
    assert r.status_code == 201, r.text
    # jobs are queued in config order, so a latency growing with the job id grows with the
    # config's output channels: something the predictor can learn
    lab.measure_all("phone-1", lambda job: 0.05 + 0.01 * job["id"])
    lab.predictor = lab.wait_predictor()
    running = lab.http.post("/v1/campaigns", json={"device_class": DEVICE_CLASS, "configs": small_configs(4, 100),
                                                   "priority": 5}, headers=lab.team).json()  # fmt: skip
    lab.running_campaign = running
    lab.busy_job = lab.lease("phone-2")  # phone-2 is busy with it; three jobs stay queued
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1))
    files = {"file": ("seg.onnx", export_module_onnx(net, [torch.randn(1, 3, 32, 32)]), "application/octet-stream")}
    form = {"device_class": DEVICE_CLASS, "name": "final-seg-net", "predicted_ms": "3.2"}
    lab.network = lab.http.post("/v1/networks", files=files, data=form, headers=lab.team).json()
    network_job = lab.lease("phone-1")
    assert network_job["job_id"] == lab.network["job_id"]  # priority 10 > the campaign's 5
    lab.report(network_job, "phone-1", 3.5)
    yield lab
    lab.http.close()
    server.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _logged_in(browser, lab, token: str):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(lab.url + "/")
    assert page.locator("h1").inner_text() == "Log in"
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_selector("#devices-online")
    return page, requests


def test_every_page_shows_the_farm_and_cancel_works_in_place(browser, lab):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page, requests = _logged_in(browser, lab, lab.tokens["vision"])
    assert "team vision" in page.inner_text("#who")
    assert page.inner_text("#devices-online .value") == "2"
    assert page.inner_text("#queue-depth .value") == "3" and page.inner_text("#running .value") == "1"
    assert float(page.inner_text("#jobs-per-minute .value")) == pytest.approx(61 / 10, abs=0.05)
    assert page.inner_text("#predictors-served .value") == "1"
    page.screenshot(path=str(SHOTS / "overview.png"), full_page=True)

    page.click("nav a[data-page=devices]")
    busy = page.locator("tr[data-serial=phone-2]")
    assert "online" in busy.inner_text() and f"job {lab.busy_job['job_id']}" in busy.inner_text()
    phone1 = page.locator("tr[data-serial=phone-1]").inner_text()
    assert "41.5 °C" in phone1 and "\t61\t" in phone1 and "idle" in phone1  # 60 blocks + the network today
    page.screenshot(path=str(SHOTS / "devices.png"), full_page=True)

    page.click("nav a[data-page=predictors]")
    section = page.locator("section.predictor")
    assert DEVICE_CLASS in section.locator("h2").inner_text()
    row = section.locator("table.versions tbody tr").first.inner_text()
    assert row.startswith(f"v{lab.predictor['version']}") and "ready" in row
    assert section.locator("th", has_text="random forest MAPE").count() == 1
    assert section.locator("svg.scatter circle.pt").count() == lab.predictor["n_test"]
    assert "held-out split" in section.locator("figcaption").inner_text()
    page.screenshot(path=str(SHOTS / "predictors.png"), full_page=True)

    page.click("nav a[data-page=networks]")
    net = page.locator(f"tr[data-job='{lab.network['job_id']}']").inner_text()
    assert "final-seg-net" in net and "3.20 ms" in net and "3.50 ms" in net and "-8.6 %" in net
    page.screenshot(path=str(SHOTS / "networks.png"), full_page=True)

    page.click("nav a[data-page=campaigns]")
    campaign_id = lab.running_campaign["id"]
    row = page.locator(f"tr[data-campaign='{campaign_id}']")
    assert "running" in row.locator("td.state").inner_text() and "vision" in row.inner_text()
    assert "1 running" in row.inner_text() and "3 queued" in row.inner_text()
    assert "done" in page.locator("tr[data-campaign='1'] td.state").inner_text()
    page.screenshot(path=str(SHOTS / "campaigns.png"), full_page=True)
    page.evaluate("window.__notReloaded = true")
    row.locator("button[data-cancel]").click()
    page.wait_for_function(
        f"document.querySelector(\"tr[data-campaign='{campaign_id}'] td.state\").innerText.includes('cancelled')",
        timeout=20_000,
    )
    assert page.evaluate("window.__notReloaded === true")  # updated in place, no full reload
    assert f"campaign {campaign_id} cancelled" in page.inner_text("#flash")
    assert row.locator("button[data-cancel]").count() == 0
    page.screenshot(path=str(SHOTS / "campaigns-cancelled.png"), full_page=True)
    view = lab.http.get(f"/v1/campaigns/{campaign_id}", headers=lab.team).json()
    assert view["state"] == "cancelled" and view["queued"] == 0 and view["running"] == 1
    assert all(url.startswith(lab.url) for url in requests), [u for u in requests if not u.startswith(lab.url)]


def test_the_refresh_brings_new_state_without_a_reload(browser, lab):
    page, _ = _logged_in(browser, lab, lab.tokens["vision"])
    page.click("nav a[data-page=devices]")
    page.evaluate("window.__notReloaded = true")
    lab.report(lab.busy_job, "phone-2", 1.0)  # phone-2 finishes its job behind the page's back
    page.evaluate("window.rtsegRefresh()")
    page.wait_for_function(
        "document.querySelector('tr[data-serial=phone-2] td.current-job').innerText === 'idle'", timeout=20_000
    )
    assert page.evaluate("window.__notReloaded === true")


def test_another_team_sees_neither_the_campaigns_nor_the_networks_and_cannot_cancel(browser, lab):
    page, _ = _logged_in(browser, lab, lab.tokens["audio"])
    page.click("nav a[data-page=campaigns]")
    assert page.locator("tr[data-campaign]").count() == 0 and "No campaign yet" in page.inner_text("main")
    page.click("nav a[data-page=networks]")
    assert page.locator("tr[data-job]").count() == 0
    page.goto(lab.url + "/ui/devices")
    assert page.locator("tr[data-serial]").count() == 2  # devices are lab-wide
    r = page.request.post(f"{lab.url}/ui/campaigns/1/cancel")
    assert r.status == 404 and "another team" in r.json()["detail"]


def test_a_bad_token_is_refused_and_docs_render_offline(browser, lab):
    page = browser.new_page()
    page.goto(lab.url + "/")
    page.fill("#token", "not-a-token")
    page.click("button[type=submit]")
    assert page.inner_text("#login-error") == "unknown or revoked token"
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(lab.url + "/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
    assert "rtseg profiler server" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector("[data-path='/v1/campaigns/{campaign_id}/cancel']", timeout=30_000)
    page.screenshot(path=str(SHOTS / "docs.png"))
    assert requests and all(url.startswith(lab.url) for url in requests), requests
