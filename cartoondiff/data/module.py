"""The data side of a training run, as one object built from the ``data`` config group."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cartoondiff.data.avatar_drawing import FRAME  # Cartoon Set's image side, in px
from cartoondiff.data.cache import resolve_cache_dir
from cartoondiff.data.dataset import (
    NORMALIZATIONS,
    SOURCES,
    AvatarData,
    load_avatar_data,
    normalize,
)
from cartoondiff.runs.errors import SEED_RULE, ConfigError, is_int, is_seed, require
from cartoondiff.runs.files import check_folder

MAX_IMAGE_SIZE = 512


def physical_memory() -> int:
    """Bytes of memory this machine has (the decoded images must fit in it)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: no estimate
        return 2**63


class AvatarDataModule:
    """Where the avatars come from, how they are scaled, and how many go in a batch.

    ``setup()`` loads (and on first use caches) the uint8 images; ``batch(idx)`` turns a set
    of indices into the float model input, so no per-item Dataset or worker is involved.
    Arguments are checked here, before anything is read.

    Args:
        source: "synthetic" (the built-in renderer) or "cartoonset" (a folder on disk).
        root: the Cartoon Set folder (csN.png, with csN.csv for labels); cartoonset only.
        n, seed: how many synthetic avatars, and which set; synthetic only.
        image_size: H = W after the crop and resize.
        crop: centre crop in px of the 500 px frame before resizing (the blog's 360).
        cache_dir: where decoded arrays (and the evaluation's classifiers) are kept; None:
            ``cache.default_cache_dir()`` (``$CARTOONDIFF_CACHE``, else the user's cache).
        on_error: "raise" stops at a bad file; "skip" leaves bad files out and counts them.
        normalize: "pm1" scales pixels to [-1, 1], "unit" to [0, 1].
        batch_size: images per optimizer step (the global batch under DDP).
    """

    def __init__(
        self,
        source: str = "synthetic",
        root: str | None = None,
        image_size: int = 64,
        crop: int = 360,
        n: int = 10_000,
        seed: int = 0,
        cache_dir: str | None = None,
        on_error: str = "raise",
        normalize: str = "pm1",
        batch_size: int = 64,
    ) -> None:
        require(source in SOURCES, "source", source, f"one of {SOURCES}")
        require(is_int(image_size) and 8 <= image_size <= MAX_IMAGE_SIZE, "image_size",
                image_size, f"an integer in [8, {MAX_IMAGE_SIZE}] (Cartoon Set's frame is "
                f"{FRAME} px: a larger size only upscales it)")
        require(is_int(crop) and 1 <= crop <= FRAME, "crop", crop,
                f"an integer in [1, {FRAME}] (px of Cartoon Set's {FRAME} px frame)")
        require(on_error in ("raise", "skip"), "on_error", on_error, "raise or skip")
        require(normalize in NORMALIZATIONS, "normalize", normalize,
                f"one of {tuple(NORMALIZATIONS)}")
        require(is_int(batch_size) and batch_size >= 1, "batch_size", batch_size,
                "an integer >= 1")
        if source == "cartoonset":
            require(root is not None and Path(str(root)).expanduser().is_dir(), "root", root,
                    "an existing folder of Cartoon Set PNGs (csN.png, with csN.csv labels)")
        else:
            require(root is None, "root", root, "null for the built-in avatars (data=cartoonset "
                    "reads a folder)")
            require(is_int(n) and n >= 1, "n", n, "an integer >= 1")
            require(batch_size <= n, "batch_size", batch_size, f"at most the {n} avatars of "
                    "the data (data.n)")
            require(is_seed(seed), "seed", seed, SEED_RULE)
            need, have = n * 3 * image_size**2, physical_memory()
            require(need <= have, "n", n, f"at most {have // (3 * image_size**2):,} avatars "
                    f"of {image_size} px: {n:,} take {need / 2**30:.1f} GiB of memory, this "
                    f"machine has {have / 2**30:.1f} GiB")
        self.source, self.root, self.image_size, self.crop = source, root, image_size, crop
        self.n, self.seed = n, seed
        # the cache is written on first use (arrays, the judge): unusable, it is named now
        self.cache_dir = check_folder("cache_dir", resolve_cache_dir(cache_dir))
        self.on_error, self.normalize, self.batch_size = on_error, normalize, batch_size
        self.data: AvatarData | None = None

    def setup(self, labeled: bool | None = True) -> AvatarDataModule:
        """Load the arrays (decoding and caching them on first use). ``labeled``: True needs
        the attribute labels, None reads them where they exist, False reads none (see
        ``load_avatar_data``)."""
        if self.data is None or (labeled and self.data.ids is None):
            self.data = load_avatar_data(
                source=self.source, root=self.root, image_size=self.image_size, crop=self.crop,
                labeled=labeled, n=self.n, seed=self.seed, cache_dir=self.cache_dir,
                on_error=self.on_error)
            if len(self.data) < self.batch_size:  # known only now for a folder of images
                raise ConfigError(f"data.batch_size={self.batch_size} is invalid: expected at "
                                  f"most the {len(self.data)} images in {self.root}")
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
        """Images (B, 3, H, W) float in the ``normalize`` range and ids (B, 18) or None."""
        data = self._loaded()
        images = data.images[idx].to(device, non_blocking=True)  # uint8 (B, 3, H, W)
        ids = data.ids[idx].to(device) if data.ids is not None else None
        return normalize(images, self.normalize), ids
