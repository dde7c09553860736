"""`autogit-agent`: run | demo | detect | plan | check-config | status | config-docs | version.

Exit codes (docs/cli/autogit-agent.md): 0 success; 64 usage error; 65 bad scenario input;
66 input file missing; 69 agent or service unavailable; 78 bad configuration (systemd's
RestartPreventExitStatus=78 stops a restart loop on it).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from . import __version__
from datetime import UTC, datetime

EX_OK, EX_USAGE, EX_DATAERR, EX_NOINPUT, EX_UNAVAILABLE, EX_CONFIG = 0, 64, 65, 66, 69, 78


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's default is exit 2; sysexits says 64
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


def _err(message: str) -> None:
    print(f"autogit-agent: {message}", file=sys.stderr)


def cmd_check_config(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config

    try:
        load_config(args.path)
    except ConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return EX_CONFIG
    print(f"{args.path or 'config'}: ok")
    return EX_OK


def cmd_detect(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config
    from .inventory.host import DetectReport, observe_host

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return EX_CONFIG
    report: DetectReport = observe_host(config, root=args.root)
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        print(report.human())
    return EX_OK


def cmd_plan(args: argparse.Namespace) -> int:
    import json

    from .render import plan_text
    from .scenario import ScenarioError, load_scenario, plan_scenario

    try:
        scenario = load_scenario(args.scenario)
    except FileNotFoundError:
        _err(f"{args.scenario}: no such file")
        return EX_NOINPUT
    except ScenarioError as exc:
        _err(str(exc))
        return EX_DATAERR
    result, fleet = plan_scenario(scenario)
    if not args.json:
        print(plan_text(scenario, result, fleet))
    elif fleet is None:
        print(result.model_dump_json(indent=2))
    else:
        # The Plan document as ever, plus one `fleet` key: readers of start/stop/waiting need no change.
        print(json.dumps({**result.model_dump(mode="json"), "fleet": fleet.model_dump(mode="json")}, indent=2))
    return EX_OK


def cmd_config_docs(args: argparse.Namespace) -> int:
    from .configdocs import render_config_docs

    print(render_config_docs(), end="")
    return EX_OK


def cmd_run(args: argparse.Namespace) -> int:
    from .daemon import run_agent

    return run_agent(args.config)


def cmd_status(args: argparse.Namespace) -> int:
    import asyncio

    from .api.client import AgentApiError, AgentClient, AgentUnavailable, format_fleet, format_status, status_fleet_section, status_waits_section

    async def fetch() -> str:
        async with AgentClient(args.socket) as client:
            if args.fleet:
                fleet = await client.fleet()
                return fleet.model_dump_json(indent=2) if args.json else format_fleet(fleet, datetime.now(UTC))
            status = await client.status()
            if args.json:
                return status.model_dump_json(indent=2)
            sections = [await status_waits_section(client), await status_fleet_section(client, datetime.now(UTC))]
            return "\n".join([format_status(status), *(s for s in sections if s)])

    try:
        print(asyncio.run(fetch()))
    except AgentUnavailable as exc:
        _err(f"{exc} (is autogit-agent running? are you in group autogit?)")
        return EX_UNAVAILABLE
    except AgentApiError as exc:
        _err(str(exc))
        return EX_UNAVAILABLE
    return EX_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(jobs=args.jobs, runner_image=args.runner_image)


def cmd_version(args: argparse.Namespace) -> int:
    print(f"autogit-agent {__version__}")
    return EX_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="autogit-agent", description="AutoGit host agent: GitLab runners on the right hardware.")
    parser.add_argument("--version", action="version", version=f"autogit-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("check-config", help="validate a config file (exit 78 on errors)")
    p.add_argument("path", nargs="?", type=Path, help="default: /etc/autogit/agent.yaml or $AUTOGIT_CONFIG")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("detect", help="show this host's hardware and the runner tags it yields")
    p.add_argument("--json", action="store_true")
    p.add_argument("--config", type=Path)
    p.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("plan", help="run the planner on a scenario file (no I/O); with a fleet section, on this host's share")
    p.add_argument("scenario", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("config-docs", help="print the configuration reference (Markdown)")
    p.set_defaults(func=cmd_config_docs)

    p = sub.add_parser("run", help="run the agent (foreground; logs to stderr for journald)")
    p.add_argument("--config", type=Path, help="default: /etc/autogit/agent.yaml or $AUTOGIT_CONFIG")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="the running agent's status, from its socket")
    p.add_argument("--json", action="store_true", help="the /v1/status document (with --fleet: the /v1/fleet document)")
    p.add_argument("--fleet", action="store_true", help="only the fleet: every host's liveness, profiles, room and owned jobs")
    p.add_argument("--socket", type=Path, default=Path(os.environ.get("AUTOGIT_SOCKET", "/run/autogit/agent.sock")))
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("demo", help="GitLab simulator + agent + real runner containers, live on this terminal")
    p.add_argument("--jobs", type=int, default=12, help="jobs in the scripted stream")
    p.add_argument("--runner-image", default=None, help="runner image to use; default: the pinned official one where a "
                   "registry answers, else a local gitlab-runner double built here")  # fmt: skip
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=cmd_version)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EX_OK


if __name__ == "__main__":
    sys.exit(main())
