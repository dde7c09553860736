"""`python -m autogit.gitlab_double`: serve the GitLab simulator (a test/demo DOUBLE of GitLab)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from .gitlab_sim import GitLabSimulator, WebhookTarget


def _webhook(value: str) -> WebhookTarget:
    url, sep, secret = value.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError("expected URL=SECRET")
    return WebhookTarget(url, secret)


async def _serve(opts: argparse.Namespace) -> None:
    sim = GitLabSimulator(host=opts.host, port=opts.port, private_token=opts.token,
                          stuck_timeout_s=opts.stuck_timeout, webhooks=opts.webhook)
    await sim.start()
    print(f"GitLab simulator (a test double, not GitLab) at {sim.url}/api/v4 "
          f"- user API needs PRIVATE-TOKEN (set with --token); control surface at {sim.url}/_sim/", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sim.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m autogit.gitlab_double", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 to reach it from containers)")
    parser.add_argument("--port", type=int, default=0, help="0: an ephemeral port")
    parser.add_argument("--token", default="sim-admin-token", help="the user API's PRIVATE-TOKEN")
    parser.add_argument("--stuck-timeout", type=float, default=3600.0, help="seconds before unservable jobs fail")
    parser.add_argument("--webhook", type=_webhook, action="append", default=[], metavar="URL=SECRET",
                        help="send Job Hooks to URL with X-Gitlab-Token SECRET (repeatable)")
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(opts))


if __name__ == "__main__":
    main()
