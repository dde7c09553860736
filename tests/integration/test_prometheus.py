"""The shipped alert rules and dashboard against Debian 12's real Prometheus (package `prometheus`,
installed by scripts/dev-setup): promtool checks the rules and runs their unit tests (input series
for every alert, tests/monitoring/autogit-alerts.test.yaml); a real Prometheus process (own port,
own storage) scrapes a real agent's `api.metrics_listen` while it serves the GitLab double's jobs,
and every query of the dashboard is evaluated through Prometheus's HTTP API and must return series.

Under CI=true a missing prometheus/promtool fails these tests instead of skipping them.
With AUTOGIT_DASHBOARD_PNG=path the scrape test also draws the dashboard from Prometheus's data
(monitoring/render.py; docs/operations/dashboard.png is made this way)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from agent_process import Fleet, until
from ci_policy import require
from runner_harness import finished

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "charts/autogit/files/autogit-alerts.yaml"
DASHBOARD = REPO / "charts/autogit/files/autogit-dashboard.json"
ALERT_TESTS = REPO / "tests/monitoring/autogit-alerts.test.yaml"


def tool(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"{name} is not installed (scripts/dev-setup installs Debian's prometheus package)")
    assert path is not None
    return path


def load_module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of the shipped dashboard."""
    board = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in board["panels"] for target in panel.get("targets", [])]


def test_promtool_checks_the_alert_rules():
    out = subprocess.run([tool("promtool"), "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 6 rules found" in out.stdout


def test_every_alert_has_promtool_unit_tests_that_pass():
    alerts = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]}
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    firing = {case["alertname"] for t in tests for case in t["alert_rule_test"] if case["exp_alerts"]}
    quiet = {case["alertname"] for t in tests for case in t["alert_rule_test"] if not case["exp_alerts"]}
    assert alerts == firing == quiet, "each alert is tested firing and staying quiet"
    out = subprocess.run([tool("promtool"), "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_dashboard_file_is_what_the_grafana_sdk_builds():
    builder = load_module(REPO / "monitoring/dashboard.py")
    assert DASHBOARD.read_text() == builder.render(), "run: .venv/bin/python monitoring/dashboard.py"
    titles = {title for title, _ in dashboard_queries()}
    for needed in ("Queue time p50 / p95 by runner kind", "Waiting jobs by reason", "GPUs busy / free / unhealthy", "Runners by state", "GitLab refusals"):
        assert needed in titles


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    """A real Prometheus on its own port and storage, scraping one target every second."""

    def __init__(self, tmp: Path, target: str) -> None:
        self.port = free_port()
        self.dir = tmp / "prometheus"
        self.dir.mkdir()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{"job_name": "autogit-agents", "static_configs": [{"targets": [target]}]}],
        }
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (self.dir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [tool("prometheus"), f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def get(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read()) if path.startswith("/api/") else resp.read()

    def ready(self) -> bool:
        try:
            self.get("/-/ready")
            return True
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = self.get("/api/v1/query", query=expr)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def stop(self) -> str:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()
        return (self.dir / "prometheus.log").read_text(errors="replace")[-3000:]


def as_evaluated(expr: str) -> str:
    # Grafana replaces $__rate_interval with at least four scrape intervals; 1s scrapes here.
    return expr.replace("$__rate_interval", "30s")


@pytest.mark.docker
@pytest.mark.slow
async def test_a_real_prometheus_scrapes_the_agent_and_every_dashboard_query_returns_series(sim, runner_image, tmp_path):
    tool("prometheus")
    metrics_port = free_port()
    # A fleet of one, so that the fleet panel has its series too.
    group = Fleet(sim, runner_image, tmp_path, n=1, sections={0: {
        "api": {"metrics_listen": f"127.0.0.1:{metrics_port}"},
    }})  # fmt: skip
    [agent] = group.hosts
    prom = Prometheus(tmp_path, f"127.0.0.1:{metrics_port}")
    began = time.time()
    try:
        await until(prom.ready, 60, "Prometheus to be ready")
        agent.start()
        stuck = sim.add_job(project_id=1, tags=["s390x"], script=["true"], name="no-host-has-it").id
        jobs = [sim.add_job(project_id=1, script=["echo ok"], name=f"plain{i}").id for i in range(3)]
        await until(lambda: finished(sim, jobs), 180, "three jobs to finish", [agent])
        await until(lambda: bool(prom.query("autogit_job_queue_seconds_count")), 30, "the queue time to be scraped", [agent])
        await asyncio.sleep(3)  # a few more scrapes, so that every rate() window has two samples of the latest values

        assert prom.query('up{job="autogit-agents"}')[0]["value"][1] == "1"
        [native] = prom.query('autogit_job_queue_seconds_count{kind="native", tags=""}')
        assert float(native["value"][1]) == 3
        # Every query must return series; a busy machine may delay a scrape (or a fleet heartbeat),
        # so each gets a few seconds to.
        deadline = time.monotonic() + 30
        while empty := [(title, expr) for title, expr in dashboard_queries() if not prom.query(as_evaluated(expr))]:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        assert empty == [], f"dashboard queries that returned no series: {empty}\n{agent.tail()}"
        refusals = prom.query(as_evaluated(dict(dashboard_queries())["GitLab refusals"]))
        # No refusal here: each code's series is there at 0 from the start (so the first one shows in increase()).
        assert {r["metric"]["code"] for r in refusals} == {"401", "403", "404", "429"}
        assert {r["value"][1] for r in refusals} == {"0"}
        # The rules load in this Prometheus, and the one whose condition holds is pending or firing.
        rules = prom.get("/api/v1/rules")["data"]["groups"][0]["rules"]
        assert len(rules) == 6 and all(r["health"] == "ok" for r in rules), rules
        if target := os.environ.get("AUTOGIT_DASHBOARD_PNG"):
            # For the picture: waves of jobs longer than the runners can take at once (max_runners 3),
            # so that queue times, runner states and the queue move.
            for wave in range(4):
                more = [sim.add_job(project_id=1, script=["sleep 4", "echo ok"], name=f"wave{wave}-{i}").id for i in range(6)]
                await until(lambda more=more: finished(sim, more), 240, f"wave {wave}", [agent])
                await asyncio.sleep(5)
            render = load_module(REPO / "monitoring/render.py")
            render.draw(prom.get, began, time.time(), Path(target), as_evaluated)
        sim.cancel_job(stuck)
    finally:
        try:
            await group.close()
        finally:
            log = prom.stop()
        if os.environ.get("AUTOGIT_TEST_VERBOSE"):
            print(log)
