"""The training loop: ``train(cfg, out_dir)``.

Shaped like torchvision's reference ``train.py``: builders make the parts
(:mod:`ferkit.engine.builders`: data, model, optimizer, loss, distillation
targets), :func:`~ferkit.engine.steps.train_one_epoch` and
:func:`~ferkit.engine.steps.evaluate` do an epoch's work, and :meth:`Trainer.fit`
ties them together with the run folder.

A run folder holds ``config.yaml`` (resolved), ``metrics.csv`` (one row per
epoch), ``curves.png``, TensorBoard events under ``tb/``, ``last.pt`` (the full
resumable state, rewritten atomically every epoch), ``best.pt`` (the weights
with the best validation accuracy) and ``summary.json`` (best epoch, test-split
metrics of the best weights). With ``ema`` the weights validated, kept in best.pt
and reported are a moving average of the trained ones (last.pt holds both). A
killed run continues with ``resume=True`` and reaches the same result as an
uninterrupted one: all randomness flows from one seeded generator whose state
is checkpointed.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn

from ferkit.data.augment import AugmentConfig, BatchAugment
from ferkit.engine import checkpoint as ckpt_io
from ferkit.engine.builders import (build_criterion, build_data, build_model, build_optimizer, build_teacher,
                                    sample_weights, stratified_subset)
from ferkit.engine.config import RUNTIME_KEYS, TrainConfig, load_config
from ferkit.engine.steps import (EpochBatches, Split, TrainTransform, evaluate, images_to_tensor, predict_probs,
                                 to_split, train_one_epoch)
from ferkit.runtime import autocast_dtype, select_device

log = logging.getLogger(__name__)
METRIC_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "epoch_s", "train_img_s"]
# images_to_tensor, predict_probs (steps) and stratified_subset (builders) are still imported from here.
__all__ = ["METRIC_COLUMNS", "Trainer", "images_to_tensor", "predict_probs", "resolve_config", "stratified_subset", "train"]


def resolve_config(cfg: TrainConfig | None, out: Path, resume: bool, runtime: dict | None,
                   check_empty: bool = True) -> tuple[TrainConfig, dict | None]:
    """The run's config and, when it continues, the checkpoint it continues from (else None).

    ``resume`` with a ``last.pt`` in ``out``: its saved config (only ``RUNTIME_KEYS`` may change, from
    ``runtime``). ``resume`` without one (killed before its first checkpoint): start again in the same
    folder with ``cfg``, else its saved config.yaml (+ ``runtime``), else ``runtime`` alone. A fresh run
    refuses a non-empty folder (checked when ``check_empty``: rank 0).
    """
    last = out / "last.pt"
    if resume and last.is_file():
        saved = ckpt_io.load_checkpoint(last)
        bad = sorted(set(runtime or {}) - set(RUNTIME_KEYS))
        if bad:
            raise ValueError(f"a resumed run keeps its config; only {', '.join(RUNTIME_KEYS)} may change (got {bad})")
        return TrainConfig(**{**saved["config"], **(runtime or {})}), saved
    if resume:
        saved_cfg = out / "config.yaml"
        if cfg is not None:
            where = "the given config"
        elif saved_cfg.is_file():
            cfg, where = load_config(saved_cfg, runtime), f"its saved {saved_cfg.name}"
        elif runtime:
            cfg, where = load_config(None, runtime), "the given settings"
        else:
            raise FileNotFoundError(f"{out}: nothing to resume (no last.pt) and no config.yaml to start from; "
                                    "start the run without --resume, with --recipe and/or KEY=VALUE settings")
        log.info("%s: no checkpoint yet (the run stopped before its first epoch ended): starting from scratch with %s",
                 out, where)
        return cfg, None
    if check_empty and out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: output folder is not empty; choose a new folder, or pass --resume to continue the run in it")
    return cfg, None


class Trainer:
    """One training run: the parts from the builders, and :meth:`fit`. Use :func:`train` unless you need the pieces."""

    def __init__(self, cfg: TrainConfig | None, out_dir: str | Path, resume: bool = False, progress: bool = False,
                 runtime: dict | None = None):
        self.out, self.progress = Path(out_dir), progress
        self.world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
        self.rank = int(os.environ.get("RANK", "0"))
        self.is_main = self.rank == 0
        self.cfg, state = resolve_config(cfg, self.out, resume, runtime, check_empty=self.is_main)
        cfg = self.cfg
        if not cfg.data:
            raise ValueError("no dataset given: set data=PATH (a fer2013.csv or an image folder)")
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = select_device(cfg.device)
        self.amp = autocast_dtype(cfg.amp, self.device)
        torch.manual_seed(cfg.seed)  # model initialisation and dropout
        self.gen = torch.Generator(device="cpu").manual_seed(cfg.seed)  # batch order and augmentation

        d = build_data(cfg)
        self.data, self.train_data, self.val_data, self.pre = d.data, d.train, d.val, d.pre
        k = self.data.num_classes
        self.model, self.net, self.ema = build_model(cfg, self.pre, k, self.device, init=state is None, world=self.world)
        self.train_t, self.val_t = to_split(self.train_data, self.device), to_split(self.val_data, self.device)
        if cfg.distill:
            self.train_t.soft = build_teacher(cfg, self.out, self.train_data, self.pre, self.device, self.amp, save=self.is_main)
        self.criterion = build_criterion(cfg, self.train_data.labels, k, self.device, self.train_data.soft)
        self.steps_per_epoch = max(1, len(self.train_data) // (cfg.batch_size * self.world))
        balanced = sample_weights(self.train_data.labels, k) if cfg.balanced_sampling else None
        self.batches = EpochBatches(self.train_t, cfg.batch_size, self.steps_per_epoch, self.gen, balanced, self.rank, self.world)
        aug = AugmentConfig.from_spec(cfg.augment)
        self.transform = TrainTransform(self.pre, BatchAugment(aug, self.pre.input_size) if aug else None, self.gen,
                                        cfg.channels_last)
        self.opt, self.sched, self.scaler = build_optimizer(self.model, cfg, self.steps_per_epoch, self.device, self.amp)
        self.epoch, self.history, self.best_acc, self.best_epoch, self.bad_epochs = 0, [], -1.0, 0, 0
        if state is not None:
            self._restore(state)
        self.tb = None

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated, saved as best.pt and deployed: the moving average when ``ema`` is on."""
        return self.ema.module if self.ema is not None else self.model

    # -- the epoch's work (free functions in ferkit.engine.steps)

    def _prepare(self, xb: torch.Tensor) -> torch.Tensor:
        """A uint8 training batch ``(B, C, S, S)`` as the model takes it (augmented, normalised)."""
        return self.transform(xb)

    def train_one_epoch(self) -> dict:
        return train_one_epoch(self.net, self.criterion, self.opt, self.sched, self.scaler, self.batches, self.transform,
                               self.device, self.amp, self.ema, self.cfg.grad_clip,
                               desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}", progress=self.progress and self.is_main)

    def evaluate(self, split: Split, tta: str = "none") -> tuple[dict, np.ndarray]:
        return evaluate(self.eval_model, split, self.pre, tta, self.cfg.eval_batch_size, self.amp, self.cfg.channels_last)

    # -- state

    def checkpoint_dict(self, full: bool = True) -> dict:
        """The checkpoint of the weights in :attr:`eval_model`; ``full`` adds everything a resume needs
        (optimizer, schedule, scaler, both generators, history, best-so-far, the live weights under ema)."""
        cfg = self.cfg
        d = {
            "format": ckpt_io.FORMAT,
            "version": ckpt_io.VERSION,
            "model": {"name": cfg.model, "num_classes": self.data.num_classes, "in_chans": self.pre.channels, "kwargs": dict(cfg.model_kwargs)},
            "state_dict": {k: v.detach().cpu() for k, v in self.eval_model.state_dict().items()},
            "preprocess": self.pre.to_dict(),
            "config": cfg.to_dict(),
            "epoch": self.epoch,
            "val_acc": self.history[-1]["val_acc"] if self.history else None,
        }
        if full:
            d.update(
                optimizer=self.opt.state_dict(),
                scheduler=self.sched.state_dict(),
                scaler=self.scaler.state_dict(),
                rng={"gen": self.gen.get_state(), "torch": torch.get_rng_state()},
                history=self.history,
                best={"acc": self.best_acc, "epoch": self.best_epoch, "bad_epochs": self.bad_epochs},
            )
            if self.ema is not None:  # the live weights the optimizer steps; "state_dict" holds their average
                d["train_state_dict"] = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
                d["ema_updates"] = self.ema.updates
        return d

    def _restore(self, s: dict) -> None:
        self.model.load_state_dict(s.get("train_state_dict", s["state_dict"]))
        if self.ema is not None:
            self.ema.module.load_state_dict(s["state_dict"])
            self.ema.updates = int(s.get("ema_updates", 0))
        self.opt.load_state_dict(s["optimizer"])
        self.sched.load_state_dict(s["scheduler"])
        self.scaler.load_state_dict(s["scaler"])
        self.gen.set_state(s["rng"]["gen"])
        torch.set_rng_state(s["rng"]["torch"])
        self.history = list(s["history"])
        self.epoch = int(s["epoch"])
        self.best_acc, self.best_epoch, self.bad_epochs = s["best"]["acc"], s["best"]["epoch"], s["best"]["bad_epochs"]
        log.info("resumed %s at epoch %d (best val acc %.4f at epoch %d)", self.out, self.epoch, self.best_acc, self.best_epoch)

    # -- outputs

    def _write_epoch(self, row: dict) -> None:
        """metrics.csv, TensorBoard and curves.png after an epoch (rank 0)."""
        # Rewritten whole from the checkpointed history, so a kill at any point never leaves it out of step.
        path = self.out / "metrics.csv"
        tmp = path.with_name(".metrics.csv.tmp")
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS)
            w.writeheader()
            for h in self.history:
                w.writerow({k: (f"{h[k]:.6g}" if isinstance(h[k], float) else h[k]) for k in METRIC_COLUMNS})
        os.replace(tmp, path)
        if self.tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.out / "tb"))
            except ImportError:
                self.tb = False
                log.info("tensorboard is not installed: no event files written (pip install tensorboard)")
        if self.tb:
            for k in METRIC_COLUMNS[1:]:
                self.tb.add_scalar(k, row[k], row["epoch"])
            self.tb.flush()
        from ferkit.plots import plot_curves

        plot_curves(self.history, self.out / "curves.png", title=f"{self.cfg.model} on {Path(self.cfg.data).name}")

    # -- the run

    def fit(self) -> dict:
        """Train until ``cfg.epochs`` (or early stopping), validating and checkpointing every epoch; returns
        :meth:`finish`'s summary."""
        cfg = self.cfg
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            if self.epoch == 0:
                log.info("training %s on %d images (%s), validating on %d; %d classes %s; device %s, amp %s",
                         cfg.model, len(self.train_data), cfg.train_split, len(self.val_data), self.data.num_classes,
                         list(self.data.label_names), self.device, self.amp)
        while self.epoch < cfg.epochs:
            if cfg.early_stopping and self.bad_epochs >= cfg.early_stopping:
                log.info("early stopping: no val improvement for %d epochs", self.bad_epochs)
                break
            t0 = time.perf_counter()
            lr, tr = self.sched.lr, self.train_one_epoch()  # the lr the epoch trained at, not the one after it
            self.epoch += 1
            val_metric, improved = 0.0, False
            if self.is_main:
                vm, _ = self.evaluate(self.val_t)
                row = {"epoch": self.epoch, "lr": lr, **tr, "val_loss": vm["loss"], "val_acc": vm["accuracy"],
                       "val_macro_f1": vm["macro_f1"], "epoch_s": time.perf_counter() - t0}
                self.history.append(row)
                improved = vm["accuracy"] > self.best_acc
                if improved:
                    self.best_acc, self.best_epoch, self.bad_epochs = vm["accuracy"], self.epoch, 0
                else:
                    self.bad_epochs += 1
                val_metric = vm["accuracy"]
            if self.world > 1:  # rank 0 validated: the others follow its schedule and early stopping
                t = torch.tensor([val_metric, self.bad_epochs], device=self.device, dtype=torch.float64)
                dist.broadcast(t, 0)
                val_metric, self.bad_epochs = float(t[0]), int(t[1])
            self.sched.epoch_end(val_metric)
            if self.is_main:
                state = self.checkpoint_dict(full=True)
                if improved:
                    ckpt_io.save_checkpoint(self.checkpoint_dict(full=False), self.out / "best.pt")
                if cfg.keep_epochs:  # inference weights of every epoch, to be chosen on other sets afterwards
                    ckpt_io.save_checkpoint(self.checkpoint_dict(full=False), self.out / "epochs" / f"epoch_{self.epoch:03d}.pt")
                ckpt_io.save_checkpoint(state, self.out / "last.pt")  # after best.pt: a resume never loses a best
                self._write_epoch(row)
                log.info("epoch %d/%d  loss %.3f  train %.3f  val %.4f  f1 %.3f  lr %.3g  %.0fs (%.0f img/s)%s",
                         self.epoch, cfg.epochs, tr["train_loss"], tr["train_acc"], vm["accuracy"], vm["macro_f1"],
                         row["lr"], row["epoch_s"], tr["train_img_s"], "  *best*" if improved else "")
        return self.finish()

    def finish(self) -> dict:
        """Restore the best weights, score them on the test split (plain and with ``cfg.tta``), write summary.json."""
        if not self.is_main:
            return {}
        if (self.out / "best.pt").is_file():
            best = ckpt_io.load_checkpoint(self.out / "best.pt")
            self.eval_model.load_state_dict(best["state_dict"])
        summary = {
            "model": self.cfg.model,
            "data": self.cfg.data,
            "epochs_run": self.epoch,
            "best_epoch": self.best_epoch,
            "best_val_acc": self.best_acc,
            "selected_on": self.cfg.val_split,
            "train_images": len(self.train_data),
        }
        test = self.data.subset(self.cfg.test_split)
        if len(test):
            tt = to_split(test, self.device)
            for mode in dict.fromkeys(["none", self.cfg.tta]):
                m, _ = self.evaluate(tt, mode)
                key = "test" if mode == "none" else f"test_tta_{mode}"
                summary[key] = {k: m[k] for k in ("n", "accuracy", "top2", "macro_f1")}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        if self.tb:
            self.tb.close()
        return summary


def train(cfg: TrainConfig | None, out_dir: str | Path, resume: bool = False, progress: bool = False,
          runtime: dict | None = None) -> dict:
    """Train ``cfg`` into the run folder ``out_dir``, or continue it with ``resume`` (``cfg`` is then ignored
    and ``runtime`` may change threads/device); returns the summary. With ``resume`` and no checkpoint in
    ``out_dir`` yet, the run starts from scratch with ``cfg``, else its saved config.yaml (+ ``runtime``)."""
    return Trainer(cfg, out_dir, resume=resume, progress=progress, runtime=runtime).fit()
