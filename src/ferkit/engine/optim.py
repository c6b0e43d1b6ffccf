"""Optimizer and learning-rate schedule factories (name -> constructor), with clear errors.

Below :mod:`ferkit.engine.config`: the config validates its optimizer and schedule by building them here, so this
module takes any object with the settings of :class:`OptimSettings` (a ``TrainConfig`` has them all) and never
imports the config.
"""

from __future__ import annotations

import copy
import difflib
from typing import Protocol

import torch
from torch import nn


class OptimSettings(Protocol):
    """The settings the optimizer and schedule read (the fields of ``TrainConfig`` of the same names)."""

    optimizer: str
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    head_lr_mult: float
    scheduler: str
    epochs: int
    warmup_epochs: float
    step_size: int
    gamma: float
    milestones: list
    plateau_patience: int
    plateau_factor: float
    restart_period: int
    restart_mult: int
    min_lr: float


def _unknown(kind: str, name: str, valid) -> ValueError:
    close = difflib.get_close_matches(name, list(valid), n=2)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return ValueError(f"unknown {kind} {name!r}{hint}; valid: {', '.join(valid)}")


OPTIMIZERS = {
    "sgd": lambda p, c: torch.optim.SGD(p, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov and c.momentum > 0, weight_decay=c.weight_decay),
    "nesterov": lambda p, c: torch.optim.SGD(p, lr=c.lr, momentum=c.momentum or 0.9, nesterov=True, weight_decay=c.weight_decay),
    "asgd": lambda p, c: torch.optim.ASGD(p, lr=c.lr, weight_decay=c.weight_decay),
    "adam": lambda p, c: torch.optim.Adam(p, lr=c.lr, weight_decay=c.weight_decay),
    "amsgrad": lambda p, c: torch.optim.Adam(p, lr=c.lr, weight_decay=c.weight_decay, amsgrad=True),
    "adamw": lambda p, c: torch.optim.AdamW(p, lr=c.lr, weight_decay=c.weight_decay),
    "adadelta": lambda p, c: torch.optim.Adadelta(p, lr=c.lr, weight_decay=c.weight_decay),
    "adagrad": lambda p, c: torch.optim.Adagrad(p, lr=c.lr, weight_decay=c.weight_decay),
}


def param_groups(model: nn.Module, cfg: OptimSettings) -> list[dict]:
    """Two groups: the head (lr x head_lr_mult) and the rest; no weight decay on norms and biases."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_head = name.startswith("head.") or ".head." in name
        no_decay = p.ndim <= 1
        groups.setdefault((is_head, no_decay), []).append(p)
    out = []
    for (is_head, no_decay), params in groups.items():
        lr = cfg.lr * (cfg.head_lr_mult if is_head else 1.0)
        out.append({"params": params, "lr": lr, "initial_lr": lr, "weight_decay": 0.0 if no_decay else cfg.weight_decay})
    return out


def build_optimizer(model: nn.Module, cfg: OptimSettings) -> torch.optim.Optimizer:
    name = cfg.optimizer.lower()
    if name not in OPTIMIZERS:
        raise _unknown("optimizer", cfg.optimizer, OPTIMIZERS)
    return OPTIMIZERS[name](param_groups(model, cfg), cfg)


class Schedule:
    """Wraps a torch LR scheduler with optional linear warm-up; knows whether it steps per batch or per epoch."""

    def __init__(self, opt: torch.optim.Optimizer, cfg: OptimSettings, steps_per_epoch: int):
        name = cfg.scheduler.lower()
        self.opt, self.cfg, self.spe = opt, cfg, steps_per_epoch
        self.warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
        self.per_batch = name in ("cosine", "warm_restarts", "onecycle")
        total = cfg.epochs * steps_per_epoch
        builders = {
            "none": lambda: None,
            "constant": lambda: None,
            "step": lambda: torch.optim.lr_scheduler.StepLR(opt, cfg.step_size, cfg.gamma),
            "multistep": lambda: torch.optim.lr_scheduler.MultiStepLR(opt, list(cfg.milestones), cfg.gamma),
            "plateau": lambda: torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr
            ),
            "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, total - self.warmup_steps), eta_min=cfg.min_lr),
            "warm_restarts": lambda: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
                opt, max(1, cfg.restart_period * steps_per_epoch), cfg.restart_mult, eta_min=cfg.min_lr
            ),
            "onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(
                # at least 2 steps of warm-up: torch divides by the warm-up's length (a 4-step run would have 0)
                opt, max_lr=[g["initial_lr"] for g in opt.param_groups], total_steps=max(3, total),
                pct_start=min(0.6, max(0.25, 2.0 / max(3, total)))
            ),
        }
        if name not in builders:
            raise _unknown("scheduler", cfg.scheduler, builders)
        if name == "onecycle":
            self.warmup_steps = 0  # one-cycle has its own warm-up
        self.sched = builders[name]()
        self.base = [g["initial_lr"] for g in opt.param_groups]
        self.step_count = 0
        if self.warmup_steps:
            self._set_warmup()

    def _set_warmup(self) -> None:
        f = min(1.0, (self.step_count + 1) / self.warmup_steps)
        for g, b in zip(self.opt.param_groups, self.base):
            g["lr"] = b * f

    def batch_end(self) -> None:
        self.step_count += 1
        if self.step_count < self.warmup_steps:
            self._set_warmup()
            return
        if self.step_count == self.warmup_steps:
            for g, b in zip(self.opt.param_groups, self.base):
                g["lr"] = b
            return
        if self.per_batch and self.sched is not None:
            self.sched.step()

    def epoch_end(self, val_metric: float) -> None:
        if self.per_batch or self.sched is None or self.step_count < self.warmup_steps:
            return
        if isinstance(self.sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.sched.step(val_metric)
        else:
            self.sched.step()

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "sched": self.sched.state_dict() if self.sched else None}

    def load_state_dict(self, d: dict) -> None:
        self.step_count = d["step_count"]
        if self.sched is not None and d["sched"] is not None:
            self.sched.load_state_dict(d["sched"])

    @property
    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])


class WeightEMA:
    """An exponential moving average of a model's weights and buffers (Polyak averaging).

    ``update()`` after each optimizer step moves every floating-point tensor of ``module``'s
    state towards the live model's: ``ema += (1 - d) * (live - ema)`` with ``d = min(decay, n / (n + 1))``
    at the n-th update. So while there are at most ``1 / (1 - decay)`` weight sets to average (the
    starting ones and one per update), the average is their plain mean, as in stochastic weight
    averaging, with no bias towards the starting weights; later it is an exponential average over
    about that many steps. Integer buffers (BatchNorm's batch counter) are copied.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be between 0 and 1 (e.g. 0.999), got {decay}")
        self.decay, self.updates = decay, 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        state = self.module.state_dict()
        self._floats = [k for k, v in state.items() if v.is_floating_point()]  # averaged
        self._ints = [k for k, v in state.items() if not v.is_floating_point()]  # copied

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, self.updates / (self.updates + 1))
        live, own = model.state_dict(), self.module.state_dict()  # tensors share storage with the modules
        torch._foreach_lerp_([own[k] for k in self._floats], [live[k] for k in self._floats], 1.0 - d)
        for k in self._ints:
            own[k].copy_(live[k])
