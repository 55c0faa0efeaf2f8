"""GPU benchmark of the blog preset: images/s, peak memory, FLOPs, fraction of peak, sampling.

One self-contained call on a CUDA machine (no network, nothing beyond the project's own
requirements), finishing in well under 5 minutes on an H100:

    bash bench/gpu.sh                       # blog preset, 64x64, batch 128
    python bench/gpu.py --modes fp32 bf16 bf16+nchw bf16+compile   # nchw: weights NCHW
    python bench/gpu.py --device cpu --preset tiny --image-size 16 --batch 4 --steps 2  # smoke
    python bench/gpu.py --peer diffusers --peer-modes bf16 --json out.json  # + a peer, as JSON

Each mode builds a fresh model from conf/model/PRESET.yaml and runs the training loop's step:
``Diffusion.loss`` (condition dropout included) under the mode's autocast, backward, gradient
clipping, the configured optimizer, the EMA update. Peak memory is
``torch.cuda.max_memory_allocated`` of the timed steps, reset between modes. Model FLOPs per
image are counted with ``torch.utils.flop_counter.FlopCounterMode`` over one forward + backward
(matmuls and convolutions; the optimizer and pointwise ops are not counted); the fraction of the
card's peak is achieved FLOP/s over its dense bf16 tensor peak. Sampling: 64 avatars, DDIM 50
steps with classifier-free guidance w=2 (each step one batch of 128).

``--peer diffusers`` adds rows for diffusers' ``UNet2DConditionModel`` laid out like the blog
preset (4 levels, 2 res blocks each, cross-attention at the three lower levels and the middle),
its width chosen to match the project model's parameters, fed by the project's own Tau and
trained by the same step (loss, clipping, optimizer, EMA). diffusers is a bench-only
dependency (bench/requirements.txt): without it the peer rows are skipped with a note.

Goal on an H100: >= 3,000 images/s for the blog preset in bf16 and <= 8 GB peak at batch 128.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from bench.common import count_params, option_combo, project_config, sync  # noqa: E402
from cartoondiff.config import build, build_diffusion, build_model  # noqa: E402
from cartoondiff.diffusion import Sampler  # noqa: E402
from cartoondiff.runs.devices import pick_device  # noqa: E402
from cartoondiff.train.ema import EMA  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from the vendor spec sheets; the
# first name that occurs in torch.cuda.get_device_name() wins, so specific names come first.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0),
    ("GH200", 989.0), ("B200", 2250.0), ("A100", 312.0), ("A10G", 70.0), ("A10", 125.0),
    ("L40S", 362.0), ("L4", 121.0), ("RTX 4090", 165.0), ("V100", 125.0),
)


def card_peak(name: str) -> float | None:
    """Dense bf16 peak TFLOP/s of a card named ``name``, or None if it is not in the table."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops
    return None


def diffusers_blog_unet(width: int, image_size: int, context_dim: int) -> torch.nn.Module:
    """diffusers' UNet2DConditionModel laid out like the blog preset: widths (w, 2w, 3w, 4w),
    2 res blocks per level, 4-head cross-attention to the context tokens at the three lower
    levels and in the middle. Its transformer blocks also hold self-attention and a GEGLU
    feed-forward (diffusers' layout), so at matched parameters it is narrower."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=image_size, in_channels=3, out_channels=3,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                          "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                        "UpBlock2D"),
        block_out_channels=(width, 2 * width, 3 * width, 4 * width), layers_per_block=2,
        norm_num_groups=32, cross_attention_dim=context_dim, attention_head_dim=4,
    )


class PeerDenoiser(torch.nn.Module):
    """The project's Tau feeding a diffusers UNet: called like ``Denoiser`` (x_t, t, ids, drop)."""

    def __init__(self, unet: torch.nn.Module, tau: torch.nn.Module) -> None:
        super().__init__()
        self.unet, self.tau = unet, tau
        self.conditional = True

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, ids: torch.Tensor,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        context = self.tau(ids, drop)  # (B, 18, D)
        return self.unet(x_t, t, encoder_hidden_states=context).sample  # (B, 3, H, W)


def peer_available(peer: str | None) -> str | None:
    """None when ``peer`` can be built here, else why not (e.g. diffusers is not installed)."""
    if peer is None:
        return "no peer asked for (--peer)"
    try:
        import diffusers  # noqa: F401
    except Exception as err:  # noqa: BLE001 -- a broken install is as missing as none
        return f"{peer} is not importable here ({type(err).__name__}: {err})"
    return None


def build_peer(cfg, image_size: int, target: int) -> tuple[torch.nn.Module, int]:  # noqa: ANN001
    """(PeerDenoiser, width) whose parameters (Tau included) come closest to ``target``."""
    from bench.train_throughput import match_width

    context_dim = int(cfg.model.unet.context_dim)
    tau = build(cfg, "tau")
    width, _ = match_width(lambda w: diffusers_blog_unet(w, image_size, context_dim),
                           target - count_params(tau), step=32)
    return PeerDenoiser(diffusers_blog_unet(width, image_size, context_dim), tau), width


class Trainer:
    """The training loop's step for one mode, on a fixed random batch.

    ``peer_target``: build the diffusers peer matched to that many parameters instead of the
    project's model.
    """

    def __init__(self, args: argparse.Namespace, mode: str, device: torch.device,
                 peer_target: int | None = None) -> None:
        opts = set(mode.split("+"))
        self.cfg = project_config(args.overrides, args.image_size)
        torch.manual_seed(0)
        if peer_target is None:
            self.model, self.name = build_model(self.cfg), "cartoondiff"
        else:
            self.model, width = build_peer(self.cfg, args.image_size, peer_target)
            self.name = f"diffusers UNet2DCondition w={width}"
        self.model = self.model.to(device).train()
        fmt = (torch.contiguous_format if "nchw" in opts
               else torch.channels_last if "channels_last" in opts else None)
        if fmt is not None:  # the UNet's conv weights are channels_last unless nchw
            self.model.to(memory_format=fmt)
        self.net = torch.compile(self.model) if "compile" in opts else self.model
        self.amp = torch.bfloat16 if "bf16" in opts else None
        self.diffusion = build_diffusion(self.cfg).to(device)
        self.optimizer = build(self.cfg, "optim.optimizer", params=self.model.parameters())
        self.ema = EMA(self.model, float(self.cfg.trainer.ema_decay))
        g = torch.Generator().manual_seed(0)
        s = args.image_size
        self.x0 = (torch.rand(args.batch, 3, s, s, generator=g) * 2 - 1).to(device)
        if fmt is not None:
            self.x0 = self.x0.contiguous(memory_format=fmt)
        self.ids = torch.randint(0, 3, (args.batch, 18), generator=g).to(device)
        self.device = device

    def loss(self) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32,
                            enabled=self.amp is not None):
            return self.diffusion.loss(self.net, self.x0, self.ids)

    def step(self) -> None:
        self.loss().backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(self.cfg.trainer.grad_clip))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model)

    def flops_per_image(self, batch: int) -> float:
        """FLOPs of one forward + backward per image, counted on ``batch`` images (linear)."""
        x0, ids = self.x0, self.ids
        self.x0, self.ids = x0[:batch], ids[:batch]
        net, self.net = self.net, self.model  # count the eager model: same math, no tracing
        with FlopCounterMode(display=False) as counter:
            self.loss().backward()
        self.optimizer.zero_grad(set_to_none=True)
        self.x0, self.ids, self.net = x0, ids, net
        return counter.get_total_flops() / batch


def train_row(args: argparse.Namespace, mode: str, device: torch.device, count_flops: bool,
              peer_target: int | None = None) -> dict:
    """images/s, ms/step and peak memory of ``mode``; FLOPs per image on the first mode."""
    t0 = time.perf_counter()
    trainer = Trainer(args, mode, device, peer_target)
    for _ in range(args.warmup):  # compiles here, when the mode compiles
        trainer.step()
    sync(device)
    warm_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        trainer.step()
    sync(device)
    secs = (time.perf_counter() - start) / args.steps
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    row = {"model": trainer.name, "mode": mode, "ms": 1000 * secs,
           "images_per_s": args.batch / secs,
           "peak_bytes": peak, "warmup_s": warm_s,
           "params": sum(p.numel() for p in trainer.model.parameters())}
    if count_flops:
        row["flops_per_image"] = trainer.flops_per_image(min(args.batch, 8))
    del trainer
    _free(device)
    return row


def sampling_row(args: argparse.Namespace, amp: torch.dtype | None, device: torch.device
                 ) -> dict:
    """Seconds to sample ``args.samples`` avatars with DDIM and guidance (fresh weights)."""
    cfg = project_config(args.overrides, args.image_size)
    torch.manual_seed(0)
    model = build_model(cfg).to(device).eval()
    diffusion = build_diffusion(cfg)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 3, (args.samples, 18), generator=g)
    shape = (args.samples, 3, args.image_size, args.image_size)

    def run() -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            return Sampler("ddim", args.sample_steps, guidance=2.0)(
                diffusion, model, shape, ids, generator=torch.Generator().manual_seed(1),
                device=device)

    run()  # warm-up: kernels, allocator
    sync(device)
    start = time.perf_counter()
    x = run()
    sync(device)
    secs = time.perf_counter() - start
    assert x.shape == shape and torch.isfinite(x).all()
    return {"precision": "fp32" if amp is None else "bf16", "seconds": secs}


def _free(device: torch.device) -> None:
    torch._dynamo.reset()  # compiled graphs keep the old model's tensors alive
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run(args: argparse.Namespace) -> dict:
    """Measure every mode and the sampling; print the tables; return the numbers."""
    device = pick_device(args.device)
    t0 = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or (card_peak(name) if device.type == "cuda" else None)
    if device.type == "cuda":  # fp32 mode: matmuls in fp32, convolutions TF32 (cuDNN default)
        torch.backends.cuda.matmul.allow_tf32 = False
    print(f"device: {name}; torch {torch.__version__}; preset overrides: "
          f"{' '.join(args.overrides)}; {args.image_size}x{args.image_size}, batch {args.batch}")
    print("card peak: " + (f"{peak:.0f} TFLOP/s dense bf16 (vendor spec sheets, dense)" if peak
                           else "unknown (pass --peak-tflops)"))
    peer_note = peer_available(args.peer)
    if args.peer and peer_note:
        print(f"skipping the peer rows: {peer_note}")
    # Compiled modes last: their warm-up (the compilation) is the longest, so when the budget
    # runs out it cuts them rather than the eager rows and the peer.
    eager = [m for m in args.modes if "compile" not in m]
    schedule = [(m, False) for m in eager]
    if args.peer and not peer_note:
        schedule += [(m, True) for m in args.peer_modes]
    schedule += [(m, False) for m in args.modes if "compile" in m]
    rows, flops, peer_flops, errors = [], None, None, []
    partial = {"device": name, "torch": torch.__version__, "peak_tflops": peak,
               "batch": args.batch, "image_size": args.image_size, "overrides": args.overrides,
               "peer_skipped": peer_note if args.peer else None, "errors": errors}

    def dump(**more: object) -> None:
        """Write what is measured so far (a killed run still leaves its rows)."""
        partial.update(more)
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(partial, indent=1))

    for mode, is_peer in schedule:
        label = f"peer {mode}" if is_peer else mode
        if time.perf_counter() - t0 > args.budget_s:
            print(f"skipping {label}: over the {args.budget_s:.0f} s budget")
            continue
        ours = [r for r in rows if r["model"] == "cartoondiff"]
        if is_peer and not ours:
            print(f"skipping {label}: the project's row (its parameter count) is missing")
            continue
        try:
            if is_peer:
                row = train_row(args, mode, device, peer_flops is None,
                                peer_target=ours[0]["params"])
                peer_flops = row.get("flops_per_image", peer_flops)
                row["tflops"] = peer_flops * row["images_per_s"] / 1e12
            else:
                row = train_row(args, mode, device, count_flops=flops is None)
                flops = row.get("flops_per_image", flops)
                row["tflops"] = flops * row["images_per_s"] / 1e12
        except Exception as err:  # noqa: BLE001 -- e.g. out of memory, a compiler error
            print(f"{label} failed: {type(err).__name__}: {str(err)[:500]}")
            errors.append({"mode": label, "error": f"{type(err).__name__}: {str(err)[:500]}"})
            _free(device)
            continue
        rows.append(row)
        dump(train=rows, flops_per_image=flops, peer_flops_per_image=peer_flops)
    if flops is not None:
        print(f"\nparams {rows[0]['params']:,}; model FLOPs per image, forward + backward: "
              f"{flops / 1e9:.2f} GFLOP (FlopCounterMode)")
    peers = [r for r in rows if r["model"] != "cartoondiff"]
    if peers:
        print(f"peer: {peers[0]['model']}, params {peers[0]['params']:,}; "
              f"{peer_flops / 1e9:.2f} GFLOP per image, forward + backward")
    print(f"{'model':<32} {'mode':<20} {'img/s':>9} {'ms/step':>9} {'peak GiB':>9} "
          f"{'TFLOP/s':>8} {'% peak':>7} {'warm-up s':>10}")
    for r in rows:
        mem = f"{r['peak_bytes'] / 2**30:.2f}" if r["peak_bytes"] is not None else "n/a"
        frac = f"{100 * r['tflops'] / peak:.1f}" if peak else "n/a"
        print(f"{r['model']:<32} {r['mode']:<20} {r['images_per_s']:>9.1f} {r['ms']:>9.1f} "
              f"{mem:>9} {r['tflops']:>8.2f} {frac:>7} {r['warmup_s']:>10.1f}")
    samples = []
    for amp in () if args.no_sampling else (None, torch.bfloat16):
        if time.perf_counter() - t0 > args.budget_s:
            print("skipping sampling: over budget")
            break
        samples.append(sampling_row(args, amp, device))
        _free(device)
        dump(sampling=samples)
    print(f"\nsampling {args.samples} avatars: DDIM {args.sample_steps} steps, guidance 2.0")
    for s in samples:
        print(f"{s['precision']:<8} {s['seconds']:8.2f} s")
    total = time.perf_counter() - t0
    print(f"\ntotal {total:.0f} s")
    dump(flops_per_image=flops, peer_flops_per_image=peer_flops, train=rows, sampling=samples,
         seconds=total)
    return dict(partial)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", help="auto | cuda | cpu")
    p.add_argument("--preset", default="blog", help="conf/model/PRESET.yaml")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--warmup", type=int, default=5, help="untimed steps (compilation included)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per mode")
    p.add_argument("--modes", nargs="+", type=option_combo,
                   default=["fp32", "bf16", "bf16+nchw", "bf16+compile"])
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--peak-tflops", type=float, default=None, help="the card's dense peak")
    p.add_argument("--budget-s", type=float, default=240.0,
                   help="skip what is left once this many seconds have passed")
    p.add_argument("--peer", choices=["diffusers"], default=None,
                   help="also time diffusers' UNet2DConditionModel at matched parameters")
    p.add_argument("--peer-modes", nargs="+", type=option_combo, default=["fp32", "bf16"])
    p.add_argument("--no-sampling", action="store_true", help="skip the sampling timings")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("overrides", nargs="*", help="more Hydra overrides (after --)")
    args = p.parse_args(argv)
    # The blog's final model: one-hot attributes, 4-head cross-attention, Tau 2x.
    preset = [f"model={args.preset}"] + (["tau.projections=2x"] if args.preset == "blog" else [])
    args.overrides = preset + list(args.overrides)
    return args


def main(argv: list[str] | None = None) -> dict:
    return run(parse(argv))


if __name__ == "__main__":
    main()
