"""The one-call GPU session (bench/gpu_session.sh), rehearsed on the CPU at a tiny setting, so
the GPU minutes are never spent finding typos; its planning, its wheels, and the estimates."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from bench import gpu_estimates, gpu_session
from tests.conftest import REPO

EXPECTED_FILES = {"results.json", "session.log", "claims_grids.png", "claims_loss.png",
                  "resume_run_final.png"}
RUN_NAMES = [name for name, *_ in gpu_session.CLAIM_RUNS]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess,
                                                                dict, object, float]:
    """``TINY=1 bash bench/gpu_session.sh OUT`` once for the module's tests."""
    tmp = tmp_path_factory.mktemp("gpu_session")
    out = tmp / "out"
    # W&B disabled here only for speed (each run would start a W&B service); the GPU session
    # checks an offline W&B run first and uses offline logging when it works.
    env = dict(os.environ, TINY="1", PYTHON=sys.executable, BUDGET_S="240",
               WORK_DIR=str(tmp / "work"), WANDB_SESSION_MODE="disabled")
    env.pop("PYTHONPATH", None)
    start = time.monotonic()
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_session.sh"), str(out)],
                          capture_output=True, text=True, timeout=400, env=env)
    seconds = time.monotonic() - start
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() \
        else {}
    return proc, results, out, seconds


def test_session_exits_zero_within_its_budget(session):
    proc, results, _, seconds = session
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert results["within_budget"] and results["elapsed_s"] <= 240
    assert "error" not in results, results.get("error")
    print(f"tiny GPU session rehearsal: {seconds:.0f} s")


def test_every_phase_ran_and_succeeded(session):
    _, results, _, _ = session
    phases = results["phases"]
    expected = {"0_data", "1a_bench", "1b_train", "1b_resume", "1c_eval", "2f_compare",
                "2f_curves", *(f"2_{n}" for n in RUN_NAMES), *(f"2e_{n}" for n in RUN_NAMES)}
    assert expected <= set(phases), expected - set(phases)
    for name, info in phases.items():
        want = "stopped by SIGINT, as planned" if name == "1b_train" else "ok"
        assert info["status"] == want, (name, info)


def test_out_dir_holds_what_comes_back_from_the_gpu_machine(session):
    _, results, out, _ = session
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} == EXPECTED_FILES
    assert len(files) <= gpu_session.MAX_OUT_FILES
    for p in files:
        assert p.stat().st_size < 16 * 2**20
        assert len(p.relative_to(out).parts) <= 3  # $OUT/a/b/file at most
        assert re.fullmatch(r"[A-Za-z0-9._-]+", p.name)
    for name in EXPECTED_FILES - {"results.json", "session.log"}:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(results["files"]) == EXPECTED_FILES - {"results.json", "session.log"}
    log = (out / "session.log").read_text()
    assert "===== 1b_resume" in log and "resumed from" in log


def test_part1_bench_and_the_peer_row(session):
    _, results, _, _ = session
    bench = results["part1"]["bench"]
    assert bench["flops_per_image"] > 0 and bench["batch"] == 4
    assert [r["mode"] for r in bench["train"] if r["model"] == "cartoondiff"] == ["bf16"]
    assert all(r["images_per_s"] > 0 and "peak_bytes" in r for r in bench["train"])
    try:
        import diffusers  # noqa: F401
    except ImportError:  # the peer is a bench-only dependency: skipped with a note
        assert "diffusers is not importable" in bench["peer_skipped"]
        assert bench["peer_flops_per_image"] is None
    else:
        assert bench["peer_skipped"] is None
        assert any(r["model"].startswith("diffusers") for r in bench["train"])


def test_part1_run_stops_on_sigint_and_resumes_to_the_end(session):
    _, results, _, _ = session
    resume = results["part1"]["resume"]
    assert resume["ok"] and resume["signal_sent"]
    first, second = resume["first"], resume["resumed"]
    assert first["rc"] == 130 and 0 < first["stopped_at_step"] < resume["max_steps"]
    assert second["at_step"] == first["stopped_at_step"]
    assert resume["summary"]["last_step"] == resume["max_steps"]
    assert resume["summary"]["model_ema"] and resume["summary"]["checkpoints"]
    assert results["part1"]["eval"]["faithfulness"]["hair_color"] is not None


def test_part2_four_runs_evaluated_and_compared(session):
    _, results, _, _ = session
    part2 = results["part2"]
    plan = part2["plan"]
    assert plan["epochs"] == 1 and plan["steps"] == plan["steps_per_epoch"]
    runs = part2["runs"]
    assert [r["name"] for r in runs] == RUN_NAMES
    assert {(r["attention"], r["tau"]) for r in runs} == {
        ("single", "1x"), ("single", "2x"), ("mha4", "1x"), ("mha4", "2x")}
    for r in runs:
        assert r["status"] == "ok" and r["summary"]["last_step"] == plan["steps"]
        ev = r["eval"]
        assert ev["sampler"] == "ddim eta=1.0 steps=3 w=2.0"
        assert set(ev["faithfulness"]) == set(ev["chance"]) and len(ev["faithfulness"]) == 18
        assert ev["faithfulness_mean"] is not None and ev["frechet_classifier"] >= 0
        assert ev["hair_color_se"] is not None
    claims = part2["claims"]
    assert set(claims["claim5_hair_color_mha4_minus_single"]) == {"tau1x", "tau2x"}
    assert claims["claim5_hair_color_mha4_minus_single"]["tau2x"]["se"] >= 0
    for key in ("claim6_rank_by_faithfulness_mean", "claim6_rank_by_hair_color",
                "claim6_rank_by_frechet"):
        assert sorted(claims[key]) == sorted(RUN_NAMES)


def _gpu_settings() -> gpu_session.Settings:
    """The GPU session's settings (no TINY, EPOCHS or BUDGET_S from the environment)."""
    saved = {k: os.environ.pop(k) for k in ("TINY", "EPOCHS", "BUDGET_S") if k in os.environ}
    try:
        return gpu_session.Settings.from_env()
    finally:
        os.environ.update(saved)


class _Plan:
    """What plan_part2 reads of a session: its settings."""

    def __init__(self, s: gpu_session.Settings) -> None:
        self.s = s


def test_part2_plan_takes_whole_epochs_from_the_measured_throughput():
    s = _gpu_settings()
    assert (s.image_size, s.batch, s.data_n, s.eval_n, s.eval_steps) == (64, 128, 10_000, 256, 25)
    bench = {"train": [{"model": "cartoondiff", "mode": "fp32", "images_per_s": 500.0},
                       {"model": "cartoondiff", "mode": "bf16", "images_per_s": 2000.0}]}
    plan = gpu_session.plan_part2(_Plan(s), bench, window_s=200)
    # 2000 x 0.8 x 200 s = 320k images, less 1b, 1c and its grid (36.3k), over 4 runs,
    # less each run's two grids: 66.7k images = 6 epochs of 78 x 128
    assert plan["images_per_s_measured"] == 2000.0 and plan["images_per_s_planned"] == 1600.0
    assert plan["images_per_run"] == 66_666
    assert plan["epochs"] == 6 and plan["steps"] == 6 * 78
    assert plan["overrides"] == ["trainer.max_epochs=6", "trainer.sample_every_epochs=6"]
    # Nothing measured: the fallback rate; under one epoch: whole steps, one grid at the end.
    slow = gpu_session.plan_part2(_Plan(s), None, window_s=100)
    assert slow["images_per_s_measured"] is None and slow["epochs"] < 1
    assert slow["overrides"] == [f"trainer.max_steps={slow['steps']}",
                                 "trainer.sample_every_epochs=0"]


def test_claims_compare_hair_colour_with_its_standard_error():
    def ev(hair: float, mean: float, fd: float) -> dict:
        return {"n": 100, "faithfulness": {"hair_color": hair}, "faithfulness_mean": mean,
                "frechet_classifier": fd}

    runs = [{"name": "single_tau1x", "eval": ev(0.5, 0.30, 10)},
            {"name": "single_tau2x", "eval": ev(0.4, 0.28, 12)},
            {"name": "mha4_tau1x", "eval": ev(0.7, 0.33, 9)},
            {"name": "mha4_tau2x", "eval": None}]
    c = gpu_session.compare_claims(runs)
    d = c["claim5_hair_color_mha4_minus_single"]
    assert d["tau1x"]["a_minus_b"] == pytest.approx(0.2)
    assert d["tau1x"]["se"] == pytest.approx((0.7 * 0.3 / 100 + 0.5 * 0.5 / 100) ** 0.5)
    assert d["tau2x"] is None  # a run without an evaluation is left out, not guessed
    assert c["claim6_rank_by_faithfulness_mean"] == ["mha4_tau1x", "single_tau1x",
                                                     "single_tau2x"]
    assert c["claim6_rank_by_frechet"][0] == "mha4_tau1x"


def test_wheel_pins_are_one_version_each_and_the_folder_is_ignored():
    pins = [ln.strip() for ln in (REPO / "bench" / "gpu_wheels.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]
    names = [p.split("==")[0].lower().replace("_", "-") for p in pins]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.]+", p) for p in pins), pins
    assert len(names) == len(set(names))
    for needed in ("hydra-core", "omegaconf", "antlr4-python3-runtime", "wandb", "diffusers"):
        assert needed in names
    for present in ("torch", "torchvision", "numpy", "pillow", "tqdm", "matplotlib"):
        assert present not in names  # already on the GPU machine: never shadow them
    ignored = subprocess.run(["git", "check-ignore", "-q", ".whl/x.whl"], cwd=REPO)
    assert ignored.returncode == 0, ".whl/ must be git-ignored"
    script = (REPO / "bench" / "fetch_gpu_wheels.sh").read_text()
    assert "--python-version 3.12" in script and "gpu_wheels.txt" in script


def test_estimates_count_flops_and_memory_per_technique():
    f = gpu_estimates.flops("tiny")
    assert f["params"] == 193_459
    assert 2.5 < f["train_gflop_per_image"] / f["forward_gflop_per_image"] < 3.5
    m = gpu_estimates.memory(8, preset="tiny")
    acts = {r["technique"]: r["activations_bytes"] for r in m["rows"]}
    assert m["state_bytes"] == 20 * 193_459
    assert acts["bf16 autocast"] < acts["fp32"]
    assert acts["bf16 + activation checkpointing"] < acts["bf16 autocast"]
    assert acts["bf16, unfused attention (math SDPA)"] >= acts["bf16 autocast"]
    assert acts["bf16, NCHW weights (vs channels_last)"] == acts["bf16 autocast"]
    rate = gpu_estimates.implied(150.0, 790.0, [0.4])[0]["images_per_s"]
    assert rate == pytest.approx(0.4 * 790e12 / 150e9)
