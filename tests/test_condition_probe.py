"""bench/condition_probe.py: the context shares and the response probe, checked on models whose
answer is known."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from bench import condition_probe as probe
from cartoondiff.attributes import INDEX, NAMES
from cartoondiff.inference import load_trained


class OnlyHairColour(nn.Module):
    """A conditioning module whose context depends on hair colour alone: (B, 18) -> (B, 2, 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(10, 8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids[:, INDEX["hair_color"]]).view(-1, 2, 4)


class IdealDenoiser(nn.Module):
    """Predicts the noise that makes x0_hat exactly render(ids): the ideal synthetic-data model."""

    def __init__(self, diffusion, size: int, crop: int | None) -> None:  # noqa: ANN001
        super().__init__()
        self.diffusion, self.size, self.crop = diffusion, size, crop

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        x0 = torch.stack([probe._render(row.tolist(), self.size, self.crop) for row in ids])
        a = self.diffusion.at(self.diffusion.sqrt_alpha_bar, t, x_t)
        s = self.diffusion.at(self.diffusion.sqrt_one_minus_alpha_bar, t, x_t)
        return (x_t - a * x0) / s


def test_context_share_finds_the_one_attribute_the_context_holds(tiny_checkpoint):
    trained = load_trained(tiny_checkpoint)
    trained.model.tau = OnlyHairColour()
    shares = probe.context_shares(trained, n=2048)
    assert shares["hair_color"] > 0.99
    assert max(v for k, v in shares.items() if k != "hair_color") < 0.02


def test_context_shares_of_a_trained_model_are_fractions(tiny_checkpoint):
    shares = probe.context_shares(load_trained(tiny_checkpoint), n=1024)
    assert set(shares) == set(NAMES)
    assert all(0 <= v <= 1 for v in shares.values()) and sum(shares.values()) <= 1.05


def test_the_ideal_model_responds_fully_and_in_the_right_direction(tiny_checkpoint):
    trained = load_trained(tiny_checkpoint)
    trained.diffusion = replace(trained.diffusion, prediction="eps")
    trained.model = IdealDenoiser(trained.diffusion, trained.image_size, trained.cfg.data.crop)
    table = probe.responses(trained, n=6, steps=(30,), names=("hair_color", "glasses"))
    for ratio, cos in table[30].values():
        assert abs(ratio - 1) < 1e-3 and cos > 0.999


def test_a_model_that_ignores_the_condition_does_not_respond(tiny_checkpoint):
    trained = load_trained(tiny_checkpoint)
    model = trained.model
    trained.model = lambda x_t, t, ids: model(x_t, t, torch.zeros_like(ids))  # noqa: ARG005
    table = probe.responses(trained, n=4, steps=(20,), names=("hair_color",))
    assert table[20]["hair_color"] == (0.0, 0.0)


def test_the_script_prints_both_tables(tiny_checkpoint, capsys):
    probe.main([str(tiny_checkpoint), "--n", "3", "--steps", "10"])
    out = capsys.readouterr().out
    assert "context share" in out and "response of" in out and "hair_color" in out


def test_steps_beyond_the_schedule_are_refused(tiny_checkpoint):
    trained = load_trained(tiny_checkpoint)
    with pytest.raises(ValueError, match="must lie in"):
        probe.responses(trained, n=2, steps=(trained.diffusion.T,))


def test_pixel_shares_add_up_and_rank_colour_above_the_eyes():
    shares = probe.pixel_shares(bases=2, size=16, max_values=4)
    assert abs(sum(share for share, _ in shares.values()) - 1) < 1e-6
    assert shares["hair_color"][0] > shares["eye_color"][0] > 0
    assert shares["hair_color"][1] > shares["eye_color"][1]
