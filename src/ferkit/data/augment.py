"""Batched augmentation on the training device, with per-sample random parameters.

All geometric operations (flip, rotation, scale, translation, resized crop; the
images already have the model's input size, see ``Preprocess.prepare_images``) are composed into one affine matrix per
sample and applied with a single ``grid_sample``, so every image is resampled
once. Photometric operations are broadcast tensor arithmetic. Nothing here
loops over samples.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    hflip: float = 0.5  # probability of a horizontal flip
    rotate: float = 10.0  # max rotation, degrees (uniform in +-rotate)
    scale: tuple[float, float] = (0.9, 1.1)  # zoom factor range (>1 zooms in)
    translate: float = 0.1  # max shift, fraction of the image side
    crop: tuple[float, float] | None = None  # random resized crop: area-fraction range, e.g. (0.7, 1.0)
    crop_ratio: tuple[float, float] = (0.8, 1.25)  # aspect-ratio range of that crop
    brightness: float = 0.2  # additive, fraction of full scale
    contrast: float = 0.2  # multiplicative around the image mean
    saturation: float = 0.0  # RGB only
    hue: float = 0.0  # RGB only, fraction of a full turn
    blur: float = 0.0  # probability of a Gaussian blur
    blur_sigma: tuple[float, float] = (0.1, 1.2)  # in pixels
    noise: float = 0.0  # std of additive Gaussian noise, fraction of full scale
    erase: float = 0.0  # probability of random erasing
    erase_scale: tuple[float, float] = (0.02, 0.2)  # erased area fraction
    pad: str | tuple[str, ...] = "zeros"  # what fills the border when zoomed out or shifted: zeros, border
    # (replicate the edge), reflection, or several of them, one drawn per sample
    gamma: float = 0.0  # max |log gamma|: pixels ** gamma with log gamma uniform in +-this (low light / glare)
    lowres: float = 0.0  # probability of down-sampling to a random side in lowres_size and back (small faces)
    lowres_size: tuple[int, int] = (16, 32)  # in pixels

    def __post_init__(self):
        pads = (self.pad,) if isinstance(self.pad, str) else tuple(self.pad)
        if not pads or set(pads) - {"zeros", "border", "reflection"}:
            raise ValueError(f"augment pad must be zeros, border, reflection or a list of them, got {self.pad!r}")

    @classmethod
    def from_spec(cls, spec: object) -> AugmentConfig | None:
        """``"default"`` / ``"strong"`` / ``"none"`` / a dict of fields (over the defaults)."""
        if spec is None or spec is False or spec == "none":
            return None
        if spec == "default" or spec is True:
            return cls()
        if spec == "strong":
            return cls(rotate=15.0, scale=(0.85, 1.15), translate=0.1, brightness=0.3, contrast=0.3, erase=0.5)
        if isinstance(spec, dict):
            spec = dict(spec)
            base = cls.from_spec(spec.pop("preset", "default")) or cls()
            valid = {f.name for f in fields(cls)}
            bad = sorted(set(spec) - valid)
            if bad:
                raise ValueError(f"unknown augment key(s) {bad}; valid keys: {sorted(valid)}")
            d = asdict(base)
            for k, v in spec.items():
                d[k] = tuple(v) if isinstance(v, list) else v
            return cls(**d)
        raise ValueError(f"augment must be 'default', 'strong', 'none' or a mapping, got {spec!r}")


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


class BatchAugment:
    """Callable ``(x (B, C, H, W) float in [0, 1]) -> (B, C, S, S)`` with per-sample parameters.

    ``out_size`` is the model input size; the resize is folded into the one resampling.
    """

    def __init__(self, cfg: AugmentConfig, out_size: int):
        self.cfg, self.out_size = cfg, out_size

    def geometry(self, b: int, g: torch.Generator, device) -> torch.Tensor:
        """Per-sample affine matrices ``(B, 2, 3)`` mapping output to input coordinates (normalised)."""
        c = self.cfg
        ang = _uniform(b, -c.rotate, c.rotate, g, device) * (math.pi / 180)
        zoom = _uniform(b, c.scale[0], c.scale[1], g, device)
        sx = sy = 1.0 / zoom  # zooming in samples a smaller input region
        tx, ty = torch.zeros(b, device=device), torch.zeros(b, device=device)
        if c.crop:
            area = _uniform(b, c.crop[0], c.crop[1], g, device)
            logr = _uniform(b, math.log(c.crop_ratio[0]), math.log(c.crop_ratio[1]), g, device)
            w = torch.sqrt(area * torch.exp(logr)).clamp(max=1.0)
            h = torch.sqrt(area / torch.exp(logr)).clamp(max=1.0)
            sx, sy = sx * w, sy * h
            tx = (torch.rand(b, generator=g, device=device) * 2 - 1) * (1 - w)
            ty = (torch.rand(b, generator=g, device=device) * 2 - 1) * (1 - h)
        tx = tx + _uniform(b, -c.translate, c.translate, g, device) * 2  # normalised coords span 2
        ty = ty + _uniform(b, -c.translate, c.translate, g, device) * 2
        flip = torch.where(torch.rand(b, generator=g, device=device) < c.hflip, -1.0, 1.0)
        cos, sin = torch.cos(ang), torch.sin(ang)
        theta = torch.stack(
            [torch.stack([cos * sx * flip, -sin * sy, tx], 1), torch.stack([sin * sx * flip, cos * sy, ty], 1)], 1
        )
        return theta

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        c, (b, ch) = self.cfg, x.shape[:2]
        dev = x.device
        theta = self.geometry(b, g, dev).to(x.dtype)
        grid = F.affine_grid(theta, [b, ch, self.out_size, self.out_size], align_corners=False)
        pads = (c.pad,) if isinstance(c.pad, str) else tuple(c.pad)
        if len(pads) == 1:
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode=pads[0], align_corners=False)
        else:  # one padding mode per sample
            pick = torch.randint(0, len(pads), (b,), generator=g, device=dev).view(b, 1, 1, 1)
            outs = [F.grid_sample(x, grid, mode="bilinear", padding_mode=m, align_corners=False) for m in pads]
            x = outs[0]
            for i, o in enumerate(outs[1:], 1):
                x = torch.where(pick == i, o, x)
        # (B, C, S, S) from here on
        if c.lowres:
            x = self._lowres(x, g)
        if c.brightness or c.contrast:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            k = _uniform(b, 1 - c.contrast, 1 + c.contrast, g, dev).view(b, 1, 1, 1)
            d = _uniform(b, -c.brightness, c.brightness, g, dev).view(b, 1, 1, 1)
            x = (x - mean) * k + mean + d
        if c.gamma:
            gm = torch.exp(_uniform(b, -c.gamma, c.gamma, g, dev)).view(b, 1, 1, 1).to(x.dtype)
            x = x.clamp(1e-4, 1).pow(gm)
        if ch == 3 and (c.saturation or c.hue):
            x = self._color(x, g)
        if c.blur:
            x = self._blur(x, g)
        if c.noise:
            x = x + torch.randn(x.shape, generator=g, device=dev, dtype=x.dtype) * c.noise
        x = x.clamp_(0, 1)
        if c.erase:
            x = self._erase(x, g)
        return x

    def _color(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, dev, c = x.shape[0], x.device, self.cfg
        grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
        s = _uniform(b, 1 - c.saturation, 1 + c.saturation, g, dev).view(b, 1, 1, 1)
        x = (x - grey) * s + grey
        if c.hue:
            # hue rotation about the grey axis (YIQ-style), one 3x3 matrix per sample
            a = _uniform(b, -c.hue, c.hue, g, dev) * 2 * math.pi
            cos, sin = torch.cos(a), torch.sin(a)
            k = 1.0 / 3.0
            r = math.sqrt(k)
            m = torch.stack(
                [
                    torch.stack([cos + (1 - cos) * k, k * (1 - cos) - r * sin, k * (1 - cos) + r * sin], 1),
                    torch.stack([k * (1 - cos) + r * sin, cos + k * (1 - cos), k * (1 - cos) - r * sin], 1),
                    torch.stack([k * (1 - cos) - r * sin, k * (1 - cos) + r * sin, cos + k * (1 - cos)], 1),
                ],
                1,
            ).to(x.dtype)
            x = torch.einsum("bij,bjhw->bihw", m, x)
        return x

    def _lowres(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Down-sample a random share of the batch to one random side and back up (as a small, upscaled face)."""
        b, s = x.shape[0], x.shape[-1]
        lo, hi = self.cfg.lowres_size
        side = int(torch.randint(lo, hi + 1, (1,), generator=g))
        if side >= s:
            return x
        apply = (torch.rand(b, generator=g, device=x.device) < self.cfg.lowres).view(b, 1, 1, 1)
        small = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        return torch.where(apply, F.interpolate(small, size=(s, s), mode="bilinear", align_corners=False), x)

    def _blur(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, ch, h, w = x.shape
        c, dev = self.cfg, x.device
        apply = torch.rand(b, generator=g, device=dev) < c.blur
        sigma = _uniform(b, c.blur_sigma[0], c.blur_sigma[1], g, dev)
        radius = max(1, int(math.ceil(2 * c.blur_sigma[1])))
        t = torch.arange(-radius, radius + 1, device=dev, dtype=x.dtype)
        k = torch.exp(-(t.view(1, -1) ** 2) / (2 * sigma.view(-1, 1).to(x.dtype) ** 2))
        k = k / k.sum(1, keepdim=True)
        k = torch.where(apply.view(-1, 1), k, (t == 0).to(x.dtype).view(1, -1))  # identity kernel where not applied
        # separable per-sample blur as a grouped convolution over (1, B*C, H, W)
        kk = k.repeat_interleave(ch, 0)
        y = x.reshape(1, b * ch, h, w)
        y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), kk.view(b * ch, 1, 1, -1), groups=b * ch)
        y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), kk.view(b * ch, 1, -1, 1), groups=b * ch)
        return y.view(b, ch, h, w)

    def _erase(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, ch, h, w = x.shape
        c, dev = self.cfg, x.device
        apply = torch.rand(b, generator=g, device=dev) < c.erase
        area = _uniform(b, c.erase_scale[0], c.erase_scale[1], g, dev)
        logr = _uniform(b, math.log(0.3), math.log(3.3), g, dev)
        eh = (torch.sqrt(area / torch.exp(logr)) * h).clamp(1, h)
        ew = (torch.sqrt(area * torch.exp(logr)) * w).clamp(1, w)
        y0 = torch.rand(b, generator=g, device=dev) * (h - eh)
        x0 = torch.rand(b, generator=g, device=dev) * (w - ew)
        yy = torch.arange(h, device=dev).view(1, h, 1)
        xx = torch.arange(w, device=dev).view(1, 1, w)
        box = (yy >= y0.view(b, 1, 1)) & (yy < (y0 + eh).view(b, 1, 1)) & (xx >= x0.view(b, 1, 1)) & (xx < (x0 + ew).view(b, 1, 1))
        box &= apply.view(b, 1, 1)
        fill = torch.rand(x.shape, generator=g, device=dev, dtype=x.dtype)  # random-value erasing
        return torch.where(box.unsqueeze(1), fill, x)


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(B, C, H, W)`` to ``size`` x ``size`` (bilinear, antialiased when shrinking).

    Only for the ten-crop views of :func:`tta_views`: images reach the model's size through
    ``Preprocess.prepare_images`` (ferkit.imageio.resize_image), in training as in deployment.
    """
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > size)


TTA_VIEWS = {"none": 1, "flip": 2, "tencrop": 10}  # views per image of each test-time augmentation mode


def tta_views(x: torch.Tensor, mode: str, crop_frac: float = 0.875) -> torch.Tensor:
    """Test-time views of ``(B, C, S, S)``: ``(V, B, C, S, S)``.

    ``flip``: the image and its mirror (V=2). ``tencrop``: four corner crops and
    the centre crop of side ``crop_frac * S``, each resized back to S, plus their
    mirrors (V=10). ``none``: V=1.
    """
    if mode == "none":
        return x.unsqueeze(0)
    if mode == "flip":
        return torch.stack([x, x.flip(-1)])
    if mode != "tencrop":
        raise ValueError(f"unknown TTA mode {mode!r}; expected none, flip or tencrop")
    s = x.shape[-1]
    c = int(round(s * crop_frac))
    o = s - c
    m = o // 2
    crops = [x[..., :c, :c], x[..., :c, o:], x[..., o:, :c], x[..., o:, o:], x[..., m : m + c, m : m + c]]
    crops = [resize_batch(v, s) for v in crops]
    return torch.stack(crops + [v.flip(-1) for v in crops])
