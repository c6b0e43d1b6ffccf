"""The work of one epoch, as in torchvision's reference ``train.py``: :func:`train_one_epoch` and :func:`evaluate`.

Both take a :class:`Split`, a dataset split held on the training device as uint8 images already at the
model's size and channels (:meth:`Preprocess.prepare_images` ran once when the data was loaded), so a batch
is only indexed, augmented and normalised. :func:`predict_probs` is shared with ``ferkit eval``, the report
and the distillation teacher.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ferkit.data.augment import TTA_VIEWS, BatchAugment, tta_views
from ferkit.data.dataset import FerData
from ferkit.engine.optim import Schedule, WeightEMA
from ferkit.engine.preprocess import Preprocess
from ferkit.metrics import classification_metrics
from ferkit.runtime import autocast

# On a CPU at most this many views go through the model at once: their activations stay in cache
# (benchmarks/tta_throughput.py: 3x the views/s of 5,120 at once).
CPU_VIEWS_PER_FORWARD = 64


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W)`` / ``(N, H, W, C)`` -> uint8 ``(N, C, H, W)`` (no copy of pixel values as floats)."""
    t = torch.from_numpy(np.ascontiguousarray(images))
    return t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()


@dataclass
class Split:
    """One dataset split on the training device."""

    x: torch.Tensor  # uint8 (N, C, S, S), the model's size and channels
    y: torch.Tensor  # int64 (N,)
    soft: torch.Tensor | None  # float (N, K) training targets (FER+ votes, distillation), or None: the labels


def to_split(data: FerData, device: torch.device) -> Split:
    """``data`` (images already prepared for the model) as a :class:`Split` on ``device``."""
    soft = torch.from_numpy(data.soft).to(device) if data.soft is not None else None
    return Split(images_to_tensor(data.images).to(device), torch.from_numpy(data.labels).to(device), soft)


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
    """Class probabilities ``(N, K)`` for uint8 images ``(N, C, S, S)`` at the model's size (from
    :meth:`Preprocess.prepare_images`; other sizes raise ValueError); TTA views are averaged in probability.

    ``batch_size`` counts the views that go through the model at once: with ten-crop, a tenth as many images.
    On a CPU at most ``CPU_VIEWS_PER_FORWARD`` go at once.
    """
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))  # no parameters: an ONNX model
    if device.type == "cpu":
        batch_size = min(batch_size, CPU_VIEWS_PER_FORWARD)
    per = max(1, batch_size // TTA_VIEWS.get(tta, 1))
    out = []
    for i in range(0, len(x), per):
        xb = pre.to_float(x[i : i + per].to(device))  # (B, C, S, S) in [0, 1]
        views = tta_views(xb, tta)  # (V, B, C, S, S)
        v, b = views.shape[:2]
        xin = pre.normalize(views.flatten(0, 1))
        if channels_last:
            xin = xin.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model(xin)
        out.append(pre.probs(logits).view(v, b, -1).mean(0).cpu())  # calibrated (pre.temperature)
    return torch.cat(out).numpy() if out else np.zeros((0, len(pre.label_names)), np.float32)


class TrainTransform:
    """A training batch as the model takes it: uint8 ``(B, C, S, S)`` -> float ``(B, C, S, S)``, normalised.

    The batch augmentation (random parameters from the run's generator ``gen``), if any, runs between
    :meth:`Preprocess.to_float` and :meth:`Preprocess.normalize`; without it this is exactly deployment's
    :meth:`Preprocess.to_tensor`.
    """

    def __init__(self, pre: Preprocess, augment: BatchAugment | None, gen: torch.Generator, channels_last: bool = False):
        self.pre, self.augment, self.gen, self.channels_last = pre, augment, gen, channels_last

    def __call__(self, xb: torch.Tensor) -> torch.Tensor:
        x = self.pre.to_float(xb)  # (B, C, S, S) in [0, 1]
        if self.augment is not None:
            x = self.augment(x, self.gen if x.device.type == "cpu" else self._device_gen(x.device))
        x = self.pre.normalize(x)  # (B, C, S, S), normalised
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _device_gen(self, device: torch.device) -> torch.Generator:
        # Augmentation on an accelerator draws from a device generator seeded from the CPU one, so the
        # CPU generator's state alone (checkpointed) decides every draw.
        seed = int(torch.randint(0, 2**62, (1,), generator=self.gen))
        return torch.Generator(device=device).manual_seed(seed)


class EpochBatches:
    """The training batches of one epoch (a DataLoader for a :class:`Split` on the device).

    Each pass draws a fresh order from the run's generator ``gen``: a permutation, or with
    ``sample_weight`` (balanced sampling) a draw with replacement. Under DDP each rank takes every
    ``world``-th sample of it. Yields ``(x uint8 (B, C, S, S), labels (B,), targets)``, ``targets`` being
    the soft targets when the split has them, else the labels.
    """

    def __init__(self, split: Split, batch_size: int, steps_per_epoch: int, gen: torch.Generator,
                 sample_weight: torch.Tensor | None = None, rank: int = 0, world: int = 1):
        self.split, self.bs, self.gen, self.sample_weight = split, batch_size, gen, sample_weight
        self.rank, self.world = rank, world
        share = len(range(rank, len(split.y), world))  # this rank's samples per epoch
        self.steps = min(steps_per_epoch, share // batch_size) or 1

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        n = len(self.split.y)
        if self.sample_weight is not None:
            order = torch.multinomial(self.sample_weight, n, replacement=True, generator=self.gen)
        else:
            order = torch.randperm(n, generator=self.gen)
        order = order[self.rank :: self.world]
        s = self.split
        for step in range(self.steps):
            idx = order[step * self.bs : (step + 1) * self.bs].to(s.y.device)
            yield s.x[idx], s.y[idx], (s.soft[idx] if s.soft is not None else s.y[idx])


def train_one_epoch(
    net: nn.Module,
    criterion: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Schedule,
    scaler: torch.amp.GradScaler,
    batches: EpochBatches,
    transform: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    amp: torch.dtype | None = None,
    ema: WeightEMA | None = None,
    grad_clip: float = 0.0,
    desc: str = "",
    progress: bool = False,
) -> dict:
    """One pass over ``batches``: returns ``train_loss``, ``train_acc`` and ``train_img_s`` (all ranks).

    ``net`` is the model, or DDP around it; the schedule steps per batch, ``ema`` follows every optimizer
    step. With ``progress`` a bar is shown when stderr is a terminal (a log file or a pipe would receive
    every update; the caller logs a line per epoch instead).
    """
    model = net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net
    world = batches.world
    net.train()
    total_loss, correct, seen = 0.0, 0, 0
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(batches), desc=desc, unit="batch", leave=False, disable=None)
    for step, (xb, y, target) in enumerate(batches):
        x = transform(xb)  # (B, C, S, S), float, normalised (augmented)
        with autocast(device, amp):
            logits = net(x)
        loss = criterion(logits.float(), target)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(opt)
        scaler.update()
        sched.batch_end()
        if ema is not None:
            ema.update(model)
        if not torch.isfinite(loss):
            raise RuntimeError(f"training diverged ({desc}, step {step}, loss {loss.item()}); lower lr")
        total_loss += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
        if bar:
            bar.update()
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}", lr=f"{sched.lr:.2g}")
    if bar:
        bar.close()
    dt = time.perf_counter() - t0
    return {"train_loss": total_loss / seen, "train_acc": correct / seen, "train_img_s": seen * world / dt}


def evaluate(model: nn.Module, split: Split, pre: Preprocess, tta: str = "none", batch_size: int = 512,
             amp: torch.dtype | None = None, channels_last: bool = False) -> tuple[dict, np.ndarray]:
    """Metrics of ``model`` on ``split`` (:func:`ferkit.metrics.classification_metrics`, plus ``loss``: the NLL of
    the predicted probabilities) and those probabilities ``(N, K)``."""
    probs = predict_probs(model, split.x, pre, tta, batch_size, amp, channels_last)
    y = split.y.cpu().numpy()
    m = classification_metrics(y, probs, pre.label_names)
    m["loss"] = float(F.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-12)), torch.from_numpy(y)))
    return m, probs
