"""Benchmark: one training step of the judge (the attribute classifier) per memory layout.

Times what ``train_classifier`` does for every batch (the training perturbations of
``perturb.augment``, forward, the 18 cross-entropies, backward, AdamW) with the judge's conv
weights in each layout: ``channels_last`` (the judge as built) and ``nchw`` (the same network
moved back to the contiguous layout, as it was before). ``bf16`` adds CPU autocast, which the
judge does not use: it shows what is left. Random images and labels (the speed does not
depend on them); variants run interleaved, round by round, and the median round is reported
as images per second of process CPU time, comparable on a shared machine.

    python bench/judge_throughput.py                          # 32 px, batch 64, 1 thread
    python bench/judge_throughput.py --variants nchw channels_last nchw+bf16 channels_last+bf16
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import time_rounds  # noqa: E402
from cartoondiff.attributes import COUNTS  # noqa: E402
from cartoondiff.evaluate.judge import (  # noqa: E402
    TRAIN_DEFAULTS,
    AttributeClassifier,
    attribute_loss,
)
from cartoondiff.evaluate.judge.perturb import augment  # noqa: E402

LAYOUTS = {"channels_last": torch.channels_last, "nchw": torch.contiguous_format}


def make_step(variant: str, size: int, batch: int) -> Callable[[], None]:
    """One judge training step of ``variant`` ("LAYOUT" or "LAYOUT+bf16") on fixed data."""
    layout, _, extra = variant.partition("+")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
    ids = torch.stack([torch.randint(0, n, (batch,), generator=g) for n in COUNTS], dim=1)
    net = AttributeClassifier(size, TRAIN_DEFAULTS["width"], TRAIN_DEFAULTS["feature_dim"],
                              TRAIN_DEFAULTS["stem"]).to(memory_format=LAYOUTS[layout])
    opt = torch.optim.AdamW(net.parameters(), lr=TRAIN_DEFAULTS["lr"])

    def step() -> None:
        x = augment(images, g, TRAIN_DEFAULTS["max_shift"], TRAIN_DEFAULTS["blur_p"],
                    TRAIN_DEFAULTS["noise_p"])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=extra == "bf16"):
            logits = net(x)
        loss = attribute_loss([lg.float() for lg in logits], ids)  # (B, 18) ids
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def variant(text: str) -> str:
    layout, _, extra = text.partition("+")
    if layout not in LAYOUTS or extra not in ("", "bf16"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected LAYOUT or LAYOUT+bf16, LAYOUT in "
                                         f"{', '.join(LAYOUTS)}")
    return text


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", type=variant, default=["nchw", "channels_last"])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--per-round", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps = {v: make_step(v, args.size, args.batch) for v in args.variants}
    times = time_rounds(steps, args.rounds, args.per_round, torch.device("cpu"))
    rates = {v: args.batch / cpu for v, (_, cpu) in times.items()}
    base = rates[args.variants[0]]
    print(f"judge training step, {args.size} px, batch {args.batch}, {args.threads} thread(s), "
          f"median of {args.rounds} rounds (process CPU time)")
    for v, rate in rates.items():
        print(f"  {v:22s} {rate:7.1f} img/s  {rate / base:5.2f}x {args.variants[0]}")
    return rates


if __name__ == "__main__":
    main()
