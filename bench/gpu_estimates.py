"""What a GPU run should show, computed on the CPU: FLOPs per image and memory per technique.

    python bench/gpu_estimates.py                 # FLOPs of tiny/small/blog + blog memory table
    python bench/gpu_estimates.py --batch 128 --peak-tflops 790 --mfu 0.3 0.4 0.5
    python bench/gpu_estimates.py --json est.json --compile   # + torch.compile's saved tensors

FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions; pointwise ops,
norms and the optimizer are not counted) over one training step's forward + backward of
``Diffusion.loss`` per image, and over one forward per image (a sampling step; classifier-free
guidance runs the model on the conditional and the unconditional batch, so twice that).

Memory of one training step of the blog preset at ``--batch``: weights, gradients, Adam state
and the EMA copy at 4 + 4 + 8 + 4 B per parameter, plus the activations autograd keeps for
backward (``cartoondiff.train.memory``'s saved-tensor count at batch 1 and 2, extrapolated
linearly),
for each technique:

- fp32, and bf16 autocast (activations saved in bf16 where autocast casts);
- activation checkpointing of every UNet stage (a residual block and its attention) with
  ``torch.utils.checkpoint`` on top of bf16: what stays saved is each stage's input plus what
  lies outside the stages; during backward one stage is recomputed at a time, so the largest
  stage's own saved tensors are added once;
- fused attention: the saved tensors with SDPA forced to its math kernel (which keeps the
  attention probabilities) against the fused kernel (which keeps the output and log-sum-exp);
- channels_last against NCHW weights (same bytes: a layout, not a size);
- optionally (``--compile``) torch.compile, whose graphs recompute cheap pointwise ops.

The rows add up to an upper bound of the peak: during backward saved activations are freed as
the gradients appear. On a GPU ``bench/gpu.py`` measures ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

import torch
from torch.utils.checkpoint import checkpoint
from torch.utils.flop_counter import FlopCounterMode

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import project_config  # noqa: E402
from cartoondiff.config import build_diffusion, build_model  # noqa: E402
from cartoondiff.train.memory import saved_tensor_bytes  # noqa: E402

MiB = 2**20
# preset -> (image size, extra overrides): the sizes each preset is made for; blog = final model
PRESETS = {"tiny": (16, []), "small": (32, []), "blog": (64, ["tau.projections=2x"])}
STATE_BYTES_PER_PARAM = 4 + 4 + 8 + 4  # weights, gradients, Adam exp_avg + exp_avg_sq, EMA


def build(preset: str, image_size: int, extra: list[str]):
    """(model in train mode, diffusion) of ``preset`` on the CPU, seeded."""
    cfg = project_config([f"model={preset}", *extra], image_size)
    torch.manual_seed(0)
    return build_model(cfg).train(), build_diffusion(cfg)


def flops(preset: str, batch: int = 2) -> dict:
    """GFLOP per image: training step (forward + backward of the loss), one forward."""
    size, extra = PRESETS[preset]
    model, diffusion = build(preset, size, extra)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    ids = torch.randint(0, 3, (batch, 18), generator=g)
    with FlopCounterMode(display=False) as train:
        diffusion.loss(model, x0, ids).backward()
    with torch.no_grad(), FlopCounterMode(display=False) as fwd:
        model(x0, torch.randint(0, 1000, (batch,), generator=g), ids)
    return {"preset": preset, "image_size": size, "overrides": extra,
            "params": sum(p.numel() for p in model.parameters()),
            "train_gflop_per_image": train.get_total_flops() / batch / 1e9,
            "forward_gflop_per_image": fwd.get_total_flops() / batch / 1e9}


def _linear(fn, batch: int) -> int:
    """fn(1), fn(2) -> the value at ``batch`` on the line through them (activations)."""
    one, two = fn(1), fn(2)
    return one + (two - one) * (batch - 1)


def _stages(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The UNet's stages (a residual block + its attention blocks): the checkpoint units."""
    stages = [m for m in model.modules() if type(m).__name__ == "Stage"]
    if not stages:
        raise RuntimeError("no UNet Stage modules found: update bench/gpu_estimates._stages to "
                           "the UNet's block class")
    return stages


def _checkpointed(model: torch.nn.Module) -> None:
    """Wrap every stage's forward in torch.utils.checkpoint (reentrant, so the stage inputs
    are saved with ``save_for_backward`` and the saved-tensor hooks count them)."""
    for stage in _stages(model):
        plain = stage.forward

        def forward(self, x, temb, context, _plain=plain):  # noqa: ANN001, ARG001
            return checkpoint(_plain, x, temb, context, use_reentrant=True)

        stage.forward = types.MethodType(forward, stage)


def _largest_stage(model, diffusion, batch, size, amp) -> int:
    """Bytes one stage saves for backward, the largest stage's: what recomputing it holds."""
    per_stage: dict[int, dict[int, int]] = {}
    current: list[int] = []
    hooks = []
    for i, stage in enumerate(_stages(model)):
        hooks.append(stage.register_forward_pre_hook(lambda m, a, i=i: current.append(i)))
        hooks.append(stage.register_forward_hook(lambda m, a, o: [current.pop(), None][1]))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if current and s.data_ptr() not in params:
            per_stage.setdefault(current[-1], {})[s.data_ptr()] = s.nbytes()
        return t

    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    ids = torch.randint(0, 3, (batch, 18), generator=g)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
        loss = diffusion.loss(model, x0, ids)
    del loss
    for h in hooks:
        h.remove()
    return max(sum(v.values()) for v in per_stage.values())


def memory(batch: int, with_compile: bool = False, preset: str = "blog") -> dict:
    """Memory rows of ``preset`` at its size, ``batch`` images, one row per technique."""
    size, extra = PRESETS[preset]
    model, diffusion = build(preset, size, extra)
    n = sum(p.numel() for p in model.parameters())
    bf16 = torch.bfloat16

    def saved(amp, m=model):
        return lambda b: saved_tensor_bytes(m, diffusion, b, size, amp)

    acts: dict[str, int] = {}
    acts["fp32"] = _linear(saved(None), batch)
    acts["bf16 autocast"] = _linear(saved(bf16), batch)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):  # unfused: the attention probabilities are kept
        acts["bf16, unfused attention (math SDPA)"] = _linear(saved(bf16), batch)
    nchw = build(preset, size, extra)[0].to(memory_format=torch.contiguous_format)
    acts["bf16, NCHW weights (vs channels_last)"] = _linear(saved(bf16, nchw), batch)
    largest = _linear(lambda b: _largest_stage(model, diffusion, b, size, bf16), batch)
    ckpt_model = build(preset, size, extra)[0]
    _checkpointed(ckpt_model)
    acts["bf16 + activation checkpointing"] = _linear(saved(bf16, ckpt_model), batch) + largest
    ckpt_fp32 = _linear(saved(None, ckpt_model), batch)
    acts["fp32 + activation checkpointing"] = ckpt_fp32 + _linear(
        lambda b: _largest_stage(model, diffusion, b, size, None), batch)
    if with_compile:
        t0 = time.perf_counter()
        compiled = torch.compile(build(preset, size, extra)[0])
        acts["bf16 + torch.compile"] = _linear(saved(bf16, compiled), batch)
        print(f"(compiling on the CPU took {time.perf_counter() - t0:.0f} s)")
    state = STATE_BYTES_PER_PARAM * n
    rows = [{"technique": k, "activations_bytes": v, "total_bytes": state + v}
            for k, v in acts.items()]
    return {"preset": preset, "batch": batch, "image_size": size, "params": n, "state_bytes": state,
            "state_bytes_per_param": STATE_BYTES_PER_PARAM,
            "largest_stage_bytes": largest, "rows": rows}


def implied(train_gflop: float, peak_tflops: float, mfus: list[float]) -> list[dict]:
    """Images/s a training step of ``train_gflop`` per image reaches at each MFU."""
    return [{"mfu": m, "images_per_s": m * peak_tflops * 1e12 / (train_gflop * 1e9)}
            for m in mfus]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    p.add_argument("--batch", type=int, default=128, help="batch of the memory table")
    p.add_argument("--memory-preset", default="blog", choices=list(PRESETS))
    p.add_argument("--peak-tflops", type=float, default=790.0,
                   help="dense bf16 rate to scale by (H200 measured here: about 790)")
    p.add_argument("--mfu", type=float, nargs="+", default=[0.3, 0.4, 0.5])
    p.add_argument("--goal", type=float, default=3000.0, help="images/s goal")
    p.add_argument("--no-memory", action="store_true", help="FLOPs only")
    p.add_argument("--compile", action="store_true", help="also count torch.compile's saves")
    p.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out: dict = {"torch": torch.__version__, "peak_tflops": args.peak_tflops,
                 "flops": [flops(name) for name in args.presets]}
    print("computed (FlopCounterMode, CPU): GFLOP per image")
    print(f"{'preset':<7} {'size':>5} {'params':>12} {'train step':>11} {'forward':>9} "
          f"{'CFG sampling step':>18}")
    for f in out["flops"]:
        print(f"{f['preset']:<7} {f['image_size']:>5} {f['params']:>12,} "
              f"{f['train_gflop_per_image']:>11.3f} {f['forward_gflop_per_image']:>9.3f} "
              f"{2 * f['forward_gflop_per_image']:>18.3f}")
    blog = next((f for f in out["flops"] if f["preset"] == "blog"), None)
    if blog is not None:
        out["implied"] = implied(blog["train_gflop_per_image"], args.peak_tflops, args.mfu)
        need = args.goal * blog["train_gflop_per_image"] * 1e9 / 1e12
        out["goal"] = {"images_per_s": args.goal, "tflops_needed": need,
                       "mfu_needed": need / args.peak_tflops}
        print(f"\nblog preset on a {args.peak_tflops:.0f} TFLOP/s card: "
              + ", ".join(f"MFU {r['mfu']:.0%} -> {r['images_per_s']:,.0f} img/s"
                          for r in out["implied"])
              + f"; {args.goal:,.0f} img/s needs {need:.0f} TFLOP/s = MFU "
                f"{need / args.peak_tflops:.0%}")
    if not args.no_memory:
        mem = memory(args.batch, args.compile, args.memory_preset)
        out["memory"] = mem
        print(f"\ncomputed memory of one training step, {mem['preset']} preset "
              f"{mem['image_size']}x{mem['image_size']}, batch {mem['batch']}"
              f" ({mem['params']:,} params; weights + grads + Adam + EMA = "
              f"{mem['state_bytes'] / MiB:,.0f} MiB)")
        print(f"{'technique':<42} {'activations MiB':>16} {'total MiB':>10}")
        for r in mem["rows"]:
            print(f"{r['technique']:<42} {r['activations_bytes'] / MiB:>16,.0f} "
                  f"{r['total_bytes'] / MiB:>10,.0f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
