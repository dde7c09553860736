"""leader_election: its config section (bounds the library and ADR-014 need, one line per error
naming the field), the defaults taken from the pod, and the role AgentState shows and announces."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from autogit.agent.api.client import format_status, leadership_line
from autogit.agent.api.schema import Leadership as WireLeadership
from autogit.agent.api.schema import StatusResponse
from autogit.agent.api.views import status_view
from autogit.agent.config import ConfigError, parse_config
from autogit.agent.election import identity_of, namespace_of
from autogit.agent.events import EventBus
from autogit.agent.metrics import AgentMetrics
from autogit.agent.state import AgentState, LeaderRole


def test_off_by_default_with_client_go_s_timings():
    cfg = parse_config("").leader_election
    assert cfg.enabled is False
    assert (cfg.lease_name, cfg.lease_duration, cfg.renew_deadline, cfg.retry_period) == ("autogit", 15, 10, 2)
    assert cfg.kubeconfig is None and cfg.namespace is None and cfg.identity is None


@pytest.mark.parametrize(
    ("yaml", "line"),
    [
        ("leader_election:\n  lease_duration: 10\n  renew_deadline: 10\n",
         "leader_election: Value error, renew_deadline must be shorter than lease_duration, or two replicas could act at once"),
        ("leader_election:\n  renew_deadline: 2.4\n  retry_period: 2\n",
         "leader_election: Value error, renew_deadline must be longer than 1.2 × retry_period"),
        ("leader_election:\n  retry_period: 0.5\n", "leader_election.retry_period: Input should be greater than or equal to 1"),
        ("leader_election:\n  lease_duration: 6.5\n",
         "leader_election.lease_duration: Input should be a valid integer, got a number with a fractional part"),
        ("leader_election:\n  lease_name: ''\n", "leader_election.lease_name: String should have at least 1 character"),
        ("leader_election:\n  lease: x\n", "leader_election.lease: unknown key (check the spelling; see docs/configuration/)"),
    ],
)  # fmt: skip
def test_bad_values_are_one_line_naming_the_field(yaml: str, line: str):
    with pytest.raises(ConfigError) as err:
        parse_config(yaml)
    assert err.value.lines == [line]


def test_identity_and_namespace_default_from_the_pod(tmp_path: Path):
    cfg = parse_config("leader_election:\n  enabled: true\n").leader_election
    assert identity_of(cfg, {"POD_NAME": "autogit-7d9f-x2"}) == "autogit-7d9f-x2"
    assert identity_of(cfg, {}) != ""  # the host's name
    assert identity_of(cfg.model_copy(update={"identity": "a"}), {"POD_NAME": "p"}) == "a"
    sa = tmp_path / "namespace"
    sa.write_text("ci\n")
    assert namespace_of(cfg, {"POD_NAMESPACE": "ops"}, sa) == "ops"
    assert namespace_of(cfg, {}, sa) == "ci"
    assert namespace_of(cfg.model_copy(update={"namespace": "x"}), {"POD_NAMESPACE": "ops"}, sa) == "x"
    with pytest.raises(ConfigError) as err:
        namespace_of(cfg, {}, tmp_path / "absent")
    assert err.value.lines[0].startswith("leader_election.namespace: not set")


def test_the_role_is_announced_once_per_change_and_shown():
    times = iter(datetime(2026, 12, 6, 21, m, tzinfo=UTC) for m in range(10))
    state = AgentState(EventBus(), clock=lambda: next(times))
    metrics = AgentMetrics()
    metrics.bind_state(state)
    assert state.leadership.role is LeaderRole.NOT_ELECTING
    assert b"autogit_leader " not in metrics.render()  # absent with leader_election off
    assert leadership_line(WireLeadership.model_validate(state.leadership.model_dump())) is None

    state.start_electing("replica-b", "ci/autogit")
    state.set_leadership(False, "replica-a")
    assert state.leadership.role is LeaderRole.FOLLOWER and state.leadership.holder == "replica-a"
    assert b"autogit_leader 0.0" in metrics.render()
    line = leadership_line(WireLeadership.model_validate(state.leadership.model_dump()))
    assert line is not None and line.startswith("role: FOLLOWER (replica-b, observing only") and "replica-a leads" in line

    state.set_leadership(True, "replica-b")
    state.set_leadership(True, "replica-b")
    since = state.leadership.since
    state.set_leadership(False, "replica-c")
    kinds = [(e.type, e.data.get("identity")) for e in state.bus.history()]
    assert kinds.count(("leader.acquired", "replica-b")) == 1 and kinds.count(("leader.lost", "replica-b")) == 1
    assert state.leadership.role is LeaderRole.FOLLOWER and state.leadership.since is not None and since is not None
    assert state.leadership.since > since
    state.set_leadership(True, "replica-b")
    assert b"autogit_leader 1.0" in metrics.render()
    line = leadership_line(WireLeadership.model_validate(state.leadership.model_dump()))
    assert line is not None and line.startswith("role: LEADER (replica-b, acting)")


def test_status_says_which_replica_leads():
    state = AgentState(EventBus())
    assert "role:" not in format_status(status_view(state, "box"))  # not electing: no line
    state.start_electing("replica-a", "ci/autogit")
    state.set_leadership(True, "replica-a")
    status = status_view(state, "box")
    assert status.leadership is not None and status.leadership.role is LeaderRole.LEADER and status.leadership.identity == "replica-a"
    assert "role: LEADER (replica-a, acting)" in format_status(status)
    assert StatusResponse.model_validate_json(status.model_dump_json()).leadership == status.leadership  # on the wire and back


@pytest.mark.parametrize(
    ("section", "line"),
    [
        ("{enabled: true}", "leader_election.namespace: not set, and neither POD_NAMESPACE nor a pod's service-account namespace to default to"),
        ("{enabled: true, namespace: x, kubeconfig: /nonexistent/kc}", "leader_election.kubeconfig: /nonexistent/kc: no such file"),
    ],
)  # fmt: skip
def test_a_replica_that_cannot_elect_stops_at_start_with_exit_78_and_one_line(tmp_path: Path, section: str, line: str):
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"api: {{socket: {tmp_path / 'agent.sock'}}}\ngpu: {{vendors: []}}\nrunner: {{docker: {{config_dir: {tmp_path / 'runners'}}}}}\n"
        f"state_file: {tmp_path / 'state.json'}\nleader_election: {section}\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("POD_NAMESPACE", "AUTOGIT_GITLAB_TOKEN", "NOTIFY_SOCKET")}
    proc = subprocess.run([sys.executable, "-m", "autogit.agent.cli", "run", "--config", str(config)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 78, proc.stderr
    assert proc.stderr.splitlines()[-1] == line
