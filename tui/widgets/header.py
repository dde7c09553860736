"""The header: which agent this is, how it is, and whether the console is connected to it."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from autogit.agent.api.schema import ComponentHealth, LeaderRole, StatusResponse

from ..data import age

__all__ = ["AgentHeader"]

_PHASE_STYLE = {"running": "green", "degraded": "yellow", "starting": "blue", "detect-only": "cyan", "stopping": "magenta"}
_CONN = {
    "connected": ("●", "green", "connected"),
    "connecting": ("◌", "yellow", "connecting…"),
    "disconnected": ("✖", "red", "disconnected"),
    "incompatible": ("✖", "red", "incompatible agent"),
}


def _health(name: str, health: ComponentHealth, compact: bool = False) -> Text:
    text = Text(f"{name} ")
    if health.ok is None:
        text.append("–" if compact else "– n/a", style="bright_black")
    elif health.ok and health.problems:
        # It answers but refuses something (a scope, a role): the events tab has each line.
        text.append(f"▲{len(health.problems)}" if compact else f"▲ {len(health.problems)} refused", style="bold yellow")
    elif health.ok:
        text.append("●" if compact else "● ok", style="green")
    else:
        text.append("✖ FAIL" if compact else "✖ failing", style="bold red")
    return text


class AgentHeader(Widget):
    """Two lines: identity and health, then counts. Reactive: assign `status` / `connection`."""

    DEFAULT_CSS = """
    AgentHeader { height: 2; background: $panel; color: $foreground; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    status: reactive[StatusResponse | None] = reactive(None, always_update=True)
    connection: reactive[str] = reactive("connecting")
    socket_path: reactive[str] = reactive("")
    compact: reactive[bool] = reactive(False)  # narrow terminals: shorter wording

    def render(self) -> Text:
        # Every field is its own run of text and fields are parted by a visible mark (·, │ or a
        # bracket), never by spaces alone: a reader of the SVG screenshot that drops the
        # spaces between runs still sees "gpu-box-1 · amd64", not "gpu-box-1amd64".
        st = self.status
        compact = self.compact
        sep = Text(" │ " if compact else "  │  ", style="bright_black")
        dot = Text(" · ", style="bright_black")
        top = Text()
        top.append(" AutoGit ", style="bold reverse")
        top.append(" ") if compact else top.append_text(dot)
        if st is None:
            top.append(self.socket_path or "agent", style="bold")
        else:
            top.append(st.hostname, style="bold")
            if st.host is not None:
                top.append_text(dot)
                top.append(st.host.arch)
                if st.host.emulated and compact:
                    top.append(f"+{len(st.host.emulated)}emu", style="bright_black")
                elif st.host.emulated:
                    top.append(" +" + ",".join(st.host.emulated) + " (emulated)", style="bright_black")
            top.append_text(sep)
            top.append(st.phase.value, style=f"bold {_PHASE_STYLE.get(st.phase.value, '')}")
            le = st.leadership
            if le is not None and le.role is LeaderRole.LEADER:  # leader_election: which replica acts
                top.append(" ♛ LEADER" if compact else " ♛ leader", style="bold green")
            elif le is not None and le.role is LeaderRole.FOLLOWER:
                top.append(" ◦ FOLLOWER" if compact else f" ◦ follower (leader: {le.holder or 'none'})", style="bold cyan")
            if st.paused:
                top.append(" ‖ PAUSED", style="bold yellow")
            if st.config is not None and st.config.restart_needed:
                # A reload changed keys only a restart applies (the event log names them).
                top.append(" ⟳ RESTART" if compact else " ⟳ restart needed", style="bold yellow")
            top.append_text(sep)
            top.append_text(_health("GitLab", st.gitlab, compact))
            top.append_text(dot)
            top.append_text(_health("Docker", st.docker, compact))
        top.append_text(sep)
        mark, style, label = _CONN.get(self.connection, ("?", "", self.connection))
        top.append(f"{mark} {label}", style=style)

        bottom = Text()
        if st is not None:
            c = st.counts
            gap = Text(" │ ", style="bright_black")
            bottom.append(" GPUs: ", style="bright_black")
            bottom.append(str(c.gpus), style="bold")
            if compact:
                bottom.append(f" ({c.gpus_busy} busy", style="bright_black")
                if c.gpus_unhealthy:
                    bottom.append(f", {c.gpus_unhealthy} bad", style="red")
            else:
                # A zero drained count is left out: the room goes to the queue's oldest wait.
                bottom.append(f" ({c.gpus_busy} busy" + (f", {c.gpus_drained} drained" if c.gpus_drained else ""), style="bright_black")
                if c.gpus_unhealthy:
                    bottom.append(f", {c.gpus_unhealthy} unhealthy", style="red")
            bottom.append(")", style="bright_black")
            bottom.append_text(gap)
            bottom.append("Runners: ", style="bright_black")
            bottom.append(str(c.runners_total), style="bold")
            if compact:
                bottom.append(f" ({c.runners.get('busy', 0)} busy)", style="bright_black")
            elif c.runners:
                bottom.append(" (" + ", ".join(f"{n} {s}" for s, n in c.runners.items()) + ")", style="bright_black")
            bottom.append_text(gap)
            bottom.append("Jobs: ", style="bright_black")
            bottom.append(str(c.pending_jobs), style="bold")
            bottom.append(" (", style="bright_black")
            bottom.append(f"{c.waiting_jobs} waiting", style="yellow" if c.waiting_jobs else "bright_black")
            if c.oldest_wait_s is not None and c.oldest_wait_s > 0:
                # The oldest wait of GitLab's queue in the agent's scope (a fleet's, whole): a
                # growing queue shows here first. Shown whole or not at all.
                waited = age(c.oldest_wait_s)
                if self.size.width - 2 - bottom.cell_len - 1 >= len(", oldest ") + len(waited):
                    bottom.append(", oldest ", style="bright_black")
                    bottom.append(waited, style="bold yellow" if c.oldest_wait_s >= 600 else "bold")
            bottom.append(")", style="bright_black")
            if st.last_reconcile is not None:
                when = f"pass #{st.reconcile_count} at {st.last_reconcile:%H:%M:%S}"
                room = self.size.width - 2 - bottom.cell_len - gap.cell_len
                if room < len(when):
                    when = f"pass #{st.reconcile_count}"
                if room >= len(when):  # a field is shown whole or not at all
                    bottom.append_text(gap)
                    bottom.append(when, style="bright_black")
        top.append("\n")
        top.append_text(bottom)
        return top
