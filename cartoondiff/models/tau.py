"""Tau, the conditioning module: 18 attribute ids -> context tokens for cross-attention; and
``PerAttributeTau``, the Tau variant with one token per attribute (beyond the blog).

Like StyleGAN's mapping network (Karras et al. 2019, fig. 1b), Tau is a stack of linear
projections with nonlinearities. Its output is split into ``n_tokens`` tokens because with a
single token softmax attention is the constant 1: every query would read the same value and
the heads could not differ.

Classifier-free guidance (Ho & Salimans 2022) needs an unconditional model too. As in DiT's
``LabelEmbedder.token_drop``, the dropout lives here: where ``drop`` is True the tokens are
replaced by a learned null context, so one network learns both branches.
"""

from __future__ import annotations

import torch
from torch import nn

from cartoondiff import attributes
from cartoondiff.runs.errors import is_int, require

# Hidden Linear+GELU layers per setting; "2x" doubles "1x" (the blog's "doubled projections").
PROJECTION_DEPTHS: dict[str, int] = {"1x": 2, "2x": 4}


class Tau(nn.Module):
    """Attribute ids (B, 18) -> context tokens (B, n_tokens, context_dim).

    Layers, exactly:
        encode: ids -> (B, E) with E = 18 ("raw") or 217 ("onehot"), via ``attributes.encode``;
        hidden: ``depth`` x [Linear(in, hidden_dim), GELU], depth = 2 for "1x" and 4 for "2x";
        tokens: Linear(hidden_dim, n_tokens * context_dim), reshaped to (B, n_tokens, context_dim).
    So "1x" has 3 Linear layers and "2x" has 5: "2x" doubles the hidden projections, the final
    token projection is shared by both.

    Args:
        encoding: "raw" or "onehot".
        projections: "1x" or "2x".
        hidden_dim: width of the hidden projections.
        context_dim: width of each context token (the UNet's ``context_dim``).
        n_tokens: number of context tokens.
    """

    def __init__(
        self,
        encoding: str = "onehot",
        projections: str = "1x",
        hidden_dim: int = 256,
        context_dim: int = 256,
        n_tokens: int = 18,
    ) -> None:
        super().__init__()
        require(encoding in attributes.ENCODINGS, "encoding", encoding,
                f"one of {attributes.ENCODINGS}")
        require(projections in PROJECTION_DEPTHS, "projections", projections,
                f"one of {tuple(PROJECTION_DEPTHS)}")
        for name, value in (("hidden_dim", hidden_dim), ("context_dim", context_dim),
                            ("n_tokens", n_tokens)):
            require(is_int(value) and value >= 1, name, value, "an integer >= 1")
        self.encoding = encoding
        self.n_tokens = n_tokens
        self.context_dim = context_dim
        layers: list[nn.Module] = []
        width = attributes.encoded_dim(encoding)  # 18 or 217
        for _ in range(PROJECTION_DEPTHS[projections]):
            layers += [nn.Linear(width, hidden_dim), nn.GELU()]
            width = hidden_dim
        self.hidden = nn.Sequential(*layers)
        self.to_tokens = nn.Linear(hidden_dim, n_tokens * context_dim)
        # The unconditional branch's context; small init like the token outputs at start.
        self.null_context = nn.Parameter(0.02 * torch.randn(n_tokens, context_dim))

    def null(self, batch: int) -> torch.Tensor:
        """The null context for ``batch`` samples: (batch, n_tokens, context_dim)."""
        return self.null_context.expand(batch, -1, -1)

    def forward(self, ids: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """ids: (B, 18) long, drop: (B,) bool or None -> context (B, n_tokens, context_dim)."""
        x = attributes.encode(ids, self.encoding)  # (B, E)
        tokens = self.to_tokens(self.hidden(x)).view(-1, self.n_tokens, self.context_dim)
        if drop is None:
            return tokens  # (B, n_tokens, context_dim)
        return torch.where(drop[:, None, None], self.null_context, tokens)  # (B, n_tokens, D)


class PerAttributeTau(nn.Module):
    """Attribute ids (B, 18) -> one context token per attribute (B, 18, context_dim).

    token_a = E[offset_a + id_a] + P[a]: one embedding row per attribute value (the 217 rows
    of the one-hot encoding, in one table) plus a learned attribute-id embedding (as word and
    position embeddings in a Transformer), then ``depth`` residual blocks
    x + Linear(GELU(Linear(LayerNorm(x)))) applied to each token alone. Token a carries
    attribute a and nothing else, so cross-attention can read "glasses" where glasses are
    drawn. The blog's Tau mixes all 18 into every token; docs/results.md ("Beyond the blog")
    measured that its tokens end up ~80 % hair colour, leaving the small attributes unread.

    Args:
        projections: "1x" (one residual block) or "2x" (two), as ``Tau``'s setting.
        hidden_dim: width inside the residual blocks.
        context_dim: width of each token (the UNet's ``context_dim``).
        n_tokens: 18, one per attribute (an argument so presets configure both modules alike).
    """

    def __init__(
        self, projections: str = "1x", hidden_dim: int = 256, context_dim: int = 256,
        n_tokens: int = attributes.NUM_ATTRIBUTES,
    ) -> None:
        super().__init__()
        require(projections in PROJECTION_DEPTHS, "projections", projections,
                f"one of {tuple(PROJECTION_DEPTHS)}")
        for name, value in (("hidden_dim", hidden_dim), ("context_dim", context_dim)):
            require(is_int(value) and value >= 1, name, value, "an integer >= 1")
        require(n_tokens == attributes.NUM_ATTRIBUTES, "n_tokens", n_tokens,
                f"{attributes.NUM_ATTRIBUTES}: one token per attribute")
        self.n_tokens, self.context_dim = n_tokens, context_dim
        self.value_embed = nn.Embedding(attributes.ONEHOT_DIM, context_dim)  # (217, D)
        self.attribute_embed = nn.Parameter(0.1 * torch.randn(n_tokens, context_dim))  # (18, D)
        nn.init.normal_(self.value_embed.weight, std=0.1)
        self.register_buffer("offsets", torch.tensor(attributes.OFFSETS), persistent=False)
        depth = PROJECTION_DEPTHS[projections] // 2  # 1x: one block, 2x: two
        self.blocks = nn.ModuleList(_TokenBlock(context_dim, hidden_dim) for _ in range(depth))
        self.null_context = nn.Parameter(0.02 * torch.randn(n_tokens, context_dim))

    def null(self, batch: int) -> torch.Tensor:
        """The null context for ``batch`` samples: (batch, 18, context_dim)."""
        return self.null_context.expand(batch, -1, -1)

    def forward(self, ids: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """ids: (B, 18) long, drop: (B,) bool or None -> context (B, 18, context_dim)."""
        tokens = self.value_embed(ids + self.offsets) + self.attribute_embed  # (B, 18, D)
        for block in self.blocks:
            tokens = block(tokens)
        if drop is None:
            return tokens
        return torch.where(drop[:, None, None], self.null_context, tokens)  # (B, 18, D)


class _TokenBlock(nn.Module):
    """x + Linear(GELU(Linear(LayerNorm(x)))) on each token alone: (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)
