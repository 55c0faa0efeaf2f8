"""Trust nothing read from disk (issue 15): a checkpoint's config is data, a resumed run is the
same run, a run folder has one writer, values are checked before any work, and a stop request
ends an evaluation within a step. Each fault is injected from outside, as in the fault suite.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cartoondiff import sample
from cartoondiff.attributes import SchemaError
from cartoondiff.evaluate import __main__ as evaluate_cli
from cartoondiff.evaluate import judge as C
from cartoondiff.inference import checkpoint as ckpt
from cartoondiff.inference import load_trained
from cartoondiff.runs import folder as run_folder
from cartoondiff.runs.errors import ArgumentError, ConfigError
from cartoondiff.runs.folder import RunFolderBusyError
from cartoondiff.runs.records import read_metrics
from cartoondiff.train import train
from tests.conftest import REPO

# --- 1. a checkpoint's stored config never runs code -------------------------------------


def _plant(section: str, node: dict):  # noqa: ANN202
    """Edit the stored config: merge ``node`` into the node at ``section`` (dotted)."""
    def edit(config: dict) -> None:
        for key in section.split("."):
            config = config[key]
        config.update(node)
    return edit


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "marker"


def _hostile_nodes(marker: Path) -> list[tuple[str, str, dict]]:
    """(section, key the error must name, node): callables that would write ``marker``."""
    write = f"open({str(marker)!r}, 'w').write('ran')"
    return [
        ("model", "model._target_", {"_target_": "builtins.exec", "source": write}),
        ("model.unet", "model.unet._target_",
         {"_target_": "os.system", "command": f"touch {marker}"}),
        ("tau", "tau._target_",
         {"_target_": "builtins.eval", "_args_": [write]}),
        ("noise_schedule", "noise_schedule._target_",
         {"_target_": "pathlib.Path.write_text", "_partial_": True, "self": str(marker),
          "data": "ran"}),
        ("model", "model._partial_",  # an allowed class, called lazily: refused too
         {"_target_": "cartoondiff.models.Denoiser", "_partial_": True}),
        ("diffusion", "diffusion._args_",
         {"_target_": "cartoondiff.diffusion.Diffusion", "_args_": [[0.1]]}),
        ("data", "data._target_", {"_target_": "shutil.rmtree", "path": str(marker.parent)}),
    ]


def test_a_planted_config_never_runs_code(tiny_checkpoint, tmp_path, marker):
    state = ckpt.load(tiny_checkpoint)
    for section, key, node in _hostile_nodes(marker):
        hostile = copy.deepcopy(state)
        _plant(section, node)(hostile["config"])
        path = tmp_path / f"{section}.pt"
        torch.save(hostile, path)
        attempts = [lambda p=path: evaluate_cli.main([f"checkpoint={p}", "n=2", "steps=4",
                                                      f"out={tmp_path / 'x.json'}"])]
        if section != "data":  # the data section is read by the evaluation only
            attempts += [lambda p=path: load_trained(p),
                         lambda p=path: sample.main([f"checkpoint={p}", "n=1", "steps=4",
                                                     f"out={tmp_path / 'x.png'}"])]
        for attempt in attempts:
            with pytest.raises(ckpt.CheckpointError) as info:
                attempt()
            message = str(info.value)
            assert str(path) in message and key in message and "\n" not in message, message
        assert not marker.exists(), f"{section}: a planted _target_ ran"
        assert tmp_path.is_dir(), "rmtree never ran"


# --- 2. a resumed run is the same run --------------------------------------------------------


@pytest.fixture
def stopped_run(make_cfg, tmp_path) -> Path:
    """A two-step run with a checkpoint at step 2, to be resumed."""
    run = tmp_path / "run"
    train(make_cfg("trainer.max_steps=2", "trainer.checkpoint_every=2"), run_dir=run)
    return run


@pytest.mark.parametrize("override, change", [
    ("diffusion.prediction=eps", "diffusion.prediction: 'v' -> 'eps'"),
    ("noise_schedule.T=50", "noise_schedule.T: 40 -> 50"),
    ("data.normalize=unit", "data.normalize: 'pm1' -> 'unit'"),
    ("attention=single", "model.unet.num_heads: 4 -> 1"),
    ("seed=1", "seed: 0 -> 1"),
    ("data.batch_size=4", "data.batch_size: 8 -> 4"),
    ("optim.optimizer.lr=0.001", "optim.optimizer.lr: 0.002 -> 0.001"),
])
def test_resume_refuses_a_different_run(make_cfg, stopped_run, override, change):
    saved = (stopped_run / "config.yaml").read_bytes()
    with pytest.raises(ConfigError, match=r"^resume: .* is from a run with other settings") as e:
        train(make_cfg("trainer.max_steps=4", "resume=auto", override), run_dir=stopped_run)
    assert change in str(e.value) and "resume_changes=[" in str(e.value)
    assert (stopped_run / "config.yaml").read_bytes() == saved, "nothing was overwritten"


def test_a_named_change_resumes_and_is_recorded(make_cfg, stopped_run, tmp_path):
    metrics = train(make_cfg("trainer.max_steps=4", "resume=auto", "optim.optimizer.lr=0.001",
                             "resume_changes=[optim.optimizer.lr]"), run_dir=stopped_run)
    assert metrics["step"] == 4
    rows = [r for r in read_metrics(stopped_run / "metrics.jsonl") if "resume/changes" in r]
    assert rows == [{"step": 2, "resume/changes": "optim.optimizer.lr: 0.002 -> 0.001"}]
    # ... and takes effect: after the resume the LR is the one a run at the new rate has
    train(make_cfg("trainer.max_steps=4", "optim.optimizer.lr=0.001"), run_dir=tmp_path / "new")

    def lr(run: Path) -> dict[int, float]:
        return {r["step"]: r["train/lr"] for r in read_metrics(run / "metrics.jsonl")
                if "train/lr" in r}

    resumed, fresh = lr(stopped_run), lr(tmp_path / "new")
    assert resumed[2] == pytest.approx(2 * fresh[2])  # before: the old rate
    assert [resumed[s] for s in (3, 4)] == pytest.approx([fresh[s] for s in (3, 4)])


def test_a_run_folder_is_never_overwritten_or_grafted(make_cfg, stopped_run, tmp_path):
    """A new run refuses a folder with an earlier run's record (checkpoints gone or not); a
    checkpoint of another folder is not resumed into a folder holding a run, only branched."""
    shutil.rmtree(stopped_run / "checkpoints")
    def record() -> dict[Path, bytes]:  # all but the lock, which says who held it last
        return {p: p.read_bytes() for p in stopped_run.rglob("*")
                if p.is_file() and p.name != ".lock"}

    before = record()
    with pytest.raises(ConfigError, match=r"^resume=null but .* holds an earlier run \(config"):
        train(make_cfg("trainer.max_steps=2"), run_dir=stopped_run)
    other = tmp_path / "other"
    train(make_cfg("trainer.max_steps=2", "trainer.checkpoint_every=2"), run_dir=other)
    (theirs,) = run_folder.list_checkpoints(other / "checkpoints")
    with pytest.raises(ConfigError, match=r"another folder's checkpoint .* holds a run"):
        train(make_cfg("trainer.max_steps=3", f"resume={theirs}"), run_dir=stopped_run)
    assert record() == before
    assert train(make_cfg("trainer.max_steps=3", f"resume={theirs}"),
                 run_dir=tmp_path / "branch")["step"] == 3


def test_longer_training_and_where_it_runs_are_free_to_change(make_cfg, stopped_run):
    metrics = train(make_cfg("trainer.max_steps=3", "resume=auto", "trainer.log_every=5",
                             "sampler.steps=3", "evaluate.n=8"), run_dir=stopped_run)
    assert metrics["step"] == 3


def test_a_weights_only_export_is_not_a_training_checkpoint(make_cfg, stopped_run, tmp_path):
    with pytest.raises(ckpt.CheckpointError, match=r"is not a training checkpoint .*'ema'"):
        train(make_cfg("trainer.max_steps=4", f"resume={stopped_run / 'model_ema.pt'}"),
              run_dir=tmp_path / "other")


# --- 3. one folder, one writer ---------------------------------------------------------------

HOLD = """
import sys, time
from pathlib import Path
from cartoondiff.runs.folder import RunFolderLock
lock = RunFolderLock(Path(sys.argv[1]))
lock.acquire()
lock.record_holder()
print("holding", flush=True)
time.sleep(120)
"""


def test_a_second_writer_is_refused_and_a_dead_one_leaves_no_lock(make_cfg, tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(RunFolderBusyError, match=rf"pid {holder.pid} .*hydra.run.dir="):
            train(make_cfg(), run_dir=run)
        assert not (run / "checkpoints").exists() and not (run / "metrics.jsonl").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: the kernel drops its lock
        holder.wait()
    assert train(make_cfg(), run_dir=run)["step"] == 2


# --- 6. values that pass and mean nothing, caught before any work ----------------------------


def test_duplicate_attributes_are_refused(tiny_checkpoint, tmp_path):
    with pytest.raises(SchemaError, match="hair_color is given twice"):
        sample.main([f"checkpoint={tiny_checkpoint}", "attributes=hair_color=1,hair_color=2",
                     f"out={tmp_path / 'x.png'}"])


def test_attributes_for_an_unconditional_model_are_refused(make_cfg, tmp_path):
    train(make_cfg("attention=none"), run_dir=tmp_path / "vanilla")
    with pytest.raises(ArgumentError, match="unconditional"):
        sample.main([f"checkpoint={tmp_path / 'vanilla' / 'model_ema.pt'}",
                     "attributes=hair_color=1", "steps=4", f"out={tmp_path / 'x.png'}"])
    assert not (tmp_path / "x.png").exists()


# --- 7. a stop request ends an evaluation within a step --------------------------------------


def _signal_on_call(monkeypatch, owner, name: str, n: int, counter: list[int]) -> None:
    """SIGTERM to this process at the n-th call of ``owner.name``; count every call."""
    real = getattr(owner, name)

    def wrapped(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        counter[0] += 1
        if counter[0] == n:
            signal.raise_signal(signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)


@pytest.mark.parametrize("where", ["classifier training", "sampling"])
def test_sigterm_during_an_evaluation_stops_within_a_step(make_cfg, tmp_path, monkeypatch,
                                                          where):
    calls = [0]
    if where == "classifier training":  # 50 epochs of 6 batches: 300 calls when not stopped
        _signal_on_call(monkeypatch, C.AttributeClassifier, "forward", 3, calls)
    else:  # the evaluation's sampler: 40 model calls per generate when not stopped
        from cartoondiff.diffusion import samplers
        _signal_on_call(monkeypatch, samplers, "guided_eps", 3, calls)
    run = tmp_path / "run"
    common = ("data.n=16", "evaluate.every_epochs=1", "evaluate.n=8",
              "evaluate.classifier.epochs=50", "trainer.sample_every_epochs=0",
              f"evaluate.cache_dir={tmp_path / 'cache'}", "sampler.steps=20")
    metrics = train(make_cfg(*common, "trainer.max_steps=4"), run_dir=run)
    assert metrics["stopped_by_signal"] == signal.SIGTERM and metrics["step"] == 2
    assert calls[0] <= 4, f"{where} went on for {calls[0]} calls after the signal"
    assert ckpt.load(run_folder.list_checkpoints(run / "checkpoints")[-1])["step"] == 2
    monkeypatch.undo()
    resumed = train(make_cfg(*common, "trainer.max_steps=4", "resume=auto"), run_dir=run)
    assert resumed["step"] == 4 and "stopped_by_signal" not in resumed
    assert re.search(r"eval/faithfulness_mean", (run / "metrics.jsonl").read_text())
