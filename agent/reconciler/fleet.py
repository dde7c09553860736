"""The fleet step (agent/fleet.py, ADR-009): this host's presence, its peers', and its share of the
pending jobs; the leftovers of hosts gone for good. The pure fleet module decides; this step reads
and writes GitLab."""

from __future__ import annotations

from datetime import datetime, timedelta

from .. import __version__, fleet
from ..gitlab.adapter import GitLabError, Registration
from ..model import Host, Job, Policy, Runner
from .core import ReconcilerCore

__all__ = ["FleetStep"]


class FleetStep(ReconcilerCore):
    def _fleet_listing(self) -> list[fleet.FleetRegistration]:
        """Every AutoGit host's job-runner registrations as GitLab lists them, this host's included."""
        return [_fleet_registration(r, r.id in self._busy_ids) for r in self._listing if r.host]

    async def _fleet_share(self, host: Host, runners: list[Runner], pending: list[Job], policy: Policy, now: datetime) -> list[Job]:
        """The pending jobs this host plans for: the fleet's deterministic share of it. Every
        heartbeat_interval the host refreshes its presence in GitLab and reads its peers'; a
        host missing from that view (GitLab refuses its presence, or it lapsed) is a backstop,
        ranked after every live peer (fleet.fleet_share)."""
        assert self.gitlab is not None
        fleet_config = self.config.fleet
        state = self.state
        refreshed = False
        due = self.monotonic() >= self._fleet_next
        if due:
            own = next((p for p in state.presences if p.hostname == self.hostname), None)
            self._joined_at = fleet.membership_start(self._joined_at, own, now, fleet_config.membership_ttl)
        # What this host publishes, and what it counts as when GitLab's view lacks it (a backstop).
        presence = fleet.build_presence(host, runners, policy, version=__version__, now=now, joined_at=self._joined_at)
        if due:
            self._fleet_next = self.monotonic() + fleet_config.heartbeat_interval
            refreshed = await self._refresh_presences(presence)
        mono = self.monotonic()
        first_seen = {j: now - timedelta(seconds=mono - t) for j, t in self._first_seen.items()}
        # Every host's runners, its own included, from the one listing (fleet.fleet_runners): the
        # same function on every host, so the same view gives the same ownership (ISSUE 19, 5c).
        share = fleet.fleet_share(
            self.hostname, pending, state.presences, fleet.fleet_runners(self._fleet_listing()), now,
            hold_off=fleet_config.hold_off, membership_ttl=fleet_config.membership_ttl, first_seen=first_seen,
            settle=fleet.join_settle(fleet_config.heartbeat_interval), own=presence,
        )  # fmt: skip
        state.live_hosts = {p.hostname for p in share.live}
        state.ownership = share.ownership
        if refreshed and self.may_act():  # once per heartbeat, from the presences just read
            await self._forget_gone_hosts(now)
        return share.jobs

    async def _refresh_presences(self, presence: fleet.Presence) -> bool:
        """Publish this host's presence (only while it may act: a follower replica under leader
        election writes nothing) and read its peers'."""
        assert self.gitlab is not None
        try:
            if self.may_act():
                self._presence_id = await self.gitlab.publish_presence(self._presence_id, fleet.presence_registration(presence))
            read, ids = [], {}
            for reg_id, description, note, contacted in await self.gitlab.read_presences(fleet.PRESENCE_TAG):
                contacted_at = datetime.fromisoformat(contacted.replace("Z", "+00:00")) if contacted else None
                found = fleet.decode_presence(note, contacted_at=contacted_at)
                if found is not None and found.hostname == fleet.presence_hostname(description):
                    read.append(found)
                    ids[found.hostname] = reg_id
            self.state.presences, self._presence_ids = read, ids
            self._refused.pop("fleet", None)
            return True
        except (GitLabError, fleet.PresenceTooLarge) as exc:
            self._refused["fleet"] = f"fleet presence: {exc} (meanwhile this host is a backstop: it starts only for jobs its live peers leave pending)"
            return False

    async def _forget_gone_hosts(self, now: datetime) -> None:
        """Delete what peers gone for good left behind (fleet.to_forget decides what, and which
        live host does it); a few per heartbeat, so a dead rack's leftovers never burst."""
        assert self.gitlab is not None
        state = self.state
        host_of = {r.id: r.host for r in state.fleet if r.host} | {i: h for h, i in self._presence_ids.items()}
        leftovers = [r for r in self._fleet_listing() if r.host != self.hostname]
        doomed = fleet.to_forget(self.hostname, leftovers, state.presences, self._presence_ids, state.live_hosts, now, self.config.fleet.forget_after)
        for reg_id in doomed[:10]:
            try:
                await self.gitlab.delete_runner(reg_id)
            except GitLabError as exc:
                self._refused["fleet forget"] = f"fleet: cannot delete registration {reg_id} left by {host_of.get(reg_id)}, a host gone for good: {exc}"
                return
            what = "presence" if reg_id in self._presence_ids.values() else "runner registration"
            state.bus.publish(
                "fleet.forgot", f"{what} {reg_id} of {host_of.get(reg_id)} deleted: its host has been silent {self.config.fleet.forget_after:.0f} s or more",
                host=host_of.get(reg_id), gitlab_id=reg_id,
            )  # fmt: skip
        self._refused.pop("fleet forget", None)


def _fleet_registration(reg: Registration, busy: bool) -> fleet.FleetRegistration:
    return fleet.FleetRegistration(
        id=reg.id, host=reg.host or "", status=reg.status, busy=busy, online=reg.online, paused=reg.paused,
        contacted_at=reg.contacted_at, tags=reg.tags, run_untagged=reg.run_untagged, reach=reg.reach,
    )  # fmt: skip
