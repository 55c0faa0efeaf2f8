"""Budgeted subprocesses for a one-call machine: each phase a child process with a timeout
(SIGTERM, then SIGKILL after a grace period), its log appended to ``session.log``, and
``results.json`` rewritten after every phase, all in one output folder of a few files.

bench/gpu_session.py plans the phases; this module only runs them and keeps the record.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOG_TAIL = 200_000  # characters of each phase's log kept in session.log


@dataclass
class Job:
    name: str
    cmd: list[str]
    log: Path
    proc: subprocess.Popen
    start: float
    result: dict = field(default_factory=dict)



class Runner:
    """Runs phases in ``work`` and records them in ``out`` (results.json, session.log, at most
    ``max_files`` files), so that everything ends by ``budget_s`` after construction.

    ``results`` is the record's initial content (it must hold ``phases`` and ``files``);
    ``env`` the environment of every child process.
    """

    def __init__(self, out: Path, work: Path, budget_s: float, grace_s: float, max_files: int,
                 results: dict, env: dict[str, str]) -> None:
        self.out, self.work = out, work
        self.budget_s, self.grace_s, self.max_files = budget_s, grace_s, max_files
        self.results, self.env = results, env
        self.t0 = time.monotonic()
        self.deadline = self.t0 + budget_s
        out.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        self.log_path = out / "session.log"
        self.log_file = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115

    # ---- bookkeeping -------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def say(self, text: str) -> None:
        line = f"[{self.elapsed():6.1f} s] {text}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def phase(self, name: str, **info) -> None:
        self.results["phases"][name] = {**self.results["phases"].get(name, {}), **info}

    def skip(self, name: str, why: str) -> None:
        self.say(f"skip {name}: {why}")
        self.phase(name, status="skipped", why=why)

    # ---- subprocesses ------------------------------------------------------------------
    def start(self, name: str, cmd: list[str], threads: int | None = None) -> Job:
        log = self.work / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(self.env)
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        self.say(f"start {name}: {' '.join(cmd)}")
        handle = open(log, "w", encoding="utf-8")  # noqa: SIM115 -- closed by the child's exit
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        handle.close()
        return Job(name, cmd, log, proc, time.monotonic())

    def finish(self, job: Job, timeout: float, record: bool = True) -> dict:
        """Wait for ``job`` at most ``timeout`` s; then SIGTERM its process group (run.py
        checkpoints and exits), then SIGKILL after the grace period. Returns its status."""
        timed_out = False
        try:
            job.proc.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            timed_out = True
            self.say(f"{job.name}: timeout after {time.monotonic() - job.start:.0f} s, SIGTERM")
            self._signal_group(job, signal.SIGTERM)
            try:
                job.proc.wait(timeout=self.grace_s)
            except subprocess.TimeoutExpired:
                self._signal_group(job, signal.SIGKILL)
                job.proc.wait()
        rc = job.proc.returncode
        status = "timeout" if timed_out else ("ok" if rc == 0 else "failed")
        job.result = {"status": status, "rc": rc,
                      "seconds": round(time.monotonic() - job.start, 1),
                      "log": f"logs/{job.log.name}"}
        self.say(f"end {job.name}: {status} (rc {rc}, {job.result['seconds']} s)")
        self._append_log(job)
        if record:
            self.phase(job.name, **job.result)
        self.write()  # results.json is always there, even if a later phase hangs
        return job.result

    def run(self, name: str, cmd: list[str], timeout: float, threads: int | None = None) -> dict:
        return self.finish(self.start(name, cmd, threads), timeout)

    @staticmethod
    def _signal_group(job: Job, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.proc.pid, sig)  # the group start_new_session made for this child

    def _append_log(self, job: Job) -> None:
        text = job.log.read_text(encoding="utf-8", errors="replace")
        if len(text) > LOG_TAIL:
            text = f"[... {len(text) - LOG_TAIL} characters cut ...]\n" + text[-LOG_TAIL:]
        self.log_file.write(f"\n===== {job.name}: {' '.join(job.cmd)}\n{text}\n"
                            f"===== end {job.name}: {job.result}\n\n")
        self.log_file.flush()

    # ---- outputs -----------------------------------------------------------------------
    def copy_out(self, src: Path, name: str) -> None:
        """Copy a file into OUT_DIR if it exists and the file limit allows."""
        files = self.results["files"]
        if not src.is_file():
            self.say(f"not copied (missing): {src}")
            return
        if len(files) + 2 >= self.max_files:  # results.json and session.log are always there
            self.say(f"not copied ({self.max_files}-file limit): {src}")
            return
        shutil.copyfile(src, self.out / name)
        files.append(name)

    def write(self) -> None:
        self.results["elapsed_s"] = round(self.elapsed(), 1)
        self.results["within_budget"] = self.elapsed() <= self.budget_s
        tmp = self.out / "results.json.tmp"
        tmp.write_text(json.dumps(self.results, indent=1, default=str), encoding="utf-8")
        os.replace(tmp, self.out / "results.json")
