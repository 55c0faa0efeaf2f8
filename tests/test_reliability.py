"""Damaged and hostile checkpoints, failed writes, NaN losses, bad sample options and no
network: each test injects one fault and checks what was lost and what the user was told.
docs/reliability.md tabulates them (the crash tests are in test_crash_resume.py).
"""

from __future__ import annotations

import ast
import errno
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from cartoondiff import sample
from cartoondiff.inference import checkpoint as ckpt
from cartoondiff.inference import load_trained
from cartoondiff.runs import folder as run_folder
from cartoondiff.runs import tracking
from cartoondiff.runs.errors import ConfigError, UserError
from cartoondiff.runs.records import read_metrics
from cartoondiff.train import resume, train
from cartoondiff.train.loop import NonFiniteLossError
from tests.conftest import REPO, checkpoint_steps, compose_tiny, on_step
from tests.faults import flip_a_tensor_bit


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir) -> Path:
    """A finished 3-step run with checkpoints at steps 1, 2 and 3."""
    run_dir = tmp_path_factory.mktemp("trained")
    cfg = compose_tiny(cache_dir, "trainer.max_steps=3", "trainer.checkpoint_every=1",
                   "trainer.keep_checkpoints=0")
    train(cfg, run_dir=run_dir)
    return run_dir


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


DAMAGE = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(bytes(range(256)) * 8),
    "text": lambda p: p.write_text("not a checkpoint\n"),
    "one flipped bit": flip_a_tensor_bit,
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_checkpoint_is_a_clear_error_naming_the_file(run_copy, damage):
    path = run_folder.list_checkpoints(run_copy / "checkpoints")[-1]
    DAMAGE[damage](path)
    if damage == "one flipped bit":  # why load() checks CRCs: torch.load would not notice
        torch.load(path, weights_only=True)
    with pytest.raises(ckpt.CheckpointError, match=r"is (truncated or )?corrupt") as info:
        ckpt.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


class _RunsCode:
    """Pickles to a call of ``exec``: loading it with plain pickle runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _hostile(path: Path, marker: Path) -> Path:
    """Make ``path`` a checkpoint that looks right but whose pickle creates ``marker``."""
    state = ckpt.load(path)
    state["payload"] = _RunsCode(marker)
    torch.save(state, path)
    return path


def test_checkpoint_that_would_run_code_is_refused_everywhere(run_copy, make_cfg, tmp_path):
    clean = run_folder.list_checkpoints(run_copy / "checkpoints")[-1]
    proof, marker = tmp_path / "proof", tmp_path / "marker"
    trial = _hostile(Path(shutil.copy(clean, tmp_path / "trial.pt")), proof)
    torch.load(trial, weights_only=False)  # the payload is real: an unsafe load runs it
    assert proof.exists()
    path = _hostile(clean, marker)

    with pytest.raises(ckpt.CheckpointError, match="refusing to load .*could run code"):
        ckpt.load(path)
    with pytest.raises(ckpt.CheckpointError, match="refusing"):
        load_trained(path)
    with pytest.raises(ckpt.CheckpointError, match="refusing"):
        sample.main([f"checkpoint={path}", "n=1", f"out={tmp_path / 'x.png'}"])
    with pytest.raises(ckpt.CheckpointError, match="refusing"):
        train(make_cfg(f"resume={path}"), run_dir=tmp_path / "new")
    assert not marker.exists()


def test_every_torch_load_is_weights_only():
    calls = []
    for source in [REPO / "run.py", *sorted((REPO / "cartoondiff").rglob("*.py"))]:
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            func = getattr(node, "func", None)
            if (isinstance(node, ast.Call) and isinstance(func, ast.Attribute)
                    and func.attr == "load" and getattr(func.value, "id", "") == "torch"):
                safe = any(k.arg == "weights_only" and getattr(k.value, "value", None) is True
                           for k in node.keywords)
                calls.append((f"{source.name}:{node.lineno}", safe))
    assert calls and all(safe for _, safe in calls), calls


def test_resume_auto_skips_damaged_and_hostile_checkpoints(run_copy, make_cfg, tmp_path,
                                                           capsys, caplog):
    ckpt_dir = run_copy / "checkpoints"
    newest, middle, oldest = reversed(run_folder.list_checkpoints(ckpt_dir))
    DAMAGE["truncated"](newest)
    _hostile(middle, tmp_path / "marker")
    with open(run_copy / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 3, "train/lo')  # a row cut short by the crash
    with caplog.at_level(logging.WARNING, logger=resume.__name__):  # what a resume continues
        metrics = train(make_cfg("trainer.max_steps=4", "resume=auto"), run_dir=run_copy)
    warnings = [r.getMessage() for r in caplog.records if r.name == resume.__name__]
    assert any(str(newest) in w and "truncated or corrupt" in w for w in warnings), warnings
    assert any(str(middle) in w and "refusing" in w for w in warnings), warnings
    assert all("falling back" in w for w in warnings)
    assert f"resumed from {oldest} at step 1" in capsys.readouterr().out
    assert metrics["step"] == 4 and not (tmp_path / "marker").exists()
    rows = [r["step"] for r in read_metrics(run_copy / "metrics.jsonl") if "train/loss" in r]
    assert rows == [1, 2, 3, 4]


def test_resume_auto_with_no_loadable_checkpoint_stops(run_copy, make_cfg):
    for path in run_folder.list_checkpoints(run_copy / "checkpoints"):
        DAMAGE["truncated"](path)
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint in .* loads"):
        train(make_cfg("trainer.max_steps=4", "resume=auto"), run_dir=run_copy)


def test_fresh_start_never_overwrites_a_runs_checkpoints(run_copy, make_cfg):
    before = {p: p.read_bytes() for p in run_folder.list_checkpoints(run_copy / "checkpoints")}
    with pytest.raises(ConfigError, match="resume=null but .* holds an earlier run .*checkpoints"):
        train(make_cfg("trainer.max_steps=4"), run_dir=run_copy)
    kept = run_folder.list_checkpoints(run_copy / "checkpoints")
    assert {p: p.read_bytes() for p in kept} == before


@pytest.mark.parametrize("override, expected", [
    ("model.unet.base_channels=8", r"shape mismatch \[unet\.\S+: checkpoint \(64, 16\) vs model "
                                   r"\(32, 8\).*model\.unet\.base_channels: 16 -> 8"),
    ("attention=none", r"unexpected keys \[tau\.\S+.*model\.unet\.cross_attention: True -> "
                       "False"),
    ("tau.projections=2x", r"missing keys \[tau\..*tau\.projections: '1x' -> '2x'"),
])
def test_checkpoint_of_another_model_names_keys_and_shapes(trained, make_cfg, tmp_path,
                                                            override, expected):
    path = run_folder.list_checkpoints(trained / "checkpoints")[-1]
    # a model change named on purpose still cannot load weights of another shape
    with pytest.raises(ckpt.CheckpointError, match="different model configuration") as info:
        train(make_cfg(override, f"resume={path}", "resume_changes=[model,tau]"), run_dir=tmp_path)
    assert re.search(expected, str(info.value)), str(info.value)
    assert str(path) in str(info.value)
    assert not (tmp_path / "metrics.jsonl").exists(), "it fails before training starts"


# ---------------------------------------------------------------------------------------------
# Failed writes


def _fail_writing(monkeypatch, name: str, fault: str) -> None:
    """Make writing checkpoint file ``name`` fail as a full disk or an unwritable folder would."""
    if fault == "disk full":
        real_save = torch.save

        def save(obj, f, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            if Path(os.readlink(f"/proc/self/fd/{f.fileno()}")).name.startswith(name + "."):
                f.write(b"PK\x03\x04" + bytes(1000))  # some bytes made it before the disk filled
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_save(obj, f, *args, **kwargs)

        monkeypatch.setattr(torch, "save", save)
    else:
        real_mkstemp = tempfile.mkstemp

        def mkstemp(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            if kwargs.get("prefix", "").startswith(name + "."):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), kwargs["dir"])
            return real_mkstemp(*args, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("fault, reason", [("disk full", "No space left on device"),
                                           ("unwritable folder", "Permission denied")])
def test_failed_checkpoint_write_is_clear_and_keeps_the_previous(make_cfg, tmp_path, monkeypatch,
                                                                 fault, reason):
    cfg = ("trainer.max_steps=4", "trainer.checkpoint_every=2")
    failing = run_folder.checkpoint_path(tmp_path / "checkpoints", 4)
    _fail_writing(monkeypatch, failing.name, fault)
    with pytest.raises(ckpt.CheckpointError) as info:
        train(make_cfg(*cfg), run_dir=tmp_path)
    message = str(info.value)
    assert f"could not write checkpoint {failing}" in message and reason in message
    assert "existing checkpoints are unchanged" in message
    assert sorted(p.name for p in failing.parent.iterdir()) == ["ckpt-step000000002.pt"]
    assert ckpt.load(failing.parent / "ckpt-step000000002.pt")["step"] == 2
    monkeypatch.undo()
    assert train(make_cfg(*cfg, "resume=auto"), run_dir=tmp_path)["step"] == 4


def test_checkpoint_into_a_folder_that_cannot_exist(tmp_path):
    (tmp_path / "checkpoints").write_text("a file where the folder should be")
    path = tmp_path / "checkpoints" / "ckpt-step000000001.pt"
    with pytest.raises(ckpt.CheckpointError, match=f"could not write checkpoint {path}"):
        ckpt.save_atomic({"step": 1}, path)


def test_checkpoint_files_are_readable_by_the_group(tmp_path):
    path = tmp_path / "ckpt.pt"
    ckpt.save_atomic({"step": 1}, path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# ---------------------------------------------------------------------------------------------
# Non-finite losses


def test_absurd_learning_rate_stops_naming_the_step(make_cfg, tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"loss is (nan|inf) at step (\d+)") as info:
        train(make_cfg("optim.optimizer.lr=1e30", "trainer.max_steps=6",
                       "trainer.checkpoint_every=1"), run_dir=tmp_path)
    bad_step = int(re.search(r"at step (\d+)", str(info.value)).group(1))
    saved = run_folder.list_checkpoints(tmp_path / "checkpoints")
    assert saved and str(saved[-1]) in str(info.value)
    for path in saved:
        state = ckpt.load(path)
        assert state["step"] < bad_step
        assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert not (tmp_path / "model_ema.pt").exists()


def test_nan_loss_stops_and_the_last_checkpoint_stays_good(make_cfg, tmp_path, monkeypatch):
    on_step(monkeypatch, 3, lambda loss: loss * float("nan"))
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 3") as info:
        train(make_cfg("trainer.max_steps=4", "trainer.checkpoint_every=2"), run_dir=tmp_path)
    assert "ckpt-step000000002.pt" in str(info.value)
    assert checkpoint_steps(tmp_path) == [2]
    state = ckpt.load(run_folder.list_checkpoints(tmp_path / "checkpoints")[-1])
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    # the advice it gives works: resume from the good checkpoint with a lower rate
    assert "resume_changes=[optim.optimizer.lr]" in str(info.value)
    monkeypatch.undo()
    metrics = train(make_cfg("trainer.max_steps=4", "trainer.checkpoint_every=2", "resume=auto",
                             "optim.optimizer.lr=0.0005", "resume_changes=[optim.optimizer.lr]"),
                    run_dir=tmp_path)
    assert metrics["step"] == 4


def test_a_bounded_number_of_bad_steps_is_skipped(make_cfg, tmp_path, monkeypatch, caplog):
    on_step(monkeypatch, 3, lambda loss: loss * float("inf"))
    with caplog.at_level(logging.WARNING, logger="cartoondiff.train.loop"):
        metrics = train(make_cfg("trainer.max_steps=4", "trainer.checkpoint_every=2",
                                 "trainer.max_bad_steps=1"), run_dir=tmp_path)
    assert metrics["step"] == 4
    assert any("loss is inf at step 3; skipping it" in r.getMessage() for r in caplog.records)
    rows = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl") if "train/loss" in r]
    assert rows == [1, 2, 4]
    state = ckpt.load(run_folder.list_checkpoints(tmp_path / "checkpoints")[-1])
    assert state["step"] == 4
    assert all(torch.isfinite(t).all() for t in state["model"].values())


# ---------------------------------------------------------------------------------------------
# Sampling command and W&B


@pytest.mark.parametrize("arg, message", [
    ("sampler=euler", "sampler='euler' is invalid"),
    ("steps=0", "steps=0 is invalid"),
    ("eta=2", "eta=2 is invalid"),
    ("guidance=-1", "guidance=-1 is invalid"),
    ("n=0", "n=0 is invalid"),
    ("device=tpu", "device='tpu' is invalid"),
    ("attributes=hair_colour=3", "unknown attribute 'hair_colour'"),
    ("attributes=hair_color=10", "hair_color=10 out of range 0..9"),
    ("colour=3", "unknown option colour"),
    ("seed=-1", "seed=-1 is invalid"),
    ("out=grid", "out='grid' is invalid"),  # no image extension: found before sampling
])
def test_sample_command_checks_every_option_before_loading(tmp_path, arg, message):
    damaged = tmp_path / "model_ema.pt"
    damaged.write_bytes(b"not a checkpoint")  # never read: the options fail first
    with pytest.raises(UserError, match=re.escape(message)):
        given = [] if arg.startswith("out=") else [f"out={tmp_path / 'x.png'}"]
        sample.main([f"checkpoint={damaged}", *given, arg])
    with pytest.raises(ckpt.CheckpointError, match=f"checkpoint {damaged} is truncated or corrupt"):
        sample.main([f"checkpoint={damaged}", f"out={tmp_path / 'x.png'}"])
    assert not (tmp_path / "x.png").exists()


def _record_wandb_modes(monkeypatch, fail_online: bool) -> list[str]:
    import wandb

    real_init, modes = wandb.init, []

    def init(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        modes.append(kwargs["mode"])
        if kwargs["mode"] == "online":
            assert fail_online, "a test must never reach the network"
            raise RuntimeError("api_key not configured (no-tty)")
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    return modes


@pytest.mark.parametrize("network", ["unreachable", "reachable but login fails"])
def test_wandb_online_without_network_trains_on_offline(make_cfg, tmp_path, monkeypatch, caplog,
                                                        network):
    reachable = network != "unreachable"
    monkeypatch.setattr(tracking, "network_reachable", lambda *a, **k: reachable)
    modes = _record_wandb_modes(monkeypatch, fail_online=reachable)
    with caplog.at_level(logging.WARNING, logger="cartoondiff.runs.tracking"):
        metrics = train(make_cfg("logger.mode=online"), run_dir=tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.name == "cartoondiff.runs.tracking"]
    assert len(warnings) == 1 and "logging offline instead" in warnings[0]
    assert f"wandb sync {tmp_path / 'wandb'}" in warnings[0]
    assert modes == (["online", "offline"] if reachable else ["offline"])
    assert metrics["step"] == 2
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1


def test_metrics_reader_survives_a_cut_short_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "train/loss": 0.5}\n{"step": 2, "tr', encoding="utf-8")
    assert read_metrics(path) == [{"step": 1, "train/loss": 0.5}]


def test_refusal_names_what_the_pickle_wanted_to_call(tmp_path):
    hostile = tmp_path / "hostile.pt"
    torch.save({"x": _RunsCode(tmp_path / "m")}, hostile)
    with pytest.raises(ckpt.CheckpointError, match=r"could run code\): .*GLOBAL exec"):
        ckpt.load(hostile)
    assert not (tmp_path / "m").exists()
