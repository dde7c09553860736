"""The pure parts of the queue metrics: bounded tag-set labels, percentiles and the console's
hourly history (agent/queuetimes.py), and GitLab paths to endpoint classes (agent/metrics.py)."""

from __future__ import annotations

from autogit.agent.errors import InvalidConfiguration, NotFound
from autogit.agent.metrics import endpoint_class, start_failure_cause
from autogit.agent.gitlab.adapter import GitLabError
from autogit.agent.queuetimes import OTHER, QueueTimes, TagSetLabels, largest_tag_sets, tag_set
from autogit.agent.runtime.docker import DockerError


def test_a_tag_set_is_sorted_and_a_lone_other_tag_is_never_the_overflow_bucket():
    assert tag_set(["gpu", "cuda", "gpu"]) == "cuda,gpu"
    assert tag_set([]) == ""
    assert tag_set(["other"]) == '"other"' != OTHER


def test_gauges_keep_the_n_largest_tag_sets_ties_by_name():
    counts = {"a": 1, "b": 5, "c": 5, "d": 2}
    assert largest_tag_sets(counts, most=2) == {"b", "c"}
    assert largest_tag_sets(counts, most=3) == {"b", "c", "d"}


def test_histogram_labels_are_sticky_and_bounded():
    labels = TagSetLabels(most=2)
    labels.admit({"small": 1, "big": 9, "mid": 4})  # the largest get the free labels
    assert (labels.label("big"), labels.label("mid"), labels.label("small")) == ("big", "mid", OTHER)
    labels.admit({"small": 100})  # a label once given is kept; no room for a new one
    assert (labels.label("big"), labels.label("small")) == ("big", OTHER)
    fresh = TagSetLabels(most=1)
    assert (fresh.label("x"), fresh.label("y"), fresh.label("x")) == ("x", OTHER, "x")


def test_queue_times_give_nearest_rank_percentiles_and_a_history_per_slice():
    now = [10_000.0]
    times = QueueTimes(window_s=600, slices=6, clock=lambda: now[0])
    for seconds in (1, 2, 3, 4, 100):
        times.add("gpu", seconds)
    now[0] += 350  # three and a half slices later
    times.add("gpu", 50)
    times.add("", 7)
    [gpu, untagged] = times.summary()
    assert (gpu.tags, gpu.jobs, gpu.p50_s, gpu.p95_s) == ("gpu", 6, 3, 100)
    assert gpu.history == [None, None, 100, None, None, 50]
    assert (untagged.tags, untagged.p50_s, untagged.history[-1]) == ("", 7, 7)
    now[0] += 300  # the first samples leave the window
    left = {s.tags: s for s in times.summary()}
    assert (left["gpu"].jobs, left["gpu"].p95_s, left[""].jobs) == (1, 50, 1)


def test_endpoint_classes_and_start_failure_causes_are_bounded():
    assert endpoint_class("/api/v4/projects/7/jobs") == "jobs"
    assert endpoint_class("/api/v4/projects/7/jobs/99") == "jobs"
    assert endpoint_class("/api/v4/groups/3/projects") == "projects"
    assert endpoint_class("/api/v4/user/runners") == "runners"
    assert endpoint_class("/api/v4/runners/12") == "runners"
    assert endpoint_class("/api/v4/projects/7/runners") == "runners"
    assert endpoint_class("/api/v4/user") == "user"
    assert endpoint_class("/api/graphql") == "graphql"
    assert endpoint_class("/api/v4/version") == "other"
    assert start_failure_cause(GitLabError("no", 403, permission=True)) == "gitlab-refused"
    assert start_failure_cause(GitLabError("slow down", 429)) == "gitlab-rate-limited"
    assert start_failure_cause(GitLabError("down", 502)) == "gitlab-error"
    assert start_failure_cause(DockerError("engine down")) == "runtime-unavailable"
    assert start_failure_cause(InvalidConfiguration("image not found", field="runner.image")) == "invalid-configuration"
    assert start_failure_cause(NotFound("gone")) == "runtime-error"
    assert start_failure_cause(ValueError("?")) == "other"


def test_a_queued_duration_that_is_not_seconds_is_unknown_not_an_error():
    from autogit.agent.gitlab.adapter import RunningJob

    for odd in ("12s", None, True, [1]):
        assert RunningJob(id=1, project_id=1, runner_id=2, queued_duration=odd).queued_duration is None
    assert RunningJob(id=1, project_id=1, runner_id=2, queued_duration=7).queued_duration == 7.0
