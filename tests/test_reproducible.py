"""Reproducible means the same weights: what a run does beside training (training or loading
the judge, evaluating, drawing grids) never touches the randomness training draws from.

Every run here has dropout > 0 (the draws that come from torch's global generator) and an
in-training evaluation (the judge is trained from a cold cache, loaded from a warm one).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from cartoondiff.inference import checkpoint as ckpt
from cartoondiff.runs import folder as run_folder
from cartoondiff.runs.records import read_metrics
from cartoondiff.train import train
from tests.conftest import assert_same, compose_tiny, on_step

# 48 avatars in batches of 8: 6 steps an epoch, three epochs, an evaluation after each.
RUN = ("model.unet.dropout=0.1", "evaluate.every_epochs=1", "evaluate.n=4",
       "evaluate.classifier.epochs=1", "trainer.max_steps=18", "trainer.checkpoint_every=3")
# model=blog's settings (dropout 0.1, scale-shift, one-hot Tau at 2x, 4 heads) at tiny widths.
BLOG_TINY = ("recipe=blog", "model=blog", "attention=mha4", "tau.projections=2x",
             "model.unet.base_channels=16", "model.unet.channel_mults=[1,2]",
             "model.unet.attention_levels=[1]", "model.unet.num_res_blocks=1",
             "model.unet.context_dim=32", "model.unet.norm_groups=8", "tau.hidden_dim=64")


def _final_state(run: Path) -> dict:
    """The last checkpoint without its config (which names the run folder) and the seconds
    its steps took."""
    state = ckpt.load(run_folder.list_checkpoints(run / "checkpoints")[-1])
    return {k: v for k, v in state.items() if k not in ("config", "train_seconds")}


def _evaluated(run: Path) -> bool:
    return any("eval/faithfulness_mean" in row for row in read_metrics(run / "metrics.jsonl"))


def _cold_then_warm(tmp_path: Path, *overrides: str) -> tuple[Path, Path]:
    """The same run twice on one cache: the first renders the data and trains the judge,
    the second finds both cached."""
    cache = tmp_path / "cache"
    cold, warm = tmp_path / "cold", tmp_path / "warm"
    train(compose_tiny(cache, *RUN, *overrides), run_dir=cold)
    judges = list((cache / "classifiers").glob("*.pt"))
    assert len(judges) == 1, "the cold run trained and cached the judge"
    stamp = judges[0].stat().st_mtime_ns
    train(compose_tiny(cache, *RUN, *overrides), run_dir=warm)
    assert judges[0].stat().st_mtime_ns == stamp, "the warm run loaded it, not retrained it"
    assert _evaluated(cold) and _evaluated(warm)
    return cold, warm


@pytest.fixture(scope="module")
def cold_warm(tmp_path_factory) -> tuple[Path, Path]:
    return _cold_then_warm(tmp_path_factory.mktemp("default"))


def test_a_cold_and_a_warm_judge_cache_give_the_same_weights(cold_warm):
    cold, warm = cold_warm
    assert_same(_final_state(cold), _final_state(warm))
    assert_same(ckpt.load(cold / "model_ema.pt")["model"],
                ckpt.load(warm / "model_ema.pt")["model"])


def test_stop_and_resume_equals_the_uninterrupted_run(cold_warm, tmp_path, monkeypatch):
    """Stopped at step 7, after the first evaluation, and resumed: the resumed process loads
    the judge again for the evaluation after step 12, which the uninterrupted one did not.
    Weights, EMA, optimizer, schedule and the training's random streams equal, bit for bit."""
    reference = cold_warm[1]
    cache = reference.parent / "cache"
    on_step(monkeypatch, 7, lambda loss: (signal.raise_signal(signal.SIGINT), loss)[1])
    assert train(compose_tiny(cache, *RUN), run_dir=tmp_path)["step"] == 7
    monkeypatch.undo()
    train(compose_tiny(cache, *RUN, "resume=auto"), run_dir=tmp_path)
    assert_same(_final_state(reference), _final_state(tmp_path))
    assert_same(ckpt.load(reference / "model_ema.pt")["model"],
                ckpt.load(tmp_path / "model_ema.pt")["model"])


def test_the_blog_model_at_tiny_size_is_reproducible_too(tmp_path):
    cold, warm = _cold_then_warm(tmp_path, *BLOG_TINY)
    assert ckpt.load(cold / "model_ema.pt")["config"]["model"]["unet"]["dropout"] == 0.1
    assert_same(_final_state(cold), _final_state(warm))
