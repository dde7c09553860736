"""The GitLab simulator (a named double of GitLab) held to GitLab's documented contract by
python-gitlab, the real client, and by plain HTTP where the headers themselves are the contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import gitlab
import pytest
import requests

from autogit.gitlab_double import GitLabSimulator

API = "/api/v4"


def gl_for(sim: GitLabSimulator, **kw: Any) -> gitlab.Gitlab:
    gl = gitlab.Gitlab(sim.url, private_token=sim.private_token, timeout=10, **kw)
    gl.auth()  # as python-gitlab's docs ask before gl.user.runners.create
    return gl


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def request_job(sim: GitLabSimulator, token: str) -> requests.Response:
    return requests.post(f"{sim.url}{API}/jobs/request", json={"token": token, "info": {"name": "test"}}, timeout=10)


# ------------------------------------------------------------------------------------------ auth
def test_user_api_needs_a_token(gitlab_sim: GitLabSimulator) -> None:
    bare = requests.get(f"{gitlab_sim.url}{API}/user", timeout=10)
    assert bare.status_code == 401
    assert bare.json() == {"message": "401 Unauthorized"}
    assert requests.get(f"{gitlab_sim.url}{API}/projects/1/jobs", timeout=10).status_code == 401

    with pytest.raises(gitlab.GitlabAuthenticationError):
        gitlab.Gitlab(gitlab_sim.url, private_token="wrong", timeout=10).auth()

    gl = gl_for(gitlab_sim)
    gl.auth()
    assert gl.user is not None and gl.user.username == "root"
    bearer = gitlab.Gitlab(gitlab_sim.url, oauth_token=gitlab_sim.private_token, timeout=10)
    bearer.auth()
    assert bearer.user is not None and bearer.user.is_admin is True


# ------------------------------------------------------------------------------------ pagination
def test_ids_in_other_scripts_digits_are_not_found_not_a_500(gitlab_sim: GitLabSimulator) -> None:
    """GitLab matches `:id` as a number or a path (lib/api/api.rb NO_SLASH_URL_PART_REGEX) and
    answers 404 for anything it cannot find; '²' passed str.isdigit() and int() raised."""
    headers = gitlab_sim.admin_headers
    for path in ("/projects/%C2%B2/jobs", "/groups/%C2%B2", "/groups/%C2%B2/projects"):
        got = requests.get(f"{gitlab_sim.url}{API}{path}", headers=headers, timeout=10)
        assert got.status_code == 404, (path, got.status_code, got.text)


def test_250_pending_jobs_page_like_gitlab(gitlab_sim: GitLabSimulator) -> None:
    for i in range(250):
        gitlab_sim.add_job(project_id=1, tags=["gpu"] if i % 5 == 0 else [], name=f"job{i}")
    other = gitlab_sim.add_job(project_id=1, name="done")
    gitlab_sim.cancel_job(other.id)

    url = f"{gitlab_sim.url}{API}/projects/1/jobs"
    headers = {"PRIVATE-TOKEN": gitlab_sim.private_token}
    pages = []
    for page in (1, 2, 3):
        resp = requests.get(url, params={"scope[]": "pending", "per_page": 100, "page": page},
                            headers=headers, timeout=10)
        assert resp.status_code == 200
        assert resp.headers["X-Total"] == "250"
        assert resp.headers["X-Total-Pages"] == "3"
        assert resp.headers["X-Per-Page"] == "100"
        assert resp.headers["X-Page"] == str(page)
        assert resp.headers["X-Next-Page"] == ("" if page == 3 else str(page + 1))
        assert resp.headers["X-Prev-Page"] == ("" if page == 1 else str(page - 1))
        rels = {part.split('rel="')[1].rstrip('"') for part in resp.headers["Link"].split(", ")}
        assert ("next" in rels) == (page < 3) and ("prev" in rels) == (page > 1) and {"first", "last"} <= rels
        pages.append(resp.json())
    assert [len(p) for p in pages] == [100, 100, 50]

    default = requests.get(url, params={"scope[]": "pending"}, headers=headers, timeout=10)
    assert default.headers["X-Per-Page"] == "20" and len(default.json()) == 20
    capped = requests.get(url, params={"scope[]": "pending", "per_page": 500}, headers=headers, timeout=10)
    assert capped.headers["X-Per-Page"] == "100" and len(capped.json()) == 100

    # python-gitlab follows the Link headers across the pages
    jobs = gl_for(gitlab_sim).projects.get(1, lazy=True).jobs.list(scope=["pending"], per_page=100, get_all=True)
    ids = [j.id for j in jobs]
    assert len(ids) == len(set(ids)) == 250
    assert ids == sorted(ids, reverse=True), "GitLab lists jobs newest first"
    assert all(j.status == "pending" and j.runner is None for j in jobs)
    assert sum(1 for j in jobs if j.tag_list == ["gpu"]) == 50


def test_scopes_filter_and_bad_scope_is_400(gitlab_sim: GitLabSimulator) -> None:
    pending = gitlab_sim.add_job(name="p")
    canceled = gitlab_sim.add_job(name="c")
    gitlab_sim.cancel_job(canceled.id)
    project = gl_for(gitlab_sim).projects.get(1, lazy=True)
    assert [j.id for j in project.jobs.list(scope=["pending", "running"], get_all=True)] == [pending.id]
    assert [j.id for j in project.jobs.list(scope=["canceled"], get_all=True)] == [canceled.id]
    assert len(project.jobs.list(get_all=True)) == 2
    with pytest.raises(gitlab.GitlabListError) as err:
        project.jobs.list(scope=["nonsense"], get_all=True)
    assert err.value.response_code == 400


def test_group_projects_paginate(gitlab_sim: GitLabSimulator) -> None:
    gitlab_sim.add_group(7, "fleet")
    for pid in range(100, 125):
        gitlab_sim.add_project(pid, f"fleet/p{pid}", group_id=7)
    gl = gl_for(gitlab_sim)
    listing = gl.groups.get(7, lazy=True).projects.list(per_page=10, iterator=True)
    assert listing.total == 25 and listing.total_pages == 3
    assert sorted(p.id for p in listing) == list(range(100, 125))
    assert {p.id for p in gl.projects.list(get_all=True)} >= {1, 100, 124}
    with pytest.raises(gitlab.GitlabListError) as err:
        gl.groups.get(999, lazy=True).projects.list(get_all=True)
    assert err.value.response_code == 404


# ------------------------------------------------------------------------------------------ jobs
def test_job_fetch_has_gitlabs_fields(gitlab_sim: GitLabSimulator) -> None:
    job = gitlab_sim.add_job(project_id=1, tags=["arm64"], name="build", image_platform="linux/arm64")
    fetched = gl_for(gitlab_sim).projects.get(1, lazy=True).jobs.get(job.id)
    attrs = fetched.asdict()
    for key in ("id", "name", "stage", "status", "ref", "tag", "tag_list", "created_at", "started_at",
                "finished_at", "duration", "queued_duration", "allow_failure", "web_url", "runner",
                "pipeline", "project", "user"):
        assert key in attrs, key
    assert attrs["status"] == "pending" and attrs["runner"] is None and attrs["started_at"] is None
    assert attrs["tag_list"] == ["arm64"] and attrs["name"] == "build"
    assert attrs["created_at"].endswith("Z") and attrs["pipeline"]["project_id"] == 1
    with pytest.raises(gitlab.GitlabGetError) as err:
        gl_for(gitlab_sim).projects.get(1, lazy=True).jobs.get(99999)
    assert err.value.response_code == 404


# --------------------------------------------------------------------------------------- runners
def test_runner_create_verify_delete(gitlab_sim: GitLabSimulator) -> None:
    gl = gl_for(gitlab_sim)
    created = gl.user.runners.create({"runner_type": "project_type", "project_id": 1, "description": "host1-gpu0",
                                      "tag_list": ["gpu", "cuda"], "run_untagged": False, "locked": True,
                                      "maximum_timeout": 600, "maintenance_note": "autogit"})
    assert created.token.startswith("glrt-") and created.token_expires_at is None
    detail = gl.runners.get(created.id)
    assert detail.tag_list == ["cuda", "gpu"] and detail.run_untagged is False and detail.locked is True
    assert detail.runner_type == "project_type" and detail.status == "never_contacted"
    # RunnerDetails shows `projects` only where asked (lib/api/entities/ci/runner_details.rb)
    assert "projects" not in detail.attributes
    assert gl.runners.get(created.id, include_projects=True).projects[0]["id"] == 1

    instance = gl.user.runners.create({"runner_type": "instance_type", "tag_list": ["arm64"]})
    assert [r.id for r in gl.runners.list(get_all=True)] == [created.id], "instance runners are under /runners/all"
    assert [r.id for r in gl.runners_all.list(tag_list=["arm64"], get_all=True)] == [instance.id]
    assert {r.id for r in gl.runners_all.list(get_all=True)} == {created.id, instance.id}

    verified = requests.post(f"{gitlab_sim.url}{API}/runners/verify",
                             data={"token": created.token, "system_id": "s_0123456789ab"}, timeout=10)
    assert verified.status_code == 200 and verified.json()["id"] == created.id
    gl.runners.verify(created.token)  # python-gitlab sends only the token
    with pytest.raises(gitlab.GitlabVerifyError):
        gl.runners.verify("glrt-not-a-runner")

    gl.runners.delete(created.id)
    with pytest.raises(gitlab.GitlabGetError) as err:
        gl.runners.get(created.id)
    assert err.value.response_code == 404
    gone = requests.delete(f"{gitlab_sim.url}{API}/runners", data={"token": instance.token}, timeout=10)
    assert gone.status_code == 204
    again = requests.delete(f"{gitlab_sim.url}{API}/runners", data={"token": instance.token}, timeout=10)
    assert again.status_code == 403
    assert gitlab_sim.runners == []

    with pytest.raises(gitlab.GitlabCreateError) as bad:
        gl.user.runners.create({"runner_type": "cluster_type"})
    assert bad.value.response_code == 400


def test_runner_protocol_follows_gitlabs_tag_rule(gitlab_sim: GitLabSimulator) -> None:
    gl = gl_for(gitlab_sim)
    untagged = gitlab_sim.add_job(name="untagged")
    arm = gitlab_sim.add_job(tags=["arm64"], name="arm", image_platform="linux/arm64")
    gpu = gitlab_sim.add_job(tags=["arm64", "gpu"], name="arm-gpu")
    arm_runner = gl.user.runners.create({"runner_type": "instance_type", "tag_list": ["arm64"],
                                         "run_untagged": False})
    paused = gl.user.runners.create({"runner_type": "instance_type", "run_untagged": True, "paused": True})

    assert request_job(gitlab_sim, "glrt-bogus").status_code == 403
    assert request_job(gitlab_sim, paused.token).status_code == 204, "a paused runner gets nothing"
    got = request_job(gitlab_sim, arm_runner.token)
    assert got.status_code == 201
    payload = got.json()
    assert payload["id"] == arm.id, "tags ⊆ runner tags: not the untagged job, not the gpu job"
    assert payload["image"]["executor_opts"]["docker"]["platform"] == "linux/arm64"
    assert payload["steps"][0]["name"] == "script" and payload["job_info"]["project_id"] == 1
    assert {v["key"] for v in payload["variables"]} >= {"CI_JOB_ID", "CI_JOB_TOKEN", "CI_PROJECT_ID"}
    assert request_job(gitlab_sim, arm_runner.token).status_code == 204
    assert gitlab_sim.job(untagged.id).status == gitlab_sim.job(gpu.id).status == "pending"

    trace_url = f"{gitlab_sim.url}{API}/jobs/{arm.id}/trace"
    token = {"Job-Token": payload["token"]}
    first = requests.patch(trace_url, data=b"aarch64\n", headers={**token, "Content-Range": "0-7"}, timeout=10)
    assert first.status_code == 202 and first.headers["Job-Status"] == "running"
    assert "X-GitLab-Trace-Update-Interval" in first.headers and first.headers["Range"] == "0-8"
    skipped = requests.patch(trace_url, data=b"x", headers={**token, "Content-Range": "20-20"}, timeout=10)
    assert skipped.status_code == 416 and skipped.headers["Range"] == "0-8"
    stranger = requests.patch(trace_url, data=b"x", headers={"Job-Token": "nope", "Content-Range": "8-8"},
                              timeout=10)
    assert stranger.status_code == 403

    done = requests.put(f"{gitlab_sim.url}{API}/jobs/{arm.id}", json={"token": payload["token"], "state": "success"},
                        timeout=10)
    assert done.status_code == 200 and done.headers["Job-Status"] == "success"
    late = requests.put(f"{gitlab_sim.url}{API}/jobs/{arm.id}", json={"token": payload["token"], "state": "failed"},
                        timeout=10)
    assert late.status_code == 403, "a finished job takes no more updates"
    job = gl.projects.get(1, lazy=True).jobs.get(arm.id)
    assert job.status == "success" and job.runner["id"] == arm_runner.id and job.duration is not None
    assert job.trace() == b"aarch64\n"
    assert gl.runners.get(arm_runner.id).status == "online"


def test_stuck_jobs_fail_but_servable_ones_wait() -> None:
    sim = GitLabSimulator(stuck_timeout_s=0.3)
    with sim.running_in_thread():
        gl = gl_for(sim)
        gl.user.runners.create({"runner_type": "instance_type", "tag_list": ["amd64"], "run_untagged": False})
        servable = sim.add_job(tags=["amd64"])
        stuck = sim.add_job(tags=["s390x"])
        wait_for(lambda: sim.job(stuck.id).status == "failed", what="the stuck job to be dropped")
        job = gl.projects.get(1, lazy=True).jobs.get(stuck.id)
        assert job.failure_reason == "stuck_or_timeout_failure"
        assert sim.job(servable.id).status == "pending"


# -------------------------------------------------------------------------------------- webhooks
class _Receiver:
    """A real HTTP endpoint that records what the simulator POSTs to it."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (stdlib API)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append((dict(self.headers), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    r = _Receiver()
    yield r
    r.server.shutdown()


def test_job_hooks_carry_the_secret_and_no_tag_list(gitlab_sim: GitLabSimulator, receiver: _Receiver) -> None:
    gitlab_sim.add_webhook(receiver.url, "s3cret-hook")
    runner = gl_for(gitlab_sim).user.runners.create({"runner_type": "instance_type", "tag_list": ["gpu"]})
    job = gitlab_sim.add_job(tags=["gpu"], name="train")
    payload = request_job(gitlab_sim, runner.token).json()
    requests.put(f"{gitlab_sim.url}{API}/jobs/{job.id}", json={"token": payload["token"], "state": "failed",
                                                               "failure_reason": "script_failure"}, timeout=10)
    wait_for(lambda: len(receiver.calls) == 3, what="three Job Hooks")

    assert [body["build_status"] for _, body in receiver.calls] == ["pending", "running", "failed"]
    for headers, body in receiver.calls:
        assert headers["X-Gitlab-Event"] == "Job Hook" and headers["X-Gitlab-Token"] == "s3cret-hook"
        assert body["object_kind"] == "build" and body["build_id"] == job.id and body["build_name"] == "train"
        assert body["project_id"] == 1 and body["pipeline_id"] == job.pipeline_id
        assert "tag_list" not in body, "GitLab's Job Hook has no job tag_list"
    assert receiver.calls[0][1]["runner"] is None
    assert receiver.calls[1][1]["runner"]["id"] == runner.id and receiver.calls[1][1]["runner"]["tags"] == ["gpu"]
    assert receiver.calls[2][1]["build_failure_reason"] == "script_failure"
    # the receiver has the third body before the simulator has recorded its answer
    wait_for(lambda: len(gitlab_sim.webhook_deliveries) == 3, what="three deliveries recorded")
    assert [d["status"] for d in gitlab_sim.webhook_deliveries] == [200, 200, 200]


# ---------------------------------------------------------------------------------------- faults
def test_fault_injection_500_then_recovery(gitlab_sim: GitLabSimulator) -> None:
    runner = gl_for(gitlab_sim).user.runners.create({"runner_type": "instance_type"})
    set_fault = requests.post(f"{gitlab_sim.url}/_sim/faults", json={"mode": "500", "seconds": 1.0}, headers=gitlab_sim.admin_headers, timeout=10)
    assert set_fault.status_code == 200
    with pytest.raises(gitlab.GitlabGetError) as err:
        gl_for(gitlab_sim, retry_transient_errors=False)
    assert err.value.response_code == 500
    assert request_job(gitlab_sim, runner.token).status_code == 500, "runner endpoints fail too"
    assert requests.get(f"{gitlab_sim.url}/_sim/state", headers=gitlab_sim.admin_headers, timeout=10).json()["fault"] == "500"
    wait_for(lambda: request_job(gitlab_sim, runner.token).status_code == 204, timeout=5, what="recovery")
    assert gl_for(gitlab_sim).user is not None


def test_fault_injection_timeout_hangs_the_api(gitlab_sim: GitLabSimulator) -> None:
    gitlab_sim.set_fault("timeout", 1.5)
    with pytest.raises(requests.Timeout):
        requests.get(f"{gitlab_sim.url}{API}/user", headers={"PRIVATE-TOKEN": gitlab_sim.private_token}, timeout=0.3)
    state = requests.get(f"{gitlab_sim.url}/_sim/state", headers=gitlab_sim.admin_headers, timeout=2)  # the control surface stays up
    assert state.status_code == 200 and state.json()["fault"] == "timeout"
    gitlab_sim.set_fault("none")
    assert requests.get(f"{gitlab_sim.url}{API}/user", headers={"PRIVATE-TOKEN": gitlab_sim.private_token},
                        timeout=5).status_code == 200


def test_control_surface_enqueues_and_reports(gitlab_sim: GitLabSimulator) -> None:
    made = requests.post(f"{gitlab_sim.url}/_sim/jobs", json={"project_id": 3, "tags": ["riscv64"], "name": "rv",
                                                             "script": ["uname -m"],
                                                             "image_platform": "linux/riscv64"}, headers=gitlab_sim.admin_headers, timeout=10)
    assert made.status_code == 201 and made.json()["tag_list"] == ["riscv64"]
    state = requests.get(f"{gitlab_sim.url}/_sim/state", headers=gitlab_sim.admin_headers, timeout=10).json()
    assert state["jobs"] == [{"id": made.json()["id"], "project_id": 3, "name": "rv", "status": "pending",
                              "tag_list": ["riscv64"], "image_platform": "linux/riscv64", "runner_id": None,
                              "failure_reason": None, "trace_bytes": 0}]
    bad = requests.post(f"{gitlab_sim.url}/_sim/faults", json={"mode": "explode"}, headers=gitlab_sim.admin_headers, timeout=10)
    assert bad.status_code == 400


def test_module_entry_point_serves() -> None:
    env = {**os.environ, "GITLAB_DOUBLE_TOKEN": "t0k"}  # never on the command line (admin_token.py)
    proc = subprocess.Popen([sys.executable, "-m", "autogit.gitlab_double"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split(" at ")[1].split()[0]  # ".../api/v4"
        assert requests.get(f"{url}/user", timeout=10).status_code == 401
        assert requests.get(f"{url}/user", headers={"PRIVATE-TOKEN": "t0k"}, timeout=10).json()["username"] == "root"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


@pytest.mark.parametrize("gitlab_sim", [{"long_poll_s": 20.0}], indirect=True)
def test_long_polling_holds_a_current_request_until_a_job_is_queued(gitlab_sim: GitLabSimulator) -> None:
    """workhorse/internal/builds/register.go: a request with the current last_update is held."""
    runner = gl_for(gitlab_sim).user.runners.create({"runner_type": "instance_type", "run_untagged": True})
    url = f"{gitlab_sim.url}{API}/jobs/request"
    stale = requests.post(url, json={"token": runner.token, "last_update": "old"}, timeout=10)
    assert stale.status_code == 204, "a runner with a stale last_update is answered at once"
    current = stale.headers["X-GitLab-Last-Update"]
    result: dict[str, Any] = {}

    def held() -> None:
        t0 = time.monotonic()
        result["resp"] = requests.post(url, json={"token": runner.token, "last_update": current}, timeout=30)
        result["s"] = time.monotonic() - t0

    thread = threading.Thread(target=held)
    thread.start()
    time.sleep(1.0)
    assert "resp" not in result, "a current request is held while nothing is queued"
    job = gitlab_sim.add_job(name="wakes it")
    thread.join(10)
    assert result["resp"].status_code == 201 and result["resp"].json()["id"] == job.id
    assert 1.0 <= result["s"] < 3.0


def test_the_final_update_waits_for_the_whole_trace(gitlab_sim: GitLabSimulator) -> None:
    """app/services/ci/update_build_state_service.rb: 202 until GitLab has every trace byte."""
    runner = gl_for(gitlab_sim).user.runners.create({"runner_type": "instance_type", "run_untagged": True})
    gitlab_sim.add_job(name="traced")
    payload = request_job(gitlab_sim, runner.token).json()
    job_url = f"{gitlab_sim.url}{API}/jobs/{payload['id']}"
    final = {"token": payload["token"], "state": "success", "output": {"bytesize": 5, "checksum": "crc32:00000000"}}
    assert requests.put(job_url, json=final, timeout=10).status_code == 202
    assert gitlab_sim.job(payload["id"]).status == "running"
    requests.patch(f"{job_url}/trace", data=b"hello", headers={"Job-Token": payload["token"], "Content-Range": "0-4"}, timeout=10)
    assert requests.put(job_url, json=final, timeout=10).status_code == 200
    assert gitlab_sim.job(payload["id"]).status == "success"


def test_jobs_carry_git_strategy_none_unless_given(gitlab_sim: GitLabSimulator) -> None:
    runner = gl_for(gitlab_sim).user.runners.create({"runner_type": "instance_type", "run_untagged": True})
    gitlab_sim.add_job(name="a")
    gitlab_sim.add_job(name="b", variables={"GIT_STRATEGY": "fetch"})
    first, second = (request_job(gitlab_sim, runner.token).json() for _ in range(2))
    strategy = [next(v["value"] for v in p["variables"] if v["key"] == "GIT_STRATEGY") for p in (first, second)]
    assert strategy == ["none", "fetch"]
