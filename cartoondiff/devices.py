"""Which torch device a command runs on: ``auto`` (a GPU when present), ``cpu`` or ``cuda``."""

from __future__ import annotations

import torch

from cartoondiff.errors import ArgumentError


def pick_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda``/``cuda:N`` must be available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(name, str) or (name != "cpu" and not name.startswith("cuda")):
        raise ArgumentError("device", name, "auto, cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ArgumentError("device", name, "auto or cpu: no CUDA device is available here")
    return torch.device(name)
