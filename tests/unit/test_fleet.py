"""The fleet's presence (build, encode, decode, truncation, liveness) and ownership, by example."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, UTC

import pytest

from autogit.agent.fleet import (
    NOTE_LIMIT,
    NOTE_PREFIX,
    PRESENCE_TAG,
    Claim,
    GpuClass,
    PeerRunner,
    Presence,
    PresenceTooLarge,
    Room,
    assign_jobs,
    build_presence,
    decode_presence,
    encode_presence,
    is_live,
    live_presences,
    owners,
    presence_description,
    presence_hostname,
    presence_registration,
    should_start,
)
from autogit.agent.model import Gpu, Host, Job, Policy, Runner, RunnerKind
from autogit.agent.tags import host_profiles

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
UUID = "GPU-{:08x}-5c5d-4e5f-8a9b-0c1d2e3f4a5b"


def h100(i: int, **kw) -> Gpu:
    return Gpu(id=UUID.format(i), vendor="nvidia", model="NVIDIA H100 80GB HBM3", memory_mb=81559,
               compute_capability="9.0", driver_version="550.54.15", **kw)  # fmt: skip


def gpu_host(n: int = 8) -> Host:
    return Host(hostname="gpu-1", arch="amd64", emulated=["arm64"], cpus=64, memory_mb=512 * 1024, gpus=[h100(i) for i in range(n)])


def presence(name: str, *, arch="amd64", slots=4, gpus=(), extra=(), beat=NOW) -> Presence:
    return Presence(hostname=name, version="1.0", arch=arch, extra_tags=list(extra), gpus=list(gpus), room=Room(slots=slots), heartbeat_at=beat)


def job(i: int, *tags: str, age_s: float = 0) -> Job:
    return Job(id=i, project_id=1, tags=list(tags), created_at=NOW - timedelta(seconds=age_s))


# --- encoding -------------------------------------------------------------------------------


def test_an_eight_gpu_host_round_trips_through_the_note():
    mine = build_presence(gpu_host(), [], Policy(extra_tags=["docker"]), version="1.4.2", now=NOW)
    note = encode_presence(mine)
    assert note.startswith(NOTE_PREFIX) and len(note) <= NOTE_LIMIT and note.isascii()
    assert decode_presence(note) == mine
    # The floors are left implied on the wire and come back whole: the profile is tags.py's.
    gpu_profile = next(p for p in host_profiles(gpu_host(), Policy(extra_tags=["docker"])) if p.kind is RunnerKind.GPU)
    (cls,) = decode_presence(note).gpus
    assert cls.profile_tags() | decode_presence(note).native_tags() == gpu_profile.tags
    assert "vram-ge-40g" not in note and "vram-ge-40g" in cls.profile_tags()
    assert (cls.count, cls.free, len(cls.ids)) == (8, 8, 8)


def test_unknown_fields_are_ignored_at_any_depth():
    body = json.loads(encode_presence(presence("a", gpus=[GpuClass(tags=["gpu"], count=1, free=1)]))[len(NOTE_PREFIX) :])
    body["future"] = {"x": 1}
    body["r"]["later"] = 3
    body["g"][0]["w"] = "watts"
    got = decode_presence(NOTE_PREFIX + json.dumps(body))
    assert got is not None and got.hostname == "a" and got.gpus[0].tags == ["gpu"]


@pytest.mark.parametrize("note", [None, "", "Managed by autogit-agent", "autogit-presence/2 {}", NOTE_PREFIX + "{not json",
                                  NOTE_PREFIX + '{"h":"a"}', NOTE_PREFIX + "[]"])  # fmt: skip
def test_notes_this_version_cannot_read_are_no_presence(note):
    assert decode_presence(note) is None


def test_contacted_at_counts_as_a_heartbeat_when_later():
    note = encode_presence(presence("a", beat=NOW - timedelta(minutes=10)))
    assert decode_presence(note, contacted_at=NOW).heartbeat_at == NOW
    assert decode_presence(note, contacted_at=NOW - timedelta(hours=1)).heartbeat_at == NOW - timedelta(minutes=10)


def test_the_heartbeat_is_whole_unix_seconds():
    note = encode_presence(presence("a", beat=NOW + timedelta(microseconds=900_000)))
    assert json.loads(note[len(NOTE_PREFIX) :])["b"] == int(NOW.timestamp())


def test_at_the_limit_the_note_is_kept_whole_and_one_under_it_gpu_ids_go_first():
    full = build_presence(gpu_host(), [], Policy(), version="1.0", now=NOW)
    whole = encode_presence(full)
    assert encode_presence(full, limit=len(whole)) == whole
    cut = encode_presence(full, limit=len(whole) - 1)
    got = decode_presence(cut)
    assert got is not None and got.gpus[0].ids == [] and got.gpus[0].count == 8 and not got.truncated


def test_many_gpu_models_fit_by_dropping_classes_never_by_cutting_json():
    models = ["NVIDIA H100 80GB HBM3", "NVIDIA L4", "NVIDIA A100-SXM4-40GB", "NVIDIA GeForce RTX 4090", "NVIDIA RTX A6000",
              "NVIDIA L40S", "NVIDIA A10", "NVIDIA T4", "NVIDIA V100", "NVIDIA B200", "NVIDIA H200", "NVIDIA A30"]  # fmt: skip
    gpus = [Gpu(id=UUID.format(i), vendor="nvidia", model=m, memory_mb=(8 + 8 * i) * 1024, compute_capability=f"{7 + i % 5}.{i % 3}",
                driver_version="550.1", tags=[f"rack-{i}", "long-extra-tag-for-this-board"], healthy=i % 4 != 0)
            for i, m in enumerate(models)]  # fmt: skip
    host = Host(hostname="h" * 200, arch="amd64", cpus=64, memory_mb=1 << 20, gpus=gpus)
    p = build_presence(host, [], Policy(), version="1.0", now=NOW)
    note = encode_presence(p)
    got = decode_presence(note)
    assert len(note) <= NOTE_LIMIT and got is not None and got.truncated
    assert 0 < len(got.gpus) < len(models)
    # The classes with no free GPU (the unhealthy ones here) went first.
    assert all(c.free > 0 for c in got.gpus)


def test_a_presence_that_cannot_fit_without_misstating_it_is_refused():
    p = presence("a", extra=[f"tag-{i:04d}" for i in range(120)])
    with pytest.raises(PresenceTooLarge):
        encode_presence(p)


# --- liveness ---------------------------------------------------------------------------------


def test_live_within_the_ttl_either_side_of_now():
    assert is_live(presence("a", beat=NOW - timedelta(seconds=90)), NOW, membership_ttl=90)
    assert not is_live(presence("a", beat=NOW - timedelta(seconds=91)), NOW, membership_ttl=90)
    assert not is_live(presence("a", beat=NOW + timedelta(seconds=91)), NOW, membership_ttl=90)


def test_live_presences_keeps_the_latest_of_each_host():
    old, new = presence("b", beat=NOW - timedelta(seconds=30), slots=1), presence("b", beat=NOW, slots=2)
    dead = presence("c", beat=NOW - timedelta(hours=1))
    got = live_presences([new, dead, presence("a"), old], NOW, membership_ttl=60)
    assert [p.hostname for p in got] == ["a", "b"] and got[1].room.slots == 2


# --- the registration ---------------------------------------------------------------------------


def test_the_presence_registration_never_serves_a_job():
    body = presence_registration(presence("gpu-1"))
    assert body["paused"] is True and body["run_untagged"] is False and body["tag_list"] == [PRESENCE_TAG]
    assert body["description"] == "autogit-presence:gpu-1" and presence_hostname(body["description"]) == "gpu-1"
    assert not body["description"].startswith("autogit:")  # the job runners' prefix: leak clean-up skips it
    assert presence_hostname("autogit:gpu-1:runner-3") is None and presence_description("x") == "autogit-presence:x"


# --- build_presence: the room ---------------------------------------------------------------------


def test_room_counts_runners_caps_and_held_gpus():
    host = gpu_host(2)
    runners = [Runner(id="r0", kind=RunnerKind.GPU, gpu=UUID.format(0), busy=True),
               Runner(id="r1", platform="linux/arm64", kind=RunnerKind.EMULATED)]  # fmt: skip
    p = build_presence(host, runners, Policy(max_runners=5, max_per_arch={"arm64": 1}), version="1", now=NOW)
    assert p.room.slots == 3 and p.room.per_arch == {"arm64": 0}
    assert p.gpus[0].free == 1 and p.emulated == ["arm64"]
    assert build_presence(host, runners, Policy(paused=True), version="1", now=NOW).room.slots == 0
    off = build_presence(host, [], Policy(emulation=False, gpus=False), version="1", now=NOW)
    assert off.emulated == [] and off.gpus == []


def test_room_never_offers_a_gpu_in_mig_mode_or_next_to_a_held_slice():
    parent = h100(0, mig_mode=True)
    slices = [Gpu(id=f"MIG-{i}", vendor="nvidia", model="NVIDIA H100 80GB HBM3", memory_mb=9984, mig_parent=parent.id, mig_profile="1g.10gb")
              for i in range(2)]  # fmt: skip
    host = Host(hostname="m", arch="amd64", cpus=8, memory_mb=32768, gpus=[parent, *slices])
    p = build_presence(host, [Runner(id="r", kind=RunnerKind.GPU, gpu="MIG-0", busy=True)], Policy(), version="1", now=NOW)
    by_tag = {("mig" in c.tags): c for c in p.gpus}
    assert by_tag[False].free == 0 and (by_tag[True].count, by_tag[True].free) == (2, 1)


# --- ownership -----------------------------------------------------------------------------------


def test_rank_zero_starts_at_once_and_rank_one_after_the_hold_off():
    live = [presence("a"), presence("b"), presence("c")]
    j = job(12)
    first, second, third = owners(j, live)
    assert should_start(j, first, live, NOW, None, 30) and not should_start(j, second, live, NOW, None, 30)
    later = NOW + timedelta(seconds=30)
    assert should_start(j, second, live, later, None, 30) and not should_start(j, third, live, later, None, 30)
    # first_seen later than created_at: the pending time runs from it (a later stage's job).
    assert not should_start(j, second, live, later, NOW + timedelta(seconds=5), 30)


def test_a_full_host_steps_aside_and_an_idle_runner_serves_the_job():
    live = [presence("a"), presence("b"), presence("c")]
    j = job(12)
    first, second, _ = owners(j, live)
    full = [p.model_copy(update={"room": Room(slots=0)}) if p.hostname == first else p for p in live]
    assert should_start(j, second, full, NOW, None, 30) and not should_start(j, first, full, NOW, None, 30)
    idle = [PeerRunner(host="c", tags=["amd64"], run_untagged=True)]
    assert not any(should_start(j, p.hostname, live, NOW, None, 30, idle) for p in live)
    # ... but not an idle runner of a host that is not live: its registration outlives it.
    gone = [PeerRunner(host="zz", tags=["amd64"], run_untagged=True)]
    assert should_start(j, first, live, NOW, None, 30, gone)


def test_room_is_spent_job_by_job_so_a_burst_spreads_at_once():
    live = [presence("a", slots=1), presence("b", slots=1), presence("c", slots=1)]
    jobs = [job(i) for i in range(1, 4)]
    got = assign_jobs("a", jobs, live, [], NOW, 30)
    assert sorted(o.owner for o in got) == ["a", "b", "c"]


def split(me, jobs, live):
    """assign_jobs as a queue split: the jobs this host plans for, and the others' ownership."""
    ownership = assign_jobs(me, jobs, live, [], NOW, 30)
    planned = {o.job for o in ownership if o.mine}
    return [j for j in jobs if j.id in planned], [o for o in ownership if not o.mine]


def test_assign_jobs_splits_the_queue_with_reasons():
    gpu = GpuClass(tags=["cuda", "gpu", "nvidia", "vram-80g"], count=1, free=1)
    live = [presence("host-a"), presence("host-b", gpus=[gpu])]
    jobs = [job(12, "gpu", "vram-ge-40g"), job(13, "riscv64"), *(job(i) for i in range(20, 26))]
    mine, others = split("host-a", jobs, live)
    assert 12 not in {j.id for j in mine} and 13 in {j.id for j in mine}  # 13: nobody can; host-a's planner says why
    gpu_job = next(o for o in others if o.job == 12)
    assert gpu_job.claim is Claim.OWNED and gpu_job.rank is None and gpu_job.describe() == "job 12 owned by host-b"
    ranked = [o for o in others if o.rank == 1]
    assert ranked and ranked[0].describe().endswith("(this host rank 1, takes over in 30 s)")
    assert {o.job for o in others} | {j.id for j in mine} == {j.id for j in jobs}


def test_a_host_that_is_not_a_live_member_plans_for_nothing():
    mine, others = split("new", [job(1)], [presence("a")])
    assert mine == [] and others[0].claim is Claim.NOT_A_MEMBER


def test_hold_off_must_be_positive():
    with pytest.raises(ValueError):
        assign_jobs("a", [job(1)], [presence("a")], [], NOW, 0)


def test_an_idle_runner_registered_elsewhere_does_not_serve_the_job():
    live = [presence("a"), presence("b")]
    j = Job(id=5, project_id=7, tags=[], created_at=NOW, reach=["project:7", "group:2"])
    elsewhere = [PeerRunner(host="b", run_untagged=True, tags=["amd64"], reach="project:8")]
    assert sum(should_start(j, p.hostname, live, NOW, None, 30, elsewhere) for p in live) == 1
    in_group = [PeerRunner(host="b", run_untagged=True, tags=["amd64"], reach="group:2")]
    assert not any(should_start(j, p.hostname, live, NOW, None, 30, in_group) for p in live)
