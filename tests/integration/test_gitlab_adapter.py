"""The GitLab adapter over real HTTP against the simulator (a double of GitLab's documented API)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from autogit.agent.config import GitLabConfig
from autogit.agent.gitlab.adapter import GitLabAdapter, GitLabError
from autogit.agent.metrics import MAX_RATELIMIT_NAMES, AgentMetrics
from autogit.gitlab_double.gitlab_sim import GitLabSimulator


@pytest.fixture
async def sim():
    simulator = GitLabSimulator()
    await simulator.start()
    simulator.add_project(2, "autogit/two", group_id=1)
    simulator.add_group(9, "elsewhere")
    simulator.add_project(3, "elsewhere/three", group_id=9)
    yield simulator
    await simulator.stop()


def adapter(sim: GitLabSimulator, **gitlab) -> GitLabAdapter:
    config = GitLabConfig.model_validate({"url": sim.url, "request_timeout": 3, **gitlab})
    return GitLabAdapter(config, SecretStr(sim.private_token))


async def test_queue_for_each_scope_kind_with_pagination(sim):
    for i in range(130):  # more than one page of 100
        sim.add_job(project_id=1 + i % 3, tags=["amd64"] if i % 2 else [])
    projects = adapter(sim, scope={"kind": "projects", "projects": [1, 2]})
    queue = await projects.observe_queue()
    assert len(queue.pending) == sum(1 for i in range(130) if i % 3 != 2) and queue.running == []
    assert {j.project_id for j in queue.pending} == {1, 2}
    groups = adapter(sim, scope={"kind": "groups", "groups": [9]})
    assert {j.project_id for j in (await groups.observe_queue()).pending} == {3}
    instance = adapter(sim, scope={"kind": "instance"})
    assert len((await instance.observe_queue()).pending) == 130
    assert instance.calls == 2  # GraphQL Query.jobs: 100 a page, whatever the number of projects
    job = next(j for j in queue.pending if j.tags)
    status, fetched = await projects.get_job(job.project_id, job.id)
    assert status == "pending" and fetched == job


async def test_project_runner_is_enabled_in_every_project_of_the_scope_and_found_again(sim):
    gl = adapter(sim, scope={"kind": "projects", "projects": [1, 2]})
    created = await gl.create_runner("autogit:h1:r1", ["arm64"], run_untagged=False)
    assert created.token.get_secret_value().startswith("glrt-") and "glrt-" not in repr(created)
    runner = next(r for r in sim.runners if r.id == created.id)
    assert (runner.project_id, runner.assigned_projects, runner.tag_list, runner.run_untagged) == (1, {2}, ["arm64"], False)
    await gl.create_runner("not-ours", [], run_untagged=True)
    regs = await gl.list_registrations()
    assert [(r.id, r.host, r.name) for r in regs] == [(created.id, "h1", "r1")]
    await gl.delete_runner(created.id)
    await gl.delete_runner(created.id)  # already gone: still done, no error
    assert [r.description for r in sim.runners] == ["not-ours"]


async def test_5xx_is_retried_with_backoff_and_reported_when_it_persists(sim):
    sim.add_job(project_id=1)
    sim.set_fault("500", 0.5)
    retrying = adapter(sim, scope={"kind": "projects", "projects": [1]}, max_retries=4)
    assert len((await retrying.observe_queue()).pending) == 1  # succeeded after the fault window
    assert retrying.calls == 1  # one logical call; python-gitlab retried inside it
    sim.set_fault("500", 5)
    once = adapter(sim, scope={"kind": "projects", "projects": [1]}, max_retries=0)
    with pytest.raises(GitLabError) as err:
        await once.observe_queue()
    assert "500" in str(err.value) and sim.private_token not in str(err.value)


async def test_wrong_token_is_a_clear_error(sim):
    config = GitLabConfig.model_validate({"url": sim.url, "scope": {"kind": "projects", "projects": [1]}})
    with pytest.raises(GitLabError) as err:
        await GitLabAdapter(config, SecretStr("glpat-wrong")).observe_queue()
    assert "401" in str(err.value) and "glpat-wrong" not in str(err.value)


async def test_polling_paces_itself_by_gitlabs_rate_limit_headers():
    """600 jobs-index requests a minute per user by default (lib/api/ci/jobs.rb); the adapter
    reads GitLab's RateLimit-Limit and keeps the full pass within half of it."""
    simulator = GitLabSimulator(jobs_index_limit=6)
    await simulator.start()
    try:
        simulator.add_project(2, "autogit/two", group_id=1)
        simulator.add_project(3, "autogit/three", group_id=1)
        paced = adapter(simulator, scope={"kind": "projects", "projects": [1, 2, 3]}, poll_interval=1, max_retries=0)
        assert paced.min_poll_interval() == 3 * 60 / 300  # before GitLab said anything: 600/min
        await paced.observe_queue()
        assert paced.rate_limit["limit"] == 6
        assert paced.min_poll_interval() == 3 * 60 / 3  # 3 projects in half of 6 a minute
        await paced.observe_queue()  # the 4th..6th request of the minute: the budget is spent
        assert paced.rate_limit["remaining"] == 0 and paced.min_poll_interval(now=0) > 60
        with pytest.raises(GitLabError) as err:
            await paced.observe_queue()  # a 7th request: 429, not retried (max_retries 0 here)
        assert err.value.status == 429
    finally:
        await simulator.stop()


async def test_a_restarted_agent_adopts_its_presence_instead_of_registering_another(sim):
    from datetime import UTC, datetime

    from autogit.agent import fleet
    from autogit.agent.model import Host, Policy

    host = Host(hostname="p1", arch="amd64", cpus=4, memory_mb=8192)
    body = fleet.presence_registration(fleet.build_presence(host, [], Policy(), version="test", now=datetime.now(UTC)))
    first = await adapter(sim, scope={"kind": "projects", "projects": [1]}).publish_presence(None, body)
    # a new adapter (the restarted agent) knows no id: it finds the one it made
    again = await adapter(sim, scope={"kind": "projects", "projects": [1]}).publish_presence(None, body)
    assert again == first and [r.id for r in sim.runners if r.description == "autogit-presence:p1"] == [first]
    # two left by a crash between create and refresh: the oldest stays, the other goes
    extra = sim.add_runner("autogit-presence:p1", project_id=1, tags=[fleet.PRESENCE_TAG])
    assert extra != first
    kept = await adapter(sim, scope={"kind": "projects", "projects": [1]}).publish_presence(None, body)
    assert kept == first and [r.id for r in sim.runners if r.description == "autogit-presence:p1"] == [first]
    peers = await adapter(sim, scope={"kind": "projects", "projects": [1]}).read_presences(fleet.PRESENCE_TAG)
    assert [(rid, fleet.decode_presence(note).hostname) for rid, _, note, _ in peers] == [(first, "p1")]


async def test_a_pending_job_our_models_refuse_is_skipped_with_one_line_and_the_rest_is_read(sim, caplog):
    """GitLab keeps a quoted tag whole, comma and all (lib/gitlab/ci/tags/parser.rb): such a job
    is pending on GitLab, but no runner of ours can carry that tag. It is skipped, said once in
    one line naming the job and the field, and every other job is still read, pass after pass."""
    good = [sim.add_job(project_id=1, tags=["amd64"]).id, sim.add_job(project_id=2).id]
    bad = sim.add_job(project_id=1, tags=["gpu,cuda"]).id
    for scope in ({"kind": "projects", "projects": [1, 2]}, {"kind": "instance"}):
        gl = adapter(sim, scope=scope)
        caplog.clear()
        with caplog.at_level("WARNING", logger="autogit.gitlab"):
            for _ in range(3):
                queue = await gl.observe_queue()
                assert sorted(j.id for j in queue.pending) == sorted(good)
        lines = [r.getMessage() for r in caplog.records if r.name == "autogit.gitlab"]
        assert len(lines) == 1, lines
        assert f"job {bad} of project 1 skipped" in lines[0] and "tags" in lines[0] and "gpu,cuda" in lines[0]
        assert "\n" not in lines[0]
    with pytest.raises(GitLabError) as err:  # a webhook's lookup of it: one line, not a traceback
        await adapter(sim, scope={"kind": "projects", "projects": [1]}).get_job(1, bad)
    assert f"job {bad}" in str(err.value) and "\n" not in str(err.value)


@contextlib.asynccontextmanager
async def gitlab_with_headers(headers: Callable[[int], bytes]) -> AsyncIterator[tuple[GitLabAdapter, AgentMetrics]]:
    """An adapter (and the metrics watching it) talking to a raw HTTP server that answers every
    request as GET /runners/:id would, with the header lines `headers(n)` gives for the n-th
    request: bytes no GitLab double would send."""
    count = itertools.count()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b'{"id": 7, "description": "r", "active": true, "paused": false, "tag_list": []}'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + headers(next(count)) +
                     b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)  # fmt: skip
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        config = GitLabConfig.model_validate({"url": f"http://127.0.0.1:{port}", "request_timeout": 3, "max_retries": 0,
                                              "scope": {"kind": "projects", "projects": [1]}})  # fmt: skip
        gl = GitLabAdapter(config, SecretStr("glpat-" + "x" * 20))
        metrics = AgentMetrics()
        metrics.watch_gitlab(gl)
        yield gl, metrics
    finally:
        server.close()
        await server.wait_closed()


async def test_rate_limit_headers_that_are_not_ascii_numbers_are_ignored() -> None:
    """GitLab's RateLimit-* headers are read as numbers only when they are ASCII digits: a byte
    0xB2 arrives as '²' (requests decodes headers as latin-1), which str.isdigit() accepted and
    int() refused inside the response hook, failing the call itself."""
    odd = b"RateLimit-Name: throttle_authenticated_api\r\nRateLimit-Limit: \xb2\xb3\r\nRateLimit-Remaining: \xb2\r\nRateLimit-Reset: 1\xb9\r\n"
    async with gitlab_with_headers(lambda _n: odd) as (gl, metrics):
        assert await gl.runner_exists(7) is True
    assert gl.rate_limit == {}, "no number was read from the odd headers"
    assert b'autogit_gitlab_requests_total{code="200"' in metrics.render()


async def test_rate_limit_names_from_gitlab_are_bounded_label_values() -> None:
    """RateLimit-Name becomes a metric label: GitLab's own throttle names are kept, but a server
    sending a new name with every answer, or one that is not a throttle name, must not grow the
    series without bound (the names beyond MAX_RATELIMIT_NAMES, and odd ones, are `other`)."""

    def headers(n: int) -> bytes:
        name = b"Not A Name \xb2" if n % 10 == 9 else b"throttle_%d" % n
        return b"RateLimit-Name: " + name + b"\r\nRateLimit-Remaining: 5\r\n"

    async with gitlab_with_headers(headers) as (gl, metrics):
        for _ in range(60):
            assert await gl.runner_exists(7) is True
    limits = {s.labels["limit"] for fam in text_string_to_metric_families(metrics.render().decode())
              for s in fam.samples if s.name == "autogit_gitlab_ratelimit_remaining"}  # fmt: skip
    assert "throttle_0" in limits and "other" in limits
    assert len(limits - {"other"}) == MAX_RATELIMIT_NAMES and not any(" " in n for n in limits)
