"""The judge's perturbations do what they say, and its robustness command reports them."""

from __future__ import annotations

import json

import pytest
import torch

from cartoondiff.attributes import NAMES
from cartoondiff.evaluate import judge as C
from cartoondiff.evaluate.judge import __main__ as judge
from cartoondiff.evaluate.judge.perturb import KINDS, NOISE_SIGMA, augment, perturb


def dot(n: int = 4, size: int = 9) -> torch.Tensor:
    """n white images (n, 3, size, size) with one black pixel in the middle."""
    x = torch.full((n, 3, size, size), 255, dtype=torch.uint8)
    x[:, :, size // 2, size // 2] = 0
    return x


def where_black(x: torch.Tensor) -> list[tuple[int, int]]:
    return [tuple((img[0] == 0).nonzero()[0].tolist()) for img in x]


@pytest.mark.parametrize("k", [1, 2])
def test_shift_moves_every_image_by_exactly_k_pixels(k):
    x = dot(16)
    moved = perturb(x, f"shift{k}", seed=3)
    assert moved.dtype == torch.uint8 and moved.shape == x.shape
    for y, xx in where_black(moved):
        assert max(abs(y - 4), abs(xx - 4)) == k
    assert len(set(where_black(moved))) > 1  # random directions, not one
    assert torch.equal(moved, perturb(x, f"shift{k}", seed=3))  # seeded


def test_blur_spreads_a_dot_over_its_3x3_box_and_noise_is_noise():
    blurred = perturb(dot(1), "blur")[0, 0].int()
    assert (blurred[3:6, 3:6] == round(255 * 8 / 9)).all()  # one black pixel in nine
    assert (blurred[:3] == 255).all() and (blurred[6:] == 255).all()
    grey = torch.full((2, 3, 32, 32), 128, dtype=torch.uint8)
    noisy = perturb(grey, "noise").float() - 128
    assert abs(noisy.std().item() - NOISE_SIGMA) < 0.5 and abs(noisy.mean().item()) < 0.5
    assert torch.equal(perturb(grey, "clean"), grey)


def test_augment_keeps_the_type_and_is_off_when_asked():
    x = dot(8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(augment(x, g, max_shift=0, blur_p=0, noise_p=0), x)
    out = augment(x, g, max_shift=2, blur_p=1, noise_p=1)
    assert out.dtype == torch.uint8 and out.shape == x.shape and not torch.equal(out, x)


def test_a_judge_of_other_training_perturbations_is_not_reused(cache_dir, tmp_path):
    from cartoondiff.data.dataset import load_avatar_data

    small = load_avatar_data("synthetic", image_size=16, crop=360, n=40, seed=5,
                             cache_dir=cache_dir, progress=False)
    robust = C.load_or_train_classifier(small, tmp_path, epochs=1, progress=False)  # default
    plain = C.load_or_train_classifier(small, tmp_path, epochs=1, max_shift=0, blur_p=0,
                                       noise_p=0, progress=False)
    assert robust.path != plain.path
    assert plain.settings["max_shift"] == 0 and robust.settings["max_shift"] == 2


def test_judge_command_writes_accuracy_per_perturbation(cache_dir, tmp_path):
    out = tmp_path / "judge.json"
    # a tiny judge trained without perturbations, so that it notices them (below)
    plain = [f"evaluate.classifier.{k}=0" for k in ("stem", "max_shift", "blur_p", "noise_p")]
    result = judge.main([f"out={out}", "data.image_size=16", "data.n=200", "seed=1",
                         f"data.cache_dir={cache_dir}", "evaluate.classifier.epochs=2", *plain])
    saved = json.loads(out.read_text())
    for kind in ("clean", "shift1", "shift2", "blur", *KINDS):
        assert sorted(saved[kind]) == sorted(NAMES)
        assert all(0 <= v <= 1 for v in saved[kind].values())
    assert saved["judge"]["n_heldout"] == 20 and saved["judge"]["settings"]["epochs"] == 2
    assert saved["judge"]["settings"]["stem"] == 0 and saved["judge"]["settings"]["max_shift"] == 0
    # the perturbations reach the judge: its readings of shifted avatars are not the clean ones
    assert any(result["shift2"][n] != result["clean"][n] for n in NAMES)
    # a saved judge is measured as it is, and only on the data it was trained on
    tiny = ["data.image_size=16", "data.n=200", f"data.cache_dir={cache_dir}"]
    again = judge.main([f"out={out}", "seed=1", f"classifier={saved['judge']['path']}", *tiny])
    assert again["shift2"] == result["shift2"]
    with pytest.raises(C.ClassifierError, match="other data"):
        judge.main([f"out={out}", f"classifier={saved['judge']['path']}",
                    *tiny[:1], "data.n=100", tiny[2]])
