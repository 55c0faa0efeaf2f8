"""Which torch device a command runs on: ``auto`` (a GPU when present), ``cpu`` or ``cuda``."""

from __future__ import annotations

import torch


def pick_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda``/``cuda:N`` must be available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name} but no CUDA device is available")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)
