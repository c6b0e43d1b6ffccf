"""Training configuration: dataclass defaults -> YAML recipe -> ``key=value`` overrides.

Unknown keys are errors that list the valid ones; the resolved config is saved
beside every run and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# The recipes ship inside the package (and so in the wheel): ferkit/recipes/*.yaml, sweeps in ferkit/recipes/sweeps/.
RECIPE_DIRS = [Path(__file__).resolve().parents[1] / "recipes"]
# Recipes name their data under this environment variable (e.g. ``data: $FERKIT_DATA/fer2013``): the folder holding
# a user's datasets, set once, instead of a path into one machine's layout. ``data=PATH`` on the command line wins.
DATA_VAR = "FERKIT_DATA"
PATH_KEYS = ("data", "ferplus", "join_csv")


# Settings a resumed run may change: they do not change the maths (the trainer and sweeps use this).
RUNTIME_KEYS = ("threads", "device", "eval_batch_size")


@dataclass
class TrainConfig:
    # --- data
    data: str = ""  # fer2013.csv, an image folder, or (with ferplus) FER2013 images
    labels: str | None = None  # remap to this label set by name, e.g. "fer5" or "angry,happy,sad"
    ferplus: str | None = None  # fer2013new.csv: train on FER+ votes instead of FER2013 labels
    ferplus_mode: str = "majority"  # majority | soft
    ferplus_mix: float = 0.0  # 0 < w < 1 (with ferplus): keep the FER2013 labels and learn (1 - w) x their one-hot
    # + w x the FER+ vote distribution over FER2013's 7 classes (both label sets at once); 0: ferplus replaces them
    join_csv: str | None = None  # jpg -> FER+ row table, for FER2013 image folders
    channels: int | None = None  # 1 or 3; default: the model's/dataset's
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    train_limit: int = 0  # >0: a stratified, seeded subset of this many training images (quick runs)
    val_limit: int = 0
    # --- model
    model: str = "resnet18"
    model_kwargs: dict = field(default_factory=dict)
    input_size: int = 0  # 0: the model's registered input size
    mean: list = field(default_factory=list)  # empty: 0.5 / 0.25 per channel (ImageNet stats for pretrained)
    std: list = field(default_factory=list)
    init_from: str | None = None  # checkpoint or run folder to start from (a fine-tuning stage), or a shipped model
    # pinned by its digest, default@<12+ hex of its sha256>, or default@latest (bare "default" is refused); a run
    # records the file it started from as name@<full sha256>
    # --- optimisation
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    head_lr_mult: float = 1.0  # learning-rate multiplier for the head (new layer when fine-tuning)
    scheduler: str = "cosine"
    warmup_epochs: float = 0.0
    step_size: int = 10
    gamma: float = 0.1
    milestones: list = field(default_factory=lambda: [15, 25])
    plateau_patience: int = 5
    plateau_factor: float = 0.5
    restart_period: int = 10  # T_0 of cosine with warm restarts, in epochs
    restart_mult: int = 1
    min_lr: float = 0.0
    label_smoothing: float = 0.0
    class_weights: bool = False  # inverse-frequency class weights in the loss
    logit_adjust: float = 0.0  # tau of the logit-adjusted loss (Menon et al. 2021): the loss sees logits + tau x
    # log(class prior of the training targets), so the model learns balanced-prior scores (1: fully balanced)
    balanced_sampling: bool = False  # sample classes equally often (with replacement)
    grad_clip: float = 0.0
    early_stopping: int = 0  # patience in epochs on val accuracy (0: off); best weights restored
    keep_epochs: bool = False  # also keep every epoch's weights (epochs/epoch_NNN.pt), to choose on other sets later
    distill: str | None = None  # teacher checkpoint or run folder: learn from its probabilities too
    distill_tta: str = "tencrop"  # none | flip | tencrop: the teacher's views of each training image
    distill_weight: float = 0.5  # share of the teacher's probabilities in the target (the rest: the label)
    ema: float = 0.0  # >0: keep an exponential moving average of the weights with this decay per step
    # (e.g. 0.999); validation, best.pt and the test figures then use the averaged weights
    # --- augmentation (see ferkit.data.augment.AugmentConfig); "none" turns it off
    augment: Any = "default"
    # --- evaluation and runtime
    tta: str = "none"  # none | flip | tencrop: for the final test-split evaluation
    amp: str = "auto"  # auto | bf16 | fp16 | none; auto = bf16 on CPUs that support it, fp16 on CUDA
    channels_last: bool = True
    device: str = "auto"
    threads: int = 0  # torch CPU threads (0: PyTorch's default)
    seed: int = 0
    eval_batch_size: int = 512
    notes: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self, check_data: bool = False) -> TrainConfig:
        """Check what the dataclass cannot: optimizer, schedule, model and its kwargs, augmentation, amp, TTA,
        the pin of a shipped ``init_from`` (then written ``name@<full sha256>``: the resolved config names the file),
        numbers in range, and (``check_data``) that the dataset exists. Cheap: models are built on the ``meta``
        device and nothing is read. Raises ValueError / FileNotFoundError naming the bad value and the valid ones;
        returns ``self``. :func:`load_config` calls it, so a bad setting fails before any data is read."""
        import inspect

        import torch
        from torch import nn

        from ferkit.data.augment import TTA_VIEWS, AugmentConfig
        from ferkit.engine.checkpoint import resolve_pinned
        from ferkit.engine.optim import Schedule, build_optimizer
        from ferkit.models.registry import model_info
        from ferkit.runtime import autocast_dtype

        if check_data:
            if not self.data:
                raise ValueError("no dataset given: set data=PATH (a fer2013.csv or an image folder)")
            if not Path(self.data).exists():
                raise FileNotFoundError(f"data={self.data}: dataset not found (expected a fer2013.csv file or an image folder)")
        info = model_info(self.model)
        try:
            inspect.signature(info.fn).bind(num_classes=7, in_chans=self.channels or 1, **self.model_kwargs)
        except TypeError as exc:
            valid = [p for p in inspect.signature(info.fn).parameters if p not in ("num_classes", "in_chans")]
            raise ValueError(f"model {self.model} does not take model_kwargs {self.model_kwargs} ({exc}); "
                             f"its keyword arguments: {', '.join(valid) or 'none'}") from None
        if "weights" not in self.model_kwargs:  # a weights file is read at build time: leave it to the run
            with torch.device("meta"):
                info.fn(num_classes=7, in_chans=self.channels or (3 if info.family == "pretrained" else 1), **self.model_kwargs)
        Schedule(build_optimizer(nn.Linear(1, 1), self), self, steps_per_epoch=1)
        if self.init_from:  # a shipped model named by its digest or @latest, never bare; kept as name@<full sha256>
            name, digest = resolve_pinned(self.init_from, "init_from")
            if digest is not None:
                self.init_from = f"{name}@{digest}"
        AugmentConfig.from_spec(self.augment)
        autocast_dtype(self.amp, torch.device("cpu"))
        for key in ("tta", "distill_tta"):
            if getattr(self, key) not in TTA_VIEWS:
                raise ValueError(f"unknown {key} mode {getattr(self, key)!r}; valid: {', '.join(TTA_VIEWS)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1 (got epochs={self.epochs}, batch_size={self.batch_size})")
        if self.ferplus_mode not in ("majority", "soft"):
            raise ValueError(f"unknown ferplus_mode {self.ferplus_mode!r}; valid: majority, soft")
        if not 0.0 <= self.ferplus_mix < 1.0:
            raise ValueError(f"ferplus_mix must be in [0, 1) (the FER+ votes' share of the target), got {self.ferplus_mix}")
        if self.ferplus_mix and not self.ferplus:
            raise ValueError("ferplus_mix needs ferplus=fer2013new.csv (the votes to mix with the dataset's labels)")
        if self.logit_adjust < 0:
            raise ValueError(f"logit_adjust must be >= 0 (0: off, 1: balanced prior), got {self.logit_adjust}")
        if self.distill and not 0.0 < self.distill_weight <= 1.0:
            raise ValueError(f"distill_weight must be in (0, 1], got {self.distill_weight}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1) (a decay per step, e.g. 0.9995; 0 turns it off), got {self.ema}")
        return self


def _field_types() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def _check_keys(keys, where: str) -> None:
    fields = _field_types()
    for k in keys:
        if k not in fields:
            close = difflib.get_close_matches(k, fields, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"{where}: unknown config key {k!r}{hint}. Valid keys: {', '.join(fields)}")


def find_recipe(name: str | Path) -> Path:
    """A recipe path, or a recipe name looked up in the ``recipes/`` folders."""
    p = Path(name)
    if p.is_file():
        return p
    for d in RECIPE_DIRS:
        for cand in (d / f"{name}.yaml", d / str(name)):
            if cand.is_file():
                return cand
    names = list_recipes()
    raise FileNotFoundError(f"recipe {str(name)!r} not found; give a YAML file path or one of: "
                            f"{', '.join(names) or '(none installed)'}")


def list_recipes() -> list[str]:
    """The names of the recipes that ship with ferkit (``ferkit train --recipe NAME``), sorted."""
    return sorted({q.stem for d in RECIPE_DIRS if d.is_dir() for q in d.glob("*.yaml")})


def expand_data_paths(cfg: dict, where: str) -> dict:
    """``$FERKIT_DATA`` in the path keys replaced by the environment variable; unset, an error that says how to set it."""
    import os

    for key in PATH_KEYS:
        value = cfg.get(key)
        if isinstance(value, str) and f"${DATA_VAR}" in value:
            root = os.environ.get(DATA_VAR)
            if not root:
                raise ValueError(f"{where}: {key}={value} reads from ${DATA_VAR}, which is not set: set {DATA_VAR} to the "
                                 f"folder holding your datasets (e.g. export {DATA_VAR}=../shared/data) or give {key}=PATH")
            cfg[key] = value.replace(f"${DATA_VAR}", root.rstrip("/"))
    return cfg


def parse_value(text: str) -> Any:
    """Parse a CLI override value as YAML (numbers, booleans, lists, dicts), else keep the string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_overrides(items: list[str]) -> dict:
    """``["lr=0.01", "augment.rotate=15"]`` -> nested dict; dotted keys set inside dict-valued keys."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, val = item.split("=", 1)
        parts = key.strip().split(".")
        d = out
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = parse_value(val)
    return out


def _merge(base: dict, upd: dict) -> dict:
    out = dict(base)
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _coerce(cfg: dict) -> dict:
    fields = _field_types()
    for k, v in cfg.items():
        t = fields[k].type
        if v is None:
            continue
        if t in ("int", int) and not isinstance(v, bool):
            cfg[k] = int(v)
        elif t in ("float", float) and not isinstance(v, bool):
            cfg[k] = float(v)
        elif t in ("bool", bool) and not isinstance(v, bool):
            if str(v).lower() in ("1", "true", "yes", "on"):
                cfg[k] = True
            elif str(v).lower() in ("0", "false", "no", "off"):
                cfg[k] = False
            else:
                raise ValueError(f"config key {k!r} needs true/false, got {v!r}")
    return cfg


def load_config(recipe: str | Path | None = None, overrides: dict | list[str] | None = None, **kwargs) -> TrainConfig:
    """Resolve a config: defaults, then the recipe YAML, then overrides (dict or ``key=value`` list), then kwargs."""
    cfg = TrainConfig().to_dict()
    if recipe:
        path = find_recipe(recipe)
        doc = yaml.safe_load(path.read_text()) or {}
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: a recipe must be a YAML mapping of config keys")
        doc.pop("reference", None)  # what the reference paper reported: documentation only
        _check_keys(doc, str(path))
        cfg = _merge(cfg, doc)
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    for upd, where in ((overrides or {}, "override"), (kwargs, "argument")):
        _check_keys(upd, where)
        cfg = _merge(cfg, upd)
    return TrainConfig(**_coerce(expand_data_paths(cfg, str(recipe or "config")))).validate()
