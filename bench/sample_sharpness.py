"""How soft are a model's samples? Fine detail of generated against rendered avatars.

The judge reads glasses less well on blurred avatars (``docs/evaluation.md``); that matters
for faithfulness only if the model draws soft avatars. This prints, for rendered avatars,
the same avatars blurred by the judge's test blur (a 3x3 box), and each checkpoint's samples
of the same attributes, the mean absolute difference between an image and its 3x3 box blur
(pixel units, 0-255): what a blur removes, so a soft image scores low.

    python bench/sample_sharpness.py RUN/model_ema.pt [RUN2/model_ema.pt ...] --n 256

The avatars are set ``--seed`` of the renderer (the default run trains on set 0), at the
checkpoint's image size; each checkpoint samples with its own sampler.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cartoondiff.data.synthesize import render_arrays  # noqa: E402
from cartoondiff.evaluate.judge.perturb import box_blur, perturb  # noqa: E402
from cartoondiff.inference import generate, load_trained  # noqa: E402
from cartoondiff.runs import cli  # noqa: E402


def fine_detail(images: torch.Tensor) -> float:
    """uint8 (B, 3, H, W) -> mean |x - box3(x)| over every pixel and channel, 0-255 units."""
    return float((images.float() - box_blur(images)).abs().mean())


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="model_ema.pt or checkpoint files")
    parser.add_argument("--n", type=int, default=256, help="avatars per row")
    parser.add_argument("--seed", type=int, default=1, help="renderer set and sampling seed")
    args = parser.parse_args(argv)
    rows: dict[str, float] = {}
    conditions: dict[int, torch.Tensor] = {}  # image size -> ids (n, 18): rendered once per size
    for path in args.checkpoints:
        trained = load_trained(path)
        size = trained.image_size
        if size not in conditions:
            images, ids = render_arrays(args.n, args.seed, size, progress=False)
            real = torch.from_numpy(images)  # uint8 (n, 3, H, W)
            conditions[size] = torch.from_numpy(ids)
            rows[f"rendered, {size} px"] = fine_detail(real)
            rows[f"rendered, 3x3 box blur, {size} px"] = fine_detail(perturb(real, "blur"))
        samples = generate(trained.model, trained.diffusion, conditions[size],
                           trained.sampler, image_size=trained.image_size,
                           normalize=trained.normalize, seed=args.seed)
        rows[f"samples of {path}"] = fine_detail(samples)
    width = max(map(len, rows))
    print(f"fine detail, mean |x - box3(x)| (0-255), n = {args.n}:")
    for name, value in rows.items():
        print(f"  {name:{width}s}  {value:6.2f}")
    return rows


if __name__ == "__main__":
    cli.execute(main)  # a missing or damaged checkpoint: one line naming it, exit 2
