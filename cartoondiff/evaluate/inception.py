"""Optional Inception-v3 pool3 features, for the standard FID when the user has the weights.

Nothing is downloaded: pass the path of torchvision's ImageNet Inception-v3 state dict
(``inception_v3_google-0cc3c7bd.pth``). Its FIDs are close to, not equal to, those of the
TensorFlow graph papers use: compare them with each other (docs/evaluation.md, "Fréchet
distance").
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cartoondiff.runs.errors import UserError, first_line

INCEPTION_SIZE = 299
FEATURE_DIM = 2048


class InceptionError(UserError, ValueError):
    """A missing or unusable Inception weights file; the message names it."""


class InceptionFeatures(nn.Module):
    """uint8 images (B, 3, H, W) -> Inception-v3 pool3 features (B, 2048)."""

    def __init__(self, weights_path: Path | str) -> None:
        super().__init__()
        from torchvision.models import inception_v3  # lazy: only needed with a weights file

        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise InceptionError(f"inception weights file {path} does not exist")
        # transform_input=False: we feed [-1, 1] directly (what transform_input would produce)
        net = inception_v3(weights=None, aux_logits=True, init_weights=False,
                           transform_input=False)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except (RuntimeError, OSError, EOFError) as err:
            raise InceptionError(f"{path} is not torchvision's Inception-v3 state dict: "
                                 f"{first_line(err)}") from err
        net.fc = nn.Identity()  # the 2048-d average-pooled activations ("pool3")
        self.net = net.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise InceptionError(f"inception features expect uint8 images, got {images.dtype}")
        x = images.float() / 127.5 - 1.0  # (B, 3, H, W) in [-1, 1]
        x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear",
                          align_corners=False)
        return self.net(x)  # (B, 2048)

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """uint8 images (N, 3, H, W) -> features (N, 2048) float32 on the CPU, in batches."""
        device = next(self.parameters()).device
        return torch.cat([self(images[i:i + batch_size].to(device)).cpu()
                          for i in range(0, len(images), batch_size)])
