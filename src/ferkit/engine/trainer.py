"""The training loop: ``train(cfg, out_dir)``.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import nn

from ferkit.data.augment import TTA_VIEWS, AugmentConfig, BatchAugment, resize_batch, tta_views
from ferkit.data.dataset import FerData
from ferkit.data.readers import load_dataset
from ferkit.engine import checkpoint as ckpt_io
from ferkit.engine.config import RUNTIME_KEYS, TrainConfig, load_config
from ferkit.engine.optim import Schedule, WeightEMA, build_optimizer
from ferkit.engine.preprocess import Preprocess
from ferkit.models.registry import create_model, model_info
from ferkit.runtime import autocast, autocast_dtype, select_device
from ferkit.metrics import classification_metrics

log = logging.getLogger(__name__)
METRIC_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "epoch_s", "train_img_s"]


# ------------------------------------------------------------------ helpers


def stratified_subset(data: FerData, n: int, seed: int) -> FerData:
    """A seeded subset of exactly ``n`` samples with the class proportions of ``data``.

    Each class gets the whole part of its share of ``n``; the samples left over go to the
    classes with the largest remainders (rounding each class on its own could give n + 1).
    """
    if n <= 0 or n >= len(data):
        return data
    rng = np.random.default_rng(seed)
    counts = np.bincount(data.labels, minlength=data.num_classes)
    quota = counts * n / len(data)
    take = np.floor(quota).astype(np.int64)
    left = n - int(take.sum())  # < num_classes, and every class with a remainder has room for one more
    take[np.argsort(-(quota - take), kind="stable")[:left]] += 1
    keep = [rng.choice(np.where(data.labels == c)[0], size=int(k), replace=False) for c, k in enumerate(take)]
    return data.select(np.sort(np.concatenate(keep)))


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W)`` / ``(N, H, W, C)`` -> uint8 ``(N, C, H, W)`` (no copy of pixel values as floats)."""
    t = torch.from_numpy(np.ascontiguousarray(images))
    return t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()


@dataclass
class _Split:
    x: torch.Tensor  # uint8 (N, C, H, W) on the device
    y: torch.Tensor  # int64 (N,)
    soft: torch.Tensor | None  # float (N, K) or None


def _to_split(data: FerData, device: torch.device) -> _Split:
    soft = torch.from_numpy(data.soft).to(device) if data.soft is not None else None
    return _Split(images_to_tensor(data.images).to(device), torch.from_numpy(data.labels).to(device), soft)


def default_norm(channels: int, pretrained: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if pretrained and channels == 3:
        return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return (0.5,) * channels, (0.25,) * channels


CPU_VIEWS_PER_FORWARD = 64


@torch.no_grad()
def predict_probs(
    model: nn.Module,
    x: torch.Tensor,
    pre: Preprocess,
    tta: str = "none",
    batch_size: int = 512,
    amp: torch.dtype | None = None,
    channels_last: bool = False,
) -> np.ndarray:
    """Class probabilities ``(N, K)`` for uint8 images ``(N, C, H, W)``; TTA views are averaged in probability.

    ``batch_size`` counts the views that go through the model at once: with ten-crop, a tenth as many images.
    On a CPU at most ``CPU_VIEWS_PER_FORWARD`` go at once, whose activations stay in cache
    (benchmarks/tta_throughput.py: 3x the views/s of 5,120 at once).
    """
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))  # no parameters: an ONNX model
    if device.type == "cpu":
        batch_size = min(batch_size, CPU_VIEWS_PER_FORWARD)
    per = max(1, batch_size // TTA_VIEWS.get(tta, 1))
    out = []
    for i in range(0, len(x), per):
        xb = resize_batch(x[i : i + per].to(device).float().div_(255), pre.input_size)
        views = tta_views(xb, tta)  # (V, B, C, S, S)
        v, b = views.shape[:2]
        xin = pre.normalize(views.flatten(0, 1))
        if channels_last:
            xin = xin.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model(xin)
        out.append(F.softmax(logits.float(), 1).view(v, b, -1).mean(0).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, len(pre.label_names)), np.float32)


# ------------------------------------------------------------------ the run


class Trainer:
    """One training run. Use :func:`train` unless you need the pieces."""

    def __init__(self, cfg: TrainConfig | None, out_dir: str | Path, resume: bool = False, progress: bool = False,
                 runtime: dict | None = None):
        self.cfg, self.out, self.progress = cfg, Path(out_dir), progress
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.is_main = self.rank == 0
        last = self.out / "last.pt"
        if resume and not last.is_file():
            # Killed before its first checkpoint: nothing to continue, so start again, in the same folder.
            self.cfg = cfg = self._restart_config(cfg, runtime)
            self._resume_state = None
        elif resume:
            saved = ckpt_io.load_checkpoint(last)
            bad = sorted(set(runtime or {}) - set(RUNTIME_KEYS))
            if bad:
                raise ValueError(f"a resumed run keeps its config; only {', '.join(RUNTIME_KEYS)} may change (got {bad})")
            self.cfg = cfg = TrainConfig(**{**saved["config"], **(runtime or {})})
            self._resume_state = saved
        else:
            if self.is_main and self.out.exists() and any(self.out.iterdir()):
                raise FileExistsError(f"{self.out}: output folder is not empty; choose a new folder, or pass --resume to continue the run in it")
            self._resume_state = None
        if not cfg.data:
            raise ValueError("no dataset given: set data=PATH (a fer2013.csv or an image folder)")
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = select_device(cfg.device)
        self.amp = autocast_dtype(cfg.amp, self.device)
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator(device="cpu").manual_seed(cfg.seed)

        info = model_info(cfg.model)
        data = load_dataset(cfg.data, labels=cfg.labels, ferplus=cfg.ferplus, ferplus_mode=cfg.ferplus_mode, join_csv=cfg.join_csv)
        pretrained = info.family == "pretrained"
        channels = cfg.channels or (3 if pretrained else data.channels)
        if channels != data.channels:
            from ferkit.imageio import to_model_channels

            data.images = np.stack([to_model_channels(im, channels) for im in data.images])
        self.data = data
        train = stratified_subset(data.subset(cfg.train_split), cfg.train_limit, cfg.seed)
        val = stratified_subset(data.subset(cfg.val_split), cfg.val_limit, cfg.seed)
        if len(train) == 0:
            raise ValueError(f"{cfg.data}: the {cfg.train_split!r} split is empty (splits present: {data.splits()})")
        if len(val) == 0:
            raise ValueError(f"{cfg.data}: the {cfg.val_split!r} split is empty (splits present: {data.splits()}); "
                             "make one with 'ferkit data split'")
        self.train_data, self.val_data = train, val
        mean, std = default_norm(channels, pretrained)
        self.pre = Preprocess(
            input_size=cfg.input_size or info.input_size,
            channels=channels,
            mean=tuple(cfg.mean) or mean,
            std=tuple(cfg.std) or std,
            label_names=data.label_names,
        )
        self.model = create_model(cfg.model, num_classes=data.num_classes, in_chans=channels, **cfg.model_kwargs).to(self.device)
        if cfg.init_from and self._resume_state is None:
            self._init_from(cfg.init_from)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = WeightEMA(self.model, cfg.ema) if cfg.ema else None
        self.net = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

        self.train_t, self.val_t = _to_split(train, self.device), _to_split(val, self.device)
        if cfg.distill:
            self.train_t.soft = self._distill_targets()
        counts = np.bincount(train.labels, minlength=data.num_classes).astype(np.float64)
        self.class_weight = None
        if cfg.class_weights:
            w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / data.num_classes, 0.0)
            self.class_weight = torch.tensor(w, dtype=torch.float32, device=self.device)
        self.sample_weight = torch.from_numpy(1.0 / np.maximum(counts, 1))[torch.from_numpy(train.labels)] if cfg.balanced_sampling else None

        aug = AugmentConfig.from_spec(cfg.augment)
        self.augment = BatchAugment(aug, self.pre.input_size) if aug else None
        self.steps_per_epoch = max(1, len(train) // (cfg.batch_size * self.world))
        self.opt = build_optimizer(self.model, cfg)
        self.sched = Schedule(self.opt, cfg, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(enabled=self.amp == torch.float16 and self.device.type == "cuda")
        self.epoch, self.history, self.best_acc, self.best_epoch, self.bad_epochs = 0, [], -1.0, 0, 0
        if self._resume_state is not None:
            self._restore(self._resume_state)
        self.tb = None

    # -- state

    def _restart_config(self, cfg: TrainConfig | None, overrides: dict | None) -> TrainConfig:
        """The config of a run folder that has no checkpoint yet: ``cfg`` if given, else its saved config.yaml
        (plus ``overrides``), else the overrides alone."""
        saved = self.out / "config.yaml"
        if cfg is not None:
            where = "the given config"
        elif saved.is_file():
            cfg, where = load_config(saved, overrides), f"its saved {saved.name}"
        elif overrides:
            cfg, where = load_config(None, overrides), "the given settings"
        else:
            raise FileNotFoundError(f"{self.out}: nothing to resume (no last.pt) and no config.yaml to start from; "
                                    "start the run without --resume, with --recipe and/or KEY=VALUE settings")
        log.info("%s: no checkpoint yet (the run stopped before its first epoch ended): starting from scratch with %s",
                 self.out, where)
        return cfg

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated, saved as best.pt and deployed: the moving average when ``ema`` is on."""
        return self.ema.module if self.ema is not None else self.model

    def _init_from(self, spec: str) -> None:
        """Start from another checkpoint's weights; layers whose shapes differ (a new head) stay fresh."""
        src = ckpt_io.load_checkpoint(spec)["state_dict"]
        own = self.model.state_dict()
        ok = {k: v.float() if v.is_floating_point() else v for k, v in src.items() if k in own and own[k].shape == v.shape}
        self.model.load_state_dict(ok, strict=False)
        log.info("initialised %d of %d tensors from %s (the rest, e.g. a new head, start fresh)", len(ok), len(own), spec)

    def _distill_targets(self) -> torch.Tensor:
        """Training targets ``(N, K)``: ``distill_weight`` x the teacher's probabilities (averaged over its
        ``distill_tta`` views of each un-augmented training image) + the rest x the label (one-hot, or the
        FER+ vote distribution). Computed once and kept in the run folder (teacher_probs.pt) for a resume."""
        cfg, k = self.cfg, self.data.num_classes
        if not 0.0 < cfg.distill_weight <= 1.0:
            raise ValueError(f"distill_weight must be in (0, 1], got {cfg.distill_weight}")
        cache = self.out / "teacher_probs.pt"
        if cache.is_file():
            probs = torch.load(cache, weights_only=True)
        else:
            teacher, tpre = ckpt_io.build_from_checkpoint(ckpt_io.load_checkpoint(cfg.distill))
            if tuple(tpre.label_names) != tuple(self.data.label_names) or tpre.channels != self.pre.channels:
                raise ValueError(f"distill: the teacher {cfg.distill} predicts {list(tpre.label_names)} from "
                                 f"{tpre.channels}-channel input; this run needs {list(self.data.label_names)} from "
                                 f"{self.pre.channels}-channel input")
            log.info("distill: the teacher %s labels the %d training images (%s views)", cfg.distill, len(self.train_t.y), cfg.distill_tta)
            t0 = time.perf_counter()
            probs = torch.from_numpy(predict_probs(teacher.to(self.device), self.train_t.x, tpre, cfg.distill_tta,
                                                   cfg.eval_batch_size, self.amp, cfg.channels_last))
            log.info("distill: labelled in %.0f s; the teacher agrees with %.1f%% of the training labels", time.perf_counter() - t0,
                     100 * float((probs.argmax(1) == self.train_t.y.cpu()).float().mean()))
            if self.is_main:
                self.out.mkdir(parents=True, exist_ok=True)
                torch.save(probs, cache)
        if probs.shape != (len(self.train_t.y), k):
            raise ValueError(f"{cache}: teacher probabilities of shape {tuple(probs.shape)}, expected {(len(self.train_t.y), k)}")
        label = self.train_t.soft if self.train_t.soft is not None else F.one_hot(self.train_t.y, k).float()
        return cfg.distill_weight * probs.to(self.device) + (1 - cfg.distill_weight) * label

    def checkpoint_dict(self, full: bool = True) -> dict:
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

    # -- loops

    def _batch_order(self) -> torch.Tensor:
        n = len(self.train_t.y)
        if self.sample_weight is not None:
            order = torch.multinomial(self.sample_weight, n, replacement=True, generator=self.gen)
        else:
            order = torch.randperm(n, generator=self.gen)
        return order[self.rank :: self.world]

    def _prepare(self, xb: torch.Tensor) -> torch.Tensor:
        x = xb.float().div_(255)  # (B, C, H, W) in [0, 1]
        if self.augment is not None:
            x = self.augment(x, self.gen if self.device.type == "cpu" else self._dev_gen())
        else:
            x = resize_batch(x, self.pre.input_size)
        x = self.pre.normalize(x)  # (B, C, S, S), normalised
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def _dev_gen(self) -> torch.Generator:
        # Augmentation on an accelerator draws from a device generator seeded from the CPU one.
        seed = int(torch.randint(0, 2**62, (1,), generator=self.gen))
        return torch.Generator(device=self.device).manual_seed(seed)

    def train_one_epoch(self) -> dict:
        cfg, net = self.cfg, self.net
        net.train()
        order = self._batch_order()
        bs = cfg.batch_size
        steps = min(self.steps_per_epoch, len(order) // bs) or 1
        total_loss, correct, seen = 0.0, 0, 0
        t0 = time.perf_counter()
        bar = None
        if self.progress and self.is_main:
            from tqdm.auto import tqdm

            # disable=None: no bar when stderr is not a terminal (a log file or a pipe would receive every
            # \r update); the per-epoch log line in fit() is the record there.
            bar = tqdm(total=steps, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", unit="batch", leave=False, disable=None)
        for step in range(steps):
            idx = order[step * bs : (step + 1) * bs].to(self.device)
            x = self._prepare(self.train_t.x[idx])
            y = self.train_t.y[idx]
            target = self.train_t.soft[idx] if self.train_t.soft is not None else y
            with autocast(self.device, self.amp):
                logits = net(x)
            loss = F.cross_entropy(logits.float(), target, weight=self.class_weight, label_smoothing=cfg.label_smoothing)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.grad_clip:
                self.scaler.unscale_(self.opt)
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.scaler.step(self.opt)
            self.scaler.update()
            self.sched.batch_end()
            if self.ema is not None:
                self.ema.update(self.model)
            if not torch.isfinite(loss):
                raise RuntimeError(f"training diverged at epoch {self.epoch + 1}, step {step} (loss {loss.item()}); lower lr")
            total_loss += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if bar:
                bar.update()
                bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}", lr=f"{self.sched.lr:.2g}")
        if bar:
            bar.close()
        dt = time.perf_counter() - t0
        return {"train_loss": total_loss / seen, "train_acc": correct / seen, "train_img_s": seen * self.world / dt}

    def evaluate(self, split: _Split, tta: str = "none") -> tuple[dict, np.ndarray]:
        probs = predict_probs(self.eval_model, split.x, self.pre, tta, self.cfg.eval_batch_size, self.amp, self.cfg.channels_last)
        y = split.y.cpu().numpy()
        m = classification_metrics(y, probs, self.pre.label_names)
        m["loss"] = float(F.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-12)), torch.from_numpy(y)))
        return m, probs

    # -- outputs

    def _write_epoch(self, row: dict) -> None:
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

    def fit(self) -> dict:
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
            tr = self.train_one_epoch()
            self.epoch += 1
            if self.is_main:
                vm, _ = self.evaluate(self.val_t)
                row = {"epoch": self.epoch, "lr": self.sched.lr, **tr, "val_loss": vm["loss"], "val_acc": vm["accuracy"],
                       "val_macro_f1": vm["macro_f1"], "epoch_s": time.perf_counter() - t0}
                self.history.append(row)
                improved = vm["accuracy"] > self.best_acc
                if improved:
                    self.best_acc, self.best_epoch, self.bad_epochs = vm["accuracy"], self.epoch, 0
                else:
                    self.bad_epochs += 1
                val_metric = vm["accuracy"]
            else:
                val_metric = 0.0
            if self.world > 1:
                t = torch.tensor([val_metric, self.bad_epochs], device=self.device, dtype=torch.float64)
                dist.broadcast(t, 0)
                val_metric, self.bad_epochs = float(t[0]), int(t[1])
            self.sched.epoch_end(val_metric)
            if self.is_main:
                state = self.checkpoint_dict(full=True)
                if improved:
                    ckpt_io.save_checkpoint(self.checkpoint_dict(full=False), self.out / "best.pt")
                ckpt_io.save_checkpoint(state, self.out / "last.pt")  # after best.pt: a resume never loses a best
                self._write_epoch(row)
                log.info("epoch %d/%d  loss %.3f  train %.3f  val %.4f  f1 %.3f  lr %.3g  %.0fs (%.0f img/s)%s",
                         self.epoch, cfg.epochs, tr["train_loss"], tr["train_acc"], vm["accuracy"], vm["macro_f1"],
                         row["lr"], row["epoch_s"], tr["train_img_s"], "  *best*" if improved else "")
        return self.finish()

    def finish(self) -> dict:
        if not self.is_main:
            return {}
        if (self.out / "best.pt").is_file():
            best = ckpt_io.load_checkpoint(self.out / "best.pt")
            self.eval_model.load_state_dict(best["state_dict"])  # restore the best weights
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
            tt = _to_split(test, self.device)
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
