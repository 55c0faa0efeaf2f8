"""Which torch device a command runs on (``auto``: a GPU when present, ``cpu`` or ``cuda``) and
in which precision (``trainer.precision``)."""

from __future__ import annotations

import torch

from cartoondiff.runs.errors import ArgumentError, require

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def pick_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda``/``cuda:N`` must be available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(name, str) or (name != "cpu" and not name.startswith("cuda")):
        raise ArgumentError("device", name, "auto, cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ArgumentError("device", name, "auto or cpu: no CUDA device is available here")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 autocast on GPUs and CPUs that compute bf16 in hardware (AVX512-BF16 or
    AMX: the default model trains 1.25x faster there), else fp32 (None; emulated bf16 is
    slower than fp32)."""
    require(precision in PRECISIONS, "precision", precision, f"one of {PRECISIONS}")
    if precision == "auto":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private: guarded
        native = (torch.cuda.is_bf16_supported() if device.type == "cuda"
                  else any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks))
        return torch.bfloat16 if native else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def precision_name(amp: torch.dtype | None) -> str:
    """The ``precision`` value that gives ``amp`` (``autocast_dtype``'s inverse): fp32, bf16
    or fp16."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp]


def precision_label(amp: torch.dtype | None) -> str:
    """How a run computes, for its log: ``fp32`` or ``torch.bfloat16 autocast``."""
    return "fp32" if amp is None else f"{amp} autocast"
