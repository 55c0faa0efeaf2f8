"""What a generated avatar does that a rendered one does not: small shifts, blur, noise.

Two uses of the same operations on uint8 images (B, 3, H, W):

- ``perturb(images, kind, seed)``: one named, seeded test perturbation, applied to every
  image (``python -m cartoondiff.evaluate.judge`` measures the judge's accuracy under each);
- ``augment(images, generator, ...)``: random perturbations of a training batch, so the judge
  learns that a pair of glasses one pixel off or a little soft is still that pair of glasses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NOISE_SIGMA = 8.0  # the ``noise`` test perturbation: Gaussian sigma in 0..255 pixel units
# every test perturbation, in the order the judge command reports them
KINDS = ("clean", "shift1", "shift2", "blur", "noise", "shift1_blur")


def shift(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Translate image b by (dx[b], dy[b]) px (right, down), filling with white (the
    avatars' ground)."""
    B, _, H, W = images.shape
    s = int(max(dx.abs().max(), dy.abs().max())) if B else 0
    if s == 0:
        return images
    padded = F.pad(images, (s,) * 4, value=255)  # (B, 3, H+2s, W+2s)
    return torch.stack([padded[b, :, s - int(dy[b]):s - int(dy[b]) + H,
                               s - int(dx[b]):s - int(dx[b]) + W] for b in range(B)])


def box_blur(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float (B, 3, H, W): the 3x3 box mean, edges replicated."""
    x = F.pad(images.float(), (1, 1, 1, 1), mode="replicate")
    return F.avg_pool2d(x, 3, stride=1)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def perturb(images: torch.Tensor, kind: str, seed: int = 0) -> torch.Tensor:
    """One test perturbation of every image, seeded: uint8 (B, 3, H, W) -> the same.

    clean: unchanged; shiftK: each image moved by exactly K px (Chebyshev) in a random one
    of the 8K directions; blur: 3x3 box; noise: Gaussian, sigma ``NOISE_SIGMA``;
    shift1_blur: shift1 then blur.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown perturbation {kind!r}; known: {', '.join(KINDS)}")
    g = torch.Generator().manual_seed(seed)
    if kind == "clean":
        return images
    if kind.startswith("shift"):
        k = int(kind[5])
        grid = torch.cartesian_prod(torch.arange(-k, k + 1), torch.arange(-k, k + 1))
        ring = grid[grid.abs().amax(1) == k]  # the 8k offsets (dx, dy) at distance exactly k
        d = ring[torch.randint(len(ring), (len(images),), generator=g)]  # (B, 2)
        out = shift(images, d[:, 0], d[:, 1])
        return perturb(out, "blur") if kind.endswith("_blur") else out
    if kind == "blur":
        return _to_uint8(box_blur(images))
    noise = torch.randn(images.shape, generator=g) * NOISE_SIGMA
    return _to_uint8(images.float() + noise)


def augment(images: torch.Tensor, generator: torch.Generator, max_shift: int = 2,
            blur_p: float = 0.5, noise_p: float = 0.3) -> torch.Tensor:
    """Random training perturbations of a uint8 batch (B, 3, H, W) -> the same.

    Each image is shifted by (dx, dy) uniform in [-max_shift, max_shift]; with probability
    ``blur_p`` mixed with its 3x3 box blur (weight uniform in [0, 1]: from a hint of softness
    to the full box); with probability ``noise_p`` given Gaussian noise of sigma uniform in
    [0, 2 * NOISE_SIGMA].
    """
    B = len(images)
    if max_shift > 0:
        d = torch.randint(-max_shift, max_shift + 1, (2, B), generator=generator)
        images = shift(images, d[0], d[1])
    if blur_p <= 0 and noise_p <= 0:
        return images
    x = images.float()
    if blur_p > 0:
        a = torch.rand(B, generator=generator) * (torch.rand(B, generator=generator) < blur_p)
        x = x + a.view(B, 1, 1, 1) * (box_blur(images) - x)
    if noise_p > 0:
        sigma = (torch.rand(B, generator=generator) * (2 * NOISE_SIGMA)
                 * (torch.rand(B, generator=generator) < noise_p))
        x = x + sigma.view(B, 1, 1, 1) * torch.randn(x.shape, generator=generator)
    return _to_uint8(x)
