"""The network: UNet, attention, Tau, Denoiser and presets (CPU, tiny shapes)."""

from __future__ import annotations

import itertools

import pytest
import torch

from cartoondiff import attributes
from cartoondiff.config import build_model
from cartoondiff.models import AttentionBlock, Denoiser, Tau, TimestepEmbedder, UNet
from tests.conftest import PRESET_SIZES, build_denoiser, compose_cfg, preset_config, unet_args

BLOG_PARAMS = 76_464_439  # the blog's "trainable parameters of the avatar diffusion model"


def _batch(b: int = 4, size: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, size, size, generator=g)
    t = torch.randint(0, 100, (b,), generator=g)
    return x, t, attributes.random_ids(b, g)


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Perturb every parameter so zero-initialised layers stop hiding the conditioning."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


CONDITIONAL = list(itertools.product(("single", "mha4"), ("1x", "2x"), ("raw", "onehot")))


@pytest.mark.parametrize(("attention", "projections", "encoding"), CONDITIONAL)
def test_conditional_options_shape_and_gradients(attention, projections, encoding):
    model = build_denoiser(
        "tiny",
        attention=attention,
        self_attention=True,
        tau={"projections": projections, "encoding": encoding},
    )
    x, t, ids = _batch()
    out = model(x, t, ids)
    assert out.shape == x.shape
    # The output conv and the attention out projections start at zero: the first update moves
    # the output conv, the second the out projections, so Tau's gradients appear on the third.
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    target = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        opt.zero_grad()
        (model(x, t, ids) - target).pow(2).mean().backward()
        opt.step()
    first_tau = model.tau.hidden[0]
    assert first_tau.weight.grad is not None and first_tau.weight.grad.abs().sum() > 0
    cross = [m for m in model.unet.modules() if isinstance(m, AttentionBlock) and m.is_cross]
    assert cross, "no cross-attention block was built"
    for block in cross:
        for p in (block.to_q.weight, block.to_kv.weight, block.to_out.weight):
            assert p.grad is not None and p.grad.abs().sum() > 0


def test_vanilla_model_ignores_ids():
    model = build_denoiser("tiny", attention="none")
    assert model.tau is None and not model.conditional
    assert not [m for m in model.modules() if isinstance(m, AttentionBlock)]
    _randomize(model)
    x, t, ids = _batch()
    out = model(x, t)
    assert out.shape == x.shape
    torch.testing.assert_close(model(x, t, ids), out)


def test_dropped_condition_uses_null_context():
    model = build_denoiser("tiny").eval()
    _randomize(model)
    x, t, ids = _batch()
    other = attributes.random_ids(4, torch.Generator().manual_seed(7))
    assert (other != ids).any(dim=1).all()
    all_drop = torch.ones(4, dtype=torch.bool)
    with torch.no_grad():
        dropped = model(x, t, ids, all_drop)
        torch.testing.assert_close(model(x, t, other, all_drop), dropped)
        torch.testing.assert_close(model(x, t, None), dropped)  # ids None = null context
        kept = model(x, t, ids)
        assert not torch.allclose(model(x, t, other), kept)  # the condition does matter
        mixed = model(x, t, ids, torch.tensor([True, False, True, False]))
    torch.testing.assert_close(mixed[1::2], kept[1::2])
    torch.testing.assert_close(mixed[0::2], dropped[0::2])


def test_tau_layers_tokens_and_null():
    tau1 = Tau("onehot", "1x", hidden_dim=32, context_dim=8, n_tokens=5)
    tau2 = Tau("raw", "2x", hidden_dim=32, context_dim=8, n_tokens=5)
    linears = [sum(isinstance(m, torch.nn.Linear) for m in t.modules()) for t in (tau1, tau2)]
    assert linears == [3, 5]  # 2 or 4 hidden projections + the token projection
    assert tau1.hidden[0].in_features == attributes.ONEHOT_DIM
    assert tau2.hidden[0].in_features == attributes.NUM_ATTRIBUTES
    ids = attributes.random_ids(3, torch.Generator().manual_seed(0))
    ctx = tau1(ids)
    assert ctx.shape == (3, 5, 8)
    assert not torch.allclose(ctx[:, 0], ctx[:, 1])  # tokens differ, so attention can too
    dropped = tau1(ids, torch.tensor([False, True, False]))
    torch.testing.assert_close(dropped[1], tau1.null_context)
    torch.testing.assert_close(dropped[0], ctx[0])


def test_timestep_embedding_distinguishes_steps():
    emb = TimestepEmbedder(16, 64)
    out = emb(torch.tensor([0, 1, 500, 999]))
    assert out.shape == (4, 64)
    assert torch.cdist(out, out).triu(1)[torch.triu(torch.ones(4, 4), 1).bool()].min() > 0


def test_channels_last_input_gives_same_output():
    model = build_denoiser("tiny").eval()
    _randomize(model)
    x, t, ids = _batch()
    with torch.no_grad():
        ref = model(x, t, ids)
        out = model(x.to(memory_format=torch.channels_last), t, ids)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_batched_rows_are_independent():
    """GroupNorm, not BatchNorm: a sample's output must not depend on its batch neighbours."""
    model = build_denoiser("tiny").eval()
    _randomize(model)
    x, t, ids = _batch()
    with torch.no_grad():
        torch.testing.assert_close(model(x[:1], t[:1], ids[:1]), model(x, t, ids)[:1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_heads": 3}, "num_heads=3"),
        ({"image_size": 20, "channel_mults": (1, 2, 2, 2)}, "image_size=20"),
        ({"cross_attention": "yes"}, "cross_attention='yes'"),
        ({"attention_levels": (2,)}, "attention_levels"),  # tiny has levels 0 and 1
        ({"norm_groups": 5}, "norm_groups=5"),
        ({"context_dim": None}, "context_dim"),
        ({"dropout": 1.0}, "dropout=1.0"),
        ({"num_res_blocks": 0}, "num_res_blocks=0"),
    ],
)
def test_unet_rejects_bad_arguments(kwargs, message):
    args = unet_args("tiny") | kwargs
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        UNet(**args)


@pytest.mark.parametrize(("option", "heads"), [("single", {1}), ("mha4", {4}), ("none", set())])
def test_attention_options_build_the_heads_they_name(option, heads):
    model = build_denoiser("tiny", attention=option)
    found = {m.num_heads for m in model.unet.modules() if isinstance(m, AttentionBlock)}
    assert found == heads
    assert model.conditional == (option != "none")


def test_tau_and_denoiser_reject_bad_arguments():
    with pytest.raises(ValueError, match="projections='3x'"):
        Tau(projections="3x")
    with pytest.raises(ValueError, match="encoding='binary'"):
        Tau(encoding="binary")
    args = unet_args("tiny")
    with pytest.raises(ValueError, match="^tau='null' .*cross_attention=True"):
        Denoiser(UNet(**args), None)
    with pytest.raises(ValueError, match="^tau.context_dim=7 .*context_dim=32"):
        Denoiser(UNet(**args), Tau(context_dim=7))
    with pytest.raises(ValueError, match="^tau='a Tau' .*cross_attention=False"):
        Denoiser(UNet(**(args | {"cross_attention": False})), Tau(context_dim=32))


def test_preset_sizes():
    with torch.device("meta"):  # shapes only: the blog model builds in milliseconds
        counts = {name: _n_params(build_denoiser(name)) for name in PRESET_SIZES}
    assert counts["tiny"] < 300_000
    assert 2_000_000 <= counts["small"] <= 4_000_000
    assert abs(counts["blog"] / BLOG_PARAMS - 1) < 0.02, counts["blog"]
    blog = preset_config("blog")
    assert blog.model.unet.image_size == 64
    assert blog.model.unet.cross_attention and blog.model.unet.num_heads == 4
    assert blog.tau.encoding == "onehot" and blog.tau.projections == "2x"


@pytest.mark.parametrize("name", sorted(PRESET_SIZES))
def test_presets_run_at_their_image_size(name):
    size = PRESET_SIZES[name]
    device = "meta" if name == "blog" else "cpu"  # the blog model: shapes only
    with torch.device(device):
        model = build_denoiser(name)
        x = torch.randn(2, 3, size, size)
        out = model(x, torch.tensor([0, 999]), torch.zeros(2, 18, dtype=torch.long))
    assert out.shape == x.shape


@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("name", ["small", "blog"])
def test_presets_build_at_every_data_size(name, size):
    """Attention levels count from the full resolution, so no size needs a preset rewritten."""
    with torch.device("meta"):
        model = build_model(compose_cfg(f"model={name}", f"data.image_size={size}"))
        out = model(torch.randn(1, 3, size, size), torch.tensor([5]),
                    torch.zeros(1, 18, dtype=torch.long))
    assert out.shape == (1, 3, size, size)
