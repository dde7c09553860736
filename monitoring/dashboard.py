"""Builds charts/autogit/files/autogit-dashboard.json with Grafana's own typed builders
(grafana-foundation-sdk, Apache-2.0): `python monitoring/dashboard.py` rewrites the file;
tests/monitoring/test_dashboard.py checks the committed file is exactly this output, and
tests/monitoring/test_prometheus.py evaluates every query against a real Prometheus scraping a
real agent. Series and panels: docs/operations/metrics.md and dashboard.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DataSourceRef

TARGET = Path(__file__).resolve().parents[1] / "charts/autogit/files/autogit-dashboard.json"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"

# (title, unit, [(expr, legend)], description); queries aggregate over hosts: a fleet's agents
# all report GitLab's queue (max), each its own runners and GPUs (sum).
PANELS: list[tuple[str, str, list[tuple[str, str]], str]] = [
    ("Queue time p50 / p95 by runner kind", "s", [
        (f"histogram_quantile(0.5, sum by (le, kind) (rate(autogit_job_queue_seconds_bucket[{RATE}])))", "p50 {{kind}}"),
        (f"histogram_quantile(0.95, sum by (le, kind) (rate(autogit_job_queue_seconds_bucket[{RATE}])))", "p95 {{kind}}"),
    ], "Pending → running of the jobs the agents' runners started (GitLab's queued_duration)."),
    ("Oldest pending job by tag set", "s", [
        ("max by (tags) (autogit_pending_oldest_seconds)", "{{tags}}"),
    ], "How long the oldest job of each tag set has been pending; '' is untagged, 'other' the tag sets beyond the largest ten."),
    ("Waiting jobs by reason", "short", [
        ("sum by (reason) (autogit_jobs_waiting)", "{{reason}}"),
    ], "Jobs the agents' plans could not serve, and why."),
    ("Pending jobs by tag set", "short", [
        ("max by (tags) (autogit_pending_jobs)", "{{tags}}"),
    ], "GitLab's pending jobs in the agents' scope."),
    ("Pending → runner ready p95 by kind", "s", [
        (f"histogram_quantile(0.95, sum by (le, kind) (rate(autogit_job_runner_ready_seconds_bucket[{RATE}])))", "p95 {{kind}}"),
    ], "From a job queued to the runner started for it."),
    ("GPUs busy / free / unhealthy", "short", [
        ("sum by (state) (autogit_gpus)", "{{state}}"),
    ], "busy: its runner runs a job; held: its runner is idle; drained: by an operator."),
    ("Runners by state", "short", [
        ("sum by (state) (autogit_runners)", "{{state}}"),
    ], "The agents' runner containers."),
    ("GitLab refusals", "short", [
        (f'sum by (code, endpoint) (increase(autogit_gitlab_requests_total{{code=~"4.."}}[{RATE}]))', "{{code}} {{endpoint}}"),
    ], "401: the token is refused; 403: a scope or role is missing; 404: a project is gone or hidden; 429: rate-limited."),
    ("GitLab API calls by endpoint", "reqps", [
        (f"sum by (endpoint) (rate(autogit_gitlab_requests_total[{RATE}]))", "{{endpoint}}"),
    ], "Every answer, retries included."),
    ("GitLab rate-limit budget left", "percentunit", [
        ("min by (limit) (autogit_gitlab_ratelimit_remaining / autogit_gitlab_ratelimit_limit)", "{{limit}}"),
    ], "From GitLab's RateLimit-* headers; the agents lengthen their poll interval as it runs low."),
    ("Runner start failures by cause", "short", [
        (f"sum by (cause) (increase(autogit_runner_start_failures_total[{RATE}]))", "{{cause}}"),
    ], "gitlab-refused: a scope or role; invalid-configuration: e.g. runner.image; runtime-unavailable: Docker or the cluster."),
    ("Fleet: pending jobs by owner, jobs claimed by host", "short", [
        ("max by (owner) (autogit_fleet_jobs)", "owned by {{owner}}"),
        (f"sum by (instance, claim) (increase(autogit_fleet_claimed_jobs_total[{RATE}]))", "{{claim}} {{instance}}"),
    ], "Who owns each pending job (every host computes the same), and the jobs each host claimed or took over."),
]


def build() -> dict:
    board = (
        dash.Dashboard("AutoGit: CI queue and runners")
        .uid("autogit-queue")
        .tags(["autogit", "gitlab-ci"])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .with_variable(dash.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )
    board = board.with_panel(
        stat.Panel().title("Agents up").datasource(DATASOURCE).height(4).span(6)
        .with_target(prometheus.Dataquery().expr('sum(up{job=~".*autogit.*"})').legend_format("up").ref_id("A"))
    )  # fmt: skip
    board = board.with_panel(
        stat.Panel().title("Oldest wait (fleet)").unit("s").datasource(DATASOURCE).height(4).span(6)
        .with_target(prometheus.Dataquery().expr("max(autogit_pending_oldest_wait_seconds)").legend_format("oldest").ref_id("A"))
    )  # fmt: skip
    for title, unit, queries, description in PANELS:
        panel = timeseries.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE).height(8).span(12)
        panel = panel.fill_opacity(10).draw_style(common.GraphDrawStyle.LINE)
        if title.startswith(("Waiting", "Runners", "GPUs")):
            panel = panel.stacking(common_builder.StackingConfig().mode(common.StackingMode.NORMAL))
        for i, (expr, legend) in enumerate(queries):
            panel = panel.with_target(prometheus.Dataquery().expr(expr).legend_format(legend).ref_id("ABCDEFGH"[i]))
        board = board.with_panel(panel)
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    TARGET.write_text(render())
    print(f"wrote {TARGET}", file=sys.stderr)
