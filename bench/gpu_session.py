"""One call on a GPU machine, inside a fixed budget: the blog preset measured, a real run that
is stopped and resumed on CUDA, and the blog's claims 5 and 6 (4 heads, Tau 2x) at its scale.

    bash bench/gpu_session.sh OUT_DIR          # on the GPU machine (installs .whl/ first)
    TINY=1 bash bench/gpu_session.sh OUT_DIR   # the same phases on the CPU, tiny (the test)

Every phase is a subprocess under its own timeout (``python run.py``, ``python -m
cartoondiff.evaluate``, ``python -m cartoondiff.figures``, ``bench/gpu.py``), cut so that the
whole script ends by ``BUDGET_S`` (default 450 s); a phase that no longer fits is skipped and
recorded. A timed-out training run gets SIGTERM first, so it writes a checkpoint and the
evaluation uses that.

    0   render the synthetic avatars (background, one CPU core) while 1a measures
    1a  bench/gpu.py: blog preset 64x64 batch 128 in fp32, bf16, bf16 + channels_last input,
        bf16 + NCHW weights, bf16 + torch.compile; the diffusers peer at matched parameters
    1b  run.py experiment=fig15_16_final data=synthetic precision=auto: SIGINT after its first
        checkpoint, then resume=auto to the end (logs, checkpoints, resume on CUDA)
    1c  evaluate 1b's model (its classifier is cached and shared by the part-2 evaluations)
    2   single head / 4 heads x Tau 1x / 2x (the blog's optimizer, one-hot, 64x64), all four
        at once on the GPU beside 1b and 1c, one seed, the same number of whole epochs, as many
        as the throughput measured in 1a allows
    2e  evaluate each final EMA model: n=256, DDIM eta=1, 25 steps, w=2
    2f  figures: the four runs' last grids side by side, and their loss curves

What it relies on beyond those commands (to adjust if they change): run.py prints "stopped by
signal N at step M" on SIGINT and "resumed from PATH at step N" on resume, writes
``checkpoints/ckpt-step*.pt``, ``model_ema.pt``, ``samples/final.png``, ``metrics.jsonl``; the
experiment configs named in CLAIM_RUNS; ``python -m cartoondiff.evaluate``'s JSON (``runs``,
``chance``, ``classifier.accuracy``); the data config group's ``_target_`` with ``setup()``.

OUT_DIR receives at most 8 files: results.json (everything measured, with each phase's status),
session.log (every phase's output), and PNGs. Settings come from the environment: TINY=1,
BUDGET_S, PYTHON, WORK_DIR (default: a new temporary folder), WANDB_SESSION_MODE
(offline | disabled; default offline when ``wandb`` imports and an offline run works),
EPOCHS (force part 2's epochs), SKIP_PART2=1 (1a and 1b only: a short retry, e.g. with
BUDGET_S=200 when a first call failed and the lease has little time left).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gpu_results import (  # noqa: E402
    compare_claims,
    eval_summary,
    latest_model,
    run_summary,
)
from bench.gpu_runner import REPO, Runner  # noqa: E402

MAX_OUT_FILES = 8  # what comes back from the GPU machine
# The four runs of part 2: (name, experiment config, attention, Tau projections).
CLAIM_RUNS = (
    ("single_tau1x", "fig10_11_onehot", "single", "1x"),
    ("single_tau2x", "fig12_tau2x", "single", "2x"),
    ("mha4_tau1x", "fig13_14_mha4", "mha4", "1x"),
    ("mha4_tau2x", "fig15_16_final", "mha4", "2x"),
)


@dataclass
class Settings:
    """What differs between the GPU session and its tiny CPU rehearsal."""

    tiny: bool
    budget_s: float
    image_size: int
    batch: int
    data_n: int
    bench: list[str]          # bench/gpu.py arguments
    bench_timeout_s: float
    resume_steps: int
    resume_every: int
    eval_n: int
    eval_steps: int
    eval_extra: list[str]     # more `python -m cartoondiff.evaluate` options
    run_extra: list[str]      # more run.py overrides (the tiny model, the CPU, ...)
    threads: int              # OMP threads per process of phases 1b-2f
    eval_reserve_s: float     # kept free for 2e
    figure_reserve_s: float   # kept free for 2f and writing the results
    grace_s: float            # SIGTERM -> SIGKILL
    fallback_images_per_s: float  # if 1a measured nothing
    safety: float             # fraction of the measured throughput part 2 plans with
    part2_min_window_s: float  # less left after 1a: part 1's run alone (a short retry)
    epochs: int | None = None  # force part 2's epochs (None: from the throughput)

    @staticmethod
    def from_env() -> Settings:
        tiny = os.environ.get("TINY", "0") not in ("", "0", "false")
        budget = float(os.environ.get("BUDGET_S", 120 if tiny else 450))
        if tiny:
            return Settings(
                tiny=True, budget_s=budget, image_size=16, batch=8, data_n=96,
                bench=["--device", "cpu", "--preset", "tiny", "--image-size", "16", "--batch",
                       "4", "--warmup", "1", "--steps", "1", "--modes", "bf16",
                       "--peer", "diffusers", "--peer-modes", "fp32", "--no-sampling"],
                bench_timeout_s=60, resume_steps=48, resume_every=4, eval_n=8, eval_steps=3,
                eval_extra=["classifier_epochs=1", "diversity_groups=2",
                            "diversity_per_group=2", "device=cpu"],
                run_extra=["model=tiny", "noise_schedule.T=40", "sampler.steps=4",
                           "trainer.sample_rows=3", "trainer.sample_cols=3",
                           "trainer.device=cpu", "trainer.log_every=4"],
                threads=1, eval_reserve_s=25, figure_reserve_s=10, grace_s=10,
                fallback_images_per_s=50, safety=1.0, part2_min_window_s=10,
                epochs=int(os.environ.get("EPOCHS", 1)))
        epochs = os.environ.get("EPOCHS")
        return Settings(
            tiny=False, budget_s=budget, image_size=64, batch=128, data_n=10_000,
            bench=["--modes", "fp32", "bf16", "bf16+channels_last", "bf16+nchw", "bf16+compile",
                   "--peer", "diffusers", "--peer-modes", "fp32", "bf16", "--budget-s", "140"],
            bench_timeout_s=190, resume_steps=200, resume_every=50, eval_n=256, eval_steps=25,
            eval_extra=["device=auto"], run_extra=["trainer.log_every=25"],
            threads=3, eval_reserve_s=90, figure_reserve_s=25, grace_s=25,
            fallback_images_per_s=800, safety=0.8, part2_min_window_s=90,
            epochs=int(epochs) if epochs else None)


class Session(Runner):
    """The GPU session's runner: its settings, its record's fields, its run and eval commands."""

    def __init__(self, out: Path, work: Path, s: Settings) -> None:
        self.s = s
        self.python = os.environ.get("PYTHON") or sys.executable
        results: dict = {
            "schema": 1, "tiny": s.tiny, "budget_s": s.budget_s, "settings": asdict(s),
            "work_dir": str(work), "python": sys.version.split()[0], "gpu": None,
            "wandb_mode": None, "wheels": os.environ.get("GPU_SESSION_WHEELS", "not installed"),
            "phases": {}, "part1": {}, "part2": {}, "files": [],
        }
        env = dict(os.environ, PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="1",
                   CARTOONDIFF_CACHE=str(work / "cache"), WANDB_SILENT="true",
                   TORCHINDUCTOR_CACHE_DIR=str(work / "inductor"))
        super().__init__(out, work, s.budget_s, s.grace_s, MAX_OUT_FILES, results, env)

    # ---- common command pieces -------------------------------------------------------------
    def run_cmd(self, experiment: str, run_dir: Path, *extra: str) -> list[str]:
        s = self.s
        return [self.python, "run.py", f"experiment={experiment}", "data=synthetic",
                f"data.image_size={s.image_size}", f"data.batch_size={s.batch}",
                f"data.n={s.data_n}", "seed=0", "trainer.precision=auto",
                "trainer.progress_bar=false", "evaluate.every_epochs=0",
                f"logger.mode={self.results['wandb_mode'] or 'disabled'}", *s.run_extra, *extra,
                f"hydra.run.dir={run_dir}"]

    def eval_cmd(self, checkpoint: Path, out: Path) -> list[str]:
        s = self.s
        return [self.python, "-m", "cartoondiff.evaluate", f"checkpoint={checkpoint}",
                f"n={s.eval_n}", "sampler=ddim", "eta=1", f"steps={s.eval_steps}",
                "guidance=2", "seed=0", f"out={out}", *s.eval_extra]


# ---- phases ----------------------------------------------------------------------------------

def data_overrides(s: Settings) -> list[str]:
    tiny = ["model=tiny"] if s.tiny else []
    return ["data=synthetic", f"data.image_size={s.image_size}", f"data.n={s.data_n}",
            f"data.batch_size={s.batch}", *tiny]


def prepare_data(overrides: list[str]) -> None:
    """Build (or find) the data cache a config's ``data`` group describes (phase 0)."""
    sys.path.insert(0, str(REPO))
    from bench.common import compose_config
    from cartoondiff.config import build

    data = build(compose_config(overrides), "data").setup()
    print(f"data ready: {len(data)} avatars")


def check_wandb(work: Path) -> None:
    """An offline W&B run, logged and finished: what run.py's tracker needs."""
    import wandb

    run = wandb.init(mode="offline", dir=str(work), project="gpu-session-check",
                     settings=wandb.Settings(silent=True, init_timeout=60))
    run.log({"check": 1.0})
    run.finish()
    print(f"wandb {wandb.__version__} offline: ok")


def gpu_name(session: Session) -> str | None:
    """nvidia-smi's name, compute mode (part 2 needs 'Default': several processes at once),
    memory and driver, or None without a GPU."""
    query = ["nvidia-smi", "--query-gpu=name,compute_mode,memory.total,driver_version",
             "--format=csv,noheader"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=20)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def phase_bench(session: Session) -> dict | None:
    out = session.work / "bench.json"
    timeout = min(session.s.bench_timeout_s, session.left() - 60)
    if timeout < 20:
        session.skip("1a_bench", "no time left")
        return None
    session.run("1a_bench", [session.python, "bench/gpu.py", *session.s.bench, "--json",
                             str(out)], timeout)
    if not out.exists():
        return None
    bench = json.loads(out.read_text())
    session.results["part1"]["bench"] = bench
    session.results["gpu"] = session.results["gpu"] or bench.get("device")
    return bench


def phase_resume(session: Session, run_dir: Path, timeout: float) -> dict:
    """1b: train, SIGINT after the first checkpoint, resume=auto to the end."""
    s = session.s
    # No epoch grids (the final grid is drawn): 1b shares the GPU with part 2.
    extra = [f"trainer.max_steps={s.resume_steps}", f"trainer.checkpoint_every={s.resume_every}",
             "trainer.sample_every_epochs=0"]
    end = time.monotonic() + timeout
    job = session.start("1b_train", session.run_cmd("fig15_16_final", run_dir, *extra),
                        s.threads)
    info: dict = {"run_dir": str(run_dir), "max_steps": s.resume_steps,
                  "checkpoint_every": s.resume_every, "signal_sent": False}
    ckpt_dir = run_dir / "checkpoints"
    while job.proc.poll() is None and time.monotonic() < end - 2 * s.grace_s:
        if ckpt_dir.is_dir() and any(ckpt_dir.glob("ckpt-step*.pt")):
            os.kill(job.proc.pid, signal.SIGINT)  # as Ctrl-C or a preemption would
            info["signal_sent"] = True
            session.say("1b: first checkpoint written; SIGINT sent")
            break
        time.sleep(0.1)
    first = session.finish(job, end - time.monotonic() - s.grace_s)
    text = job.log.read_text(encoding="utf-8", errors="replace")
    stopped = re.search(r"stopped by signal (\d+) at step (\d+)", text)
    if stopped and first["rc"] == 128 + signal.SIGINT:  # what run.py does on Ctrl-C
        first["status"] = "stopped by SIGINT, as planned"
        session.phase(job.name, status=first["status"])
    info["first"] = {**first, "stopped_at_step": int(stopped.group(2)) if stopped else None,
                     "summary": run_summary(run_dir)}
    if first["status"] == "timeout" or not list(ckpt_dir.glob("ckpt-step*.pt")):
        info["resumed"] = None
        return info
    job = session.start("1b_resume", session.run_cmd("fig15_16_final", run_dir, *extra,
                                                       "resume=auto"), s.threads)
    second = session.finish(job, end - time.monotonic())
    text = job.log.read_text(encoding="utf-8", errors="replace")
    resumed = re.search(r"resumed from (\S+) at step (\d+)", text)
    info["resumed"] = {**second, "from": resumed.group(1) if resumed else None,
                       "at_step": int(resumed.group(2)) if resumed else None}
    info["summary"] = run_summary(run_dir)
    info["ok"] = bool(first["rc"] == 128 + signal.SIGINT and stopped and resumed
                      and second["status"] == "ok"
                      and info["summary"]["last_step"] == s.resume_steps
                      and info["summary"]["model_ema"])
    return info


def plan_part2(session: Session, bench: dict | None, window_s: float) -> dict:
    """Whole epochs per run that fit ``window_s`` at the measured throughput.

    Throughput: the bf16 eager row of 1a (what run.py's precision=auto trains with), times a
    safety factor for the loop's own costs (data, logging, grids); the four runs, 1b and 1c
    share the GPU, so their work adds up.
    """
    s = session.s
    rows = (bench or {}).get("train", [])
    bf16 = [r for r in rows if r.get("model") == "cartoondiff" and r.get("mode") == "bf16"]
    measured = bf16[0]["images_per_s"] if bf16 else None
    rate = (measured or s.fallback_images_per_s) * s.safety
    per_epoch = (s.data_n // s.batch) * s.batch
    # 1b trains resume_steps batches and draws its final grid; 1c samples ~2 x 2 x n x steps
    # images (x 1/3: a forward is a third of a training step); each run draws 2 final grids
    # (64 avatars, 50 steps, guidance doubling the batch).
    grid = 64 * 50 * 2 / 3
    side = s.resume_steps * s.batch + grid + 4 * s.eval_n * s.eval_steps / 3
    per_run = (rate * window_s - side) / len(CLAIM_RUNS) - 2 * grid
    epochs = s.epochs if s.epochs is not None else max(0, int(per_run // per_epoch))
    plan = {"images_per_s_measured": measured, "images_per_s_planned": rate,
            "window_s": round(window_s, 1), "images_per_run": max(0, int(per_run)),
            "steps_per_epoch": s.data_n // s.batch}
    if epochs >= 1:
        plan.update(epochs=epochs, steps=epochs * (s.data_n // s.batch),
                    overrides=[f"trainer.max_epochs={epochs}",
                               f"trainer.sample_every_epochs={epochs}"])
    else:  # not one epoch: a fixed number of steps, the grid at the end only
        steps = max(10, int(per_run // s.batch))
        plan.update(epochs=steps / (s.data_n // s.batch), steps=steps,
                    overrides=[f"trainer.max_steps={steps}", "trainer.sample_every_epochs=0"])
    return plan


def main(argv: list[str]) -> int:
    if argv[:1] == ["--prepare-data"]:
        prepare_data(argv[1:])
        return 0
    if argv[:1] == ["--check-wandb"]:
        check_wandb(Path(argv[1]))
        return 0
    if len(argv) != 1:
        print(__doc__)
        return 2
    s = Settings.from_env()
    work = Path(os.environ.get("WORK_DIR") or tempfile.mkdtemp(prefix="gpu_session-"))
    session = Session(Path(argv[0]).resolve(), work.resolve(), s)
    try:
        body(session)
    except Exception as err:  # noqa: BLE001 -- always leave results.json behind
        session.say(f"session error: {type(err).__name__}: {err}")
        session.results["error"] = f"{type(err).__name__}: {err}"
    finally:
        session.say(f"done in {session.elapsed():.0f} s (budget {s.budget_s:.0f} s)")
        session.write()
        session.log_file.close()
    return 0


def body(session: Session) -> None:
    s, py, work = session.s, session.python, session.work
    session.results["gpu"] = gpu_name(session)
    session.say(f"gpu: {session.results['gpu'] or 'none found (nvidia-smi)'}; tiny={s.tiny}; "
                f"budget {s.budget_s:.0f} s; wheels: {session.results['wheels']}")

    # 0: the data (CPU) and the W&B check, in the background while 1a measures the GPU.
    data_job = session.start("0_data", [py, "bench/gpu_session.py", "--prepare-data",
                                        *data_overrides(s)], threads=2)
    mode = os.environ.get("WANDB_SESSION_MODE")
    wandb_job = None if mode else session.start(
        "0_wandb", [py, "bench/gpu_session.py", "--check-wandb", str(work / "wandb_check")], 1)

    bench = phase_bench(session)  # 1a

    data = session.finish(data_job, min(240, session.left() - 60))
    if wandb_job is not None:
        mode = "offline" if session.finish(wandb_job, 30)["status"] == "ok" else "disabled"
    session.results["wandb_mode"] = mode
    session.say(f"W&B mode for the runs: {mode}")
    if data["status"] != "ok":
        session.say("no data: parts 1b and 2 cannot run")
        return

    # Part 2's window: from now to the deadline less the evaluation and figure reserves.
    window = session.left() - s.eval_reserve_s - s.figure_reserve_s
    resume_dir = work / "runs" / "resume_fig15_16_final"
    if window < s.part2_min_window_s or os.environ.get("SKIP_PART2", "0") != "0":
        # A short retry: part 1's run alone, then its grid; part 2 recorded as skipped.
        session.skip("2_claims", f"{window:.0f} s left for part 2 (needs "
                     f"{s.part2_min_window_s:.0f}) or SKIP_PART2 set")
        session.results["part1"]["resume"] = phase_resume(
            session, resume_dir, session.left() - s.figure_reserve_s)
        session.copy_out(resume_dir / "samples" / "final.png", "resume_run_final.png")
        return
    startup = 8 if s.tiny else 25  # processes start, import, build, map the data
    plan = plan_part2(session, bench, window - startup)
    session.results["part2"]["plan"] = plan
    session.say(f"part 2 plan: {plan}")

    # 1b + 1c beside the four runs of part 2 (they share the GPU).
    claim_jobs = []
    for name, experiment, attention, tau in CLAIM_RUNS:
        run_dir = work / "runs" / name
        job = session.start(f"2_{name}", session.run_cmd(experiment, run_dir, *plan["overrides"]),
                            s.threads)
        job.result = {"name": name, "experiment": experiment, "attention": attention,
                      "tau": tau, "run_dir": run_dir}
        claim_jobs.append(job)
    part2_end = time.monotonic() + window
    resume = phase_resume(session, resume_dir, window)
    session.results["part1"]["resume"] = resume
    clf_job = None
    model = latest_model(resume_dir)
    if model is not None and session.left() > s.eval_reserve_s + s.figure_reserve_s:
        clf_job = session.start("1c_eval", session.eval_cmd(model, work / "eval_1c.json"),
                                s.threads)

    runs = []
    for job in claim_jobs:
        meta = dict(job.result)
        status = session.finish(job, part2_end - time.monotonic())
        run_dir = meta["run_dir"]
        runs.append({**meta, "run_dir": str(run_dir), **status, "summary": run_summary(run_dir)})
    session.results["part2"]["runs"] = runs
    if clf_job is not None:
        session.finish(clf_job, session.left() - s.eval_reserve_s * 0.6 - s.figure_reserve_s)
        session.results["part1"]["eval"] = eval_summary(work / "eval_1c.json")

    # 2e: evaluate the four models at once.
    eval_jobs = []
    for r in runs:
        model = latest_model(Path(r["run_dir"]))
        r["evaluated"] = str(model) if model else None
        if model is None:
            continue
        eval_jobs.append((r, session.start(f"2e_{r['name']}", session.eval_cmd(
            model, work / f"eval_{r['name']}.json"), s.threads)))
    for r, job in eval_jobs:
        session.finish(job, session.left() - s.figure_reserve_s)
        r["eval"] = eval_summary(work / f"eval_{r['name']}.json")
    session.results["part2"]["claims"] = compare_claims(runs)

    # 2f: figures (each run's last epoch grid side by side; loss curves), and the PNGs out.
    dirs = [r["run_dir"] for r in runs if r["summary"]["grids"]]
    fig_timeout = max(5.0, session.left() - 5)
    if dirs:
        session.run("2f_compare", [py, "-m", "cartoondiff.figures", "compare", *dirs,
                                   f"out={work / 'claims_grids.png'}"], fig_timeout / 2)
        session.run("2f_curves", [py, "-m", "cartoondiff.figures", "curves", *dirs,
                                  f"out={work / 'claims_loss.png'}"], max(5.0, session.left() - 5))
    else:
        session.skip("2f_compare", "no run wrote a grid")
    session.copy_out(work / "claims_grids.png", "claims_grids.png")
    session.copy_out(work / "claims_loss.png", "claims_loss.png")
    session.copy_out(resume_dir / "samples" / "final.png", "resume_run_final.png")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
