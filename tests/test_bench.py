"""The benchmarks and the memory anatomy, run on the CPU with the tiny preset."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from bench import gpu, judge_throughput, sample_sharpness, train_throughput
from bench.common import project_config
from cartoondiff.config import build_diffusion, build_model
from cartoondiff.runs.errors import UserError
from cartoondiff.train import memory
from tests.conftest import REPO

TINY = ["model=tiny", "data.image_size=16", "recipe=blog"]


def test_memory_rows_come_from_the_model_and_the_estimate_is_linear_in_batch(capsys):
    # fp32 named: auto is bf16 on CPUs with bf16 in hardware, and the rows below are fp32's
    anatomy, measured = memory.main([*TINY, "data.batch_size=3", "trainer.device=cpu",
                                     "trainer.precision=fp32"])
    n = anatomy.parameters
    assert n == 193_459  # the tiny preset with its defaults (mha4, Tau 1x)
    assert (anatomy.weights, anatomy.gradients, anatomy.adam, anatomy.ema) == (
        4 * n, 4 * n, 8 * n, 4 * n)
    # Extrapolated from batch 1 and 2, the estimate at batch 3 is what autograd really saves.
    cfg = project_config(TINY, 16)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    diffusion = build_diffusion(cfg)
    saved3 = memory.saved_tensor_bytes(model, diffusion, 3, 16, None)
    assert anatomy.activations == saved3 > 0
    assert anatomy.total == sum((4 * n, 4 * n, 8 * n, 4 * n, saved3))
    peak, how = measured
    assert "cpu" in how
    # The rows are an upper bound of a steady step; weights + EMA + Adam state are a floor.
    assert 16 * n < peak <= 1.5 * anatomy.total
    out = capsys.readouterr().out
    for row in ("model weights", "Adam state", "gradients", "activations (batch 3)", "total",
                "measured peak"):
        assert row in out
    assert "193,459" in out


def test_memory_rejects_a_bad_measure_flag():
    with pytest.raises(UserError, match="measure='maybe'"):
        memory.main([*TINY, "measure=maybe"])


def test_gpu_benchmark_runs_on_cpu_with_a_tiny_setting(capsys):
    result = gpu.main(["--device", "cpu", "--preset", "tiny", "--image-size", "16",
                       "--batch", "4", "--warmup", "1", "--steps", "1", "--samples", "2",
                       "--sample-steps", "2", "--modes", "fp32", "bf16"])
    modes = [r["mode"] for r in result["train"]]
    assert modes == ["fp32", "bf16"]
    assert all(r["images_per_s"] > 0 and r["params"] == 193_459 for r in result["train"])
    # Forward + backward of a conv net is about 3x its forward: check against a forward count.
    cfg = project_config(["model=tiny"], 16)
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(cfg)
    with FlopCounterMode(display=False) as fwd:
        model(torch.randn(2, 3, 16, 16), torch.tensor([1, 2]), torch.zeros(2, 18).long())
    ratio = result["flops_per_image"] / (fwd.get_total_flops() / 2)
    assert 2.5 < ratio < 3.5, ratio
    assert [s["precision"] for s in result["sampling"]] == ["fp32", "bf16"]
    assert all(s["seconds"] > 0 for s in result["sampling"])
    out = capsys.readouterr().out
    assert "GFLOP" in out and "sampling 2 avatars" in out


def test_gpu_benchmark_writes_json_and_skips_a_missing_peer(tmp_path):
    out = tmp_path / "bench.json"
    result = gpu.main(["--device", "cpu", "--preset", "tiny", "--image-size", "16",
                       "--batch", "2", "--warmup", "0", "--steps", "1", "--modes", "bf16",
                       "--peer", "diffusers", "--peer-modes", "fp32", "--no-sampling",
                       "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["errors"] == [] and saved["sampling"] == []
    ours = [r for r in saved["train"] if r["model"] == "cartoondiff"]
    assert [r["mode"] for r in ours] == ["bf16"] and ours[0]["peak_bytes"] is None  # CPU
    if importlib.util.find_spec("diffusers") is None:
        assert "diffusers is not importable" in saved["peer_skipped"]
        assert len(saved["train"]) == 1
    else:  # the peer: Tau + diffusers UNet, the same training step
        peer = saved["train"][1]
        assert peer["model"].startswith("diffusers") and saved["peer_flops_per_image"] > 0


def test_gpu_card_peaks_pick_the_specific_name_first():
    """A name that contains another card's name ("H100 PCIe" contains "H100") gets its own
    peak, whatever the table's values are."""
    peaks = dict(gpu.PEAK_BF16_TFLOPS)
    for name in peaks:
        assert gpu.card_peak(f"NVIDIA {name} 80GB") == peaks[name], name
    assert gpu.card_peak("Some Future Card") is None


def test_gpu_sh_is_one_call_that_reaches_the_script():
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu.sh"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--modes" in proc.stdout and "--batch" in proc.stdout


def test_train_throughput_times_the_project_model(capsys):
    results = train_throughput.main(["--sizes", "16", "--batch", "2", "--rounds", "1",
                                     "--steps", "1", "--warmup", "0", "--device", "cpu",
                                     "--peers", "--variants", "fp32", "channels_last",
                                     "--", *TINY[:1]])
    assert [r["model"] for r in results] == ["cartoondiff fp32", "cartoondiff channels_last"]
    assert results[0]["ratio"] == 1.0 and results[0]["params"] == 193_459
    assert "16x16, batch 2" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        train_throughput.parse(["--variants", "fp64"])


def test_judge_throughput_times_each_layout(capsys):
    rates = judge_throughput.main(["--size", "16", "--batch", "4", "--rounds", "1",
                                   "--per-round", "1", "--variants", "nchw", "channels_last+bf16"])
    assert list(rates) == ["nchw", "channels_last+bf16"] and all(r > 0 for r in rates.values())
    assert "16 px, batch 4" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        judge_throughput.main(["--variants", "nhwc"])


def test_sample_sharpness_tells_a_blurred_avatar_from_a_sharp_one(tiny_checkpoint, capsys):
    flat = torch.full((2, 3, 8, 8), 200, dtype=torch.uint8)
    assert sample_sharpness.fine_detail(flat) == 0.0
    rows = sample_sharpness.main([str(tiny_checkpoint), "--n", "3"])
    sharp, soft, samples = rows.values()
    assert sharp > 2 * soft > 0 and samples > 0  # a 3x3 box removes most of what it measures
    assert f"samples of {tiny_checkpoint}" in capsys.readouterr().out
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "sample_sharpness.py"),
                           str(tiny_checkpoint.parent / "missing.pt")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "missing.pt" in proc.stderr


def test_small_preset_at_64_keeps_its_network():
    with torch.device("meta"):
        at32, at64 = (build_model(project_config(["model=small"], s)) for s in (32, 64))
    assert [n for n, _ in at32.named_parameters()] == [n for n, _ in at64.named_parameters()]


def test_peers_are_matched_to_the_project_within_ten_percent():
    pytest.importorskip("diffusers", reason="bench-only: pip install -r bench/requirements.txt")
    pytest.importorskip("denoising_diffusion_pytorch",
                        reason="bench-only: pip install -r bench/requirements.txt")
    with torch.device("meta"):
        target = sum(p.numel() for p in instantiate_small().parameters())
    for peer in (train_throughput.ddpm_unet,
                 lambda w: train_throughput.diffusers_unet(w, 32, 64)):
        _, n = train_throughput.match_width(peer, target)
        assert abs(n / target - 1) <= 0.10


def test_the_package_never_imports_the_peers():
    for path in (REPO / "cartoondiff").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for peer in ("diffusers", "denoising_diffusion_pytorch"):
            assert f"import {peer}" not in text and f"from {peer}" not in text, path


def instantiate_small() -> torch.nn.Module:
    return build_model(project_config(["model=small"], 32))


def test_time_to_quality_compares_two_configs_at_tiny_scale(tmp_path, cache_dir):
    """Two smoke-scale configs, three epochs each: a curve per config (train seconds rise
    with the epochs), a minutes-to-target row each, and the runs can be read again."""
    from bench import time_to_quality as ttq

    shared = ["debug=smoke", "trainer.max_steps=18", "evaluate.classifier.epochs=1",
              f"data.cache_dir={cache_dir}"]
    text = ttq.main(["--configs", "", "optim.optimizer.lr=0.01", "--n", "4",
                     "--out", str(tmp_path), "--", *shared])
    curves = [ttq.curve(tmp_path / f"{i}-seed0") for i in range(2)]
    for points in curves:
        assert [p["epoch"] for p in points] == [1, 2, 3]
        seconds = [p["seconds"] for p in points]
        assert 0 < seconds[0] < seconds[1] < seconds[2]
        assert [p["images"] for p in points] == [48, 96, 144]  # 6 steps of 8 an epoch
    assert "(default)" in text and "optim.optimizer.lr=0.01" in text and "min to 0.80" in text
    assert ttq.main(["--configs", "", "optim.optimizer.lr=0.01", "--out", str(tmp_path),
                     "--read"]) == text
    points = [{"seconds": 60.0 * m, "relative": r} for m, r in ((1, 0.5), (2, 0.82), (3, 0.9))]
    assert ttq.minutes_to(points, 0.80) == 2 and ttq.minutes_to(points, 0.95) is None
