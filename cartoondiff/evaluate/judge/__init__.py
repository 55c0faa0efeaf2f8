"""The judge: an attribute classifier that turns "the hair looks green" into a number.

This package holds the judge (here), the perturbations it trains with and is measured under
(``perturb``), and the command that measures it (``python -m cartoondiff.evaluate.judge``).
Its held-out accuracy per attribute is the ceiling for every faithfulness score. It takes
uint8 images (B, 3, H, W), real or generated, and scales them itself, so the two can never be
scaled differently. Saved judges are plain dicts (``torch.load(weights_only=True)``), cached by
data identity and training settings. See docs/evaluation.md, "The judge".
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cartoondiff.attributes import COUNTS, NAMES, NUM_ATTRIBUTES
from cartoondiff.data.dataset import AvatarData
from cartoondiff.data.module import AvatarDataModule
from cartoondiff.evaluate.judge.perturb import augment
from cartoondiff.evaluate.metrics import attribute_accuracy
from cartoondiff.inference.checkpoint import read_safely, save_atomic
from cartoondiff.runs import interrupt
from cartoondiff.runs.devices import autocast_dtype, precision_name
from cartoondiff.runs.errors import UserError, first_line
from cartoondiff.runs.progress import progress_bar

log = logging.getLogger(__name__)

# part of the cache key: bump when the network or training changes (2: full-resolution stem
# convs and training perturbations, so a judge of version 1 is retrained, never reused)
CLASSIFIER_VERSION = 2
MIN_SIZE = 8
# the train_classifier arguments that change the weights (and so the cache key)
TRAIN_SETTINGS = ("epochs", "batch_size", "lr", "width", "feature_dim", "stem", "holdout",
                  "max_shift", "blur_p", "noise_p", "precision", "seed")


class ClassifierError(UserError, ValueError):
    """Unusable classifier input or file; the message names what is wrong."""


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


class AttributeClassifier(nn.Module):
    """A stem at full resolution, conv stages halving the image down to 4x4, one hidden
    layer, 18 linear heads.

    The stem is ``stem`` 3x3 convs (``width`` channels, BN, ReLU) at the image's own size:
    glasses and beards differ by a pixel or less at 32 px, and a judge that must read them
    wherever they are drawn (trained with shifts) needs to see that pixel before the first
    pooling (glasses at 16 epochs: 0.84 with 1 stem conv, 0.93 with 3; docs/evaluation.md).
    Then stage k (k = 0, 1, ...) is a 3x3 conv to ``width * 2**min(k, 3)`` channels, BN, ReLU
    and 2x2 max-pooling, repeated until the map is 4x4 (2 stages at 16 px, 3 at 32, 4 at 64).
    The 4x4 map is flattened (not averaged: where a thing is drawn tells eyes from brows) into a
    ``feature_dim`` ReLU layer: the features of the Fréchet distance.
    """

    def __init__(self, image_size: int, width: int = 32, feature_dim: int = 256,
                 stem: int = 0) -> None:
        super().__init__()
        if image_size < MIN_SIZE or image_size & (image_size - 1):
            raise ClassifierError(f"classifier image_size must be a power of two >= {MIN_SIZE}, "
                                  f"got {image_size}")
        if not isinstance(stem, int) or not 0 <= stem <= 8:
            raise ClassifierError(f"classifier stem must be an integer in [0, 8], got {stem!r}")
        self.image_size, self.width = image_size, width
        self.feature_dim, self.stem = feature_dim, stem
        layers: list[nn.Module] = []
        c_in = 3
        for _ in range(stem):
            layers += _conv_bn_relu(c_in, width)
            c_in = width
        size, k = image_size, 0
        while size > 4:
            c_out = width * 2 ** min(k, 3)
            layers += [*_conv_bn_relu(c_in, c_out), nn.MaxPool2d(2)]
            c_in, size, k = c_out, size // 2, k + 1
        self.trunk = nn.Sequential(*layers)
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(c_in * 16, feature_dim), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(feature_dim, n) for n in COUNTS)
        # Conv weights channels_last, as the UNet's: oneDNN then runs every conv on NHWC
        # activations, 1.33x faster training steps on a CPU (bench/judge_throughput.py); Flatten
        # still reads the map in (C, H, W) order, so the function is the same.
        self.to(memory_format=torch.channels_last)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, 3, H, W) -> penultimate features (B, feature_dim)."""
        if images.dtype != torch.uint8:
            raise ClassifierError(f"classifier expects uint8 images, got {images.dtype}")
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, self.image_size, self.image_size):
            raise ClassifierError(f"classifier expects images (B, 3, {self.image_size}, "
                                  f"{self.image_size}), got {tuple(images.shape)}")
        x = images.float() / 127.5 - 1.0  # [-1, 1], whatever made the pixels
        return self.hidden(self.trunk(x))  # (B, feature_dim)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """uint8 images (B, 3, H, W) -> 18 logit tensors, attribute a's of shape (B, COUNTS[a])."""
        h = self.features(images)
        return [head(h) for head in self.heads]

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """uint8 images (N, 3, H, W) on any device -> predicted ids (N, 18) long, on the CPU."""
        return self._batched(images, batch_size, lambda h: torch.stack(
            [head(h).argmax(-1) for head in self.heads], dim=-1))

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """uint8 images (N, 3, H, W) -> features (N, feature_dim) float32, on the CPU."""
        return self._batched(images, batch_size, lambda h: h)

    def _batched(self, images: torch.Tensor, batch_size: int, fn) -> torch.Tensor:
        was_training = self.training
        self.eval()  # batch norm uses its running statistics when judging
        device = next(self.parameters()).device
        try:
            out = [fn(self.features(images[i:i + batch_size].to(device))).cpu()
                   for i in range(0, len(images), batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(out)


@dataclass
class TrainedClassifier:
    """A classifier with what it knows about itself.

    net: the network (eval mode); accuracy: held-out accuracy per attribute name (the
    ceiling); heldout: indices (M,) of the rows of its training data it never trained on;
    data_key: identity of that data; settings: training settings; path: the file, if saved.
    """

    net: AttributeClassifier
    accuracy: dict[str, float]
    heldout: torch.Tensor
    data_key: str
    settings: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def attribute_loss(logits: list[torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """The judge's training loss: the mean of the 18 cross-entropies; logits as ``forward``
    returns them, ids (B, 18) long."""
    return sum(F.cross_entropy(lg, ids[:, a]) for a, lg in enumerate(logits)) / NUM_ATTRIBUTES


def train_classifier(
    images: torch.Tensor,
    ids: torch.Tensor,
    epochs: int = 16,
    batch_size: int = 64,
    lr: float = 3e-3,
    width: int = 32,
    feature_dim: int = 256,
    stem: int = 3,
    holdout: float = 0.1,
    max_shift: int = 2,
    blur_p: float = 0.5,
    noise_p: float = 0.3,
    precision: str = "auto",
    seed: int = 0,
    device: torch.device | str = "cpu",
    data_key: str = "",
    progress: bool = False,
) -> TrainedClassifier:
    """Train on a seeded (1 - holdout) share of (images, ids); measure on the rest.

    images: uint8 (N, 3, H, W) (a memory map is fine: batches are copied out);
    ids: long (N, 18). AdamW with a one-cycle learning rate; the loss is the mean of the 18
    cross-entropies. The global RNG is left as it was (the caller may be mid-training).
    max_shift, blur_p, noise_p: training perturbations (``perturb.augment``) of what a
    generated avatar does that a rendered one does not: drawn a pixel or two off, soft, noisy.
    With them the judge reads a shifted avatar as it reads an aligned one; it needs the stem
    and twice the epochs of an unperturbed judge to stay sharp (docs/evaluation.md, "How
    robust the judge is"). precision: ``trainer.precision``'s values; ``auto`` trains in bf16
    autocast where the device computes bf16 in hardware (1.5x faster on such a CPU, the same
    accuracies within two trainings' spread), and the judge records which it used.
    """
    if ids is None or len(ids) != len(images) or ids.shape[-1] != NUM_ATTRIBUTES:
        raise ClassifierError("classifier needs labeled data: ids (N, 18) matching the images "
                              "(set data.labeled=true or train it on source=synthetic)")
    # the arguments named in TRAIN_SETTINGS, as given
    settings = {**{k: v for k, v in locals().items() if k in TRAIN_SETTINGS},
                "version": CLASSIFIER_VERSION}
    if not 0 < holdout < 1:
        raise ClassifierError(f"classifier holdout must lie in (0, 1), got {holdout}")
    n, size = len(images), images.shape[-1]
    n_test = max(1, round(n * holdout))
    if n - n_test < 1:
        raise ClassifierError(f"classifier needs at least 2 labeled images, got {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))  # a seeded split
    train_idx, test_idx = perm[n_test:].sort().values, perm[:n_test].sort().values
    device = torch.device(device)
    amp = autocast_dtype(precision, device)
    settings["precision"] = precision_name(amp)
    ids = ids.long()
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        net = AttributeClassifier(size, width, feature_dim, stem).to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
        per_epoch = math.ceil(len(train_idx) / batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * per_epoch,
                                                    pct_start=0.2)
        g = torch.Generator().manual_seed(seed)
        net.train()
        bar = progress_bar(total=epochs * per_epoch, desc="classifier", enabled=progress)
        for _ in range(epochs):
            order = train_idx[torch.randperm(len(train_idx), generator=g)]
            for i in range(0, len(order), batch_size):
                interrupt.check()  # a preempted run must not wait for the whole training
                idx = order[i:i + batch_size]
                x = augment(images[idx], g, max_shift, blur_p, noise_p).to(device)  # uint8
                y = ids[idx].to(device)  # (B, 18)
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    loss = attribute_loss([lg.float() for lg in net(x)], y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
        bar.close()
    net.eval().requires_grad_(False)
    accuracy = attribute_accuracy(net.predict(images[test_idx]), ids[test_idx])
    settings["seconds"] = round(time.perf_counter() - start, 1)
    settings["n_train"], settings["n_heldout"] = len(train_idx), len(test_idx)
    return TrainedClassifier(net, accuracy, test_idx, data_key, settings)


# train_classifier's defaults for the settings that change the weights (read-only)
TRAIN_DEFAULTS = MappingProxyType({
    k: p.default for k, p in inspect.signature(train_classifier).parameters.items()
    if k in TRAIN_SETTINGS})


def save_classifier(clf: TrainedClassifier, path: Path | str) -> Path:
    """Write weights + metadata as plain tensors and primitives (safe to load)."""
    path = Path(path)
    state = {"state_dict": clf.net.state_dict(), "image_size": clf.net.image_size,
             "width": clf.net.width, "feature_dim": clf.net.feature_dim, "stem": clf.net.stem,
             "accuracy": clf.accuracy, "heldout": clf.heldout, "data_key": clf.data_key,
             "settings": clf.settings}
    save_atomic(state, path)  # a crash never leaves half a file under the real name
    clf.path = path
    return path


def load_classifier(path: Path | str, device: torch.device | str = "cpu") -> TrainedClassifier:
    """Load a file written by ``save_classifier`` (``weights_only=True``: it cannot run code).

    Whatever is wrong with the file (missing, truncated, a flipped bit, another kind of
    file, fields of the wrong type, weights of another shape) is one ``ClassifierError``
    naming it, never a raw unpickling, key, type or shape error.
    """
    path = Path(path)
    if not path.is_file():
        raise ClassifierError(f"classifier file {path} does not exist")
    try:
        clf = _from_state(read_safely(path, what="classifier file"), path)
    except Exception as err:  # any failure to interpret the file is the file's fault
        reason = first_line(err).replace(f"classifier file {path} ", "").replace(str(path), "it")
        raise ClassifierError(f"classifier file {path} is damaged or not a cartoondiff "
                              f"classifier ({reason}); replace or delete it") from err
    clf.net.to(device)
    return clf


def _from_state(state: dict[str, Any], path: Path) -> TrainedClassifier:
    """Rebuild a TrainedClassifier from a loaded dict, checking every field's type."""
    missing = {"state_dict", "image_size", "width", "feature_dim", "accuracy", "heldout",
               "data_key", "settings"} - set(state)
    if missing:
        raise ClassifierError(f"missing field(s) {sorted(missing)}")
    stem = state.get("stem", 0)  # judges of version 1 had no stem
    if not all(isinstance(v, int) for v in (state["image_size"], state["width"],
                                            state["feature_dim"], stem)):
        raise ClassifierError("image_size, width, feature_dim and stem must be integers")
    accuracy, heldout = state["accuracy"], state["heldout"]
    if not isinstance(accuracy, dict) or sorted(accuracy) != sorted(NAMES):
        raise ClassifierError("accuracy must map the 18 attribute names to numbers")
    if not isinstance(heldout, torch.Tensor) or heldout.dim() != 1 or heldout.is_floating_point():
        raise ClassifierError("heldout must be a 1-D integer tensor")
    if not isinstance(state["data_key"], str) or not isinstance(state["settings"], dict):
        raise ClassifierError("data_key must be a string and settings a dict")
    net = AttributeClassifier(state["image_size"], state["width"], state["feature_dim"], stem)
    net.load_state_dict(state["state_dict"])  # strict: names and shapes must all match
    net.eval().requires_grad_(False)
    return TrainedClassifier(net, {k: float(v) for k, v in accuracy.items()}, heldout.long(),
                             state["data_key"], dict(state["settings"]), path)


def data_identity(data: AvatarData) -> str:
    """A string that changes whenever the avatars (or their labels) change.

    The cache folder name already hashes source, files, size and crop; data built by hand
    (no cache) is identified by a hash of its arrays.
    """
    if data.cache_path is not None:
        return f"{Path(data.cache_path).name}-n{len(data)}"
    h = hashlib.sha256(data.images.contiguous().numpy().tobytes())
    if data.ids is not None:
        h.update(data.ids.long().contiguous().numpy().tobytes())
    return f"{data.source}-{data.images.shape[-1]}px-arrays-{h.hexdigest()[:16]}"


def load_or_train_classifier(
    data: AvatarDataModule | AvatarData,
    cache_dir: Path | str,
    device: torch.device | str = "cpu",
    progress: bool = True,
    **train_kwargs: Any,
) -> TrainedClassifier:
    """The classifier for ``data``: loaded from ``cache_dir/classifiers/`` or trained and saved.

    The file name holds the data identity and a hash of the training settings
    (``train_kwargs`` of ``train_classifier``), so other data or settings never reuse it.
    """
    if isinstance(data, AvatarDataModule):
        data = data.setup().data
    assert data is not None
    if data.ids is None:
        raise ClassifierError(f"the {data.source} data has no attribute labels; the classifier "
                              "needs labeled avatars (data.labeled=true, or source=synthetic)")
    key = data_identity(data)
    unknown = set(train_kwargs) - set(TRAIN_DEFAULTS)
    if unknown:
        raise ClassifierError(f"unknown classifier setting(s) {sorted(unknown)}; "
                              f"known: {sorted(TRAIN_DEFAULTS)}")
    settings = {**TRAIN_DEFAULTS, **train_kwargs, "version": CLASSIFIER_VERSION}
    # what "auto" means here names the file: a bf16 judge is never read as an fp32 one
    settings["precision"] = precision_name(autocast_dtype(settings["precision"],
                                                          torch.device(device)))
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    path = Path(cache_dir).expanduser() / "classifiers" / f"{key}-clf{digest}.pt"
    if path.is_file():
        # a cache: whatever is wrong with the file, training again replaces it
        try:
            clf = load_classifier(path, device)
            stale = _mismatch(clf, key, settings, data.images.shape[-1])
        except ClassifierError as err:
            clf, stale = None, f"damaged ({first_line(err.__cause__ or err)})"
        if not stale:
            return clf
        log.warning("cached classifier %s is %s; retraining it", path, stale)
    log.info("training the attribute classifier on %d %s images", len(data), data.source)
    kwargs = {k: v for k, v in settings.items() if k != "version"}
    clf = train_classifier(data.images, data.ids, device=device, data_key=key, progress=progress,
                           **kwargs)
    try:
        save_classifier(clf, path)
    except UserError as err:  # an unwritable cache: this evaluation still has its judge
        log.warning("%s; the judge is used without being cached", err)
    return clf


def _mismatch(clf: TrainedClassifier, key: str, settings: dict[str, Any], size: int) -> str:
    """Why a loaded cached classifier does not fit the request ("" if it does)."""
    if clf.data_key != key:
        return f"for other data ({clf.data_key}, not {key})"
    if clf.net.image_size != size:
        return f"made for {clf.net.image_size} px images, the data has {size} px"
    differ = sorted(k for k in settings if clf.settings.get(k) != settings[k])
    return f"for other settings ({', '.join(differ)})" if differ else ""
