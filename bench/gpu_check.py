#!/usr/bin/env python3
"""Check the NVIDIA backend on a machine with a real GPU, in one go.

    python3 bench/gpu_check.py [--reads 50]

Prints: the snapshots as JSON, the runner tags each GPU yields, the memory ladder (reported
MiB, the size as sold, the exact class and every floor), compute capability and its floors,
MIG mode and instances (the inventory's view beside raw NVML), the config.toml line of the GPU
runner the planner would start for one `gpu` job (and one `mig` job where there are
instances), health (snapshot verdict and whether NVML health events can be registered), and
the time of one full inventory read per GPU (median and p95 over --reads reads) beside the
floor: the same NVML calls made raw in a loop. Goals: under 20 ms per GPU; the whole check
under 3 minutes. It only reads: MIG mode and layout are never changed.

Runs from a bare checkout: if `autogit.agent` is not importable it links this repo's agent/
into a temporary `autogit` package, and if pydantic is missing it unpacks the wheels in the
repo's .whl/ (see bench/README-gpu-check.md) into a temporary directory.

Exit status: 0 ran (with or without an NVIDIA GPU: a host without one prints
"RESULT: no NVIDIA GPU" and why), 1 the goal was missed, 2 the check itself failed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL_MS_PER_GPU = 20.0
GOAL_TOTAL_S = 180.0


def _bootstrap() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="autogit-gpu-check-"))
    try:
        import pydantic  # noqa: F401
    except ImportError:
        site = scratch / "site"
        wheel_dir = Path(os.environ.get("AUTOGIT_WHEELS", REPO / ".whl"))
        tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
        # Pure-Python wheels (py3-none-any) and the compiled ones built for this interpreter.
        wheels = [w for w in sorted(glob.glob(str(wheel_dir / "*.whl"))) if "-cp" not in w or f"-{tag}-" in w]
        if not any("pydantic_core" in w for w in wheels):
            print(f"RESULT: check failed: pydantic is missing and {wheel_dir} has no {tag} pydantic_core wheel")
            sys.exit(2)
        for wheel in wheels:  # a wheel is a zip of importable files: no pip needed
            zipfile.ZipFile(wheel).extractall(site)
        sys.path.insert(0, str(site))
    try:
        import autogit.agent  # noqa: F401
    except ImportError:
        (scratch / "pkg" / "autogit").mkdir(parents=True)
        (scratch / "pkg" / "autogit" / "agent").symlink_to(REPO / "agent")
        sys.path.insert(0, str(scratch / "pkg"))


def _ms(seconds: list[float]) -> tuple[float, float]:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return statistics.median(ordered) * 1000, p95 * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=50)
    args = parser.parse_args()
    check_started = time.monotonic()
    _bootstrap()

    from autogit.agent.inventory.gpu import GpuInventory, NvmlHealthThread
    from autogit.agent.inventory.gpu.nvidia import HEALTH_EVENTS
    from autogit.agent.model import GpuVendor
    from autogit.agent.tags import compute_capability_tags, gpu_tags, memory_gib, memory_tags

    print(f"python {sys.version.split()[0]} on {os.uname().nodename}")
    try:
        import pynvml
    except ImportError:
        print("RESULT: no NVIDIA GPU: nvidia-ml-py (pynvml) is not installed")
        return 0
    from importlib.metadata import PackageNotFoundError, version

    try:
        print(f"nvidia-ml-py {version('nvidia-ml-py')}")
    except PackageNotFoundError:
        print("nvidia-ml-py: version unknown (pynvml found outside a distribution)")

    inventory = GpuInventory(vendors={GpuVendor.NVIDIA}, nvml=pynvml)
    started = time.perf_counter()
    snaps = inventory.observe()
    first_ms = (time.perf_counter() - started) * 1000
    nvidia = inventory.nvidia
    assert nvidia is not None
    if not snaps:
        why = nvidia.problem or nvidia.absent or "NVML reports zero GPUs"
        print(f"RESULT: no NVIDIA GPU: {why}")
        print(f"other vendors on this host: {[s.gpu.id for s in GpuInventory(vendors={GpuVendor.AMD, GpuVendor.INTEL}).observe()]}")
        return 0

    print(f"\n== detection (first read, NVML init + enumeration: {first_ms:.1f} ms)")
    print(json.dumps([s.model_dump(mode="json") for s in snaps], indent=2))

    print("\n== tags")
    for s in snaps:
        print(f"{s.gpu.id}: {' '.join(sorted(gpu_tags(s.gpu)))}")

    print("\n== memory ladder (reported MiB → GiB as sold, rounded up → exact class and floors)")
    for s in snaps:
        ladder = sorted(memory_tags(s.gpu.memory_mb), key=lambda t: (t.startswith("vram-ge-"), int("".join(c for c in t if c.isdigit()))))
        print(f"{s.gpu.id}: {s.gpu.memory_mb} MiB → {memory_gib(s.gpu.memory_mb)} GiB: {' '.join(ladder) or '-'}")

    print("\n== compute capability")
    for s in snaps:
        cc = s.gpu.compute_capability
        print(f"{s.gpu.id}: {cc or 'unknown'}: {' '.join(sorted(compute_capability_tags(cc))) if cc else '-'}")

    print("\n== MIG (inventory view, then raw NVML)")
    for s in snaps:
        if s.gpu.mig_parent is not None:
            print(
                f"  instance {s.gpu.id} of {s.gpu.mig_parent}: profile {s.gpu.mig_profile}, {s.gpu.memory_mb} MiB, healthy={s.gpu.healthy}"
            )
        else:
            print(f"{s.gpu.id}: mig_mode={s.mig_mode} (schedulable whole: {not s.gpu.mig_mode})")
    _raw_mig(pynvml)

    print("\n== config.toml of one GPU runner (the planner's pick for one job, no other runners)")
    _runner_lines(snaps)

    print("\n== health")
    reports: list[tuple[str, str | None, str]] = []
    health = NvmlHealthThread(nvidia, lambda *r: reports.append(r), wait_ms=500)
    health.start()
    time.sleep(1.5)  # registers, then waits on the event set three times
    health.stop()
    for s in snaps:
        if s.gpu.mig_parent is not None:
            # NVML has no per-instance events ("does not currently support per-instance event
            # reporting using MIG device handles", nvml.h): the parent's verdict covers them.
            print(f"{s.gpu.id}: healthy={s.gpu.healthy} reason={s.health_reason} (MIG instance: events come through {s.gpu.mig_parent})")
            continue
        supported = None
        try:
            handle = pynvml.nvmlDeviceGetHandleByUUID(s.gpu.id)
            supported = pynvml.nvmlDeviceGetSupportedEventTypes(handle)
        except pynvml.NVMLError as exc:
            supported = f"error: {exc}"
        mask = f"0x{supported:x} (watched 0x{supported & HEALTH_EVENTS:x})" if isinstance(supported, int) else supported
        print(f"{s.gpu.id}: healthy={s.gpu.healthy} reason={s.health_reason} supported_events={mask} "
              f"health_events_registered={s.gpu.id in health.registered}")  # fmt: skip
    print(f"health reports during the check: {reports or 'none'}")

    print(f"\n== timing ({args.reads} reads)")
    reads = []
    for _ in range(args.reads):
        t0 = time.perf_counter()
        inventory.observe()
        reads.append(time.perf_counter() - t0)
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]

    def raw(h):
        for call in (
            lambda: pynvml.nvmlDeviceGetMemoryInfo(h),
            lambda: pynvml.nvmlDeviceGetUtilizationRates(h),
            lambda: pynvml.nvmlDeviceGetTemperatureV(h, pynvml.NVML_TEMPERATURE_GPU),
            lambda: pynvml.nvmlDeviceGetPowerUsage(h),
            lambda: pynvml.nvmlDeviceGetMigMode(h),
        ):
            try:
                call()
            except pynvml.NVMLError:
                pass
        # The MIG layout the inventory reads on every observe of a GPU in MIG mode.
        try:
            slots = pynvml.nvmlDeviceGetMaxMigDeviceCount(h)
        except pynvml.NVMLError:
            slots = 0
        for index in range(slots):
            try:
                mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(h, index)
                pynvml.nvmlDeviceGetUUID(mig)
                pynvml.nvmlDeviceGetMemoryInfo(mig)
            except pynvml.NVMLError:
                pass

    floor = []
    for _ in range(args.reads):
        t0 = time.perf_counter()
        for h in handles:
            raw(h)
        floor.append(time.perf_counter() - t0)
    n = sum(1 for s in snaps if s.gpu.mig_parent is None)  # per physical GPU, MIG layout included
    med, p95 = _ms(reads)
    fmed, fp95 = _ms(floor)
    print(f"inventory read : median {med / n:.3f} ms/GPU, p95 {p95 / n:.3f} ms/GPU ({n} GPU(s), {med:.3f} ms per read)")
    print(f"raw NVML floor : median {fmed / n:.3f} ms/GPU, p95 {fp95 / n:.3f} ms/GPU (same calls, MIG layout included, no models)")
    total_s = time.monotonic() - check_started
    ok = med / n < GOAL_MS_PER_GPU and total_s < GOAL_TOTAL_S
    print(
        f"RESULT: {'PASS' if ok else 'FAIL'}: goal < {GOAL_MS_PER_GPU:.0f} ms per GPU, measured {med / n:.3f} ms; "
        f"whole check {total_s:.1f} s (goal < {GOAL_TOTAL_S:.0f} s)"
    )
    inventory.close()
    return 0 if ok else 1


def _raw_mig(pynvml) -> None:
    """MIG straight from NVML, read only, to set beside the inventory's view."""
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        uuid = pynvml.nvmlDeviceGetUUID(handle)
        try:
            current, pending = pynvml.nvmlDeviceGetMigMode(handle)
        except pynvml.NVMLError as exc:
            print(f"raw {uuid}: MIG mode: {exc}")
            continue
        slots = pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)
        print(
            f"raw {uuid}: MIG mode current={current} pending={pending} (enabled={pynvml.NVML_DEVICE_MIG_ENABLE}), max MIG devices {slots}"
        )
        for slot in range(slots):
            try:
                mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except pynvml.NVMLError_NotFound:
                continue
            except pynvml.NVMLError as exc:
                print(f"  slot {slot}: {exc}")
                continue
            memory = pynvml.nvmlDeviceGetMemoryInfo(mig)
            gi = pynvml.nvmlDeviceGetGpuInstanceId(mig)
            print(
                f"  slot {slot}: {pynvml.nvmlDeviceGetUUID(mig)} {pynvml.nvmlDeviceGetName(mig)!r} {memory.total >> 20} MiB, GPU instance {gi}"
            )


def _runner_lines(snaps) -> None:
    from datetime import datetime, UTC

    from autogit.agent.model import Host, Job, Policy
    from autogit.agent.planner import plan

    host = Host(hostname=os.uname().nodename, arch="amd64", cpus=os.cpu_count() or 1, memory_mb=1 << 20, gpus=[s.gpu for s in snaps])
    now = datetime.now(UTC)
    asks = [["gpu"]] + ([["mig"]] if any(s.gpu.mig_parent for s in snaps) else [])
    for tags in asks:
        p = plan(host, [], [Job(id=1, project_id=1, tags=tags, created_at=now)], Policy(), now)
        if not p.start:
            print(f"job tags {tags}: waits: {p.waiting[0].reason.value}: {p.waiting[0].detail}")
            continue
        # What agent/runtime/docker.py (render_config) writes for an NVIDIA GPU: exactly that id.
        print(f"job tags {tags} → GPU {p.start[0].gpu}, runner tags {p.start[0].tags}:")
        print(f'  [runners.docker]\n  gpus = "device={p.start[0].gpu}"')


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except BaseException as exc:  # the lead reads one file: say what broke, with a code
        import traceback

        traceback.print_exc()
        print(f"RESULT: check failed: {exc!r}")
        sys.exit(2)
