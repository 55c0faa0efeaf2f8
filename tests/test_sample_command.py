"""``python -m cartoondiff.sample``: writes a grid of the right size, refuses bad attributes."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from cartoondiff import __version__, sample
from cartoondiff.inference import checkpoint as ckpt
from cartoondiff.runs import cli
from cartoondiff.runs.errors import UserError


def test_writes_grid_and_attributes(tiny_checkpoint, tmp_path):
    out = tmp_path / "grid.png"
    sample.main(
        [
            f"checkpoint={tiny_checkpoint}",
            "n=4",
            "attributes=hair_color=3,glasses=11",
            "steps=3",
            f"out={out}",
        ]
    )
    image = Image.open(out)
    # 2x2 grid of 16 px images with make_grid's 2 px padding
    assert image.size == (2 * 16 + 3 * 2, 2 * 16 + 3 * 2)
    lines = out.with_suffix(".txt").read_text().splitlines()
    assert len(lines) == 4 and all("hair_color=3" in ln and "glasses=11" in ln for ln in lines)


def test_training_checkpoint_also_samples(tiny_checkpoint, tmp_path):
    from cartoondiff.runs.folder import list_checkpoints

    path = list_checkpoints(tiny_checkpoint.parent / "checkpoints")[-1]
    out = tmp_path / "g.png"
    sample.main([f"checkpoint={path}", "n=2", "nrow=2", "sampler=ddpm", f"out={out}"])
    assert Image.open(out).size == (2 * 16 + 3 * 2, 16 + 2 * 2)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("hair_colour=3", "unknown attribute 'hair_colour'"),
        ("hair_color=10", "hair_color=10 out of range 0..9"),
        ("glasses=x", "not an integer"),
    ],
)
def test_refuses_bad_attributes(tiny_checkpoint, tmp_path, spec, message):
    with pytest.raises(UserError, match=message):
        sample.main(
            [f"checkpoint={tiny_checkpoint}", f"attributes={spec}", f"out={tmp_path / 'x.png'}"]
        )
    assert not (tmp_path / "x.png").exists()


def test_a_checkpoint_of_an_earlier_version_is_refused_in_one_line(tiny_checkpoint, tmp_path,
                                                                     capsys):
    state = ckpt.load(tiny_checkpoint)
    assert (state["format"], state["cartoondiff"]) == (ckpt.FORMAT, __version__)
    old = tmp_path / "old.pt"  # as cartoondiff 0.1 wrote them: no format, no version
    torch.save({k: v for k, v in state.items() if k not in ("format", "cartoondiff")}, old)
    with pytest.raises(SystemExit) as info:
        cli.execute(sample.main, [f"checkpoint={old}", f"out={tmp_path / 'x.png'}"])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        f"error: checkpoint {old} was written by cartoondiff 0.1 (checkpoint format 1); this "
        f"version reads format {ckpt.FORMAT}: train it again\n")
    assert not (tmp_path / "x.png").exists()
