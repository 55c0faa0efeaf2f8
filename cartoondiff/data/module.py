"""The data side of a training run, as one object built from the ``data`` config group."""

from __future__ import annotations

import torch

from cartoondiff.data.dataset import (
    NORMALIZATIONS,
    AvatarData,
    denormalize,
    load_avatar_data,
    normalize,
)


class AvatarDataModule:
    """Where the avatars come from, how they are scaled, and how many go in a batch.

    ``setup()`` loads (and on first use caches) the uint8 images; ``batch(idx)`` turns a set
    of indices into the float model input, so no per-item Dataset or worker is involved.
    """

    def __init__(
        self,
        source: str = "synthetic",
        root: str | None = None,
        image_size: int = 64,
        crop: int = 360,
        labeled: bool = True,
        n: int = 10_000,
        seed: int = 0,
        cache_dir: str = ".cache/cartoondiff",
        on_error: str = "raise",
        normalize: str = "pm1",
        batch_size: int = 64,
    ) -> None:
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"data.normalize must be one of {tuple(NORMALIZATIONS)}, "
                             f"got {normalize!r}")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        self.source, self.root, self.image_size, self.crop = source, root, image_size, crop
        self.labeled, self.n, self.seed, self.cache_dir = labeled, n, seed, cache_dir
        self.on_error, self.normalize, self.batch_size = on_error, normalize, batch_size
        self.data: AvatarData | None = None

    @property
    def value_range(self) -> tuple[float, float]:
        """Range of the model's data space: (-1, 1) for pm1, (0, 1) for unit."""
        return NORMALIZATIONS[self.normalize]

    def setup(self) -> AvatarDataModule:
        if self.data is None:
            self.data = load_avatar_data(
                source=self.source, root=self.root, image_size=self.image_size, crop=self.crop,
                labeled=self.labeled, n=self.n, seed=self.seed, cache_dir=self.cache_dir,
                on_error=self.on_error)
        return self

    @property
    def ids(self) -> torch.Tensor | None:
        return self._loaded().ids

    def __len__(self) -> int:
        return len(self._loaded())

    def _loaded(self) -> AvatarData:
        if self.data is None:
            raise RuntimeError("call setup() before using the data module")
        return self.data

    def batch(
        self, idx: torch.Tensor, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images (B, 3, H, W) float in ``value_range`` and attribute ids (B, 18) or None."""
        data = self._loaded()
        images = data.images[idx].to(device, non_blocking=True)  # uint8 (B, 3, H, W)
        ids = data.ids[idx].to(device) if data.ids is not None else None
        return normalize(images, self.normalize), ids

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space images back to uint8 (B, 3, H, W)."""
        return denormalize(x, self.normalize)
