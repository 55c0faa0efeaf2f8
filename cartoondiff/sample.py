"""Sample avatars from a trained checkpoint.

    python -m cartoondiff.sample checkpoint=PATH n=16 attributes=random \\
        sampler=ddim steps=50 guidance=2.0 seed=0 out=samples.png

``attributes`` is ``random`` or ``"hair_color=3,glasses=11"`` (attributes not named are drawn
at random per image). Writes a PNG grid and, beside it, a text file with each image's
attributes.
"""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from cartoondiff import attributes
from cartoondiff.data.dataset import denormalize
from cartoondiff.devices import pick_device
from cartoondiff.diffusion.samplers import SAMPLERS
from cartoondiff.diffusion.samplers import sample as run_sampler
from cartoondiff.inference import load_trained
from cartoondiff.train.checkpoint import CheckpointError
from cartoondiff.train.grids import save_grid

DEFAULTS = {"checkpoint": None, "n": 16, "attributes": "random", "sampler": "ddim",
            "steps": 50, "eta": 0.0, "guidance": 2.0, "seed": 0, "out": "samples.png",
            "device": "auto", "nrow": None}


def attribute_ids(spec: str, n: int, seed: int) -> torch.Tensor:
    """(n, 18) ids: the attributes named in ``spec`` fixed, the rest drawn with ``seed``."""
    fixed = {} if spec in ("random", "", None) else attributes.parse(str(spec))
    rng = random.Random(seed)
    return torch.tensor([attributes.complete(fixed, rng) for _ in range(n)])


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# Each option's test and what it expects, checked before the checkpoint is read.
CHECKS = {
    "n": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "sampler": (lambda v: v in SAMPLERS, f"one of {SAMPLERS}"),
    "steps": (lambda v: v is None or (_is_int(v) and v >= 1), "null or an integer >= 1"),
    "eta": (lambda v: _is_num(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "guidance": (lambda v: _is_num(v) and v >= 0, "a number >= 0"),
    "seed": (lambda v: _is_int(v), "an integer"),
    "device": (lambda v: v in ("auto", "cpu", "cuda"), "auto, cpu or cuda"),
    "nrow": (lambda v: v is None or (_is_int(v) and v >= 1), "null or an integer >= 1"),
}


def main(argv: list[str]) -> Path:
    try:
        opts = OmegaConf.merge(OmegaConf.create(DEFAULTS), OmegaConf.from_dotlist(argv))
    except Exception as err:  # e.g. an argument without "="
        raise SystemExit(f"error: cannot parse {argv}: {str(err).splitlines()[0]}") from None
    unknown = set(opts) - set(DEFAULTS)
    if unknown:
        raise SystemExit(f"error: unknown option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    if not opts.checkpoint:
        raise SystemExit("error: checkpoint=PATH is required")
    for key, (ok, expected) in CHECKS.items():
        if not ok(opts[key]):
            raise SystemExit(f"error: {key}={opts[key]!r} is invalid: expected {expected}")
    try:
        ids = attribute_ids(opts.attributes, opts.n, opts.seed)
    except attributes.SchemaError as err:
        raise SystemExit(f"error: attributes: {err}") from None
    if not Path(opts.checkpoint).is_file():
        raise SystemExit(f"error: checkpoint={opts.checkpoint} is not a file")
    try:
        device = pick_device(opts.device)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    try:
        trained = load_trained(opts.checkpoint, device)
    except CheckpointError as err:
        raise SystemExit(f"error: {err}") from None
    if opts.sampler != "ddpm" and opts.steps is not None and opts.steps > trained.diffusion.T:
        raise SystemExit(f"error: steps={opts.steps} is invalid: expected at most the model's "
                         f"T={trained.diffusion.T}")
    conditional = bool(getattr(trained.model, "conditional", False))
    g = torch.Generator(device).manual_seed(opts.seed)
    size = trained.image_size
    x = run_sampler(diffusion=trained.diffusion, model=trained.model, shape=(opts.n, 3, size, size),
                    ids=ids.to(device) if conditional else None, sampler=opts.sampler,
                    steps=opts.steps, eta=opts.eta, guidance=opts.guidance, generator=g,
                    device=device, clip_range=trained.value_range)
    out = Path(opts.out)
    nrow = opts.nrow or math.ceil(math.sqrt(opts.n))
    save_grid(denormalize(x, trained.cfg.data.normalize), out, nrow=nrow)
    lines = [f"{i}: {attributes.format_ids(r) if conditional else 'unconditional'}"
             for i, r in enumerate(ids)]
    out.with_suffix(".txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out} and {out.with_suffix('.txt')}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
