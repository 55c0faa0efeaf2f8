"""The attribute classifier reads synthetic avatars; faithfulness spans chance..ceiling."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import pytest
import torch

from cartoondiff.attributes import COUNTS, NAMES
from cartoondiff.data.dataset import AvatarData, load_avatar_data
from cartoondiff.evaluate import judge as C
from cartoondiff.evaluate.evaluator import EvaluationError, evaluate_generator, reference_set
from cartoondiff.runs.devices import autocast_dtype, precision_name
from tests.faults import flip_a_tensor_bit

# 16 px keeps the test cheap; the 32 px numbers of the default settings are in
# docs/evaluation.md. Accuracy is limited by optimizer steps, hence the small batch. No stem
# and no perturbations: at 16 px a 2 px shift is an eighth of the avatar, and the stem would
# triple the time (the default judge's recipe is checked at 32 px by bench/judge_recipes.py).
SIZE, N, EPOCHS, BATCH = 16, 3000, 10, 32
PLAIN = {"stem": 0, "max_shift": 0, "blur_p": 0.0, "noise_p": 0.0}


@pytest.fixture(scope="module")
def data(cache_dir) -> AvatarData:
    return load_avatar_data("synthetic", image_size=SIZE, crop=360, n=N, seed=0,
                            cache_dir=cache_dir, progress=False)


@pytest.fixture(scope="module")
def trained(data) -> tuple[C.TrainedClassifier, float]:
    start = time.perf_counter()
    clf = C.train_classifier(data.images, data.ids, epochs=EPOCHS, batch_size=BATCH,
                             holdout=0.1, seed=0, data_key=C.data_identity(data), **PLAIN)
    return clf, time.perf_counter() - start


def test_classifier_reads_the_visible_attributes(trained):
    clf, seconds = trained
    acc = clf.accuracy
    print(f"\nclassifier {SIZE}px, {N} images, {EPOCHS} epochs: {seconds:.1f} s\n"
          + " ".join(f"{k}={v:.2f}" for k, v in sorted(acc.items(), key=lambda kv: -kv[1])))
    # colours and large shapes are plain even at 16 px (chance: 0.10, 0.09, 0.14, 0.14)
    assert acc["hair_color"] > 0.95
    for name in ("face_color", "glasses_color", "face_shape"):
        assert acc[name] > 0.75, (name, acc[name])
    for name in ("hair", "facial_hair", "glasses"):  # chance 0.009, 0.067, 0.083
        assert acc[name] > 0.3, (name, acc[name])
    # and every head learned something beyond guessing
    chance = {n: 1 / c for n, c in zip(NAMES, COUNTS)}
    assert sum(acc.values()) / 18 > sum(chance.values()) / 18 + 0.25
    assert len(clf.heldout) == N // 10 and clf.settings["n_train"] == N - N // 10


def test_perfect_generator_scores_the_ceiling(trained, data):
    clf, _ = trained
    ref = reference_set(data, clf, n=len(clf.heldout), seed=0)
    lookup = {tuple(i.tolist()): img for i, img in zip(ref.ids, ref.images)}

    def perfect(ids: torch.Tensor, seed: int) -> torch.Tensor:  # noqa: ARG001
        return torch.stack([lookup[tuple(i.tolist())] for i in ids])

    out = evaluate_generator(perfect, clf, ref, seed=0, diversity_groups=8, diversity_per_group=3)
    # the very images that defined the ceiling: equal to it, attribute by attribute
    for name in NAMES:
        assert out[name] == pytest.approx(clf.accuracy[name]), name
    assert out["faithfulness_relative"] == pytest.approx(1.0)
    assert out["frechet_classifier"] < 1e-6
    assert out["diversity_within"] == 0.0 and out["diversity_across"] > 0.1
    assert out["coverage"] == pytest.approx(out["coverage_real"])


def test_generator_ignoring_the_condition_scores_chance(trained, data):
    clf, _ = trained
    ref = reference_set(data, clf, n=len(clf.heldout), seed=0)

    def ignoring(ids: torch.Tensor, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return ref.images[torch.randint(len(ref.images), (len(ids),), generator=g)]

    out = evaluate_generator(ignoring, clf, ref, seed=0, diversity_groups=8,
                             diversity_per_group=4)
    n = len(ref.ids)
    for name, count in zip(NAMES, COUNTS):
        p = 1 / count
        assert abs(out[name] - p) < 4 * (p * (1 - p) / n) ** 0.5 + 0.01, (name, out[name], p)
    chance_mean = sum(1 / c for c in COUNTS) / 18
    assert out["faithfulness_mean"] == pytest.approx(chance_mean, abs=0.03)
    # real avatars, just for the wrong conditions: realistic, and as diverse per condition
    # as across conditions
    assert out["frechet_classifier"] < 0.2 * reference_frechet_scale(ref)
    assert out["diversity_within"] == pytest.approx(out["diversity_across"], rel=0.15)


def reference_frechet_scale(ref) -> float:
    """Fréchet distance between the real features and a copy shifted by one std per dim."""
    from cartoondiff.evaluate import metrics as M

    f = ref.features
    return M.frechet_from_features(f, f + f.std(0))


def test_save_load_round_trip(trained, data, tmp_path):
    clf, _ = trained
    path = C.save_classifier(clf, tmp_path / "clf.pt")
    back = C.load_classifier(path)
    assert back.accuracy == clf.accuracy and torch.equal(back.heldout, clf.heldout)
    x = data.images[:16]
    assert torch.equal(back.net.predict(x), clf.net.predict(x))
    assert torch.allclose(back.net.embed(x), clf.net.embed(x))


def test_the_channels_last_judge_computes_what_the_contiguous_one_does(trained, data):
    """The conv weights' layout is speed only (bench/judge_throughput.py): the same weights in
    NCHW give the same logits, and a saved judge loads into either layout."""
    net = trained[0].net
    assert net.trunk[0].weight.is_contiguous(memory_format=torch.channels_last)
    nchw = C.AttributeClassifier(net.image_size, net.width, net.feature_dim, net.stem)
    nchw.to(memory_format=torch.contiguous_format).load_state_dict(net.state_dict())
    nchw.eval()
    x = data.images[:16]
    with torch.no_grad():
        for a, b in zip(net(x), nchw(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_load_or_train_is_keyed_by_data_and_settings(cache_dir, tmp_path, monkeypatch):
    small = load_avatar_data("synthetic", image_size=SIZE, crop=360, n=40, seed=5,
                             cache_dir=cache_dir, progress=False)
    first = C.load_or_train_classifier(small, tmp_path, epochs=1, progress=False)
    assert first.path is not None and first.path.parent == tmp_path / "classifiers"

    def no_training(*args, **kwargs):
        raise AssertionError("should have loaded the saved classifier")

    monkeypatch.setattr(C, "train_classifier", no_training)
    again = C.load_or_train_classifier(small, tmp_path, epochs=1, progress=False)
    assert again.path == first.path and again.accuracy == first.accuracy
    monkeypatch.undo()
    other_data = load_avatar_data("synthetic", image_size=SIZE, crop=360, n=40, seed=6,
                                  cache_dir=cache_dir, progress=False)
    assert C.load_or_train_classifier(other_data, tmp_path, epochs=1).path != first.path
    assert C.load_or_train_classifier(small, tmp_path, epochs=2).path != first.path


def test_the_judge_records_and_is_filed_by_the_precision_it_trained_in(cache_dir, tmp_path):
    """precision=auto (the default) is bf16 where this CPU computes it in hardware: the judge
    records what it used, and a bf16 judge is never loaded as an fp32 one or back."""
    small = load_avatar_data("synthetic", image_size=SIZE, crop=360, n=40, seed=5,
                             cache_dir=cache_dir, progress=False)
    here = precision_name(autocast_dtype("auto", torch.device("cpu")))
    auto = C.load_or_train_classifier(small, tmp_path, epochs=1, progress=False)
    fp32 = C.load_or_train_classifier(small, tmp_path, epochs=1, precision="fp32",
                                      progress=False)
    bf16 = C.load_or_train_classifier(small, tmp_path, epochs=1, precision="bf16",
                                      progress=False)
    assert (auto.settings["precision"], fp32.settings["precision"],
            bf16.settings["precision"]) == (here, "fp32", "bf16")
    assert fp32.path != bf16.path
    assert auto.path == (bf16.path if here == "bf16" else fp32.path)
    assert C.load_classifier(auto.path).settings["precision"] == here


def test_bad_inputs_are_refused(trained, data):
    clf, _ = trained
    with pytest.raises(C.ClassifierError, match="uint8"):
        clf.net.predict(data.images[:2].float())
    with pytest.raises(C.ClassifierError, match=r"\(B, 3, 16, 16\)"):
        clf.net.predict(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(C.ClassifierError, match="power of two"):
        C.AttributeClassifier(24)
    unlabeled = AvatarData(data.images[:10], None, "cartoonset")
    with pytest.raises(C.ClassifierError, match="labels"):
        C.load_or_train_classifier(unlabeled, "/nonexistent")
    with pytest.raises(C.ClassifierError, match="unknown classifier setting"):
        C.load_or_train_classifier(data, "/nonexistent", epoch=3)
    with pytest.raises(C.ClassifierError, match="does not exist"):
        C.load_classifier("/nonexistent/clf.pt")
    with pytest.raises(EvaluationError, match="conditions"):
        reference_set(data, clf, n=8, conditions="bogus")


# ----------------------------------------------------------------------------- damaged files


class _RunsCode:
    """Pickles to a call of ``exec``: a plain pickle.load would run it."""

    def __reduce__(self):
        return exec, ("open('/tmp/cartoondiff-issue15-classifier-pwned', 'w').close()",)


def _resave(edit):
    """Load the saved dict, change it with ``edit``, save it back (a file of another kind)."""
    def apply(path):
        state = torch.load(path, weights_only=True)
        torch.save(edit(state), path)
    return apply


DAMAGED_FILES = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(bytes(range(256)) * 8),
    "text": lambda p: p.write_text("not a classifier\n"),
    "one flipped bit": flip_a_tensor_bit,
    "a bare tensor": lambda p: torch.save(torch.zeros(3), p),
    "a list": lambda p: torch.save([1, 2], p),
    "field missing": _resave(lambda s: {k: v for k, v in s.items() if k != "heldout"}),
    "field of the wrong type": _resave(lambda s: {**s, "image_size": "16"}),
    "accuracy not a dict": _resave(lambda s: {**s, "accuracy": [0.5] * 18}),
    "weights of another shape": _resave(lambda s: {**s, "width": 8}),
    "weights missing": _resave(lambda s: {**s, "state_dict": {}}),
    "code in the pickle": lambda p: torch.save({"state_dict": _RunsCode()}, p),
}


@pytest.fixture(scope="module")
def saved_classifier(cache_dir, tmp_path_factory):
    """(data, classifier file) of a one-epoch classifier on 40 synthetic avatars."""
    small = load_avatar_data("synthetic", image_size=SIZE, crop=360, n=40, seed=5,
                             cache_dir=cache_dir, progress=False)
    clf = C.load_or_train_classifier(small, tmp_path_factory.mktemp("clf"), epochs=1,
                                     progress=False)
    return small, clf.path


@pytest.mark.parametrize("damage", DAMAGED_FILES)
def test_damaged_classifier_file_is_one_error_naming_it(saved_classifier, tmp_path, damage):
    path = tmp_path / "clf.pt"
    shutil.copy(saved_classifier[1], path)
    DAMAGED_FILES[damage](path)
    with pytest.raises(C.ClassifierError) as err:
        C.load_classifier(path)
    msg = str(err.value)
    assert f"classifier file {path} is damaged" in msg and "\n" not in msg
    assert "checkpoint" not in msg  # a judge file is named as what it is
    assert not Path("/tmp/cartoondiff-issue15-classifier-pwned").exists()


@pytest.mark.parametrize("damage", ["truncated", "one flipped bit", "weights of another shape",
                                    "code in the pickle"])
def test_damaged_cached_classifier_is_retrained(saved_classifier, tmp_path, caplog, monkeypatch,
                                                damage):
    data, original = saved_classifier
    cache = tmp_path / "cache"
    path = cache / "classifiers" / original.name
    path.parent.mkdir(parents=True)
    shutil.copy(original, path)
    DAMAGED_FILES[damage](path)
    with caplog.at_level(logging.WARNING):
        clf = C.load_or_train_classifier(data, cache, epochs=1, progress=False)
    assert f"cached classifier {path} is damaged" in caplog.text and "retraining" in caplog.text
    assert clf.path == path and C.load_classifier(path).accuracy == clf.accuracy  # replaced

    def no_training(*args, **kwargs):
        raise AssertionError("the retrained file should have been loaded")

    monkeypatch.setattr(C, "train_classifier", no_training)
    assert C.load_or_train_classifier(data, cache, epochs=1).accuracy == clf.accuracy


def test_cached_classifier_for_other_settings_is_retrained(saved_classifier, tmp_path, caplog):
    data, original = saved_classifier
    cache = tmp_path / "cache"
    # the epochs=1 file copied to the name the epochs=2 classifier would have
    wanted = C.load_or_train_classifier(data, tmp_path / "probe", epochs=2, progress=False).path
    path = cache / "classifiers" / wanted.name
    path.parent.mkdir(parents=True)
    shutil.copy(original, path)
    with caplog.at_level(logging.WARNING):
        clf = C.load_or_train_classifier(data, cache, epochs=2, progress=False)
    assert "for other settings (epochs)" in caplog.text
    assert clf.settings["epochs"] == 2 and C.load_classifier(path).settings["epochs"] == 2


def test_a_judge_of_version_1_loads_but_is_never_reused(saved_classifier, tmp_path, caplog):
    """Version 1 (no stem, no training perturbations) read shifted avatars as wrong: a cached
    file of it under today's name is retrained; given by path, it still loads as it was."""
    data, original = saved_classifier
    old = C.load_classifier(original)
    v1 = C.AttributeClassifier(SIZE, old.net.width, old.net.feature_dim)  # stem=0
    state = torch.load(original, weights_only=True)
    state = {k: v for k, v in state.items() if k != "stem"}  # version 1 files had no stem
    state["state_dict"] = v1.state_dict()
    state["settings"] = {**state["settings"], "version": 1, "max_shift": 0, "blur_p": 0.0,
                         "noise_p": 0.0}
    state["settings"].pop("stem")
    cache = tmp_path / "cache"
    path = cache / "classifiers" / original.name
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    assert C.load_classifier(path).net.stem == 0  # an old file given by path still loads
    with caplog.at_level(logging.WARNING):
        clf = C.load_or_train_classifier(data, cache, epochs=1, progress=False)
    assert "for other settings" in caplog.text and "version" in caplog.text
    assert clf.net.stem == C.TRAIN_DEFAULTS["stem"] > 0
    assert C.load_classifier(path).settings["version"] == C.CLASSIFIER_VERSION  # replaced
