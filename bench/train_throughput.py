"""Benchmark: training throughput of the project's UNet against what users would pick instead.

Times one full training step (forward, MSE, backward, AdamW) for

- the project's conditional model (Tau + UNet), built from conf/model/*.yaml;
- denoising-diffusion-pytorch's ``Unet`` (dim_mults 1, 2, 4);
- diffusers' ``UNet2DConditionModel`` (3 levels, cross-attention to 18 context tokens of the
  project's ``context_dim``, 4 heads, one res block per level like the project's presets),

each peer's width chosen so its parameter count is within 10% of the project model's (Tau
included), at the same resolution and batch. Models run interleaved, round by round, and the
median round is reported. The peers are bench-only dependencies (bench/requirements.txt).

    python bench/train_throughput.py                       # small preset, 32 and 64, 1 thread
    python bench/train_throughput.py --threads 1 2 --sizes 32 --rounds 7
    python bench/train_throughput.py --variants fp32 nchw bf16 compile --peers   # project only
    python bench/train_throughput.py --variants bf16 --peer-variant channels_last+bf16
    python bench/train_throughput.py --device cuda --batch 128 -- model=blog  # Hydra overrides

Goal on the 2-core CPU: the project's UNet >= 1.3x the faster peer's images/s at 32 and 64.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    build_project,
    count_params,
    make_step,
    option_combo,
    project_forward,
    time_rounds,
)
from cartoondiff.runs.devices import pick_device  # noqa: E402

PEERS = ("ddpm", "diffusers")


def ddpm_unet(width: int) -> torch.nn.Module:
    """denoising-diffusion-pytorch's Unet, its attention through SDPA (flash_attn=True)."""
    from denoising_diffusion_pytorch import Unet

    return Unet(dim=width, dim_mults=(1, 2, 4), flash_attn=True)


def diffusers_unet(width: int, image_size: int, context_dim: int) -> torch.nn.Module:
    """diffusers' UNet2DConditionModel with cross-attention at the two lower levels + middle."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=image_size, in_channels=3, out_channels=3,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(width, 2 * width, 4 * width), layers_per_block=1,
        norm_num_groups=8, cross_attention_dim=context_dim, attention_head_dim=4,
    )


def match_width(build: Callable[[int], torch.nn.Module], target: int, step: int = 8
                ) -> tuple[int, int]:
    """(width, params) of the multiple of ``step`` whose model's size is closest to ``target``.

    Built on the meta device: shapes only, no memory, milliseconds per try.
    """
    best: tuple[int, int] | None = None
    for width in range(step, 64 * step + 1, step):
        with torch.device("meta"):
            n = count_params(build(width))
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (width, n)
        if n > target:
            break
    assert best is not None
    return best


def build_rows(args: argparse.Namespace, size: int, device: torch.device
               ) -> list[tuple[str, int, Callable[[], object]]]:
    """(label, params, step function) for every model and variant at ``size``."""
    rows = []
    target = None
    context_dim = 64
    for variant in args.variants:
        parts = set(variant.split("+"))
        model, cfg = build_project(args.overrides, size, device)
        target = count_params(model)
        context_dim = int(cfg.model.unet.context_dim or 64)
        net = torch.compile(model) if "compile" in parts else model
        step = make_step(model, project_forward(net, args.batch, device), args.batch, size,
                         device, torch.bfloat16 if "bf16" in parts else None,
                         memory_format=memory_format(parts))
        rows.append((f"cartoondiff {variant}", target, step))
    for peer in args.peers:
        if peer == "ddpm":
            width, n = match_width(ddpm_unet, target)
            model = ddpm_unet(width).to(device).train()
            forward = model
            label = f"ddpm Unet dim={width}"
        else:
            width, n = match_width(lambda w: diffusers_unet(w, size, context_dim), target)
            model = diffusers_unet(width, size, context_dim).to(device).train()
            ctx = torch.randn(args.batch, 18, context_dim, generator=torch.Generator()
                              .manual_seed(2)).to(device)  # (B, 18, D), as Tau would give

            def forward(x: torch.Tensor, t: torch.Tensor, m=model, c=ctx) -> torch.Tensor:
                return m(x, t, encoder_hidden_states=c).sample

            label = f"diffusers UNet2DCond w={width}"
        if abs(n / target - 1) > 0.10:
            raise SystemExit(f"{label}: {n:,} params is not within 10% of {target:,}")
        parts = set(args.peer_variant.split("+"))
        rows.append((f"{label} {args.peer_variant}", n, make_step(
            model, forward, args.batch, size, device,
            torch.bfloat16 if "bf16" in parts else None, memory_format(parts))))
    return rows


def run(args: argparse.Namespace) -> list[dict]:
    """Time every row at every size and thread count; print one table each; return the rows.

    images/s and the ratio come from process CPU time with one CPU thread (steady on a shared
    machine) and from wall time otherwise (GPU, or several threads); both times are printed.
    """
    device = pick_device(args.device)
    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        use_cpu_clock = device.type == "cpu" and threads == 1
        for size in args.sizes:
            rows = build_rows(args, size, device)
            secs = time_rounds({label: fn for label, _, fn in rows}, args.rounds,
                               args.steps, device, warmup=args.warmup)
            first = rows[0][0]
            where = f"{device.type}, {threads} thread(s)" if device.type == "cpu" else device.type
            clock = "process CPU time" if use_cpu_clock else "wall time"
            print(f"\n{size}x{size}, batch {args.batch}, {where}, torch {torch.__version__}, "
                  f"median of {args.rounds} rounds x {args.steps} steps; img/s from {clock}")
            w = max(len(label) for label, _, _ in rows)
            print(f"{'model':<{w}} {'params':>11} {'wall ms':>8} {'cpu ms':>8} {'img/s':>7} "
                  f"{first.split()[0] + ' / this':>18}")
            for label, n, _ in rows:
                wall, cpu = secs[label]
                t = cpu if use_cpu_clock else wall
                t_ref = secs[first][1] if use_cpu_clock else secs[first][0]
                ratio = t / t_ref  # = project img/s / this img/s
                print(f"{label:<{w}} {n:>11,} {1000 * wall:>8.1f} {1000 * cpu:>8.1f} "
                      f"{args.batch / t:>7.1f} {ratio:>17.2f}x")
                results.append({"size": size, "threads": threads, "model": label, "params": n,
                                "wall_ms": 1000 * wall, "cpu_ms": 1000 * cpu,
                                "images_per_s": args.batch / t, "ratio": ratio})
    return results


def memory_format(parts: set[str]) -> torch.memory_format | None:
    """channels_last / nchw (the UNet's conv weights are channels_last by default)."""
    if "nchw" in parts:
        return torch.contiguous_format
    return torch.channels_last if "channels_last" in parts else None


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, nargs="+", default=[1])
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median reported)")
    p.add_argument("--steps", type=int, default=2, help="timed steps per model per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--variants", nargs="+", default=["fp32"], type=option_combo,
                   help="ways to run the project's model, the first one the reference: fp32, "
                        "or options joined by '+' from channels_last, nchw, bf16, compile")
    p.add_argument("--peer-variant", default="fp32", type=option_combo,
                   help="how the peers run (compile is not applied to them)")
    p.add_argument("--peers", nargs="*", default=list(PEERS), choices=PEERS,
                   help="peer models (none: --peers with no names)")
    p.add_argument("overrides", nargs="*", default=["model=small"],
                   help="Hydra overrides for the project's model (after --)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    return run(parse(argv))


if __name__ == "__main__":
    main()
