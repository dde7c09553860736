"""A fleet of three `autogit-agent run` processes where one host has a GPU (an Intel iGPU in a
umockdev testbed, seen only by that agent's process): a GPU job goes to that host alone, and
plain jobs still spread. Run under umockdev-wrapper (scripts/test does); needs root for the
card's device node, which Docker resolves on the real /dev (a harmless 1:3 node, removed after)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from agent_process import Fleet, agent_environment, all_see_each_other, host_of_job, job_runners, until
from ci_policy import require
from runner_harness import finished
from umockdev_support import add_intel

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.umockdev]

MINOR = 77  # /dev/dri/renderD205: far from any real card's node


async def test_a_gpu_job_goes_only_to_the_host_with_the_gpu(umockdev_testbed, sim, runner_image, tmp_path):
    require(os.geteuid() == 0, "the card's device node on the real /dev needs root")
    add_intel(umockdev_testbed, "0000:00:02.0", minor=MINOR)
    node = Path(f"/dev/dri/renderD{128 + MINOR}")
    plain = agent_environment("")  # this process's /dev is umockdev's; make the node outside it
    made_dir = subprocess.run(["test", "-d", str(node.parent)], env=plain).returncode != 0
    subprocess.run(["sh", "-c", f"mkdir -p {node.parent} && mknod -m 666 {node} c 1 3"], env=plain, check=True)
    group = Fleet(sim, runner_image, tmp_path, sections={0: {"gpu": {"vendors": ["intel"]}}})
    gpu_host = group.hosts[0]
    try:
        # Only the GPU host's agent sees the testbed (its /sys and udev); the others see this machine.
        gpu_host.start(env={"UMOCKDEV_DIR": umockdev_testbed.get_root_dir(), "LD_PRELOAD": os.environ["LD_PRELOAD"]})
        for h in group.hosts[1:]:
            h.start()
        try:
            await all_see_each_other(group.hosts)
            view = await group.hosts[1].fleet()
            profiles = {x.hostname: x.profiles for x in view.hosts}
            assert any("intel" in p for p in profiles[gpu_host.hostname]), profiles
            assert not any("intel" in p for h in group.hosts[1:] for p in profiles[h.hostname]), profiles
            gpu_jobs = [sim.add_job(project_id=1, tags=["gpu", "intel"], script=["sleep 1", "echo gpu"]).id for _ in range(2)]
            plain_jobs = [sim.add_job(project_id=1, script=["echo plain"]).id for _ in range(4)]
            await until(lambda: (group.remember_tokens(), finished(sim, gpu_jobs + plain_jobs))[1], 120, "the jobs", group.hosts)
            assert all(sim.job(j).status == "success" for j in gpu_jobs + plain_jobs)
            assert {host_of_job(sim, j) for j in gpu_jobs} == {gpu_host.hostname}
            # No other host even registered a runner with the GPU's tags (one GPU per runner:
            # its two jobs ran one after the other on the one GPU runner, or on two in turn).
            others = {r.id for h in group.hosts[1:] for r in sim.registered() if r.id in job_runners(sim, h.hostname)}
            assert not [r for r in sim.registered() if r.id in others and "intel" in r.tag_list]
            gpu_runners = [r for r in sim.registered() if r.id in job_runners(sim, gpu_host.hostname) and "intel" in r.tag_list]
            assert 1 <= len(gpu_runners) <= 2
        finally:
            await group.close()
    finally:
        subprocess.run(["rm", "-f", str(node)], env=plain)
        if made_dir:
            subprocess.run(["rmdir", str(node.parent)], env=plain)
