"""One replica standing for election (agent/leader.py) in a process of its own, for
tests/k8s/test_leader_election.py: it prints a JSON line each time `acting` changes, with
time.monotonic() (one clock for every process on this machine), polling `acting` as the agent's
loop does before each pass. SIGTERM: release the Lease and exit.

    python lease_candidate.py KUBECONFIG NAMESPACE LEASE IDENTITY
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

from kubernetes_asyncio import config
from kubernetes_asyncio.client import ApiClient, Configuration

from autogit.agent.leader import Leadership


async def main(kubeconfig: str, namespace: str, lease: str, identity: str) -> None:
    configuration = Configuration()
    await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration, persist_config=False)
    async with ApiClient(configuration) as api:
        leadership = Leadership(api, namespace, lease, identity, lease_duration=6, renew_deadline=4, retry_period=1)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        election = asyncio.create_task(leadership.run())
        print(json.dumps({"t": time.monotonic(), "acting": False, "ready": True}), flush=True)
        was = False
        while not stop.is_set():
            now = leadership.acting
            if now != was:
                print(json.dumps({"t": time.monotonic(), "acting": now, "holder": leadership.holder}), flush=True)
                was = now
            try:
                await asyncio.wait_for(stop.wait(), 0.05)
            except TimeoutError:
                pass
        election.cancel()
        released = await leadership.release()
        print(json.dumps({"t": time.monotonic(), "acting": False, "released": released}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
