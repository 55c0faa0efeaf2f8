"""Where does each attribute go? Two probes of a trained checkpoint and one of the data.

0. Pixel share (the data, no checkpoint): render every value of one attribute with the 17
   others fixed and sum the per-pixel variance across values: how much of the image, and so
   of the loss, only that attribute explains.
1. Context share: for 8192 random attribute vectors, the share of the variance of the
   conditioning module's context (all its tokens) explained by each attribute's value. At
   initialisation every attribute holds a similar share; an attribute whose share falls
   near 0 has been squeezed out of what cross-attention can read.
2. Response: synthetic avatars are a pure function of their attributes, so at high noise
   the ideal model predicts x0_hat(x_t, c) = render(c). Change one attribute (c -> c'),
   keep x_t, and compare the change of the model's x0 prediction with the true change
   render(c') - render(c): ``cos`` is its direction (the right shape in the right place),
   ``R`` its squared-norm ratio (1 is the ideal at high noise).

    python bench/condition_probe.py outputs/DATE/TIME/model_ema.pt [more.pt ...]
    python bench/condition_probe.py RUN/model_ema.pt --n 128 --steps 100 300 500 700
    python bench/condition_probe.py --pixels 60 --size 32      # the data alone

docs/results.md ("Beyond the blog") uses both tables to explain why the blog's Tau learns
hair colour and little else.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cartoondiff.attributes import COUNTS, INDEX, NAMES, random_ids  # noqa: E402
from cartoondiff.data.dataset import normalize  # noqa: E402
from cartoondiff.data.synthesize import render_avatar, sample_ids  # noqa: E402
from cartoondiff.inference import TrainedModel, load_trained  # noqa: E402

SHOWN = ("hair_color", "face_color", "hair", "facial_hair", "face_shape", "glasses",
         "glasses_color", "chin_length")


def pixel_shares(bases: int = 60, size: int = 32, crop: int | None = 360,
                 max_values: int = 15) -> dict[str, tuple[float, float]]:
    """Attribute name -> (share of the summed per-pixel variance, pixels it changes).

    For each of ``bases`` random avatars, every value of one attribute (at most
    ``max_values`` of them, drawn at random for ``hair``'s 111) is rendered with the others
    fixed; the per-pixel variance across those images ([-1, 1] units) is summed over pixels
    and channels. A pixel counts as changed where some two values differ by more than 0.1.
    """
    variance = {name: 0.0 for name in NAMES}
    changed = {name: 0.0 for name in NAMES}
    for b in range(bases):
        base = sample_ids(123, b)
        rng = random.Random(b)
        for k, name in enumerate(NAMES):
            values = range(COUNTS[k])
            if COUNTS[k] > max_values:
                values = rng.sample(values, max_values)
            images = torch.stack([_render([*base[:k], v, *base[k + 1:]], size, crop)
                                  for v in values])  # (V, 3, H, W)
            variance[name] += float(images.var(0, unbiased=False).sum()) / bases
            spread = (images.amax(0) - images.amin(0)).amax(0)  # (H, W)
            changed[name] += float((spread > 0.1).sum()) / bases
    total = sum(variance.values())
    return {name: (variance[name] / total, changed[name]) for name in NAMES}


@torch.no_grad()
def context_shares(trained: TrainedModel, n: int = 8192, seed: int = 0) -> dict[str, float]:
    """Attribute name -> between-value variance of the context / its total variance.

    The context is ``model.tau(ids)`` flattened to (n, tokens * dim). Attributes are drawn
    independently and uniformly, so the shares add up to at most 1. The raw between-value
    variance of an attribute with k values overstates its share by about (k - 1) / n of the
    rest (111 hair styles: 0.013 at n = 8192), so that expected excess is taken off.
    """
    ids = random_ids(n, torch.Generator().manual_seed(seed))  # (n, 18)
    context = trained.model.tau(ids).flatten(1).double()  # (n, tokens * dim)
    context = context - context.mean(0)
    total = context.pow(2).sum(1).mean()
    shares = {}
    for k, name in enumerate(NAMES):
        between = context.new_zeros(())
        for value in range(COUNTS[k]):
            rows = ids[:, k] == value
            if rows.any():
                between += rows.double().mean() * context[rows].mean(0).pow(2).sum()
        excess = (COUNTS[k] - 1) / (n - COUNTS[k]) * (total - between)
        shares[name] = max(0.0, float((between - excess) / total))
    return shares


def _render(ids: list[int], size: int, crop: int | None) -> torch.Tensor:
    """One synthetic avatar in [-1, 1], (3, size, size)."""
    pixels = torch.from_numpy(np.array(render_avatar(ids, size, crop=crop)))  # uint8 (H, W, 3)
    return normalize(pixels.permute(2, 0, 1)[None], "pm1")[0]


@torch.no_grad()
def responses(trained: TrainedModel, n: int = 128, steps: tuple[int, ...] = (100, 300, 500, 700),
              names: tuple[str, ...] = SHOWN, seed: int = 0) -> dict[int, dict[str, tuple]]:
    """Timestep -> attribute -> (R, cos) of the model's x0 change against the true change.

    Uses ``n`` synthetic avatars at the checkpoint's image size; each attribute is moved to
    another random value for every avatar. The data range must be [-1, 1] (data.normalize=pm1).
    """
    if trained.normalize != "pm1":
        raise ValueError("the response probe needs a model trained on [-1, 1] inputs")
    T = trained.diffusion.T  # noqa: N806 -- the papers' symbol
    if not all(0 <= step < T for step in steps):
        raise ValueError(f"--steps {list(steps)} must lie in [0, {T}) for this checkpoint")
    size = trained.image_size
    crop = trained.cfg.data.get("crop")
    rng = random.Random(seed)
    base = [sample_ids(999, i) for i in range(n)]  # avatars the training set did not draw
    x0 = torch.stack([_render(c, size, crop) for c in base])  # (n, 3, H, W)
    ids = torch.tensor(base)  # (n, 18)
    moved = {}
    for name in names:
        k, other_ids, images = INDEX[name], ids.clone(), []
        for i, c in enumerate(base):
            value = rng.randrange(COUNTS[k] - 1)
            value += value >= c[k]  # any value but the current one
            other_ids[i, k] = value
            images.append(_render([*c[:k], value, *c[k + 1:]], size, crop))
        moved[name] = (other_ids, torch.stack(images))

    model, diffusion = trained.model, trained.diffusion

    def x0_hat(x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return diffusion.predict_x0_eps(model(x_t, t, cond), x_t, t)[0].clamp(-1, 1)

    table: dict[int, dict[str, tuple]] = {}
    for step in steps:
        t = torch.full((n,), step)
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + step))
        x_t = diffusion.q_sample(x0, t, noise)
        predicted = x0_hat(x_t, t, ids)
        table[step] = {}
        for name, (other_ids, other_x0) in moved.items():
            change = (x0_hat(x_t, t, other_ids) - predicted).flatten(1)
            truth = (other_x0 - x0).flatten(1)
            keep = truth.norm(dim=1) > 0  # a value may draw the same pixels at this size
            ratio = (change[keep].pow(2).sum(1) / truth[keep].pow(2).sum(1)).mean()
            cos = F.cosine_similarity(change[keep], truth[keep], dim=1).mean()
            table[step][name] = (float(ratio), float(cos))
    return table


def main(argv: list[str] | None = None) -> None:
    """Print both probes for each checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*")
    parser.add_argument("--pixels", type=int, default=0, metavar="BASES",
                        help="also print each attribute's pixel share over BASES avatars")
    parser.add_argument("--size", type=int, default=32, help="image size for --pixels")
    parser.add_argument("--n", type=int, default=128, help="avatars for the response probe")
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 300, 500, 700])
    args = parser.parse_args(argv)
    if not args.checkpoints and not args.pixels:
        parser.error("give a checkpoint, or --pixels BASES")
    torch.manual_seed(0)
    if args.pixels:
        print(f"pixel share, {args.pixels} avatars at {args.size} px")
        print(f"{'attribute':22}{'values':>7}{'share':>8}{'pixels changed':>16}")
        shares = pixel_shares(args.pixels, args.size)
        for name in sorted(NAMES, key=lambda n: -shares[n][0]):
            share, changed = shares[name]
            print(f"{name:22}{COUNTS[INDEX[name]]:7}{share:8.3f}{changed:16.0f}")
        if not args.checkpoints:
            return
    header = "".join(f"{name[:12]:>13}" for name in SHOWN)
    print(f"context share (of {len(NAMES)} attributes, sum in the last column)")
    print(f"{'checkpoint':40}{header}{'sum':>7}")
    for path in args.checkpoints:
        shares = context_shares(load_trained(path))
        cells = "".join(f"{shares[name]:13.3f}" for name in SHOWN)
        print(f"{path[-40:]:40}{cells}{sum(shares.values()):7.3f}")
    for path in args.checkpoints:
        print(f"\nresponse of {path}, n = {args.n}: R / cos per attribute")
        print(f"{'t':>5}{header}")
        for step, row in responses(load_trained(path), args.n, tuple(args.steps)).items():
            print(f"{step:>5}" + "".join(f"{r:6.2f}/{c:5.2f} " for r, c in row.values()))


if __name__ == "__main__":
    main()
