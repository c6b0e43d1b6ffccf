"""The parts of a training run, one builder each: data, model, optimizer, loss, distillation targets.

:class:`ferkit.engine.trainer.Trainer` calls them in order; each takes the config and what earlier ones
built, and none reads or writes the run's checkpoints.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ferkit.data.dataset import FerData
from ferkit.data.readers import load_dataset
from ferkit.engine import checkpoint as ckpt_io
from ferkit.engine import optim
from ferkit.engine.config import TrainConfig
from ferkit.engine.preprocess import Preprocess
from ferkit.engine.steps import images_to_tensor, predict_probs
from ferkit.models.registry import create_model, model_info

log = logging.getLogger(__name__)


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


def default_norm(channels: int, pretrained: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of [0, 1] pixels: ImageNet's for a pretrained RGB backbone, else 0.5 / 0.25 per channel."""
    if pretrained and channels == 3:
        return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return (0.5,) * channels, (0.25,) * channels


@dataclass
class TrainData:
    """A run's dataset with its images at the model's size and channels, its train and val subsets, and the
    :class:`Preprocess` that prepared them (and travels in every checkpoint)."""

    data: FerData
    train: FerData
    val: FerData
    pre: Preprocess


def build_data(cfg: TrainConfig) -> TrainData:
    """Load ``cfg.data``, choose channels, size and normalisation, and bring every image to them once with
    :meth:`Preprocess.prepare_images` (deployment's function), so no batch is resized while training."""
    info = model_info(cfg.model)
    data = load_dataset(cfg.data, labels=cfg.labels, ferplus=cfg.ferplus, ferplus_mode=cfg.ferplus_mode, join_csv=cfg.join_csv,
                        ferplus_mix=cfg.ferplus_mix)
    pretrained = info.family == "pretrained"
    channels = cfg.channels or (3 if pretrained else data.channels)
    mean, std = default_norm(channels, pretrained)
    pre = Preprocess(
        input_size=cfg.input_size or info.input_size,
        channels=channels,
        mean=tuple(cfg.mean) or mean,
        std=tuple(cfg.std) or std,
        label_names=data.label_names,
    )
    if cfg.init_from:  # a fine-tuning stage keeps the face crop its starting model was calibrated for (not its temperature)
        start = Preprocess.from_dict(ckpt_io.load_checkpoint(resolve_init_from(cfg))["preprocess"])
        if (start.input_size, start.channels) == (pre.input_size, pre.channels):
            pre.crop_margin = start.crop_margin
            pre.crop_geometry = {d: {k: v for k, v in g.items() if k != "temperature"} for d, g in start.crop_geometry.items()}
    stored = data.images.shape[1:]
    data.images = pre.prepare_images(data.images)  # uint8 (N, S, S[, 3]); the same array when already so
    if data.images.shape[1:] != stored:
        log.info("images brought from %s to %s for the model (%.0f MB)", "x".join(map(str, stored)),
                 "x".join(map(str, data.images.shape[1:])), data.images.nbytes / 2**20)
    train = stratified_subset(data.subset(cfg.train_split), cfg.train_limit, cfg.seed)
    val = stratified_subset(data.subset(cfg.val_split), cfg.val_limit, cfg.seed)
    if len(train) == 0:
        raise ValueError(f"{cfg.data}: the {cfg.train_split!r} split is empty (splits present: {data.splits()})")
    if len(val) == 0:
        raise ValueError(f"{cfg.data}: the {cfg.val_split!r} split is empty (splits present: {data.splits()}); "
                         "make one with 'ferkit data split'")
    return TrainData(data, train, val, pre)


def build_model(cfg: TrainConfig, pre: Preprocess, num_classes: int, device: torch.device, init: bool = True,
                world: int = 1) -> tuple[nn.Module, nn.Module, optim.WeightEMA | None]:
    """``(model, net, ema)``: the model the optimizer steps (from ``cfg.init_from`` when ``init``; a resumed
    run loads its own weights instead), what the training step calls (DDP around the model when ``world`` > 1,
    else the model), and the moving average of its weights when ``cfg.ema`` is set."""
    model = create_model(cfg.model, num_classes=num_classes, in_chans=pre.channels, **cfg.model_kwargs).to(device)
    if cfg.init_from and init:
        init_from(model, cfg.init_from)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = optim.WeightEMA(model, cfg.ema) if cfg.ema else None
    net = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model, net, ema


def resolve_init_from(cfg: TrainConfig) -> str:
    """What :func:`~ferkit.engine.checkpoint.load_checkpoint` takes for ``cfg.init_from``; a shipped model must match
    its pin (:func:`~ferkit.engine.checkpoint.resolve_pinned`), and ``cfg.init_from`` becomes ``name@<full sha256>``
    of the file used, so config.yaml and every checkpoint of the run record it. A bare shipped name (a config from
    before pins, e.g. a resumed run) is taken as ``@latest``, with a warning."""
    spec, digest = ckpt_io.resolve_pinned(cfg.init_from, "init_from", legacy_ok=True)
    if digest is not None:
        if "@" not in cfg.init_from:
            log.warning("init_from=%s: a shipped model without a pin, taken as %s@%s (the file that ships today)",
                        cfg.init_from, spec, ckpt_io.PIN_LATEST)
        cfg.init_from = f"{spec}@{digest}"
    return spec


def init_from(model: nn.Module, spec: str) -> None:
    """Start from another checkpoint's weights (``spec``: a path, run folder or pinned shipped model); layers whose
    shapes differ (a new head) stay fresh."""
    src = ckpt_io.load_checkpoint(ckpt_io.resolve_pinned(spec, "init_from", legacy_ok=True)[0])["state_dict"]
    own = model.state_dict()
    ok = {k: v.float() if v.is_floating_point() else v for k, v in src.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(ok, strict=False)
    log.info("initialised %d of %d tensors from %s (the rest, e.g. a new head, start fresh)", len(ok), len(own), spec)


def build_optimizer(model: nn.Module, cfg: TrainConfig, steps_per_epoch: int, device: torch.device,
                    amp: torch.dtype | None) -> tuple[torch.optim.Optimizer, optim.Schedule, torch.amp.GradScaler]:
    """The optimizer (:func:`ferkit.engine.optim.build_optimizer`), its learning-rate :class:`Schedule`, and the
    gradient scaler float16 autocast on CUDA needs (disabled otherwise)."""
    opt = optim.build_optimizer(model, cfg)
    sched = optim.Schedule(opt, cfg, steps_per_epoch)
    scaler = torch.amp.GradScaler(enabled=amp == torch.float16 and device.type == "cuda")
    return opt, sched, scaler


class LogitAdjustedLoss(nn.Module):
    """A loss on ``logits + tau * log(prior)`` (logit adjustment, Menon et al. 2021): the network learns scores for
    a balanced class prior (``tau`` 1), so rare classes (disgust, fear) are not traded away for the frequent
    ones; deployment takes the raw logits."""

    def __init__(self, loss: nn.Module, prior: np.ndarray, tau: float, device: torch.device):
        super().__init__()
        self.loss = loss
        self.register_buffer("shift", tau * torch.log(torch.tensor(prior, dtype=torch.float32, device=device).clamp_min(1e-6)))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits + self.shift, target)


def build_criterion(cfg: TrainConfig, train_labels: np.ndarray, num_classes: int, device: torch.device,
                    train_soft: np.ndarray | None = None) -> nn.Module:
    """Cross-entropy with ``cfg.label_smoothing`` and, with ``cfg.class_weights``, inverse-frequency class weights
    (mean 1 over the classes present); with ``cfg.logit_adjust``, a :class:`LogitAdjustedLoss` whose prior is the
    mean training target (``train_soft`` when given, else the label frequencies). Takes class indices or soft
    targets ``(B, K)``."""
    weight = None
    if cfg.class_weights:
        counts = np.bincount(train_labels, minlength=num_classes).astype(np.float64)
        w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / num_classes, 0.0)
        weight = torch.tensor(w, dtype=torch.float32, device=device)
    loss = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    if not cfg.logit_adjust:
        return loss
    if train_soft is not None:
        prior = np.asarray(train_soft, np.float64).mean(0)
    else:
        prior = np.bincount(train_labels, minlength=num_classes) / max(len(train_labels), 1)
    log.info("logit adjustment tau %.2f, class prior %s", cfg.logit_adjust, np.round(prior, 3).tolist())
    return LogitAdjustedLoss(loss, prior, cfg.logit_adjust, device)


def sample_weights(train_labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Per-sample weights ``(N,)`` that draw every class equally often (balanced sampling)."""
    counts = np.bincount(train_labels, minlength=num_classes).astype(np.float64)
    return torch.from_numpy(1.0 / np.maximum(counts, 1))[torch.from_numpy(train_labels)]


def build_teacher(cfg: TrainConfig, out: Path, train: FerData, pre: Preprocess, device: torch.device,
                  amp: torch.dtype | None, save: bool = True) -> torch.Tensor:
    """Distillation targets ``(N, K)`` on ``device`` for the training images ``train`` (prepared by ``pre``):
    ``distill_weight`` x the teacher's probabilities (averaged over its ``distill_tta`` views of each
    un-augmented image) + the rest x the label (one-hot, or the FER+ vote distribution). Computed once and
    kept in the run folder (teacher_probs.pt, written when ``save``: rank 0) for a resume."""
    k = len(pre.label_names)
    if not 0.0 < cfg.distill_weight <= 1.0:
        raise ValueError(f"distill_weight must be in (0, 1], got {cfg.distill_weight}")
    cache = out / "teacher_probs.pt"
    if cache.is_file():
        probs = torch.load(cache, weights_only=True)
    else:
        teacher, tpre = ckpt_io.build_from_checkpoint(ckpt_io.load_checkpoint(cfg.distill))
        if tuple(tpre.label_names) != tuple(pre.label_names) or tpre.channels != pre.channels:
            raise ValueError(f"distill: the teacher {cfg.distill} predicts {list(tpre.label_names)} from "
                             f"{tpre.channels}-channel input; this run needs {list(pre.label_names)} from "
                             f"{pre.channels}-channel input")
        if tpre.input_size != pre.input_size:
            log.info("distill: the teacher takes %d px input: the training images are resized from %d px for it",
                     tpre.input_size, pre.input_size)
        x = images_to_tensor(tpre.prepare_images(train.images))  # uint8 (N, C, S, S) at the teacher's size
        log.info("distill: the teacher %s labels the %d training images (%s views)", cfg.distill, len(train), cfg.distill_tta)
        t0 = time.perf_counter()
        probs = torch.from_numpy(predict_probs(teacher.to(device), x, tpre, cfg.distill_tta, cfg.eval_batch_size, amp,
                                               cfg.channels_last))
        log.info("distill: labelled in %.0f s; the teacher agrees with %.1f%% of the training labels", time.perf_counter() - t0,
                 100 * float((probs.argmax(1).numpy() == train.labels).mean()))
        if save:
            out.mkdir(parents=True, exist_ok=True)
            torch.save(probs, cache)
    if probs.shape != (len(train), k):
        raise ValueError(f"{cache}: teacher probabilities of shape {tuple(probs.shape)}, expected {(len(train), k)}")
    labels = torch.from_numpy(train.labels)
    label = torch.from_numpy(train.soft) if train.soft is not None else F.one_hot(labels, k).float()
    return (cfg.distill_weight * probs + (1 - cfg.distill_weight) * label).to(device)
