"""The attribute schema: sizes, encodings and their round trips, parsing."""

from __future__ import annotations

import random

import pytest
import torch

from cartoondiff import attributes as A


def test_table_matches_cartoon_set():
    assert A.NUM_ATTRIBUTES == 18
    assert A.ONEHOT_DIM == sum(A.COUNTS) == 217
    assert A.NAMES[0] == "eye_angle" and A.NAMES[-1] == "eye_eyebrow_distance"
    assert A.count("hair") == 111 and A.count("hair_color") == 10
    assert A.OFFSETS[1] == 3 and A.OFFSETS[-1] == 217 - 3


@pytest.mark.parametrize("encoding, dim", [("raw", 18), ("onehot", 217)])
def test_encode_decode_round_trip(encoding, dim):
    ids = A.random_ids(64, generator=torch.Generator().manual_seed(0))
    enc = A.encode(ids, encoding)
    assert enc.shape == (64, dim) and enc.dtype == torch.float32
    assert torch.equal(A.decode(enc, encoding), ids)


def test_onehot_has_one_hot_per_attribute():
    ids = torch.tensor([[c - 1 for c in A.COUNTS]])
    enc = A.encode(ids, "onehot")[0]
    assert enc.sum() == 18
    for offset, c in zip(A.OFFSETS, A.COUNTS):
        assert enc[offset + c - 1] == 1 and enc[offset : offset + c].sum() == 1


def test_random_ids_cover_ranges():
    ids = A.random_ids(5000, generator=torch.Generator().manual_seed(1))
    assert torch.equal(ids.min(0).values, torch.zeros(18, dtype=torch.long))
    assert torch.equal(ids.max(0).values, torch.tensor(A.COUNTS) - 1)


@pytest.mark.parametrize(
    "bad, message",
    [
        ([0] * 17, "shape"),
        ([0] * 9 + [111] + [0] * 8, "hair=111 out of range 0..110"),
        ([-1] + [0] * 17, "eye_angle=-1"),
        ([0.0] * 18, "integers"),
    ],
)
def test_validate_names_the_problem(bad, message):
    with pytest.raises(A.SchemaError, match=message):
        A.validate(torch.tensor(bad))


def test_parse_and_format_round_trip():
    text = "hair_color=3,glasses=11"
    assert A.parse(text) == {"hair_color": 3, "glasses": 11}
    ids = A.complete(A.parse(text), random.Random(0))
    assert ids[A.index("hair_color")] == 3 and ids[A.index("glasses")] == 11
    full = A.format_ids(ids)
    assert A.parse(full) == dict(zip(A.NAMES, ids))
    assert A.format_ids(ids, ["glasses"]) == "glasses=11"


@pytest.mark.parametrize(
    "text, message",
    [
        ("hair_colour=1", "unknown attribute 'hair_colour'"),
        ("glasses=12", "glasses=12 out of range 0..11"),
        ("glasses", "expected name=value"),
        ("glasses=two", "not an integer"),
    ],
)
def test_parse_errors(text, message):
    with pytest.raises(A.SchemaError, match=message):
        A.parse(text)
