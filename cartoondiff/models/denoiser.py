"""Denoiser: the UNet plus its conditioning, the one module training and sampling call.

``Denoiser(unet, tau)`` is the conditional model; ``Denoiser(unet, None)`` with a UNet built
with ``cross_attention=False`` is the vanilla (unconditional) model of the blog's first
section.
"""

from __future__ import annotations

import torch
from torch import nn

from cartoondiff.models.tau import PerAttributeTau, Tau
from cartoondiff.models.unet import UNet
from cartoondiff.runs.errors import ArgumentError


class Denoiser(nn.Module):
    """eps (or v) prediction from (x_t, t) and optional attribute ids.

    Args:
        unet: the network; its ``context_dim`` must match ``tau.context_dim``.
        tau: the conditioning module, or None for an unconditional model (then the UNet has
            no cross-attention).
    """

    def __init__(self, unet: UNet, tau: Tau | PerAttributeTau | None) -> None:
        super().__init__()
        if (tau is None) != (unet.context_dim is None):
            raise ArgumentError("tau", "null" if tau is None else "a Tau",
                                "a Tau exactly when the UNet has cross_attention "
                                f"(it has cross_attention={unet.cross_attention})")
        # "tau.context_dim" is also the key of the ``tau`` node, which the config builds apart
        if tau is not None and tau.context_dim != unet.context_dim:
            raise ArgumentError("tau.context_dim", tau.context_dim,
                                f"the UNet's context_dim={unet.context_dim}")
        self.unet = unet
        self.tau = tau

    @property
    def conditional(self) -> bool:
        """True when the model reads attribute ids (has a Tau)."""
        return self.tau is not None

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        ids: torch.Tensor | None = None,
        drop: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict eps (or v) for a noisy batch.

        Args:
            x_t: (B, 3, H, W) noisy images.
            t: (B,) diffusion steps.
            ids: (B, 18) long attribute ids; None gives the null context (the unconditional
                branch) to a conditional model and is the only input of an unconditional one.
            drop: (B,) bool, True where the condition is replaced by the null context.
        Returns:
            (B, 3, H, W)
        """
        if self.tau is None:
            return self.unet(x_t, t)  # (B, 3, H, W); ids and drop mean nothing here
        # ids None: the null context, i.e. the unconditional branch of a conditional model.
        context = self.tau.null(x_t.shape[0]) if ids is None else self.tau(ids, drop)  # (B, N, D)
        return self.unet(x_t, t, context)  # (B, 3, H, W)
