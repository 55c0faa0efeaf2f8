"""cartoondiff: a conditional cartoon-avatar diffusion model built from scratch in PyTorch."""

__version__ = "0.2.0"
