"""Shared test fixtures: the composed config, shrunk to run in seconds on a CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
# Real Cartoon Set PNGs (no CSVs) for the tests of the real-image path: any folder of them,
# named by CARTOONDIFF_TEST_SAMPLE, else the workspace's ../shared/data/cartoonset_sample (CI
# has it; .ci/run refuses to run without it). A clone without either skips those tests.
SAMPLE_ENV = "CARTOONDIFF_TEST_SAMPLE"
DEFAULT_SAMPLE = REPO.parent / "shared" / "data" / "cartoonset_sample"


def real_sample_dir() -> Path | None:
    """The folder of real Cartoon Set PNGs, or None when there is none."""
    folder = Path(os.environ.get(SAMPLE_ENV) or DEFAULT_SAMPLE)
    return folder if folder.is_dir() and any(folder.glob("*.png")) else None


@pytest.fixture
def real_sample() -> Path:
    """Real Cartoon Set PNGs; the test is skipped, naming the folder, when there are none."""
    found = real_sample_dir()
    if found is None:
        pytest.skip(f"needs real Cartoon Set PNGs: none in "
                    f"{os.environ.get(SAMPLE_ENV) or DEFAULT_SAMPLE} (set {SAMPLE_ENV}=FOLDER)")
    return found


# Tiny settings: every run in the tests uses these unless it overrides them. The smoke preset
# (conf/debug/smoke.yaml: the tiny model at 16x16, 48 avatars, T=40, 4 sampling steps, 2
# training steps on the CPU, no evaluation), the one users run, without W&B (seconds a run:
# the tests that check W&B ask for logger.mode=offline); values typed after it on a command
# line, or given to compose, still win.
TINY = ["debug=smoke", "logger.mode=disabled"]

# One thread: the tests use tiny tensors, where a second OpenMP thread only adds waiting.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data cache for the whole session, so the tiny synthetic set is rendered once."""
    return tmp_path_factory.mktemp("cache")


def compose_tiny(cache_dir: Path, *overrides: str) -> DictConfig:
    """conf/config.yaml with TINY settings, the given data cache and ``overrides``."""
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=[*TINY, f"data.cache_dir={cache_dir}", *overrides])


def checkpoint_steps(run_dir: Path) -> list[int]:
    """Steps of the checkpoints a run directory holds, oldest first."""
    from cartoondiff.inference import checkpoint as ckpt
    from cartoondiff.runs import folder as run_folder

    return [int(ckpt.load(p)["step"]) for p in run_folder.list_checkpoints(run_dir / "checkpoints")]


def on_step(monkeypatch: pytest.MonkeyPatch, n: int, action) -> None:  # noqa: ANN001
    """Call ``action(loss)`` inside the n-th step's loss; it returns the loss to use."""
    from cartoondiff.diffusion import Diffusion

    real = Diffusion.loss
    calls = 0

    def loss(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        nonlocal calls
        calls += 1
        value = real(self, *args, **kwargs)
        return action(value) if calls == n else value

    monkeypatch.setattr(Diffusion, "loss", loss)


def assert_same(a: object, b: object, where: str = "") -> None:
    """Exact equality of two nested checkpoint values (tensors bit for bit)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """``model_ema.pt`` of a two-step TINY run, shared by the sampling and evaluation tests."""
    from cartoondiff.train import train

    run_dir = tmp_path_factory.mktemp("tiny_run")
    train(compose_tiny(cache_dir), run_dir=run_dir)
    return run_dir / "model_ema.pt"


@pytest.fixture
def make_cfg(cache_dir: Path):  # noqa: ANN201
    """``make_cfg(*overrides)`` composes conf/config.yaml with TINY settings plus overrides."""

    def make(*overrides: str) -> DictConfig:
        return compose_tiny(cache_dir, *overrides)

    return make


PRESET_SIZES = {"tiny": 16, "small": 32, "blog": 64}


def compose_cfg(*overrides: str) -> DictConfig:
    """conf/config.yaml composed with ``overrides`` (no TINY settings)."""
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _override_value(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return "null" if value is None else str(value)


def preset_config(preset: str = "tiny", attention: str | None = None,
                  tau: dict | None = None, **unet: object) -> DictConfig:
    """conf/config.yaml with a model preset (conf/model/PRESET.yaml, the one place presets
    live) at its image size, with optional attention option, Tau and UNet arguments."""
    # the blog's design (its Tau), whose options these presets are tested with
    overrides = [f"model={preset}", f"data.image_size={PRESET_SIZES[preset]}", "recipe=blog"]
    if preset == "blog":  # the blog's final model: one-hot, mha4, Tau 2x
        overrides.append("tau.projections=2x")
    if attention is not None:
        overrides.append(f"attention={attention}")
    overrides += [f"tau.{k}={v}" for k, v in (tau or {}).items()]
    overrides += [f"model.unet.{k}={_override_value(v)}" for k, v in unet.items()]
    return compose_cfg(*overrides)


def preset_cfg(preset: str = "tiny", attention: str | None = None, tau: dict | None = None,
               **unet: object) -> DictConfig:
    """The model node of ``preset_config``."""
    return preset_config(preset, attention, tau, **unet).model


def build_denoiser(preset: str = "tiny", attention: str | None = None, tau: dict | None = None,
                   **unet: object) -> torch.nn.Module:
    """A fresh Denoiser from a preset; see ``preset_config``."""
    from cartoondiff.config import build_model

    return build_model(preset_config(preset, attention, tau, **unet))


def unet_args(preset: str = "tiny") -> dict:
    """The UNet keyword arguments of a preset."""
    from omegaconf import OmegaConf

    args = OmegaConf.to_container(preset_cfg(preset).unet, resolve=True)
    args.pop("_target_")
    return args
