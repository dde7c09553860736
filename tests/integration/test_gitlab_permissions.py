"""The GitLab double's permission and API rules (gitlab_double/access.py and gitlab_sim.py; each
rule cites its GitLab source there), checked over HTTP with python-gitlab and plain requests, so
the agent's tests cannot pass where a real GitLab refuses."""

from __future__ import annotations

import time
from datetime import date, timedelta
from typing import Any

import gitlab
import gitlab.exceptions
import pytest
import requests

from autogit.gitlab_double import GitLabSimulator
from autogit.gitlab_double.access import DEVELOPER, MAINTAINER, OWNER, Access

API = "/api/v4"


def world(**kw: Any) -> tuple[GitLabSimulator, dict[str, str]]:
    """Projects 1, 2 (group 1) and 3 (group 3); users with the roles the tests need."""
    access = Access(**{k: kw.pop(k) for k in ("version", "admin_mode") if k in kw})
    sim = GitLabSimulator(access=access, **kw)
    sim.add_project(2, "autogit/other", group_id=1)
    sim.add_group(3, "team")
    sim.add_project(3, "team/app", group_id=3)
    maint = access.add_user("maint")
    for project in (1, 2):
        access.add_member(maint, project=project, role=MAINTAINER)
    owner = access.add_user("owner")
    access.add_member(owner, group=1, role=OWNER)
    access.add_member(owner, group=3, role=OWNER)
    lonely = access.add_user("lonely-admin", admin=True)
    dev = access.add_user("dev")
    access.add_member(dev, project=1, role=30)
    group_maint = access.add_user("group-maint")  # Maintainer of two groups, Owner of none
    for group in (1, 3):
        access.add_member(group_maint, group=group, role=MAINTAINER)
    group_dev = access.add_user("group-dev")
    access.add_member(group_dev, group=3, role=DEVELOPER)
    tokens = {
        "root": sim.private_token,
        "maint": access.add_token(maint, {"create_runner", "manage_runner", "read_api"}),
        "maint_api": access.add_token(maint, {"api"}),
        "read_only": access.add_token(maint, {"read_api"}),
        "owner": access.add_token(owner, {"create_runner", "manage_runner", "read_api"}),
        "lonely": access.add_token(lonely, {"api"}),
        "lonely_admin_mode": access.add_token(lonely, {"api", "admin_mode"}),
        "dev": access.add_token(dev, {"api"}),
        "group_maint": access.add_token(group_maint, {"create_runner", "manage_runner", "read_api"}),
        "group_dev": access.add_token(group_dev, {"create_runner", "manage_runner", "read_api"}),
        "expired": access.add_token(maint, {"api"}, expires_at=date.today() - timedelta(days=1)),
    }
    return sim, tokens


@pytest.fixture
def gl_world(request: pytest.FixtureRequest):
    sim, tokens = world(**(getattr(request, "param", None) or {}))
    with sim.running_in_thread():
        yield sim, tokens


def gl(sim: GitLabSimulator, token: str) -> gitlab.Gitlab:
    return gitlab.Gitlab(sim.url, private_token=token, timeout=10)


def create(sim: GitLabSimulator, token: str, **data: Any) -> requests.Response:
    return requests.post(f"{sim.url}{API}/user/runners", headers={"PRIVATE-TOKEN": token}, json=data, timeout=10)


def test_scopes_are_enforced_and_named(gl_world) -> None:
    sim, t = gl_world
    refused = create(sim, t["read_only"], runner_type="project_type", project_id=1)
    assert refused.status_code == 403 and refused.json()["error"] == "insufficient_scope"
    assert "create_runner" in refused.json()["scope"]
    ok = create(sim, t["maint"], runner_type="project_type", project_id=1)
    assert ok.status_code == 201
    # manage_runner covers /runners/:id; it does not cover assigning (POST /projects/:id/runners)
    assign = requests.post(f"{sim.url}{API}/projects/2/runners", headers={"PRIVATE-TOKEN": t["maint"]}, json={"runner_id": ok.json()["id"]}, timeout=10)
    assert assign.status_code == 403 and assign.json()["scope"] == "api"
    assert gl(sim, t["maint"]).runners.get(ok.json()["id"]).id == ok.json()["id"]


@pytest.mark.parametrize("gl_world", [{"version": (16, 11)}], indirect=True)
def test_manage_runner_does_not_exist_before_17_1(gl_world) -> None:
    sim, t = gl_world
    rid = create(sim, t["maint"], runner_type="project_type", project_id=1).json()["id"]
    resp = requests.delete(f"{sim.url}{API}/runners/{rid}", headers={"PRIVATE-TOKEN": t["maint"]}, timeout=10)
    assert resp.status_code == 403 and resp.json()["error"] == "insufficient_scope" and "manage_runner" not in resp.json()["scope"]
    # the runner API needs no user scope: a runner deletes itself with its own token
    token = next(r.token for r in sim.runners if r.id == rid)
    assert requests.delete(f"{sim.url}{API}/runners", json={"token": token}, timeout=10).status_code == 204


def test_roles_locked_runners_and_more_than_one_project(gl_world) -> None:
    sim, t = gl_world
    assert create(sim, t["dev"], runner_type="project_type", project_id=1).status_code == 403  # developer
    assert create(sim, t["maint"], runner_type="group_type", group_id=1).status_code == 403  # not group owner
    assert create(sim, t["maint"], runner_type="instance_type").status_code == 403
    locked = create(sim, t["maint_api"], runner_type="project_type", project_id=1, locked=True).json()["id"]
    headers = {"PRIVATE-TOKEN": t["maint_api"]}
    resp = requests.post(f"{sim.url}{API}/projects/2/runners", headers=headers, json={"runner_id": locked}, timeout=10)
    assert resp.status_code == 403 and resp.json()["message"] == "403 Forbidden - Runner is locked"
    free = create(sim, t["maint_api"], runner_type="project_type", project_id=1, locked=False).json()["id"]
    assert requests.post(f"{sim.url}{API}/projects/2/runners", headers=headers, json={"runner_id": free}, timeout=10).status_code == 201
    delete = requests.delete(f"{sim.url}{API}/runners/{free}", headers=headers, timeout=10)
    assert delete.status_code == 403 and "more than one project" in delete.json()["message"]
    assert requests.delete(f"{sim.url}{API}/projects/2/runners/{free}", headers=headers, timeout=10).status_code == 204
    only = requests.delete(f"{sim.url}{API}/projects/1/runners/{free}", headers=headers, timeout=10)
    assert only.status_code == 403 and "Only one project" in only.json()["message"]
    assert requests.delete(f"{sim.url}{API}/runners/{free}", headers=headers, timeout=10).status_code == 204
    group = create(sim, t["owner"], runner_type="group_type", group_id=3).json()["id"]
    resp = requests.post(f"{sim.url}{API}/projects/3/runners", headers={"PRIVATE-TOKEN": t["root"]}, json={"runner_id": group}, timeout=10)
    assert resp.status_code == 403 and "group runner" in resp.json()["message"]


def test_owned_runners_need_membership_not_admin(gl_world) -> None:
    sim, t = gl_world
    mine = create(sim, t["maint"], runner_type="project_type", project_id=1, tag_list=["x"]).json()["id"]
    # app/models/user.rb ci_owned_runners: membership only, no admin bypass
    assert [r.id for r in gl(sim, t["lonely"]).runners.list(get_all=True)] == []
    assert [r.id for r in gl(sim, t["lonely"]).runners.all(get_all=True)] == [mine]
    assert [r.id for r in gl(sim, t["maint"]).runners.list(get_all=True)] == [mine]
    listed = gl(sim, t["maint"]).runners.list(get_all=True)[0]
    assert not hasattr(listed, "tag_list"), "list entities carry no tag_list (lib/api/entities/ci/runner.rb)"
    with pytest.raises(gitlab.exceptions.GitlabListError):
        gl(sim, t["maint"]).runners.all(get_all=True)  # /runners/all: admins only


@pytest.mark.parametrize("gl_world", [{"admin_mode": True}], indirect=True)
def test_admin_mode_needs_the_admin_mode_scope(gl_world) -> None:
    sim, t = gl_world
    with pytest.raises(gitlab.exceptions.GitlabListError) as err:
        gl(sim, t["lonely"]).runners.all(get_all=True)
    assert err.value.response_code == 403
    assert gl(sim, t["lonely_admin_mode"]).runners.all(get_all=True) == []
    assert create(sim, t["lonely"], runner_type="instance_type").status_code == 403
    assert create(sim, t["lonely_admin_mode"], runner_type="instance_type").status_code == 201


def test_an_expired_token_is_refused(gl_world) -> None:
    sim, t = gl_world
    resp = requests.get(f"{sim.url}{API}/projects/1/jobs", headers={"PRIVATE-TOKEN": t["expired"]}, timeout=10)
    assert resp.status_code == 401 and resp.json()["error_description"] == "Token has expired."


def test_projects_are_hidden_from_non_members(gl_world) -> None:
    sim, t = gl_world
    resp = requests.get(f"{sim.url}{API}/projects/3/jobs", headers={"PRIVATE-TOKEN": t["maint"]}, timeout=10)
    assert resp.status_code == 404 and resp.json()["message"] == "404 Project Not Found"


@pytest.mark.parametrize("gl_world", [{"jobs_index_limit": 5}], indirect=True)
def test_the_jobs_index_is_rate_limited_per_user(gl_world) -> None:
    sim, t = gl_world
    url, headers = f"{sim.url}{API}/projects/1/jobs", {"PRIVATE-TOKEN": t["maint"]}
    answers = [requests.get(url, headers=headers, timeout=10) for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert answers[0].headers["RateLimit-Limit"] == "5" and answers[4].headers["RateLimit-Remaining"] == "0"
    assert int(answers[5].headers["Retry-After"]) > 0
    assert "too many times" in answers[5].json()["message"]
    # per user: another user still has its budget
    assert requests.get(url, headers={"PRIVATE-TOKEN": t["root"]}, timeout=10).status_code == 200


def test_group_projects_include_shared_ones_unless_asked_not_to(gl_world) -> None:
    sim, t = gl_world
    sim._projects[3].shared_with_groups.add(1)
    client = gl(sim, t["owner"])
    assert sorted(p.id for p in client.groups.get(1, lazy=True).projects.list(get_all=True)) == [1, 2, 3]
    assert sorted(p.id for p in client.groups.get(1, lazy=True).projects.list(get_all=True, with_shared=False)) == [1, 2]


def test_runner_status_goes_stale_and_runner_tokens_expire() -> None:
    clock = [time.time()]
    sim, t = world(clock=lambda: clock[0], runner_token_ttl_s=3600)
    with sim.running_in_thread():
        created = create(sim, t["maint"], runner_type="project_type", project_id=1).json()
        assert created["token_expires_at"] is not None
        clock[0] += 8 * 86400
        assert gl(sim, t["maint"]).runners.get(created["id"]).status == "stale"
        # an expired runner token authenticates nothing on the runner API
        resp = requests.post(f"{sim.url}{API}/jobs/request", json={"token": created["token"]}, timeout=10)
        assert resp.status_code == 403


def test_only_owners_create_group_runners_and_groups_filter_by_role(gl_world) -> None:
    """app/policies/group_policy.rb: `rule { owner }` enables :create_runner; a Maintainer of the
    group creates project runners in its projects (project_policy.rb). GET /groups and a group's
    projects take min_access_level (groups_finder.rb, group_projects_finder.rb)."""
    sim, t = gl_world
    refused = create(sim, t["group_maint"], runner_type="group_type", group_id=1)
    assert refused.status_code == 403 and "Insufficient permissions" in refused.json()["message"]
    assert create(sim, t["group_maint"], runner_type="project_type", project_id=3).status_code == 201
    assert create(sim, t["group_dev"], runner_type="project_type", project_id=3).status_code == 403
    assert create(sim, t["owner"], runner_type="group_type", group_id=3).status_code == 201
    client = gl(sim, t["group_maint"])
    assert [g.id for g in client.groups.list(get_all=True)] == [1, 3]
    assert client.groups.list(min_access_level=OWNER, get_all=True) == []
    assert [g.id for g in gl(sim, t["owner"]).groups.list(min_access_level=OWNER, get_all=True)] == [1, 3]
    dev_projects = gl(sim, t["group_dev"]).groups.get(3, lazy=True).projects
    assert [p.id for p in dev_projects.list(get_all=True)] == [3]
    assert dev_projects.list(min_access_level=MAINTAINER, get_all=True) == []


async def test_groups_scope_with_a_maintainer_of_two_groups_uses_project_runners(caplog) -> None:
    """ADR-011: where the token's user is not a group's Owner, the agent serves the group's
    projects it maintains with project runners, saying so once per group; a user who maintains
    none of them keeps the one-line refusal naming the Owner role."""
    from pydantic import SecretStr

    from autogit.agent.config import GitLabConfig
    from autogit.agent.gitlab.adapter import GitLabAdapter, GitLabError

    sim, t = world()
    await sim.start()
    try:
        def adapter(token: str, groups: list[int]) -> GitLabAdapter:
            config = GitLabConfig.model_validate({"url": sim.url, "request_timeout": 3, "scope": {"kind": "groups", "groups": groups}})
            return GitLabAdapter(config, SecretStr(token), project_refresh=0)

        jobs = {p: sim.add_job(project_id=p).id for p in (1, 2, 3)}
        maint = adapter(t["group_maint"], [1, 3])
        with caplog.at_level("WARNING", logger="autogit.gitlab"):
            for _ in range(3):  # refreshed every time (project_refresh=0): still said once a group
                queue = await maint.observe_queue()
        assert {j.id: j.reach for j in queue.pending} == {jobs[p]: [f"project:{p}"] for p in (1, 2, 3)}
        said = [r.getMessage() for r in caplog.records if r.name == "autogit.gitlab"]
        assert len(said) == 2 and all("not its Owner" in m and "project runners" in m for m in said), said
        created = await maint.create_runner("autogit:h1:r1", [], run_untagged=True, reach="project:3")
        runner = next(r for r in sim.runners if r.id == created.id)
        assert (runner.runner_type, runner.project_id) == ("project_type", 3)
        assert [r.id for r in await maint.list_registrations()] == [created.id]
        await maint.delete_runner(created.id)
        assert sim.runners == []

        caplog.clear()
        dev = adapter(t["group_dev"], [3])
        with caplog.at_level("WARNING", logger="autogit.gitlab"):
            queue = await dev.observe_queue()
            await dev.observe_queue()
        assert [j.reach for j in queue.pending] == [["group:3"]]
        assert [r for r in caplog.records if r.name == "autogit.gitlab"] == [], "the refusal below is the one line"
        with pytest.raises(GitLabError) as err:
            await dev.create_runner("autogit:h1:r2", [], run_untagged=True, reach="group:3")
        assert err.value.permission and "Owner role in group 3" in str(err.value) and "\n" not in str(err.value)
        assert sim.runners == []

        owner = adapter(t["owner"], [1, 3])  # an Owner: group runners, as before, nothing said
        caplog.clear()
        with caplog.at_level("WARNING", logger="autogit.gitlab"):
            queue = await owner.observe_queue()
        assert {j.id: j.reach for j in queue.pending} == {jobs[1]: ["group:1"], jobs[2]: ["group:1"], jobs[3]: ["group:3"]}
        assert [r for r in caplog.records if r.name == "autogit.gitlab"] == []
    finally:
        await sim.stop()
