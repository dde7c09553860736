#!/usr/bin/python3
"""AutoGit's runner DOUBLE: the entry point of the test image ``autogit-test/runner:<hash>``.

This is not GitLab Runner. It holds the GitLab simulator (autogit.agent.sim) to the runner
protocol with a client nobody here wrote: PyPI's gitlab-python-runner. Its ``Runner`` class does
every protocol call (``POST /api/v4/jobs/request``, ``PATCH /api/v4/jobs/:id/trace``,
``PUT /api/v4/jobs/:id``) and its ``TraceProxy`` buffers and sends the job log.

This wrapper adds only what a runner *container* needs and that client lacks:
- reads ``/etc/gitlab-runner/config.toml`` (the first ``[[runners]]``: url, token, name;
  ``check_interval``), as gitlab-runner does;
- a poll loop every ``check_interval`` seconds (the client's own loop sleeps a fixed 40 s);
- signals as gitlab-runner documents them: SIGQUIT stops taking jobs and exits once the current
  one ends; SIGTERM/SIGINT abort the current job (reported failed) and exit;
- ``--max-builds N`` (or env ``AUTOGIT_RUNNER_MAX_BUILDS``): exit after N jobs;
- a tiny shell executor: the job's ``script`` lines run under ``/bin/sh -e``; if the job's image
  asks for platform linux/arm64 or linux/riscv64 (``image.executor_opts.docker.platform``), they
  run under a static busybox of that architecture (``/opt/foreign/<arch>/busybox sh``), which the
  host's binfmt_misc (F flag) runs through QEMU, so the job really executes foreign code
  (``uname -m`` prints aarch64 or riscv64).

gitlab-python-runner's own executor is not used: it git-clones the project and interprets
.gitlab-ci.yml through gitlab-emulator, which the simulator has no repository for.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from typing import Any

import requests
from GitlabPyRunner.consts import NAME, VERSION
from GitlabPyRunner.runner import Runner
from GitlabPyRunner.trace import TraceProxy

FOREIGN = {"arm64": "arm64", "aarch64": "arm64", "riscv64": "riscv64"}
NATIVE = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
BUILDS = "/builds"
EX_CONFIG = 78


def log(message: str) -> None:
    print(f"runner-double: {message}", file=sys.stderr, flush=True)


class TimeoutRunner(Runner):
    """gitlab-python-runner's client with a deadline on every request (it sets none)."""

    http_timeout_s = 30.0

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self.http_timeout_s)
        return super().request(method, url, *args, **kwargs)


class Double:
    def __init__(self, url: str, token: str, name: str, check_interval_s: float, max_builds: int) -> None:
        self.runner = TimeoutRunner(url.rstrip("/"), token)
        self.runner.shell = "sh"
        self.name = name
        self.check_interval_s = check_interval_s
        self.max_builds = max_builds
        self.draining = threading.Event()  # SIGQUIT: take no new job
        self.aborting = threading.Event()  # SIGTERM: stop now
        self.wake = threading.Event()

    # --- signals -------------------------------------------------------------------------------
    def on_quit(self, *_: object) -> None:
        log("SIGQUIT: finishing the current job, taking no new one")
        self.draining.set()
        self.wake.set()

    def on_term(self, *_: object) -> None:
        if self.aborting.is_set():
            os._exit(1)
        log("SIGTERM: aborting")
        self.aborting.set()
        self.draining.set()
        self.wake.set()

    # --- loop ----------------------------------------------------------------------------------
    def serve(self) -> int:
        done = 0
        failing = False
        while not self.draining.is_set():
            try:
                job = self.runner.poll()
                if failing:
                    log("GitLab reachable again")
                failing = False
            except requests.RequestException as exc:
                if not failing:
                    log(f"job request failed: {type(exc).__name__} {getattr(exc.response, 'status_code', '')}")
                failing = True
                job = None
            if job is None:
                self.wake.wait(self.check_interval_s)
                self.wake.clear()
                continue
            self.run_job(job)
            done += 1
            if self.max_builds and done >= self.max_builds:
                log(f"ran {done} job(s): --max-builds reached")
                break
        log("exiting")
        return 0

    def run_job(self, job: dict[str, Any]) -> None:
        job_id = job["id"]
        log(f"job {job_id} received")
        trace = TraceProxy(self.runner, job)
        ok = False
        try:
            ok = self.execute(job, trace)
        except Exception as exc:  # a broken job must not kill the runner
            self.write(trace, f"ERROR: runner double: {type(exc).__name__}: {exc}\n")
        self.write(trace, "Job succeeded\n" if ok else "ERROR: Job failed\n")
        self.flush(trace)
        self.report(job, ok)
        log(f"job {job_id} finished: {'success' if ok else 'failed'}")

    def execute(self, job: dict[str, Any], trace: TraceProxy) -> bool:
        image = job.get("image") or {}
        # the runner protocol carries `image: {docker: {platform}}` of .gitlab-ci.yml as
        # image.executor_opts.docker.platform (gitlab-runner common/network.go, ImageExecutorOptions)
        wanted = (((image.get("executor_opts") or {}).get("docker") or {}).get("platform") or "").strip()
        arch = wanted.split("/")[1] if wanted.count("/") >= 1 else (wanted or NATIVE)
        self.write(trace, f"Running with {NAME} {VERSION} (AutoGit runner double) on {self.name}\n")
        if arch == NATIVE:
            shell = ["/bin/sh", "-e", "-c"]
        elif arch in FOREIGN:
            busybox = f"/opt/foreign/{FOREIGN[arch]}/busybox"
            shell = [busybox, "sh", "-e", "-c"]
            self.write(trace, f"Executing on {wanted} with {busybox} (QEMU through binfmt_misc)\n")
        else:
            self.write(trace, f"ERROR: platform {wanted!r} is not supported by this runner double\n")
            return False
        build_dir = os.path.join(BUILDS, str(job["id"]))
        os.makedirs(build_dir, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/root", "CI_BUILDS_DIR": BUILDS,
               "CI_PROJECT_DIR": build_dir}
        env.update({v["key"]: str(v.get("value") or "") for v in job.get("variables") or []})
        timeout_s = float((job.get("runner_info") or {}).get("timeout") or 3600)
        deadline = time.monotonic() + timeout_s
        ok = True
        try:
            for step in job.get("steps") or []:
                when = step.get("when", "on_success")
                if (when == "on_success" and not ok) or (when == "on_failure" and ok):
                    continue
                lines = step.get("script") or []
                text = "".join(f"echo {shlex.quote('$ ' + line)}\n{line}\n" for line in lines)
                code = self.run_step(shell + [text], env, build_dir, deadline, trace)
                if code != 0:
                    self.write(trace, f"ERROR: step {step.get('name')!r} exited with code {code}\n")
                    # as in GitLab, a failing after_script does not fail the job
                    if step.get("name") != "after_script" and not step.get("allow_failure", False):
                        ok = False
        finally:
            shutil.rmtree(build_dir, ignore_errors=True)
        return ok and not self.aborting.is_set()

    def run_step(self, argv: list[str], env: dict[str, str], cwd: str, deadline: float, trace: TraceProxy) -> int:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        assert proc.stdout is not None
        reader = threading.Thread(target=self.pump, args=(proc.stdout, trace), daemon=True)
        reader.start()
        while proc.poll() is None:
            if self.aborting.is_set() or time.monotonic() > deadline:
                reason = "aborted (SIGTERM)" if self.aborting.is_set() else "timed out"
                self.write(trace, f"\nERROR: job {reason}\n")
                os.killpg(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
        reader.join(timeout=5)
        return proc.returncode

    def pump(self, stream: Any, trace: TraceProxy) -> None:
        for chunk in iter(lambda: stream.read1(4096), b""):
            self.write(trace, chunk)

    # --- protocol calls (each done by gitlab-python-runner), made robust to a failing GitLab -----
    def write(self, trace: TraceProxy, data: str | bytes) -> None:
        try:
            trace.write(data)  # sends when its buffer is over 1 KiB or 2 s old
        except requests.RequestException:
            pass  # TraceProxy keeps the buffer and its offset: the next flush resends it

    def flush(self, trace: TraceProxy) -> None:
        for _ in range(20):
            try:
                trace.flush()
                return
            except requests.RequestException as exc:
                if getattr(exc.response, "status_code", None) == 403:
                    return  # the job is no longer running (canceled): GitLab refuses its trace
                time.sleep(min(self.check_interval_s, 3))

    def report(self, job: dict[str, Any], ok: bool) -> None:
        for _ in range(60):
            try:
                (self.runner.success if ok else self.runner.failed)(job)
                return
            except requests.RequestException as exc:
                if getattr(exc.response, "status_code", None) == 403:
                    return
                time.sleep(min(self.check_interval_s, 3))
        log(f"job {job['id']}: could not report its state")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runner-double", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="run", choices=["run", "run-single"])
    parser.add_argument("-c", "--config", default="/etc/gitlab-runner/config.toml")
    parser.add_argument("--max-builds", type=int, default=int(os.environ.get("AUTOGIT_RUNNER_MAX_BUILDS", "0")))
    parser.add_argument("--check-interval", type=float, default=None, help="override config's check_interval")
    opts = parser.parse_args(argv)
    try:
        with open(opts.config, "rb") as fh:
            config = tomllib.load(fh)
        entry = config["runners"][0]
        url, token = entry["url"], os.path.expandvars(entry["token"])
    except (OSError, tomllib.TOMLDecodeError, KeyError, IndexError) as exc:
        log(f"bad config {opts.config}: {type(exc).__name__}: {exc}")
        return EX_CONFIG
    interval = opts.check_interval if opts.check_interval is not None else float(config.get("check_interval", 3))
    name = entry.get("name", "runner-double")
    double = Double(url, token, name, max(interval, 0.1), opts.max_builds)
    signal.signal(signal.SIGQUIT, double.on_quit)
    signal.signal(signal.SIGTERM, double.on_term)
    signal.signal(signal.SIGINT, double.on_term)
    log(f"{name}: polling {url} every {interval:g} s (executor: shell; native {NATIVE}; foreign "
        f"{', '.join(sorted(set(FOREIGN.values())))})")
    return double.serve()


if __name__ == "__main__":
    sys.exit(main())
