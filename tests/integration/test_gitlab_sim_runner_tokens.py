"""The GitLab double's runner rules that gitlab-runner and the agent depend on: tokens in the form
GitLab issues now, and its maximum_timeout floor (both in app/models/ci/runner.rb)."""

from __future__ import annotations

import gitlab
import pytest
import requests

from autogit.agent.runtime.runner_config import short_token_v17, short_token_v18_2
from autogit.gitlab_double import GitLabSimulator


def gl_for(sim: GitLabSimulator) -> gitlab.Gitlab:
    gl = gitlab.Gitlab(sim.url, private_token=sim.private_token, timeout=10)
    gl.auth()
    return gl


def test_runner_tokens_carry_the_partition_prefix_of_their_type(gitlab_sim: GitLabSimulator) -> None:
    """prefix_for_new_and_legacy_runner: glrt- and t<runner type in hex>_ (instance 1, group 2,
    project 3), on which gitlab-runner 17.x and >= 18.2 shorten differently."""
    gl = gl_for(gitlab_sim)
    assert gl.user is not None
    tokens = {
        kind: gl.user.runners.create({"runner_type": kind, "run_untagged": True, **extra}).token
        for kind, extra in (("instance_type", {}), ("group_type", {"group_id": 1}), ("project_type", {"project_id": 1}))
    }
    assert [tokens[k][:8] for k in ("instance_type", "group_type", "project_type")] == ["glrt-t1_", "glrt-t2_", "glrt-t3_"]
    for token in tokens.values():
        assert short_token_v17(token) == token[5:14] and short_token_v18_2(token) == token[8:17]
        assert short_token_v17(token) != short_token_v18_2(token)


@pytest.mark.parametrize("value", [60, 599, "1"])
def test_maximum_timeout_under_ten_minutes_is_refused_on_create_and_update(gitlab_sim: GitLabSimulator, value) -> None:
    """`validates :maximum_timeout ... greater_than_or_equal_to: 600, message: 'needs to be at
    least 10 minutes'`: a 400 naming the attribute, and no runner."""
    gl = gl_for(gitlab_sim)
    assert gl.user is not None
    headers = {"PRIVATE-TOKEN": gitlab_sim.private_token}
    before = len(gitlab_sim.runners)
    resp = requests.post(f"{gitlab_sim.url}/api/v4/user/runners", headers=headers, timeout=10,
                         json={"runner_type": "instance_type", "maximum_timeout": value})  # fmt: skip
    assert resp.status_code == 400 and resp.json() == {"message": {"maximum_timeout": ["needs to be at least 10 minutes"]}}
    assert len(gitlab_sim.runners) == before
    ok = gl.user.runners.create({"runner_type": "instance_type", "maximum_timeout": 600})
    resp = requests.put(f"{gitlab_sim.url}/api/v4/runners/{ok.id}", headers=headers, json={"maximum_timeout": value}, timeout=10)
    assert resp.status_code == 400 and "maximum_timeout" in resp.json()["message"]
    assert gl.runners.get(ok.id).maximum_timeout == 600
