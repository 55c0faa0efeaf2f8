"""The training loop: ``train(cfg) -> metrics``. ``run.py`` is a thin Hydra wrapper around it.

One optimizer step consumes ``grad_accum`` batches. Everything the loop needs to continue
exactly (weights, EMA, optimizer, LR schedule, grad scaler, step, RNG states) goes into each
checkpoint; the data position is derived from the step (``batches seen = step * grad_accum``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from cartoondiff.devices import pick_device
from cartoondiff.diffusion import Diffusion
from cartoondiff.evaluate import higher_is_better
from cartoondiff.run_naming import run_labels
from cartoondiff.tracking import NullTracker
from cartoondiff.train import checkpoint as ckpt
from cartoondiff.train import distributed
from cartoondiff.train.batches import BatchOrder
from cartoondiff.train.ema import EMA
from cartoondiff.train.grids import SampleGridMaker
from cartoondiff.train.periodic_eval import PeriodicEvaluator
from cartoondiff.train.seeding import capture_rng, restore_rng, seed_everything

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the message names the step."""


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on GPUs that support it (``auto``); fp32 on CPU, where bf16 is slower."""
    if precision == "auto":
        use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if use_bf16 else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class _StopFlag:
    """Turns SIGTERM / SIGINT into a flag the loop checks after each step.

    The first signal puts the previous handlers back, so a second Ctrl-C stops at once
    (checkpoints are written atomically, so that loses at most the current interval).
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        self.signal = signum
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()

    def __exit__(self, *exc: object) -> None:
        self._restore()


def train(cfg: DictConfig, run_dir: Path | str | None = None) -> dict[str, Any]:
    """Train the model described by ``cfg``; returns the final metrics.

    ``run_dir`` defaults to Hydra's output directory for this run (or multirun job).
    """
    from cartoondiff.config import validate_config

    validate_config(cfg)
    tc = cfg.trainer
    ddp, device_name = distributed.setup(tc.strategy, tc.device)
    try:
        return _train(cfg, run_dir, ddp, pick_device(device_name))
    finally:
        distributed.teardown(ddp)


def _train(cfg: DictConfig, run_dir: Path | str | None, ddp: distributed.Distributed,
           device: torch.device) -> dict[str, Any]:
    from cartoondiff.config import ConfigError, resolve_run_dir, resume_command

    # One run directory for all ranks: rank 0's (Hydra makes one per process).
    run_dir = Path(ddp.broadcast(str(run_dir if run_dir is not None else resolve_run_dir())))
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = run_dir / "checkpoints"
    if not cfg.resume and ckpt.list_checkpoints(ckpt_dir):
        # A fresh start would overwrite (and prune) the earlier run's checkpoints.
        raise ConfigError(f"resume=null but {ckpt_dir} already holds checkpoints: pass "
                          "resume=auto to continue that run, or choose a new run directory")
    tc = cfg.trainer
    seed_everything(cfg.seed)

    # The model first: its constructor checks sizes and head counts in a second, before the
    # data (which may take minutes to cache on first use).
    model = instantiate(cfg.model).to(device)
    data = instantiate(cfg.data)
    if not ddp.is_main:
        ddp.barrier()  # rank 0 builds the data cache first; the others then read it
    data.setup()
    if ddp.is_main:
        ddp.barrier()
    order = BatchOrder(len(data), cfg.data.batch_size, cfg.seed)
    steps_per_epoch = order.batches_per_epoch / tc.grad_accum
    total_steps = tc.max_steps or math.ceil(tc.max_epochs * steps_per_epoch)
    OmegaConf.update(cfg, "trainer.total_steps", int(total_steps), force_add=True)

    if model.conditional and data.ids is None:
        raise ValueError(f"a conditional model needs labeled data, but {data.source} has no "
                         "attribute CSVs (set data.labeled=true, or attention=none)")
    diffusion = Diffusion(instantiate(cfg.noise_schedule), prediction=cfg.diffusion.prediction)
    diffusion = diffusion.to(device)
    optimizer = instantiate(cfg.optim.optimizer)(params=model.parameters())
    scheduler = instantiate(cfg.optim.scheduler)(optimizer=optimizer)
    ema = EMA(model, tc.ema_decay)
    amp_dtype = autocast_dtype(tc.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    noise_gen = torch.Generator(device).manual_seed(cfg.seed + ddp.rank)
    forward_model = model
    if ddp.enabled:
        from torch.nn.parallel import DistributedDataParallel

        forward_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if tc.compile:
        forward_model = torch.compile(forward_model)
    evaluator = PeriodicEvaluator(data, diffusion, instantiate(cfg.sampler), device,
                                  run_dir / "model_best.pt", **cfg.evaluate)

    step = 0
    resumed = _resume(cfg.resume, ckpt_dir)
    if resumed is not None:
        path, state = resumed
        changes = ckpt.config_changes(state.get("config", {}).get("model"),
                                      OmegaConf.to_container(cfg.model, resolve=True), "model")
        note = f"config changes since: {', '.join(changes)}" if changes else ""
        ckpt.apply_state_dict(model, state["model"], path, note)
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        noise_gen.set_state(state["noise_rng"].to(noise_gen.get_state().device))
        restore_rng(state["rng"])
        evaluator.load_state_dict(state.get("best", {}))
        step = int(state["step"])
        if ddp.rank > 0:  # only rank 0's noise stream is saved: give the others fresh ones
            noise_gen.manual_seed(cfg.seed + ddp.rank * 1_000_003 + step)
        print(f"resumed from {path} at step {step}")

    n_params = count_parameters(model)
    config_dict = OmegaConf.to_container(cfg, resolve=True)
    if ddp.is_main:
        print(f"trainable parameters: {n_params:,}")
        print(f"output directory: {run_dir}")
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
        # --- W&B: the sweep's or experiment's name, group and tags (run_naming.py) fill in
        # the logger's where it leaves them null; eval/* summaries keep each metric's best.
        def eval_summary(key: str) -> str:
            if key == "eval/best":
                return "last"  # already the best so far
            return "max" if higher_is_better(key) else "min"

        labels = run_labels(cfg.logger)
        tracker = instantiate(cfg.logger)(
            run_dir=run_dir, config={**config_dict, **labels.config},
            resume_step=step if resumed else None, eval_summary=eval_summary,
            **labels.wandb_args(),
        )
    else:
        tracker = NullTracker()
    grids = SampleGridMaker(diffusion, instantiate(cfg.sampler), data, run_dir / "samples", device,
                            rows=tc.sample_rows, cols=tc.sample_cols, seed=tc.sample_seed)
    if not resumed and ddp.is_main:
        tracker.summary({"parameters": n_params})
        tracker.log({"parameters": n_params}, step=0)
        tracker.log_image("forward_process", grids.forward_process(), step=0)

    def save(at_step: int) -> Path | None:
        if not ddp.is_main:
            return None
        path = ckpt.checkpoint_path(ckpt_dir, at_step)
        ckpt.save_atomic({
            "model": model.state_dict(), "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "step": at_step, "epoch": at_step / steps_per_epoch,
            "rng": capture_rng(), "noise_rng": noise_gen.get_state(), "config": config_dict,
            "best": evaluator.state_dict(),
        }, path)
        ckpt.prune(ckpt_dir, tc.keep_checkpoints)
        return path

    model.train()
    metrics: dict[str, Any] = {}
    window_loss, window_images, window_start = 0.0, 0, time.perf_counter()
    bad_steps = 0
    bar = tqdm(total=total_steps, initial=step, desc="train", dynamic_ncols=True,
               disable=not (tc.progress_bar and ddp.is_main))
    with _StopFlag() as stop:
        while step < total_steps:
            loss_value = 0.0
            for micro in range(tc.grad_accum):
                batch_index = step * tc.grad_accum + micro
                epoch, b = divmod(batch_index, order.batches_per_epoch)
                idx = ddp.shard(order.indices(epoch, b))  # this rank's part of the batch
                x0, ids = data.batch(idx, device)
                autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype
                            else nullcontext())
                with autocast:
                    loss = diffusion.loss(forward_model, x0, ids, cfg.diffusion.p_uncond,
                                          generator=noise_gen)
                scaler.scale(loss / tc.grad_accum).backward()
                loss_value += loss.item() / tc.grad_accum
            loss_value = ddp.mean(loss_value, device)  # ranks agree on NaN and on the log
            if math.isfinite(loss_value):
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                ema.update(model)
                window_loss += loss_value
                window_images += tc.grad_accum * cfg.data.batch_size
            else:  # weights stay as they were; nothing is saved from this step
                bad_steps += 1
                if bad_steps > tc.max_bad_steps:
                    tracker.finish()
                    bar.close()
                    raise NonFiniteLossError(_nonfinite_message(loss_value, step + 1, ckpt_dir))
                log.warning("loss is %s at step %d; skipping it (%d of trainer.max_bad_steps=%d)",
                            loss_value, step + 1, bad_steps, tc.max_bad_steps)
            optimizer.zero_grad(set_to_none=True)
            step += 1  # a skipped step consumes its batch too, so resume stays exact
            bar.update(1)

            if window_images and (step % tc.log_every == 0 or step == total_steps):
                elapsed = time.perf_counter() - window_start
                n_steps = window_images // (tc.grad_accum * cfg.data.batch_size)
                metrics = {
                    "train/loss": window_loss / n_steps,
                    "train/lr": scheduler.get_last_lr()[0],
                    "train/grad_norm": float(grad_norm),
                    "train/images_per_s": window_images / elapsed,
                    "train/epoch": step / steps_per_epoch,
                }
                tracker.log(metrics, step)
                bar.set_postfix(loss=f"{metrics['train/loss']:.4f}",
                                img_s=f"{metrics['train/images_per_s']:.0f}")
                window_loss, window_images, window_start = 0.0, 0, time.perf_counter()

            epochs_done = int(step / steps_per_epoch)
            new_epoch = epochs_done > int((step - 1) / steps_per_epoch)
            if (new_epoch and ddp.is_main and tc.sample_every_epochs
                    and epochs_done % tc.sample_every_epochs == 0):
                epoch = epochs_done - 1  # 0-based, as the blog counts
                path, rows = grids.sample(ema.shadow, step, name=f"epoch{epoch:03d}")
                tracker.log_image("samples", path, step, f"epoch {epoch}", rows)
            if new_epoch and ddp.is_main and evaluator.due(epochs_done):
                scores = evaluator.run(ema.shadow, step, config_dict)
                tracker.log({**scores, "epoch": epochs_done}, step)  # eval/* plot vs epoch
            saved = None
            if step % tc.checkpoint_every == 0 or step == total_steps:
                saved = save(step)
            if ddp.any(stop.signal is not None, device):
                path = saved or save(step)
                tracker.finish()
                bar.close()
                print(f"stopped by signal {stop.signal} at step {step}; checkpoint {path}\n"
                      f"resume with: {resume_command(run_dir)}", flush=True)
                return {**metrics, "step": step, "stopped_by_signal": stop.signal or signal.SIGTERM}
    bar.close()
    metrics = {**metrics, "step": step, "parameters": n_params, "run_dir": str(run_dir)}
    if ddp.enabled:  # DDP keeps replicas identical; check it rather than trust it
        metrics["ddp/max_param_diff"] = ddp.max_param_difference(model)
        tracker.log({"ddp/max_param_diff": metrics["ddp/max_param_diff"]}, step)
    if not ddp.is_main:
        return metrics
    path, rows = grids.sample(ema.shadow, step, name="final")
    # Its own key: under "samples" at this step it would replace the last epoch's grid.
    tracker.log_image("samples_final", path, step, "final", rows)
    export = ckpt_dir.parent / "model_ema.pt"
    ckpt.save_atomic({"model": ema.shadow.state_dict(), "config": config_dict}, export)
    tracker.log_model(export, {"step": step, "parameters": n_params})  # if logger.log_model
    tracker.summary({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    tracker.finish()
    return metrics


def _resume(resume: str | None, ckpt_dir: Path) -> tuple[Path, dict] | None:
    """``resume=auto`` (latest good checkpoint of this run, if any) or ``resume=PATH``."""
    if not resume:
        return None
    if resume == "auto":
        found = ckpt.load_latest(ckpt_dir)  # warns about each damaged checkpoint it skips
        if found is None and ckpt.list_checkpoints(ckpt_dir):
            raise ckpt.CheckpointError(f"resume=auto: no checkpoint in {ckpt_dir} loads (see "
                                       "the warnings above); move them aside to start fresh")
        if found is None:
            print(f"resume=auto: no checkpoint in {ckpt_dir}, starting fresh")
        return found
    return Path(resume), ckpt.load(resume)


def _nonfinite_message(loss: float, step: int, ckpt_dir: Path) -> str:
    saved = ckpt.list_checkpoints(ckpt_dir)
    last = (f"the last checkpoint, {saved[-1]}, is from before it" if saved
            else "no checkpoint had been written yet")
    return (f"loss is {loss} at step {step}; stopping ({last}). Start a new run with a lower "
            "optim.optimizer.lr, or set trainer.max_bad_steps to skip a few such steps")
