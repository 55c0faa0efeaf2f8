"""Sample avatars from a trained checkpoint.

``attributes`` is ``random`` or ``"hair_color=3,glasses=11"`` (attributes not named are drawn
at random per image). Writes a PNG grid and, beside it, a text file with each image's
attributes. Every option is checked before the checkpoint is read.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from pathlib import Path
from typing import Any

import torch

from cartoondiff import attributes
from cartoondiff.diffusion import Sampler
from cartoondiff.inference import generate, load_trained
from cartoondiff.inference.grids import MAX_GRID_IMAGES, grid_image, save_grid
from cartoondiff.runs import cli
from cartoondiff.runs.devices import pick_device
from cartoondiff.runs.errors import SEED_RULE, ArgumentError, is_int, is_seed, require
from cartoondiff.runs.files import IMAGE_SUFFIXES, check_output
from cartoondiff.runs.folder import RunFolder

USAGE = ("python -m cartoondiff.sample checkpoint=PATH [n=16] [attributes=random|NAME=V,...] "
         "[sampler=ddim] [steps=25] [eta=1] [guidance=1] [seed=0] [out=samples.png]")
EXAMPLE = ("python -m cartoondiff.sample checkpoint=outputs/DATE/TIME/model_ema.pt n=16 "
           "attributes=\"hair_color=3,glasses=11\" guidance=2 seed=0 out=grid.png")
# sampler, steps, eta and guidance default to the run's own sampler (its config's `sampler`)
OPTIONS = {
    "checkpoint": cli.Option(None, "the checkpoint to sample (a run's model_ema.pt, "
                             "model_best.pt or checkpoints/*.pt); required", "PATH"),
    "n": cli.Option(16, "how many avatars"),
    "attributes": cli.Option("random", "random, or NAME=VALUE,... (0-based values, e.g. "
                             "hair_color=3,glasses=11); attributes not named are drawn at "
                             "random per image"),
    "sampler": cli.Option(None, "ddim | ddpm | dpmpp2m; null: the run's own sampler"),
    "steps": cli.Option(None, "sampling steps (ddpm always takes all T); null: the run's own"),
    "eta": cli.Option(None, "DDIM noise, 0 (deterministic) to 1; null: the run's own"),
    "guidance": cli.Option(None, "classifier-free guidance w, (1 + w) eps(x, c) - w eps(x, "
                           "null); null: the run's own"),
    "seed": cli.Option(0, "seed of the random attributes and of the sampling noise"),
    "out": cli.Option("samples.png", "the grid image (.png, .jpg, .webp); its attribute list "
                      "is written beside it as .txt"),
    "device": cli.Option("auto", "auto | cpu | cuda"),
    "nrow": cli.Option(None, "images per grid row; null: a square grid"),
}


def attribute_ids(spec: str, n: int, seed: int) -> torch.Tensor:
    """(n, 18) ids: the attributes named in ``spec`` fixed, the rest drawn with ``seed``."""
    fixed = {} if spec in ("random", "", None) else attributes.parse(str(spec))
    rng = random.Random(seed)
    return torch.tensor([attributes.complete(fixed, rng) for _ in range(n)])


def sampler_from_options(opts: dict[str, Any], own: Sampler) -> Sampler:
    """The Sampler that the options ``sampler`` (the method), ``steps``, ``eta`` and
    ``guidance`` ask for, each one not given (None) taken from ``own`` (the run's sampler);
    errors name the option as typed. Shared with ``python -m cartoondiff.evaluate``."""
    given = {"method": opts["sampler"], "steps": opts["steps"], "eta": opts["eta"],
             "guidance": opts["guidance"]}
    try:
        return dataclasses.replace(own, **{k: v for k, v in given.items() if v is not None})
    except ArgumentError as err:
        raise ArgumentError("sampler" if err.name == "method" else err.name, err.value,
                            err.expected) from None


CAPTION_LINE = re.compile(r"\d+: ")  # what save_grid writes: "0: hair_color=3, ..."


def is_captions(path: Path) -> bool:
    """True when ``path`` is the caption list of an earlier grid (so it may be replaced);
    a file of anything else is the user's, and is never overwritten."""
    try:
        with path.open(encoding="utf-8") as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError):
        return False
    return CAPTION_LINE.match(first) is not None


def check_options(opts: dict) -> tuple[torch.Tensor, torch.device]:
    """Every option checked before the checkpoint is read: the ids, the device, the paths, and
    the sampler options given (completed with the defaults of ``Sampler``)."""
    checkpoint, n, nrow = opts["checkpoint"], opts["n"], opts["nrow"]
    require(checkpoint is not None, "checkpoint", checkpoint, "the path of a checkpoint file")
    path = Path(str(checkpoint))
    require(path.is_file(), "checkpoint", checkpoint, "an existing checkpoint file")
    require(is_int(n) and 1 <= n <= MAX_GRID_IMAGES, "n", n, f"an integer in [1, "
            f"{MAX_GRID_IMAGES}] (one grid; for more, sample again with another seed)")
    require(is_seed(opts["seed"]), "seed", opts["seed"], SEED_RULE)
    require(nrow is None or (is_int(nrow) and nrow >= 1), "nrow", nrow, "null or an integer >= 1")

    # writable, before any work; never the checkpoint nor its run's record
    inputs = [path, RunFolder.of_checkpoint(path).root]
    out = check_output("out", str(opts["out"]), IMAGE_SUFFIXES, inputs=inputs)
    captions = check_output("out", out.with_suffix(".txt"), inputs=inputs)  # beside it
    require(not captions.is_file() or is_captions(captions), "out", opts["out"],
            f"a grid path whose {captions.name} is free or an earlier grid's captions: "
            f"{captions} holds something else (choose another out=)")
    sampler_from_options(opts, Sampler())
    ids = attribute_ids(str(opts["attributes"]), opts["n"], opts["seed"])
    return ids, pick_device(str(opts["device"]))


def main(argv: list[str]) -> Path:
    args = cli.parse(argv, OPTIONS, USAGE, positional=False, about=__doc__, example=EXAMPLE)
    opts = args.options
    ids, device = check_options(opts)
    trained = load_trained(opts["checkpoint"], device)
    sampler = sampler_from_options(opts, trained.sampler)  # its steps checked when it draws
    if not trained.conditional and str(opts["attributes"]) not in ("random", ""):
        raise ArgumentError("attributes", opts["attributes"], "random: the checkpoint's model "
                            "is unconditional (attention=none) and draws no attributes")
    images = generate(trained.model, trained.diffusion, ids, sampler,
                      image_size=trained.image_size, normalize=trained.normalize,
                      seed=opts["seed"], device=device)
    captions = [f"{i}: {attributes.format_ids(r) if trained.conditional else 'unconditional'}"
                for i, r in enumerate(ids)]
    nrow = opts["nrow"] or math.ceil(math.sqrt(len(ids)))
    out = save_grid(grid_image(images, nrow), Path(str(opts["out"])), captions)
    print(f"wrote {out} and {out.with_suffix('.txt')}")
    return out


def console() -> None:
    """Console script ``cartoondiff-sample``."""
    cli.execute(main)


if __name__ == "__main__":
    console()
