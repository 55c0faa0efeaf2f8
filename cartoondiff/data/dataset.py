"""The training data as two tensors, and the pixel scaling used by training and sampling.

``load_avatar_data`` returns uint8 images (N, 3, H, W) and attribute ids (N, 18), from a
Cartoon Set directory or from the synthetic renderer, decoded once into the cache
(``cache.py``) and memory-mapped on later runs. Training indexes ``data.images[idx]``
directly and scales a batch with ``normalize``; no per-item Dataset/DataLoader, because a
uint8 array in memory is already faster than any worker pool.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cartoondiff.data import cache
from cartoondiff.data.cartoonset import (
    DataError,
    decode_files,
    find_images,
    label_path,
)

log = logging.getLogger(__name__)

SOURCES = ("synthetic", "cartoonset")
# Normalisation name -> the range of the model's data space (the blog's first ablation).
NORMALIZATIONS = {"pm1": (-1.0, 1.0), "unit": (0.0, 1.0)}
REPORTED_REASONS = 5  # how many skipped files to name in the warning and in meta.json


@dataclass(frozen=True)
class AvatarData:
    """Avatars ready for training.

    images: uint8 (N, 3, H, W), memory-mapped from the cache (copy-on-write);
    ids: long (N, 18) in ``attributes.NAMES`` order, or None for unlabeled data;
    source: "synthetic" or "cartoonset"; skipped: bad files left out (on_error="skip");
    cache_path: the cache folder the arrays come from.
    """

    images: torch.Tensor
    ids: torch.Tensor | None
    source: str
    skipped: int = 0
    cache_path: Path | None = None

    def __len__(self) -> int:
        return self.images.shape[0]


def load_avatar_data(
    source: str,
    root: str | Path | None = None,
    image_size: int = 64,
    crop: int | None = 360,
    labeled: bool | None = True,
    n: int = 10_000,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    on_error: str = "raise",
    limit: int | None = None,
    progress: bool = True,
) -> AvatarData:
    """Load (decoding once, then from the cache) the avatars of ``source``.

    source="cartoonset": every ``*.png`` under ``root`` (recursively), labels from the
    matching CSVs when ``labeled``; ``limit`` keeps only the first ``limit`` files in sorted
    order (quick runs and tests); ``n`` and ``seed`` are unused.
    source="synthetic": ``n`` avatars of set ``seed`` from the renderer, at ``image_size``
    as if cropped by ``crop``; ``root`` and ``limit`` are unused.
    ``labeled=False`` gives ``ids=None`` either way; ``labeled=None`` reads labels where the
    source has them (synthetic always; a Cartoon Set folder when its first PNG has a CSV), and
    ``labeled=True`` on a folder of PNGs without CSVs stops at once with one line that says
    which experiments need no labels. on_error="raise" stops at the first
    bad file; "skip" leaves bad files out, warns with their count and first reasons, and
    reports the count in ``AvatarData.skipped``.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if source == "synthetic":
        from cartoondiff.data import synthesize  # lazy: the renderer is only needed to build

        key = {"source": "synthetic", "n": n, "seed": seed, "size": image_size, "crop": crop,
               "renderer": synthesize.RENDERER_VERSION}

        def build() -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
            images, ids = synthesize.render_arrays(n, seed, image_size, crop=crop,
                                                   progress=progress)
            return images, ids, {}  # ids int64 (n, 18), checked by the cache like any source's

    elif source == "cartoonset":
        if root is None:
            raise DataError("source 'cartoonset' needs a root directory, got None")
        folder = Path(root).expanduser().resolve()
        files = find_images(folder)
        if limit is not None:
            files = files[:limit]
        has_labels = label_path(files[0]).is_file()
        if labeled and not has_labels:
            raise DataError(
                f"{root} has PNGs but no attribute labels ({label_path(files[0]).name} is "
                "missing): conditional experiments need the CSVs of the official archive; "
                "the unconditional ones train without them (experiment=fig01_02_vanilla_unit, "
                "experiment=fig03_05_vanilla_pm1, or attention=none)")
        labeled = has_labels if labeled is None else labeled
        # keyed by the files' names, sizes and mtimes; a missing CSV is reported by the
        # decoder, with the file's name: here it just must not crash the fingerprint
        csvs = [c for c in map(label_path, files) if c.exists()] if labeled else []
        key = {"source": "cartoonset", "root": str(folder),
               "files": cache.files_fingerprint(files, folder)
               + cache.files_fingerprint(csvs, folder),
               "size": image_size, "crop": crop, "labeled": labeled}

        def build() -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
            decoded = decode_files(files, crop=crop, size=image_size, labeled=labeled,
                                   on_error=on_error, workers=min(2, os.cpu_count() or 1),
                                   progress=progress)  # a pool of two where two cores exist
            info = {"skipped": len(decoded.skipped),
                    "reasons": [reason for _, reason in decoded.skipped[:REPORTED_REASONS]]}
            return decoded.images, decoded.ids, info

    else:
        raise ValueError(f"unknown data source {source!r}; use one of {SOURCES}")
    entry = cache.build_or_load_cache(cache.resolve_cache_dir(cache_dir),
                                      f"{source}-{image_size}px", key, build)

    skipped = int(entry.info.get("skipped", 0))
    if skipped:
        reasons = entry.info.get("reasons", [])
        if on_error == "raise":  # a cache built with "skip" must not hide bad files later
            raise DataError(f"{skipped} bad file(s) in {root}; first: {reasons[0]}")
        log.warning("skipped %d bad file(s) of %s; first: %s", skipped, root, "; ".join(reasons))

    images = torch.from_numpy(entry.images)  # (N, 3, H, W) uint8, no copy
    # ids were validated by the cache (cache._check_arrays, on writing and on every load)
    ids = torch.from_numpy(entry.ids) if labeled is not False and entry.ids is not None else None
    return AvatarData(images, ids, source, skipped=skipped, cache_path=entry.path)


def _data_range(mode: str) -> tuple[float, float]:
    if mode not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {mode!r}; use one of {tuple(NORMALIZATIONS)}")
    return NORMALIZATIONS[mode]


def normalize(images: torch.Tensor, mode: str) -> torch.Tensor:
    """uint8 images (B, 3, H, W) -> float32 in [-1, 1] ("pm1") or [0, 1] ("unit")."""
    if images.dtype != torch.uint8:
        raise ValueError(f"normalize expects uint8 images, got {images.dtype}")
    low, high = _data_range(mode)
    return images.float().div_(255.0 / (high - low)).add_(low)  # in place: one new tensor


def denormalize(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Inverse of ``normalize``: float (B, 3, H, W) -> uint8, clamped and rounded."""
    low, high = _data_range(mode)
    return ((x - low) * (255.0 / (high - low))).clamp(0, 255).round().to(torch.uint8)
