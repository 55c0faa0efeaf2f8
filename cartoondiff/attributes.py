"""The 18 Cartoon Set attributes: the one place that knows their names, order and sizes.

Cartoon Set stores each avatar's attributes in a CSV, one line per attribute in the
order below: ``"name", value, count`` with ``value`` 0-based and ``count`` the number
of variants. One-hot encoding concatenates the 18 one-hot blocks into 217 dims (the
blog's "binary vector"); raw encoding keeps the 18 integer values as floats.

Everything else in cartoondiff asks this module; no other file repeats the table.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import torch

from cartoondiff.runs.errors import UserError

# (name, number of variants), in Cartoon Set's CSV order.
ATTRIBUTES: tuple[tuple[str, int], ...] = (
    ("eye_angle", 3),
    ("eye_lashes", 2),
    ("eye_lid", 2),
    ("chin_length", 3),
    ("eyebrow_weight", 2),
    ("eyebrow_shape", 14),
    ("eyebrow_thickness", 4),
    ("face_shape", 7),
    ("facial_hair", 15),
    ("hair", 111),
    ("eye_color", 5),
    ("face_color", 11),
    ("hair_color", 10),
    ("glasses", 12),
    ("glasses_color", 7),
    ("eye_slant", 3),
    ("eyebrow_width", 3),
    ("eye_eyebrow_distance", 3),
)
NAMES: tuple[str, ...] = tuple(name for name, _ in ATTRIBUTES)
COUNTS: tuple[int, ...] = tuple(count for _, count in ATTRIBUTES)
INDEX: dict[str, int] = {name: i for i, name in enumerate(NAMES)}
NUM_ATTRIBUTES = len(ATTRIBUTES)  # 18
ONEHOT_DIM = sum(COUNTS)  # 217
# Start of each attribute's block inside the one-hot vector.
OFFSETS: tuple[int, ...] = tuple(sum(COUNTS[:i]) for i in range(NUM_ATTRIBUTES))

ENCODINGS: tuple[str, ...] = ("raw", "onehot")


class SchemaError(UserError, ValueError):
    """An attribute name, value or vector that does not fit the schema."""


def count(name: str) -> int:
    """Number of variants of attribute ``name``."""
    return COUNTS[index(name)]


def index(name: str) -> int:
    """Position of ``name`` in the CSV order; a clear error for unknown names."""
    if name not in INDEX:
        raise SchemaError(f"unknown attribute {name!r}; known: {', '.join(NAMES)}")
    return INDEX[name]


def encoded_dim(encoding: str) -> int:
    """Width of an encoded vector: 18 for ``raw``, 217 for ``onehot``."""
    if encoding == "raw":
        return NUM_ATTRIBUTES
    if encoding == "onehot":
        return ONEHOT_DIM
    raise SchemaError(f"unknown attribute encoding {encoding!r}; use one of {ENCODINGS}")


def validate(ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """Check attribute ids of shape (18,) or (B, 18) and return them as a long tensor.

    Raises SchemaError naming the first attribute whose value is out of range.
    """
    ids = torch.as_tensor(ids)
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise SchemaError(f"attribute ids must be integers, got dtype {ids.dtype}")
    ids = ids.long()
    if ids.shape[-1:] != (NUM_ATTRIBUTES,) or ids.dim() not in (1, 2):
        raise SchemaError(
            f"attribute ids must have shape (18,) or (B, 18), got {tuple(ids.shape)}"
        )
    bad = ((ids < 0) | (ids >= torch.tensor(COUNTS))).nonzero()  # (n_bad, ids.dim())
    if len(bad):
        col, value = int(bad[0, -1]), int(ids[tuple(bad[0])])
        raise SchemaError(f"attribute {NAMES[col]}={value} out of range 0..{COUNTS[col] - 1}")
    return ids


def encode(ids: torch.Tensor, encoding: str) -> torch.Tensor:
    """Encode attribute ids (B, 18) as float (B, 18) raw values or (B, 217) one-hot.

    Ids are trusted here (this runs every training step); call ``validate`` at the edges.
    """
    if encoding == "raw":
        return ids.float()  # (B, 18), the blog's "vector of 18 integers"
    if encoding == "onehot":
        offsets = torch.tensor(OFFSETS, device=ids.device)
        out = torch.zeros(*ids.shape[:-1], ONEHOT_DIM, device=ids.device)
        return out.scatter_(-1, ids + offsets, 1.0)  # (B, 217)
    raise SchemaError(f"unknown attribute encoding {encoding!r}; use one of {ENCODINGS}")


def decode(encoded: torch.Tensor, encoding: str) -> torch.Tensor:
    """Inverse of ``encode``: (B, 18) or (B, 217) floats back to long ids (B, 18)."""
    if encoding == "raw":
        return validate(encoded.round().long())
    if encoding == "onehot":
        blocks = torch.split(encoded, COUNTS, dim=-1)
        return validate(torch.stack([b.argmax(-1) for b in blocks], dim=-1))
    raise SchemaError(f"unknown attribute encoding {encoding!r}; use one of {ENCODINGS}")


def random_ids(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw (n, 18) attribute ids uniformly over each attribute's variants."""
    u = torch.rand(n, NUM_ATTRIBUTES, generator=generator)
    return (u * torch.tensor(COUNTS)).long().clamp_max(torch.tensor(COUNTS) - 1)


def parse(text: str) -> dict[str, int]:
    """Parse ``"hair_color=3,glasses=11"`` into ``{"hair_color": 3, "glasses": 11}``.

    Names and values are validated; an empty string gives an empty dict.
    """
    out: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise SchemaError(f"expected name=value, got {item!r}")
        try:
            v = int(value)
        except ValueError:
            raise SchemaError(
                f"attribute {name}: value {value.strip()!r} is not an integer"
            ) from None
        if not 0 <= v < count(name):
            raise SchemaError(f"attribute {name}={v} out of range 0..{count(name) - 1}")
        if name in out:
            raise SchemaError(f"attribute {name} is given twice ({name}={out[name]}, {name}={v})")
        out[name] = v
    return out


def complete(partial: Mapping[str, int], rng: random.Random) -> list[int]:
    """Fill the attributes missing from ``partial`` at random; returns 18 ids in CSV order."""
    for name in partial:
        index(name)
    return [partial[name] if name in partial else rng.randrange(c) for name, c in ATTRIBUTES]


def format_ids(ids: torch.Tensor | Sequence[int], names: Sequence[str] | None = None) -> str:
    """Format 18 ids as ``"name=value,..."`` (all of them, or only ``names``)."""
    values = validate(ids).tolist()
    wanted = NAMES if names is None else names
    return ",".join(f"{n}={values[index(n)]}" for n in wanted)
