"""The GitLab double's bodies held to GitLab's own examples and schemas (tests/upstream/gitlab/,
with their source paths and commits): the same keys, values of the same JSON types; and the rules
behind the values: REST `status` as `deprecated_rest_status`, `queued_duration` and GraphQL
`queuedAt` from queued_at, `projects` only where asked. Over HTTP, as clients see them."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from autogit.gitlab_double import GitLabSimulator

API = "/api/v4"
UPSTREAM = Path(__file__).resolve().parents[1] / "upstream" / "gitlab"
HOUR, DAY = 3600.0, 86400.0


def upstream(name: str) -> Any:
    return json.loads((UPSTREAM / name).read_text())


def json_type(value: Any) -> str:
    for kind, types in (("null", type(None)), ("boolean", bool), ("integer", int), ("number", float),
                        ("string", str), ("array", list), ("object", dict)):  # fmt: skip
        if isinstance(value, types):
            return kind
    raise AssertionError(f"not JSON: {value!r}")


def same_shape(ours: Any, theirs: Any, path: str = "$", nullable: frozenset[str] = frozenset()) -> list[str]:
    """Where our body differs from GitLab's example: missing or extra keys, or a value of another
    JSON type (a null on either side is allowed where the entity says the field may be nil, listed
    in `nullable` by path; integer and number are one type, as JSON has one)."""
    out: list[str] = []
    if isinstance(theirs, dict) and isinstance(ours, dict):
        out += [f"{path}.{k}: missing" for k in sorted(set(theirs) - set(ours))]
        out += [f"{path}.{k}: not in GitLab's body" for k in sorted(set(ours) - set(theirs))]
        for key in sorted(set(ours) & set(theirs)):
            out += same_shape(ours[key], theirs[key], f"{path}.{key}", nullable)
        return out
    kinds = {json_type(ours), json_type(theirs)}
    if kinds <= {"integer", "number"} or len(kinds) == 1 or (path in nullable and "null" in kinds):
        return out
    return [f"{path}: {json_type(ours)} where GitLab has {json_type(theirs)}"]


def schema_problems(body: dict[str, Any], schema: dict[str, Any], extra_ok: bool = False) -> list[str]:
    """What a JSON schema of GitLab's spec/fixtures refuses in `body`: a required key missing,
    a key the schema does not allow (additionalProperties: false), a value of another type."""
    out = [f"{k}: missing" for k in schema.get("required", []) if k not in body]
    if schema.get("additionalProperties") is False and not extra_ok:
        out += [f"{k}: not allowed" for k in body if k not in schema["properties"]]
    for key, rule in schema.get("properties", {}).items():
        if key in body and "type" in rule:
            allowed = rule["type"] if isinstance(rule["type"], list) else [rule["type"]]
            kind = json_type(body[key])
            if not (kind in allowed or (kind == "integer" and "number" in allowed)):
                out.append(f"{key}: {kind}, not {allowed}")
    return out


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world() -> Iterator[tuple[GitLabSimulator, Clock]]:
    clock = Clock()
    sim = GitLabSimulator(clock=clock)
    with sim.running_in_thread():
        yield sim, clock


def get(sim: GitLabSimulator, path: str, **params: Any) -> Any:
    resp = requests.get(f"{sim.url}{API}{path}", headers={"PRIVATE-TOKEN": sim.private_token}, params=params, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def create_runner(sim: GitLabSimulator, **data: Any) -> int:
    resp = requests.post(f"{sim.url}{API}/user/runners", headers={"PRIVATE-TOKEN": sim.private_token},
                         json={"runner_type": "project_type", "project_id": 1, **data}, timeout=10)  # fmt: skip
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


def contact(sim: GitLabSimulator, runner_id: int) -> None:
    """The runner polls for a job (POST /jobs/request), as gitlab-runner does: contacted_at is now."""
    token = next(r.token for r in sim.runners if r.id == runner_id)
    resp = requests.post(f"{sim.url}{API}/jobs/request", json={"token": token, "info": {"name": "t"}}, timeout=10)
    assert resp.status_code in (201, 204), resp.text


# ------------------------------------------------------------------------------------- runners
def test_runner_entities_have_gitlabs_keys_and_types(world) -> None:
    sim, _ = world
    rid = create_runner(sim, description="test-1", tag_list=["ruby"], maximum_timeout=3600)
    contact(sim, rid)
    listed = next(r for r in get(sim, "/runners/all") if r["id"] == rid)
    # ip_address: "" in the example, nil in the entity (`expose(:ip_address) { nil }`, 17.0+);
    # created_at: exposed by the entity (lib/api/entities/ci/runner.rb), not yet in the example.
    theirs = upstream("runner_list_item.json") | {"created_at": "2025-05-03T00:00:00.000Z"}
    assert same_shape(listed, theirs, nullable=frozenset({"$.ip_address", "$.name"})) == []

    detail = get(sim, f"/runners/{rid}")
    # run_untagged, locked, groups: exposed by RunnerDetails (runner_details.rb), not in the example
    theirs = upstream("runner_details.json") | {"created_at": "2025-05-03T00:00:00.000Z", "groups": [],
                                                "run_untagged": False, "locked": True}
    nullable = frozenset({"$.ip_address", "$.name", "$.architecture", "$.platform", "$.revision", "$.version", "$.maintenance_note"})
    # `projects` only where asked (RunnerDetails: `if: options[:include_projects]`)
    assert same_shape(detail, theirs, nullable=nullable) == ["$.projects: missing"]
    asked = get(sim, f"/runners/{rid}", include_projects="true")
    problems = same_shape(asked, theirs, nullable=nullable)
    # BasicProjectDetails carries more than the example's five keys; those five are there
    assert all(p.startswith("$.projects.") and p.endswith("not in GitLab's body") for p in problems), problems
    assert asked["projects"][0]["id"] == 1


def test_rest_status_is_deprecated_rest_status(world) -> None:
    """app/models/ci/runner.rb deprecated_rest_status: stale, never_contacted, online/offline
    when active, paused when paused (online or not); `online` beside it says online? alone."""
    sim, clock = world
    fresh = create_runner(sim, description="fresh")
    paused_never = create_runner(sim, description="paused-never", paused=True)
    active = create_runner(sim, description="active")
    paused = create_runner(sim, description="paused")
    for rid in (active, paused):
        contact(sim, rid)
    requests.put(f"{sim.url}{API}/runners/{paused}", headers={"PRIVATE-TOKEN": sim.private_token},
                 json={"paused": True}, timeout=10).raise_for_status()  # fmt: skip

    def seen() -> dict[int, tuple[str, bool]]:
        return {r["id"]: (r["status"], r["online"]) for r in get(sim, "/runners/all")}

    now = seen()
    assert now[fresh] == ("never_contacted", False) and now[paused_never] == ("never_contacted", False)
    assert now[active] == ("online", True)
    assert now[paused] == ("paused", True), "a paused runner that is online reads `paused`, online true"
    assert get(sim, f"/runners/{paused}")["status"] == "paused"
    # the listing's status filter is the Ci::Runner scopes: `online` holds the paused one too
    assert {r["id"] for r in get(sim, "/runners/all", status="online")} == {active, paused}
    assert {r["id"] for r in get(sim, "/runners/all", status="paused")} == {paused_never, paused}
    assert {r["id"] for r in get(sim, "/runners/all", status="never_contacted")} == {fresh, paused_never}

    clock.now += 3 * HOUR  # past ONLINE_CONTACT_TIMEOUT (2 h)
    later = seen()
    assert later[active] == ("offline", False) and later[paused] == ("paused", False)
    assert {r["id"] for r in get(sim, "/runners/all", status="offline")} == {active, paused}

    clock.now += 8 * DAY  # past STALE_TIMEOUT (7 days) since creation and contact
    assert set(seen().values()) == {("stale", False)}
    bad = requests.get(f"{sim.url}{API}/runners/all", params={"status": "busy"}, headers={"PRIVATE-TOKEN": sim.private_token}, timeout=10)
    assert bad.status_code == 400 and "status" in bad.json()["error"]


def test_job_execution_status_follows_the_runners_running_job(world) -> None:
    sim, _ = world
    rid = create_runner(sim, description="worker", run_untagged=True)
    assert get(sim, f"/runners/{rid}")["job_execution_status"] == "idle"
    sim.add_job(project_id=1)
    contact(sim, rid)  # takes the job
    assert get(sim, f"/runners/{rid}")["job_execution_status"] == "active"


# ----------------------------------------------------------------------------------------- jobs
def test_job_entity_follows_the_schema_and_counts_the_queue_from_queued_at(world) -> None:
    sim, clock = world
    # created 600 s before it was queued (its pipeline waited for an earlier stage)
    job = sim.add_job(project_id=1, tags=["linux"], created_before_s=600)
    clock.now += 30
    body = get(sim, f"/projects/1/jobs/{job.id}")
    assert schema_problems(body, upstream("schemas/job.json")) == []
    assert schema_problems(body["user"], upstream("schemas/user_basic.json")) == []
    assert schema_problems(body["commit"], upstream("schemas/commit_basic.json")) == []
    # PipelineBasic has grown since that schema (project_id, web_url, ...): its keys and types only
    assert schema_problems(body["pipeline"], upstream("schemas/pipeline_basic.json"), extra_ok=True) == []
    # CommitStatus#queued_duration: from queued_at, not created_at
    assert body["queued_duration"] == pytest.approx(30, abs=0.01)
    assert job.queued_at is not None and body["created_at"] < iso(job.queued_at)

    node = graphql_jobs(sim)[0]
    assert node["queuedAt"] == iso(job.queued_at) != node["createdAt"]


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def graphql_jobs(sim: GitLabSimulator) -> list[dict[str, Any]]:
    query = "query($after: String) { jobs(statuses: [PENDING], first: 100, after: $after) { nodes { id createdAt queuedAt } } }"
    resp = requests.post(f"{sim.url}/api/graphql", headers={"Authorization": f"Bearer {sim.private_token}"},
                         json={"query": query, "variables": {}}, timeout=10)  # fmt: skip
    assert resp.status_code == 200, resp.text
    return list(resp.json()["data"]["jobs"]["nodes"])


def test_a_job_whose_tag_holds_a_comma_is_held_and_listed_as_gitlab_keeps_it(world) -> None:
    """lib/gitlab/ci/tags/parser.rb keeps a quoted tag whole (`"gpu,cuda"` is one tag); the
    double holds such a job and lists it like any other."""
    sim, _ = world
    job = sim.add_job(project_id=1, tags=["gpu,cuda", "linux"])
    listed = get(sim, "/projects/1/jobs", **{"scope[]": "pending"})
    assert [j["tag_list"] for j in listed if j["id"] == job.id] == [["gpu,cuda", "linux"]]


# ------------------------------------------------------------------------------------ Job Hook
class _Receiver(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length") or 0)
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_job_hook_has_exactly_the_builders_keys(world) -> None:
    sim, clock = world
    _Receiver.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sim.add_webhook(f"http://127.0.0.1:{server.server_address[1]}/hook", "secret")
        job = sim.add_job(project_id=1, created_before_s=100)
        rid = create_runner(sim, description="hooked", run_untagged=True)
        clock.now += 5
        contact(sim, rid)  # pending → running: a second hook, with the runner
        end = time.monotonic() + 10
        while len(_Receiver.bodies) < 2 and time.monotonic() < end:
            time.sleep(0.05)
        assert len(_Receiver.bodies) >= 2, "two hooks delivered"
    finally:
        server.shutdown()
    pending, running = _Receiver.bodies[:2]
    theirs = upstream("job_hook.json")
    # source_pipeline: only for a pipeline triggered by another (build.rb source_pipeline_attrs)
    theirs_plain = {k: v for k, v in theirs.items() if k != "source_pipeline"}
    nullable = frozenset({
        "$.runner", "$.commit.name", "$.repository.description", "$.project.description",
        "$.project.avatar_url", "$.project.ci_config_path", "$.build_started_at", "$.build_started_at_iso",
        "$.build_duration", "$.commit.started_at", "$.commit.started_at_iso", "$.commit.duration",
    })  # fmt: skip
    assert same_shape(running, theirs_plain, nullable=nullable) == []
    assert same_shape(pending, theirs_plain, nullable=nullable) == []
    assert pending["runner"] is None and running["runner"]["id"] == rid
    assert "tag_list" not in running, "a Job Hook carries no job tags"
    assert pending["build_id"] == job.id and running["build_status"] == "running"
    # build_queued_duration from queued_at: 5 s in the queue, not the 105 s since creation
    assert running["build_queued_duration"] == pytest.approx(5, abs=0.01)
