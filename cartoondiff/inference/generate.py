"""``generate``: the one path from a model and attribute ids to uint8 avatars.

Sample grids during training, the evaluation and ``python -m cartoondiff.sample`` all call it,
so a change to how images are drawn (batching, seeding, clipping, scaling back to pixels,
stopping on a signal) reaches all three at once.
"""

from __future__ import annotations

import torch
from torch import nn

from cartoondiff.data.dataset import NORMALIZATIONS, denormalize
from cartoondiff.diffusion import Diffusion, Sampler
from cartoondiff.runs import interrupt


@torch.no_grad()
def generate(
    model: nn.Module,
    diffusion: Diffusion,
    conditions: torch.Tensor,
    sampler: Sampler,
    *,
    image_size: int,
    normalize: str = "pm1",
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> torch.Tensor:
    """Draw one avatar per row of ``conditions``.

    Args:
        model: the denoiser (the EMA weights); an unconditional one is given no ids.
        diffusion: its process.
        conditions: (N, 18) attribute ids (ignored by an unconditional model; they still
            set N).
        sampler: method, steps, eta and guidance.
        image_size: H = W of the samples.
        normalize: the data range the model was trained in ("pm1" or "unit"); samples are
            clipped to it and scaled back to pixels.
        seed: seeds one generator for the starting noise and the sampler's noise of all
            batches, so the same call gives the same images.
        batch_size: images per model call (guidance doubles it).
    Returns:
        uint8 (N, 3, image_size, image_size) on the CPU.
    Raises:
        interrupt.Interrupted: at the model call after a stop request (a run's SIGTERM or
            Ctrl-C), so a long drawing ends within one step.
    """
    conditional = bool(getattr(model, "conditional", False))
    g = torch.Generator(device).manual_seed(seed)
    out = []
    stop_check = model.register_forward_pre_hook(lambda *_: interrupt.check())
    try:
        for i in range(0, len(conditions), batch_size):
            chunk = conditions[i:i + batch_size].to(device)
            x = sampler(diffusion, model, (len(chunk), 3, image_size, image_size),
                        ids=chunk if conditional else None, generator=g, device=device,
                        clip_range=NORMALIZATIONS[normalize])  # (B, 3, H, W) float
            out.append(denormalize(x, normalize).cpu())  # uint8 (B, 3, H, W)
    finally:
        stop_check.remove()
    return torch.cat(out)
