"""The training loop: ``train(cfg) -> metrics``. ``run.py`` is a thin Hydra wrapper around it.

One optimizer step consumes ``grad_accum`` batches. Everything the loop needs to continue
exactly (weights, EMA, optimizer, LR schedule, grad scaler, step, the training's own random
streams: ``train/seeding.py``) goes into each checkpoint; the data position is derived from
the step (``batches seen = step * grad_accum``).

``Trainer.fit`` reads as the loop it is: a step, the logging window, the end of an epoch
(grid, evaluation), a checkpoint, a stop signal. Everything is built and checked in
``Trainer.__init__`` before the run folder is touched or any data is read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import signal
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from cartoondiff.config import build, build_diffusion, build_model, named
from cartoondiff.evaluate import higher_is_better, wandb_name
from cartoondiff.inference import checkpoint as ckpt
from cartoondiff.inference.grids import SampleGrid, forward_process_image, rendered
from cartoondiff.runs import interrupt
from cartoondiff.runs.devices import autocast_dtype, pick_device, precision_label
from cartoondiff.runs.errors import SEED_RULE, ConfigError, is_seed
from cartoondiff.runs.files import WriteError, save_image_atomic, write_text_atomic
from cartoondiff.runs.folder import (
    RunFolder,
    RunFolderLock,
    checkpoint_path,
    hydra_record,
    is_under,
    list_checkpoints,
    prune,
    resolve_run_dir,
    resume_command,
)
from cartoondiff.runs.naming import run_labels
from cartoondiff.runs.progress import progress_bar
from cartoondiff.runs.tracking import NullTracker, Tracker
from cartoondiff.train import distributed
from cartoondiff.train.batches import BatchOrder
from cartoondiff.train.ema import EMA
from cartoondiff.train.lr import apply_optim_settings
from cartoondiff.train.resume import check_resume_keys, resume_state, same_run_changes
from cartoondiff.train.seeding import TrainingRandomness, seed_everything
from cartoondiff.train.settings import TrainerSettings

log = logging.getLogger(__name__)

SECTIONS = ("data", "model", "diffusion", "optim", "sampler", "logger", "trainer", "evaluate")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the message names the step."""


def train(cfg: DictConfig, run_dir: Path | str | None = None) -> dict[str, Any]:
    """Train the model described by ``cfg``; returns the final metrics.

    ``run_dir`` defaults to Hydra's output directory for this run (or multirun job).
    """
    missing = [s for s in SECTIONS if s not in cfg]
    if missing:
        raise ConfigError(f"the config has no {missing[0]!r} section: compose conf/config.yaml "
                          "(python run.py, or hydra.compose) before calling train()")
    settings = build(cfg, "trainer")
    with named("trainer.strategy"):
        ddp, device_name = distributed.setup(settings.strategy, settings.device)
    try:
        return Trainer(cfg, settings, run_dir, ddp, device_name).fit()
    finally:
        distributed.teardown(ddp)


class Trainer:
    """One training run: built and checked by the constructor (the preflight), run by ``fit``."""

    def __init__(self, cfg: DictConfig, settings: TrainerSettings, run_dir: Path | str | None,
                 ddp: distributed.Distributed, device_name: str) -> None:
        """The preflight: everything the run needs, built in order before its folder is
        touched or any data read. Each constructor checks its own arguments, so a mistake
        stops the run here with one line naming its config key, and nothing is written."""
        self.cfg, self.settings, self.ddp = cfg, settings, ddp
        with named("trainer.device"):
            self.device = pick_device(device_name)
        with named("trainer.precision"):
            self.amp_dtype = autocast_dtype(settings.precision, self.device)
        if not is_seed(seed := OmegaConf.select(cfg, "seed")):  # a run-level key: no constructor
            raise ConfigError(f"seed={seed!r} is invalid: expected {SEED_RULE}")
        check_resume_keys(cfg)  # the run folder's rules: what may be resumed, and with what changes
        seed_everything(cfg.seed)  # before the model: its initial weights come from the seed
        self.model = build_model(cfg).to(self.device)
        self.diffusion = build_diffusion(cfg)
        self.sampler = build(cfg, "sampler")
        with named("sampler.steps"):
            self.sampler.check_steps(self.diffusion.T)
        self.data = build(cfg, "data")
        if ddp.enabled and self.data.batch_size % ddp.world_size:
            raise ConfigError(f"data.batch_size={self.data.batch_size} is invalid: expected a "
                              f"multiple of the {ddp.world_size} processes (the global batch)")
        with named("trainer.ema_decay"):
            self.ema = EMA(self.model, settings.ema_decay)
        self.optimizer = build(cfg, "optim.optimizer", params=self.model.parameters())
        self.schedule = build(cfg, "optim.scheduler")  # given the run's length once data is read
        self.wandb_settings = build(cfg, "logger")
        self.run_dir = Path(ddp.broadcast(str(run_dir if run_dir is not None
                                              else resolve_run_dir())))
        self.folder = RunFolder(self.run_dir)
        self.ckpt_dir = self.folder.checkpoints
        self.evaluator = build(cfg, "evaluate", diffusion=self.diffusion, sampler=self.sampler,
                               device=self.device, best_path=self.folder.model_best)
        self.grid = SampleGrid(settings.sample_rows, settings.sample_cols, settings.sample_seed)
        self.hydra_record = hydra_record(cfg)  # .hydra/, written once the folder is this run's
        self._asked_for: torch.Tensor | None = None  # the rows' rendered avatars, if synthetic
        self.lock = RunFolderLock(self.run_dir)
        self.resume_changes: list[str] = []
        self.resumed_name: str | None = None
        self.step = 0
        self.train_seconds = 0.0  # wall time in optimizer steps alone (train/seconds)

    # ------------------------------------------------------------------ setting up

    def _prepare(self) -> dict | None:
        """Run folder, data, schedule, compiled/DDP model, and a resumed state if any."""
        cfg, s, ddp = self.cfg, self.settings, self.ddp
        # A run folder is a record, never overwritten, with one writer (ranks > 0 only read
        # it): checked before the lock is taken, so a refused start writes nothing, and again
        # once it is held, in case another run started here meanwhile.
        self.folder.check_start(cfg.resume)
        if ddp.is_main:
            self.lock.acquire()
            self.folder.check_start(cfg.resume)
        else:
            ddp.barrier()  # rank 0 builds the data cache first; the others then read it
        # labels: required by a conditional model; read when present for the vanilla one
        # (its evaluation's classifier learns from them), which also trains on PNGs alone
        self.data.setup(labeled=True if self.model.conditional else None)
        if ddp.is_main:
            ddp.barrier()
        self.evaluator.attach(self.data)
        self.order = BatchOrder(len(self.data), self.data.batch_size, cfg.seed)
        self.steps_per_epoch = self.order.batches_per_epoch / s.grad_accum
        self.total_steps = s.max_steps or math.ceil(s.max_epochs * self.steps_per_epoch)
        self.scheduler = self.schedule(self.optimizer, total_steps=self.total_steps,
                                       steps_per_epoch=self.steps_per_epoch)
        self.diffusion = self.diffusion.to(self.device)
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        self.randomness = TrainingRandomness(cfg.seed + ddp.rank, self.device)
        self.forward_model = self.model
        if ddp.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.forward_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if s.compile:
            self.forward_model = torch.compile(self.forward_model)
        return resume_state(cfg.resume, self.ckpt_dir)

    def _restore(self, path: Path, state: dict) -> None:
        """Continue from a checkpoint: weights, optimizer, schedule, RNG streams, step. It
        must be this run's (``same_run_changes``); named changes are logged and sent to W&B."""
        self.resume_changes = changes = same_run_changes(path, state, self.cfg)
        self.resumed_name = (state.get("config") or {}).get("logger", {}).get("name")
        model_changes = [c for c in changes if is_under(c, ("model", "tau"))]
        note = f"config changes since: {', '.join(model_changes)}" if model_changes else ""
        ckpt.apply_state_dict(self.model, state["model"], path, note)
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.randomness.load_state_dict(state["randomness"])
        if any(is_under(c, ("optim",)) for c in changes):
            apply_optim_settings(self.cfg, self.optimizer, self.scheduler)
        self.evaluator.load_state_dict(state.get("best", {}))
        self.step = int(state["step"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        if changes:
            print(f"resuming with changes named in resume_changes: {'; '.join(changes)}")
        if self.ddp.rank > 0:  # only rank 0's streams are saved: give the others fresh ones
            self.randomness.reseed(self.cfg.seed + self.ddp.rank * 1_000_003 + self.step)
        print(f"resumed from {path} at step {self.step}")

    def _start_tracking(self, resumed: bool) -> None:
        self.n_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        # The sweep's or experiment's name, group and tags (runs/naming.py) fill in the
        # logger's where it leaves them null, in the saved config too: run folders then
        # group in the report and the curves as runs group in W&B.
        labels = run_labels(self.cfg.logger)
        if resumed and self.resumed_name and not self.cfg.logger.get("name"):
            labels = dataclasses.replace(labels, name=self.resumed_name)  # a run keeps its name
        for key, value in labels.wandb_args().items():
            OmegaConf.update(self.cfg, f"logger.{key}", value, force_add=True)
        self.config_dict = OmegaConf.to_container(self.cfg, resolve=True)
        if not self.ddp.is_main:
            self.tracker = NullTracker()
            return
        print(f"trainable parameters: {self.n_params:,}; "
              f"precision: {precision_label(self.amp_dtype)}")
        print(f"output directory: {self.run_dir}")
        self.lock.record_holder()  # the first writes: the folder is this run's
        self.folder.save_hydra_record(self.hydra_record)
        write_text_atomic(self.folder.config, OmegaConf.to_yaml(self.cfg, resolve=True))
        self.tracker = Tracker(self.run_dir, {**self.config_dict, **labels.config,
                                              "parameters": self.n_params},
                               dataclasses.replace(self.wandb_settings, **labels.wandb_args()),
                               resume_step=self.step if resumed else None,
                               eval_summary=eval_summary, wandb_name=wandb_name)
        if self.resume_changes:  # a deliberate change stays on the record
            self.tracker.log({"resume/changes": "; ".join(self.resume_changes)}, self.step)
        if not resumed:  # the parameter count is a number, not a chart: config and summary
            self.tracker.summary({"parameters": self.n_params})
            self._log_forward_process()

    def _log_forward_process(self) -> None:
        """The blog's advice: look at q(x_t | x_0) for several t before training."""
        images = self.data.data.images[:4]  # uint8 (4, 3, H, W)
        picture, ts = forward_process_image(self.diffusion.to("cpu"), torch.as_tensor(images),
                                            self.data.normalize, seed=self.settings.sample_seed)
        path = save_image_atomic(picture, self.folder.grid("forward_process"))
        caption = f"columns: t = {ts}"
        write_text_atomic(path.with_suffix(".txt"), caption + "\n")
        self.tracker.log_image("forward_process", path, step=0, caption=caption)

    # ------------------------------------------------------------------ the loop

    def fit(self) -> dict[str, Any]:
        try:
            resumed = self._prepare()
            if resumed is not None:
                self._restore(*resumed)
                if self.step >= self.total_steps and self.folder.model_ema.is_file():
                    print(f"{self.run_dir} finished at step {self.step}: nothing to do (raise "
                          "trainer.max_steps or trainer.max_epochs to train on)")
                    return {"step": self.step, "run_dir": str(self.run_dir)}
            self._start_tracking(resumed is not None)
            if resumed is not None:
                self._end_of_epoch(catching_up=True)
            return self._loop()
        finally:
            self.lock.release()

    def _loop(self) -> dict[str, Any]:
        s = self.settings
        self.model.train()
        self.metrics: dict[str, Any] = {}
        self._window = [0.0, 0, time.perf_counter()]  # loss sum, steps, start time
        self.bad_steps = 0
        bar = progress_bar(total=self.total_steps, initial=self.step, desc="train",
                           dynamic_ncols=True, enabled=s.progress_bar and self.ddp.is_main)
        try:
            with interrupt.StopFlag() as stop:
                while self.step < self.total_steps:
                    started = time.perf_counter()
                    with self.randomness.active():  # nothing else draws from its streams
                        loss, grad_norm = self._train_step()
                    self.train_seconds += time.perf_counter() - started
                    self.step += 1  # a skipped step consumes its batch too: resume stays exact
                    bar.update(1)
                    self._log_window(loss, grad_norm, bar)
                    self._end_of_epoch()
                    due = self.step % s.checkpoint_every == 0 or self.step == self.total_steps
                    saved = self._save() if due else None
                    if self.ddp.any(stop.signal is not None, self.device):
                        return self._stopped(stop.signal, saved)
                try:
                    return self._finish()
                except interrupt.Interrupted:  # the last checkpoint is saved: resume finishes
                    return self._stopped(stop.signal, None)
        except BaseException:
            self.tracker.finish()
            raise
        finally:
            bar.close()

    def _train_step(self) -> tuple[float, float]:
        """One optimizer step over ``grad_accum`` batches; (loss, grad norm), NaN if skipped."""
        s, ddp = self.settings, self.ddp
        loss_value = 0.0
        for micro in range(s.grad_accum):
            epoch, b = divmod(self.step * s.grad_accum + micro, self.order.batches_per_epoch)
            idx = ddp.shard(self.order.indices(epoch, b))  # this rank's part of the batch
            x0, ids = self.data.batch(idx, self.device)
            # DDP all-reduces gradients once per optimizer step, not once per micro-batch.
            last = micro == s.grad_accum - 1
            sync = nullcontext() if last or not ddp.enabled else self.forward_model.no_sync()
            autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype)
                        if self.amp_dtype else nullcontext())
            with sync:
                with autocast:
                    loss = self.diffusion.loss(self.forward_model, x0, ids,
                                               generator=self.randomness.noise)
                self.scaler.scale(loss / s.grad_accum).backward()
            loss_value += loss.item() / s.grad_accum
        loss_value = ddp.mean(loss_value, self.device)  # ranks agree on NaN and on the log
        grad_norm = float("nan")
        if math.isfinite(loss_value):
            self.scaler.unscale_(self.optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                             s.grad_clip))
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.ema.update(self.model)
        else:  # weights stay as they were; nothing is saved from this step
            self.bad_steps += 1
            if self.bad_steps > s.max_bad_steps:
                raise NonFiniteLossError(_nonfinite_message(loss_value, self.step + 1,
                                                            self.ckpt_dir))
            log.warning("loss is %s at step %d; skipping it (%d of trainer.max_bad_steps=%d)",
                        loss_value, self.step + 1, self.bad_steps, s.max_bad_steps)
        self.optimizer.zero_grad(set_to_none=True)
        return loss_value, grad_norm

    def _log_window(self, loss: float, grad_norm: float, bar: tqdm) -> None:
        """Every ``log_every`` steps: mean loss, LR, grad norm and throughput of the window."""
        if math.isfinite(loss):
            self._window[0] += loss
            self._window[1] += 1
        loss_sum, n_steps, start = self._window
        if not n_steps or (self.step % self.settings.log_every and self.step != self.total_steps):
            return
        images = n_steps * self.settings.grad_accum * self.data.batch_size
        self.metrics = {
            "train/loss": loss_sum / n_steps,
            "train/lr": self.scheduler.get_last_lr()[0],
            "train/grad_norm": grad_norm,
            "train/images_per_s": images / (time.perf_counter() - start),
            "train/epoch": self.step / self.steps_per_epoch,
            "train/seconds": self.train_seconds,
        }
        self.tracker.log(self.metrics, self.step)
        bar.set_postfix(loss=f"{self.metrics['train/loss']:.4f}",  # shown at the next redraw
                        img_s=f"{self.metrics['train/images_per_s']:.0f}", refresh=False)
        self._window = [0.0, 0, time.perf_counter()]

    def _end_of_epoch(self, catching_up: bool = False) -> None:
        """When this step ends an epoch: its sample grid (0-based name, as the blog counts)
        and, when due, the evaluation that keeps ``model_best.pt``. A stop request cuts them
        short (the step is saved first); a run resumed there (``catching_up``) draws them if
        the epoch's grid is missing, so every epoch has its grid."""
        s, epochs_done = self.settings, int(self.step / self.steps_per_epoch)
        ended = self.step > 0 and epochs_done > int((self.step - 1) / self.steps_per_epoch)
        grid_name = RunFolder.epoch_grid_name(epochs_done - 1)
        if not (ended and self.ddp.is_main) or catching_up and self.folder.grid(grid_name).exists():
            return
        with contextlib.suppress(interrupt.Interrupted):
            if s.sample_every_epochs and epochs_done % s.sample_every_epochs == 0:
                self._draw_grid(grid_name, "samples", f"epoch {epochs_done - 1}")
            if self.evaluator.due(epochs_done, last=self.step >= self.total_steps):
                scores = self.evaluator.evaluate(self.ema.shadow, self.step, self.config_dict)
                # eval/* against epochs; the training time so far, for time-to-quality curves
                self.tracker.log({**scores, "epoch": epochs_done,
                                  "train/seconds": self.train_seconds}, self.step)

    def _draw_grid(self, name: str, key: str, caption: str) -> None:
        """The sample grid ``samples/NAME.png``, logged under ``key``; skipped with a warning
        naming it when it cannot be written (a by-product never stops the training)."""
        if self._asked_for is None and self.data.source == "synthetic" and self.model.conditional:
            # the built-in avatars: the renderer draws what each row asks for
            self._asked_for = rendered(self.grid.row_ids, self.data.image_size, self.data.crop)
        try:
            path, labels = self.grid.draw(self.ema.shadow, self.diffusion, self.sampler,
                                          self.folder.grid(name), image_size=self.data.image_size,
                                          normalize=self.data.normalize, device=self.device,
                                          asked_for=self._asked_for)
        except WriteError as err:
            log.warning("%s; the grid is skipped, training goes on", err)
            return
        self.tracker.log_image(key, path, self.step, caption, labels)

    def _save(self) -> Path | None:
        """A full checkpoint of this step (rank 0), then prune to ``keep_checkpoints``."""
        if not self.ddp.is_main:
            return None
        path = checkpoint_path(self.ckpt_dir, self.step)
        ckpt.save_atomic({
            "model": self.model.state_dict(), "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "step": self.step,
            "epoch": self.step / self.steps_per_epoch, "randomness": self.randomness.state_dict(),
            "train_seconds": self.train_seconds,
            "config": self.config_dict,
            "best": self.evaluator.state_dict(),
        }, path)
        prune(self.ckpt_dir, self.settings.keep_checkpoints)
        return path

    def _stopped(self, signum: int | None, saved: Path | None) -> dict[str, Any]:
        """A stop signal: make sure this step is saved, say how to resume."""
        path = saved or self._save()
        self.tracker.finish()
        print(f"stopped by signal {signum} at step {self.step}; checkpoint {path}\n"
              f"resume with: {resume_command(self.run_dir)}", flush=True)
        return {**self.metrics, "step": self.step,
                "stopped_by_signal": signum or signal.SIGTERM}

    def _finish(self) -> dict[str, Any]:
        """The final grid, the EMA export ``model_ema.pt`` and the run's summary."""
        metrics = {**self.metrics, "step": self.step, "parameters": self.n_params,
                   "run_dir": str(self.run_dir)}
        if self.ddp.enabled:  # DDP keeps replicas identical; check it rather than trust it
            metrics["ddp/max_param_diff"] = self.ddp.max_param_difference(self.model)
            self.tracker.log({"ddp/max_param_diff": metrics["ddp/max_param_diff"]}, self.step)
        if not self.ddp.is_main:
            return metrics
        # Its own key: under "samples" at this step it would replace the last epoch's grid.
        self._draw_grid("final", "samples_final", "final")
        export = self.folder.model_ema
        ckpt.save_atomic({"model": self.ema.shadow.state_dict(), "config": self.config_dict},
                         export)
        best = self.evaluator.best_path
        if best.is_file():  # the evaluated best first: "latest" then lands on the final export
            self.tracker.log_model(best, {**self.evaluator.state_dict(),
                                          "parameters": self.n_params}, aliases=["best"])
        self.tracker.log_model(export, {"step": self.step, "parameters": self.n_params})
        self.tracker.summary({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        self.tracker.finish()
        return metrics


def eval_summary(key: str) -> str:
    """The W&B summary of an evaluation metric: its best and its last value over the run."""
    if key == "eval/best":
        return "last"  # already the best so far
    return "max,last" if higher_is_better(key) else "min,last"


def _nonfinite_message(loss: float, step: int, ckpt_dir: Path) -> str:
    saved = list_checkpoints(ckpt_dir)
    last = (f"the last checkpoint, {saved[-1]}, is from before it" if saved
            else "no checkpoint had been written yet")
    fix = ("resume with a lower rate (resume=auto optim.optimizer.lr=... "
           "resume_changes=[optim.optimizer.lr])" if saved else "start again with a lower "
           "optim.optimizer.lr")
    return (f"loss is {loss} at step {step}; stopping ({last}). {fix[0].upper() + fix[1:]}, or "
            "set trainer.max_bad_steps to skip a few such steps")
