"""`autogit-agent plan` with a scenario's `fleet` section (docs/cli/scenario.md): ownership as the
agent computes it, the plan for this host's share only, and the `fleet` block and JSON key."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from autogit.agent.cli import main
from autogit.agent.fleet import runners_of
from autogit.agent.model import Runner

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "agent/examples/fleet-queue.json"
NOW = "2026-11-27T12:00:00Z"
H100 = ["cc-9.0", "cuda", "gpu", "h100", "nvidia", "vram-80g"]


def agent(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("autogit-agent", path=str(Path(sys.executable).parent))
    assert exe, "autogit-agent console script is not installed in this environment"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)


def plan_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], scenario: dict[str, Any]) -> dict[str, Any]:
    """`autogit-agent plan --json` in process, through the CLI entry."""
    path = tmp_path / "s.json"
    path.write_text(json.dumps(scenario))
    capsys.readouterr()
    rc = main(["plan", str(path), "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out)


def planned_jobs(out: dict[str, Any]) -> set[int]:
    """Jobs the plan does something for: a runner started for them, or an idle runner here."""
    return {j for s in out["start"] for j in s["for_jobs"]} | {s["job"] for s in out["served"]}


def ownership(out: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {o["job"]: o for o in out["fleet"]["ownership"]}


def job(job_id: int, tags: list[str], created: str = "2026-11-27T11:59:50Z", project: int = 7) -> dict[str, Any]:
    return {"id": job_id, "project_id": project, "tags": tags, "created_at": created}


def peer(name: str, arch: str = "amd64", heartbeat: str = "2026-11-27T11:59:45Z", **more: Any) -> dict[str, Any]:
    return {"hostname": name, "arch": arch, "room": {"slots": 4}, "heartbeat_at": heartbeat, **more}


def scenario(jobs: list[dict[str, Any]], peers: list[dict[str, Any]], **fleet: Any) -> dict[str, Any]:
    """This host: amd64, arm64 through QEMU, no GPU, room for four runners, none running."""
    return {
        "now": NOW,
        "host": {"hostname": "me", "arch": "amd64", "emulated": ["arm64"], "cpus": 16, "memory_mb": 65536},
        "policy": {"max_runners": 4},
        "jobs": jobs,
        "fleet": {"peers": peers, **fleet},
    }


# --- the shipped example, as a user runs it --------------------------------------------------------


def test_example_json_keeps_the_plan_and_adds_fleet():
    proc = agent("plan", str(EXAMPLE), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert list(out) == ["start", "stop", "drain", "served", "waiting", "abort", "kill", "remove", "delete_registrations", "pause", "held", "fleet"]
    fleet, owned = out["fleet"], ownership(out)
    assert fleet["hostname"] == "ci-host-1" and fleet["member"] is True
    assert {h["hostname"]: h["live"] for h in fleet["hosts"]} == {"ci-host-1": True, "gpu-1": True, "arm-1": False}
    # The H100 job only the GPU peer serves: its, and nothing here starts for it.
    assert owned[303]["owner"] == "gpu-1" and not owned[303]["mine"] and 303 not in planned_jobs(out)
    # The arm64 job: the dead arm-1 would have served it natively; this host's QEMU runner does.
    assert owned[304]["claim"] == "owner" and owned[304]["ranking"] == ["ci-host-1"]
    assert any(s["platform"] == "linux/arm64" and s["for_jobs"] == [304] for s in out["start"])
    # An idle runner of gpu-1 serves the oldest untagged job: nobody starts for it.
    assert owned[307]["claim"] == "idle-runner" and owned[307]["owner"] == "gpu-1" and 307 not in planned_jobs(out)
    # first_seen: pending 10 s, not since its created_at, so no takeover yet.
    assert owned[308]["claim"] == "owned" and owned[308]["rank"] == 1 and owned[308]["takeover_in_s"] == 20
    # Pending 60 s with gpu-1 first: this host (rank 1) takes it over.
    assert owned[301]["claim"] == "takeover" and 301 in planned_jobs(out)
    assert fleet["planned"] == [301, 304, 305, 306]
    assert {w["job"] for w in out["waiting"]} == {306}  # riscv64: nobody's profiles; the planner says why


def test_example_text_has_the_fleet_block():
    proc = agent("plan", str(EXAMPLE))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    plan_part, fleet_part = text.split("\nfleet: ", 1)
    assert "for 303" not in plan_part and "for 309" not in plan_part and "for 304" in plan_part
    assert fleet_part.startswith("ci-host-1 plans for 4 of 8 pending jobs (hold_off 30 s, membership_ttl 90 s)")
    assert "  host   gpu-1  live, heartbeat 15 s ago; owns 307, 308, 301, 303, 309" in fleet_part
    assert "  host   arm-1  dead: heartbeat 600 s ago" in fleet_part
    assert "  job 303 owned by gpu-1  [gpu, h100]" in fleet_part
    assert "  job 307 served by an idle runner of gpu-1  []" in fleet_part
    assert "  job 308 owned by gpu-1 (this host rank 1, takes over in 20 s)  []" in fleet_part
    assert "  job 301 taken over from gpu-1 (this host rank 1)  []" in fleet_part


def test_the_documented_fleet_block_is_the_examples():
    doc = (REPO / "docs/cli/scenario.md").read_text()
    block = doc.split("```text\nfleet: ", 1)[1].split("```", 1)[0]
    assert "fleet: " + block in agent("plan", str(EXAMPLE)).stdout


def test_without_fleet_the_json_is_the_plan_alone():
    proc = agent("plan", str(REPO / "agent/examples/mixed-queue.json"), "--json")
    assert proc.returncode == 0 and "fleet" not in json.loads(proc.stdout)
    assert "fleet:" not in agent("plan", str(REPO / "agent/examples/mixed-queue.json")).stdout


# --- hand-built scenarios ----------------------------------------------------------------------------


def test_gpu_job_goes_to_the_gpu_peer_and_is_not_planned_here(tmp_path, capsys):
    gpu_peer = peer("gpu-1", gpus=[{"tags": H100, "count": 1, "free": 1}])
    out = plan_json(tmp_path, capsys, scenario([job(1, ["gpu", "h100"]), job(2, ["gpu"])], [gpu_peer]))
    owned = ownership(out)
    assert [owned[j]["owner"] for j in (1, 2)] == ["gpu-1", "gpu-1"] and not owned[1]["mine"]
    # One free H100: the first job in fair order spends it, the second waits for it there.
    assert out["start"] == [] and out["waiting"] == [] and out["fleet"]["planned"] == []


def test_a_job_only_this_host_serves_is_planned_here(tmp_path, capsys):
    # The peer is amd64 without QEMU: the arm64 job is this host's whatever the hash says.
    out = plan_json(tmp_path, capsys, scenario([job(j, ["arm64"]) for j in range(10, 20)], [peer("amd-1")]))
    assert all(o["claim"] == "owner" and o["ranking"] == ["me"] for o in out["fleet"]["ownership"])
    # Room for four: four emulated runners start, the other six wait for capacity here.
    assert sum(len(s["for_jobs"]) for s in out["start"]) == 4 and len(out["waiting"]) == 6
    assert all(s["platform"] == "linux/arm64" for s in out["start"])


def test_a_dead_peers_jobs_go_to_a_live_host(tmp_path, capsys):
    jobs = [job(j, []) for j in range(30, 40)]
    live = plan_json(tmp_path, capsys, scenario(jobs, [peer("other")]))
    theirs = {o["job"] for o in live["fleet"]["ownership"] if o["owner"] == "other"}
    assert theirs and not theirs & planned_jobs(live)
    dead = plan_json(tmp_path, capsys, scenario(jobs, [peer("other", heartbeat="2026-11-27T11:55:00Z")]))
    assert {h["hostname"]: h["live"] for h in dead["fleet"]["hosts"]} == {"me": True, "other": False}
    assert all(o["owner"] == "me" and o["ranking"] == ["me"] for o in dead["fleet"]["ownership"])
    assert dead["fleet"]["planned"] == list(range(30, 40))
    # Room for four here: the others wait for capacity on this host, not for the dead one.
    assert theirs & planned_jobs(dead) and planned_jobs(dead) | {w["job"] for w in dead["waiting"]} == set(range(30, 40))


def test_an_idle_peer_runner_serves_the_job_and_nothing_starts(tmp_path, capsys):
    idle = {"host": "other", "tags": ["amd64", "x86_64"], "run_untagged": True, "idle": True}
    out = plan_json(tmp_path, capsys, scenario([job(41, [])], [peer("other")], peer_runners=[idle]))
    assert ownership(out)[41] == {"job": 41, "mine": False, "claim": "idle-runner", "owner": "other", "ranking": [], "rank": None,
                                  "takeover_in_s": None}  # fmt: skip
    assert out["start"] == [] and out["served"] == [] and out["waiting"] == []
    # The same runner busy: the job is owned by one of the two hosts as usual.
    busy = plan_json(tmp_path, capsys, scenario([job(41, [])], [peer("other")], peer_runners=[{**idle, "idle": False}]))
    assert ownership(busy)[41]["claim"] in ("owner", "owned")


def test_the_host_runners_idle_count_for_the_fleet(tmp_path, capsys):
    # This host's own idle runner serves the job: claim idle-runner, owner this host, no start.
    data = scenario([job(42, [])], [peer("other")])
    data["runners"] = [{"id": "r1", "tags": ["amd64", "x86_64"], "idle_since": "2026-11-27T11:59:00Z"}]
    out = plan_json(tmp_path, capsys, data)
    assert ownership(out)[42]["claim"] == "idle-runner" and ownership(out)[42]["owner"] == "me"
    assert out["served"] == [{"job": 42, "runner": "r1"}] and out["start"] == []


def test_the_own_presence_is_the_agents(tmp_path, capsys):
    # Paused: the agent publishes room 0, so its peer (room for four) is first for every job.
    data = scenario([job(j, []) for j in range(50, 54)], [peer("other")])
    data["policy"]["paused"] = True
    out = plan_json(tmp_path, capsys, data)
    assert all(o["owner"] == "other" and o["ranking"] == ["other", "me"] for o in out["fleet"]["ownership"])
    assert out["fleet"]["planned"] == [] and out["start"] == []


def test_fleet_hostname_overrides_host_hostname(tmp_path, capsys):
    data = scenario([job(61, ["arm64"])], [peer("amd-1")], hostname="ci-7")
    out = plan_json(tmp_path, capsys, data)
    assert out["fleet"]["hostname"] == "ci-7" and ownership(out)[61]["owner"] == "ci-7"


def test_first_seen_delays_the_takeover(tmp_path, capsys):
    # Pending 100 s since created_at; the job is its peer's (rank 0) if only for a hold_off.
    jobs = [job(j, [], created="2026-11-27T11:58:20Z") for j in range(70, 80)]
    old = plan_json(tmp_path, capsys, scenario(jobs, [peer("other")]))
    assert all(o["mine"] for o in old["fleet"]["ownership"])  # every one due for this host by now
    first = {str(j): "2026-11-27T11:59:50Z" for j in range(70, 80)}
    fresh = plan_json(tmp_path, capsys, scenario(jobs, [peer("other")], first_seen=first))
    theirs = [o for o in fresh["fleet"]["ownership"] if o["owner"] == "other"]
    assert theirs and all(not o["mine"] and o["takeover_in_s"] == 20 for o in theirs)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d["fleet"]["peers"][0].update(room="lots"), "fleet.peers.0.room: Input should be an object"),
        (lambda d: d["fleet"]["peers"][0].update(rooms={"slots": 1}), "fleet.peers.0.rooms: Extra inputs are not permitted"),
        (lambda d: d["fleet"]["peers"][0]["room"].update(s=1), "fleet.peers.0.room.s: Extra inputs"),
        (lambda d: d["fleet"]["peers"][0].pop("heartbeat_at"), "fleet.peers.0.heartbeat_at: Field required"),
        (lambda d: d["fleet"]["peers"][0].update(gpus=[{"tags": ["gpu"], "count": 0, "free": 0}]), "fleet.peers.0.gpus.0.count"),
        (lambda d: d["fleet"]["peers"][0].update(hostname="me"), "fleet.peers.0.hostname: 'me' is this host's name"),
        (lambda d: d["fleet"].update(peer_runners=[{"host": "nobody"}]), "fleet.peer_runners.0.host: no peer is named 'nobody'"),
        (lambda d: d["fleet"].update(peer_runners=[{"host": "other", "idel": True}]), "fleet.peer_runners.0.idel"),
        (lambda d: d["fleet"].update(first_seen={"999": NOW}), "fleet.first_seen.999: no such job"),
        (lambda d: d["fleet"].update(hold_off=0), "fleet.hold_off: Input should be greater than 0"),
    ],
)
def test_a_bad_fleet_field_is_one_line_naming_it_and_exit_65(tmp_path, capsys, change, where):
    data = scenario([job(1, [])], [peer("other")])
    change(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["plan", str(path)]) == 65
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and f"bad.json: {where}" in err, err


def test_peers_take_the_field_names_not_the_note_keys(tmp_path, capsys):
    data = scenario([job(1, [])], [{"h": "other", "a": "amd64", "r": {"s": 4}, "b": 1796126400}])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    assert main(["plan", str(path)]) == 65
    assert "fleet.peers.0.hostname: Field required" in capsys.readouterr().err


def test_runners_of_counts_busy_and_draining_as_taken():
    runners = [Runner(id="a", tags=["amd64"]), Runner(id="b", busy=True), Runner(id="c", draining=True)]
    assert [r.idle for r in runners_of("me", runners)] == [True, False, False]


def test_a_host_that_just_rejoined_ranks_after_its_settled_peers(tmp_path, capsys):
    """Back 10 s ago from a cut (heartbeat 30 s: settling for 60 s): every untagged job is the
    settled peer's, this host only next in line; once settled it takes its share again."""
    jobs = [job(j, []) for j in range(50, 54)]  # within the peer's room of four
    back = plan_json(tmp_path, capsys, scenario(jobs, [peer("other")], joined_at="2026-11-27T11:59:50Z"))
    assert all(o["ranking"] == ["other", "me"] and not o["mine"] for o in back["fleet"]["ownership"])
    assert planned_jobs(back) == set()
    settled = plan_json(tmp_path, capsys, scenario(jobs, [peer("other")], joined_at="2026-11-27T11:58:00Z"))
    assert {o["owner"] for o in settled["fleet"]["ownership"]} == {"me", "other"}
    # A peer that is settling ranks after this host alike: every view has the same order.
    theirs = plan_json(tmp_path, capsys, scenario(jobs, [peer("other", joined_at="2026-11-27T11:59:50Z")]))
    assert all(o["ranking"] == ["me", "other"] for o in theirs["fleet"]["ownership"])
