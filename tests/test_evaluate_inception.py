"""Inception FID plumbing with a stand-in weights file (no download: random weights)."""

from __future__ import annotations

import pytest
import torch

from cartoondiff.evaluate import metrics as M
from cartoondiff.evaluate.inception import FEATURE_DIM, InceptionError, InceptionFeatures


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=True, init_weights=False)
    path = tmp_path_factory.mktemp("inception") / "inception_v3_google.pth"
    torch.save(net.state_dict(), path)  # same keys as torchvision's published file
    return path


def test_pool3_features_and_fid_of_a_set_with_itself(weights_file):
    net = InceptionFeatures(weights_file)
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    feats = net.embed(images, batch_size=2)
    assert feats.shape == (3, FEATURE_DIM) and torch.isfinite(feats).all()
    assert (feats >= 0).all()  # average of ReLU outputs
    assert M.frechet_from_features(feats, feats) == pytest.approx(0.0, abs=1e-6)


def test_bad_weights_are_refused(tmp_path):
    with pytest.raises(InceptionError, match="does not exist"):
        InceptionFeatures(tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, wrong)
    with pytest.raises(InceptionError, match="not torchvision's Inception-v3"):
        InceptionFeatures(wrong)
