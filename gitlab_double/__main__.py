"""`python -m autogit.gitlab_double`: serve the GitLab simulator (a test/demo DOUBLE of GitLab).

Its admin token (root's personal access token, and the key to the /_sim/ control surface) comes
from --token-file or $GITLAB_DOUBLE_TOKEN, and is otherwise made fresh for this run and written
to a 0600 file whose path is printed. It is never taken from, nor printed on, a command line.
Exit codes: 0 stopped by SIGINT/SIGTERM, 2 bad arguments or an unusable token file.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from .admin_token import TOKEN_ENV, TokenFileError, new_admin_token, read_token_file, write_token_file
from .gitlab_sim import GitLabSimulator, WebhookTarget

WEBHOOK_SECRET_ENV = "GITLAB_DOUBLE_WEBHOOK_SECRET"


def _admin_token(opts: argparse.Namespace, scratch: list[Path]) -> tuple[str, str]:
    """(token, where an operator finds it). An existing --token-file is read; a missing one is
    created with a fresh token; with neither it nor $GITLAB_DOUBLE_TOKEN, a fresh token goes to
    a file in a private (0700) directory removed at exit."""
    from_env = os.environ.get(TOKEN_ENV)
    if opts.token_file is not None and from_env:
        raise TokenFileError(f"give the admin token once: --token-file or ${TOKEN_ENV}, not both")
    if from_env:
        return from_env, f"${TOKEN_ENV}"
    if opts.token_file is not None and opts.token_file.exists():
        return read_token_file(opts.token_file), str(opts.token_file)
    path = opts.token_file
    if path is None:
        scratch.append(Path(tempfile.mkdtemp(prefix="gitlab-double-")))
        path = scratch[-1] / "admin-token"
    token = new_admin_token()
    write_token_file(path, token)
    return token, str(path)


def _webhook_secret(opts: argparse.Namespace) -> str | None:
    if opts.webhook_secret_file is not None:
        return read_token_file(opts.webhook_secret_file)
    return os.environ.get(WEBHOOK_SECRET_ENV) or None


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def _serve(opts: argparse.Namespace, token: str, token_at: str, webhooks: list[WebhookTarget]) -> None:
    sim = GitLabSimulator(host=opts.host, port=opts.port, private_token=token,
                          stuck_timeout_s=opts.stuck_timeout, webhooks=webhooks)
    await sim.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before the ready line: a caller may stop us at once
        loop.add_signal_handler(sig, stop.set)
    print(f"GitLab simulator (a test double, not GitLab) at {sim.url}/api/v4 "
          f"- admin token (PRIVATE-TOKEN, for /api/v4 and the control surface {sim.url}/_sim/) in {token_at}", flush=True)
    if not _loopback(opts.host):
        print(f"warning: the GitLab double listens on {opts.host}, beyond this machine: it is a test double, "
              "keep it on a private test network", file=sys.stderr, flush=True)
    await stop.wait()
    await sim.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m autogit.gitlab_double", description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1",
                        help="bind address; loopback by default (a test double: never expose it beyond a private test network)")
    parser.add_argument("--port", type=int, default=0, help="0: an ephemeral port")
    parser.add_argument("--token-file", type=Path, metavar="PATH",
                        help=f"the admin token: read from PATH, or made and written there (0600) when PATH does not exist; "
                             f"else ${TOKEN_ENV}; else a fresh one in a private file whose path is printed")
    parser.add_argument("--stuck-timeout", type=float, default=3600.0, help="seconds before unservable jobs fail")
    parser.add_argument("--webhook", action="append", default=[], metavar="URL",
                        help="send Job Hooks to URL (repeatable), with X-Gitlab-Token from --webhook-secret-file "
                             f"or ${WEBHOOK_SECRET_ENV}")
    parser.add_argument("--webhook-secret-file", type=Path, metavar="PATH", help="the Job Hooks' secret token")
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    scratch: list[Path] = []
    try:
        token, token_at = _admin_token(opts, scratch)
        secret = _webhook_secret(opts)
        if opts.webhook and secret is None:
            raise TokenFileError(f"--webhook needs a secret: --webhook-secret-file or ${WEBHOOK_SECRET_ENV}")
        asyncio.run(_serve(opts, token, token_at, [WebhookTarget(url, secret or "") for url in opts.webhook]))
    except TokenFileError as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    finally:
        for directory in scratch:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
