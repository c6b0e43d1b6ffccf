"""What a sweep is: the sweep file, its expansion into named configurations x seeds, and the run folders.

This module reads and writes ``sweep.yaml``, names the configurations, resolves and checks
every run (:func:`plan_runs`) and knows the sweep folder's layout; running them is
:mod:`ferkit.engine.sweep.runner`'s job, comparing them :mod:`ferkit.engine.sweep.summary`'s.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ferkit.engine.config import RECIPE_DIRS, RUNTIME_KEYS, TrainConfig, load_config, parse_overrides, parse_value

SWEEP_KEYS = ("recipe", "fixed", "grid", "configs", "seeds", "notes")
SPEC_NAME = "sweep.yaml"


@dataclass
class Sweep:
    """A resolved sweep: base recipe, overrides of every run, named configurations (in order) and seeds."""

    recipe: str | None = None
    fixed: dict = field(default_factory=dict)
    configs: list[tuple[str, dict]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    notes: str = ""
    source: str = "sweep"  # where it came from, for error messages

    def to_dict(self) -> dict:
        """The sweep as a sweep file (named configurations, no grid)."""
        return {"recipe": self.recipe, "fixed": self.fixed,
                "configs": [{"name": n, **o} for n, o in self.configs], "seeds": list(self.seeds), "notes": self.notes}


@dataclass
class SweepRun:
    """One planned run: configuration name, seed, resolved config and run folder."""

    config: str
    seed: int
    cfg: TrainConfig
    out: Path
    status: str = "new"  # new | resume | done

    @property
    def label(self) -> str:
        return f"{self.config}/seed{self.seed}"


# ------------------------------------------------------------------ parsing


def split_values(text: str) -> list[str]:
    """Split ``"sgd,adam"`` at top-level commas; commas inside ``[...]`` / ``{...}`` stay (``"[5,8],[3,6]"``)."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def _nest(key: str, value: Any) -> dict:
    """``"augment.erase", 0.5`` -> ``{"augment": {"erase": 0.5}}``."""
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def merge_overrides(base: dict, upd: dict) -> dict:
    """``base`` updated with ``upd``, nested dicts merged key by key (neither argument is changed)."""
    out = dict(base)
    for k, v in upd.items():
        out[k] = merge_overrides(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _nested(flat: dict) -> dict:
    out: dict = {}
    for k, v in flat.items():
        out = merge_overrides(out, _nest(str(k), v))
    return out


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, dict):
        return "-".join(f"{k}{_fmt_value(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return "-".join(_fmt_value(x) for x in v)
    return str(v)


def _safe_name(text: str) -> str:
    """A folder-safe configuration name (letters, digits, ``. _ + - =``)."""
    return re.sub(r"[^A-Za-z0-9._+=-]", "", text.replace("/", "-").replace(" ", "")) or "config"


def _check_name(name: str, where: str) -> str:
    if not isinstance(name, str) or not name or name.startswith(".") or name != _safe_name(name):
        raise ValueError(f"{where}: configuration name {name!r} must be a plain folder name "
                         "(letters, digits, . _ + - =; not starting with a dot)")
    return name


def _grid_points(grid: dict) -> list[tuple[str, dict]]:
    """The cartesian product of ``grid`` as ``(name, overrides)``; names list only the keys that vary."""
    keys = list(grid)
    values = [v if isinstance(v, list) else [v] for v in grid.values()]
    varying = [k for k, v in zip(keys, values) if len(v) > 1]
    points = []
    for combo in itertools.product(*values):
        flat = dict(zip(keys, combo))
        name = "_".join(f"{k.rsplit('.', 1)[-1]}-{_fmt_value(flat[k])}" for k in varying)  # augment.erase -> erase-0.5
        points.append((_safe_name(name) if name else "", _nested(flat)))
    return points


def _parse_seeds(seeds: Any, where: str) -> list[int]:
    if isinstance(seeds, str):
        seeds = [s for s in split_values(seeds)]
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        raise ValueError(f"{where}: seeds must be a list such as [0, 1], got {seeds!r}")
    try:
        out = [int(s) for s in seeds]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: seeds must be a list of integers such as [0, 1], got {seeds!r}") from None
    if not out or len(set(out)) != len(out):
        raise ValueError(f"{where}: seeds must be a non-empty list of distinct integers, got {seeds!r}")
    return out


def _read_sweep_file(path: Path) -> dict:
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a sweep file must be a YAML mapping with keys {', '.join(SWEEP_KEYS)}")
    bad = sorted(set(doc) - set(SWEEP_KEYS))
    if bad:
        hint = " (is it a training recipe? pass it with --recipe)" if set(bad) & set(TrainConfig().to_dict()) else ""
        raise ValueError(f"{path}: unknown sweep key(s) {bad}{hint}; a sweep file has {', '.join(SWEEP_KEYS)}")
    recipe = doc.get("recipe")
    if recipe and (path.parent / str(recipe)).is_file():
        doc["recipe"] = str(path.parent / str(recipe))  # a base recipe beside the sweep file
    return doc


def shipped_sweep(name: str) -> Path | None:
    """A sweep shipped with ferkit by name ("optimizers" or "sweeps/optimizers.yaml"), None if there is none."""
    stem = Path(name).stem
    for d in RECIPE_DIRS:
        cand = d / "sweeps" / f"{stem}.yaml"
        if cand.is_file():
            return cand
    return None


def load_sweep(
    grid: list[str] | None = None,
    recipe: str | None = None,
    seeds: str | list[int] | None = None,
    overrides: list[str] | dict | None = None,
) -> Sweep:
    """Build a :class:`Sweep` from sweep files and ``key=v1,v2`` items.

    ``grid``: sweep YAML paths and/or ``key=v1,v2`` axes (values parsed as YAML; commas
    inside brackets kept). ``recipe`` and ``seeds`` replace a sweep file's; ``overrides``
    (``key=value`` list or dict) are added to its fixed overrides.
    """
    docs, axes, sources = [], {}, []
    for item in grid or []:
        p = Path(item)
        if "=" in item and not p.is_file():
            key, vals = item.split("=", 1)
            if not key.strip():
                raise ValueError(f"grid item {item!r}: expected key=v1,v2")
            axes[key.strip()] = [parse_value(v) for v in split_values(vals)] or [parse_value(vals)]
            sources.append(item)
        elif p.suffix in (".yaml", ".yml") or p.exists() or shipped_sweep(item):
            p = p if p.is_file() else (shipped_sweep(item) or p)
            if not p.is_file():
                names = ", ".join(q.stem for q in sorted((RECIPE_DIRS[0] / "sweeps").glob("*.yaml")))
                raise FileNotFoundError(f"{p}: no such sweep file (the shipped sweeps: {names})")
            docs.append(_read_sweep_file(p))
            sources.append(str(p))
        else:
            raise ValueError(f"grid item {item!r}: expected a sweep YAML file or key=v1,v2")
    if len(docs) > 1:
        raise ValueError(f"give one sweep file, not {len(docs)} ({', '.join(s for s in sources if '=' not in s)})")
    doc = docs[0] if docs else {}
    where = " ".join(s if "=" not in s else f"--grid {s}" for s in sources) or "sweep"

    fixed = doc.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise ValueError(f"{where}: 'fixed' must be a mapping of config keys to values")
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    fixed = merge_overrides(_nested(fixed), overrides or {})

    named = doc.get("configs") or []
    doc_grid = doc.get("grid") or {}
    if isinstance(doc_grid, list):  # a list of named configurations
        named, doc_grid = list(named) + doc_grid, {}
    if not isinstance(doc_grid, dict):
        raise ValueError(f"{where}: 'grid' must map config keys to lists of values (or be a list of named configurations)")
    if not isinstance(named, list):
        raise ValueError(f"{where}: 'configs' must be a list of mappings, each {{name: ..., key: value, ...}}")
    configs: list[tuple[str, dict]] = []
    for i, c in enumerate(named):
        if not isinstance(c, dict):
            raise ValueError(f"{where}: configuration {i + 1} must be a mapping of overrides, got {c!r}")
        c = dict(c)
        name = c.pop("name", None)
        over = _nested(c)
        configs.append((_check_name(str(name), where) if name is not None else "", over))
    points = _grid_points({**doc_grid, **axes}) if (doc_grid or axes) else [("", {})]
    base = configs or [("", {})]
    runs: list[tuple[str, dict]] = []
    for (cname, cover), (gname, gover) in itertools.product(base, points):
        over = merge_overrides(cover, gover)
        name = "_".join(n for n in (cname, gname) if n)
        if not name:
            name = _safe_name("_".join(f"{k}-{_fmt_value(v)}" for k, v in over.items())) if over else "base"
        runs.append((name, over))
    names = [n for n, _ in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{where}: configuration name(s) {dup} occur twice; give each configuration its own name")
    for name, over in [("fixed", fixed)] + runs:
        if "seed" in over:
            raise ValueError(f"{where}: {name} sets 'seed'; list seeds under 'seeds:' (or --seeds 0,1) instead")
    seed_list = _parse_seeds(seeds if seeds is not None else doc.get("seeds", [0]), where)
    return Sweep(recipe=recipe or doc.get("recipe"), fixed=fixed, configs=runs, seeds=seed_list,
                 notes=str(doc.get("notes") or ""), source=where)


def select_configs(sweep: Sweep, patterns: list[str]) -> Sweep:
    """The sweep restricted to configurations whose name matches one of ``patterns`` (shell-style, e.g. ``adam*``)."""
    keep = [(n, o) for n, o in sweep.configs if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not keep:
        raise ValueError(f"{sweep.source}: no configuration matches {', '.join(patterns)}; "
                         f"configurations: {', '.join(n for n, _ in sweep.configs)}")
    return dataclasses.replace(sweep, configs=keep)


# ------------------------------------------------------------------ the sweep folder


def write_spec(sweep: Sweep, out: Path) -> None:
    """Write ``out/sweep.yaml``: the resolved sweep, itself a sweep file."""
    out.mkdir(parents=True, exist_ok=True)
    text = "# The resolved sweep, written by ferkit sweep; re-run with: ferkit sweep --grid THIS_FILE --out FOLDER\n"
    (out / SPEC_NAME).write_text(text + yaml.safe_dump(sweep.to_dict(), sort_keys=False))


def read_sweep(out_dir: str | Path) -> Sweep:
    """The :class:`Sweep` recorded in a sweep folder's ``sweep.yaml``."""
    path = Path(out_dir) / SPEC_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir}: not a sweep folder (no {SPEC_NAME}); run 'ferkit sweep ... --out {out_dir}'")
    doc = _read_sweep_file(path)
    configs = []
    for c in doc.get("configs") or []:
        c = dict(c)
        configs.append((str(c.pop("name")), c))
    return Sweep(recipe=doc.get("recipe"), fixed=doc.get("fixed") or {}, configs=configs,
                 seeds=[int(s) for s in doc.get("seeds") or [0]], notes=str(doc.get("notes") or ""), source=str(path))


def failed_marker(run_dir: Path) -> Path:
    """``<config>/seed<k>.failed``: written beside a run folder whose run failed, holding the reason."""
    return run_dir.parent / f"{run_dir.name}.failed"


def run_status(run_dir: Path) -> str:
    """``done`` (summary.json), ``resume`` (last.pt, no summary) or ``new``."""
    if (run_dir / "summary.json").is_file():
        return "done"
    if (run_dir / "last.pt").is_file():
        return "resume"
    return "new"


# ------------------------------------------------------------------ validation and planning


def validate_config(cfg: TrainConfig) -> None:
    """Everything :meth:`TrainConfig.validate` checks, and that the dataset exists (a sweep checks every run first)."""
    cfg.validate(check_data=True)


def _comparable(d: dict) -> dict:
    d = {k: v for k, v in d.items() if k not in RUNTIME_KEYS}
    return yaml.safe_load(yaml.safe_dump(d))  # tuples -> lists, as a saved config.yaml holds them


def plan_runs(sweep: Sweep, out_dir: str | Path) -> list[SweepRun]:
    """Resolve and check every configuration; return the runs with their status. Nothing runs here.

    Raises ValueError listing every invalid configuration (unknown keys, bad values),
    or when a finished or started run folder holds a different config than planned.
    """
    out = Path(out_dir)
    errors: dict[str, list[str]] = {}
    resolved: list[tuple[str, TrainConfig]] = []
    for name, over in sweep.configs:
        try:
            cfg = load_config(sweep.recipe, merge_overrides(sweep.fixed, over))
            validate_config(cfg)
        except (ValueError, FileNotFoundError, TypeError) as exc:
            errors.setdefault(str(exc), []).append(name)
            continue
        resolved.append((name, cfg))
    if errors:
        parts = [f"{', '.join(names)}: {msg}" for msg, names in errors.items()]
        raise ValueError(f"{sweep.source}: invalid configuration(s), nothing was run: " + " | ".join(parts))
    runs = []
    for name, cfg in resolved:
        for seed in sweep.seeds:
            rcfg = dataclasses.replace(cfg, seed=seed)
            run_dir = out / name / f"seed{seed}"
            runs.append(SweepRun(name, seed, rcfg, run_dir, run_status(run_dir)))
    stale = []
    for r in runs:
        saved = r.out / "config.yaml"
        if saved.is_file():
            old, new = _comparable(yaml.safe_load(saved.read_text()) or {}), _comparable(r.cfg.to_dict())
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if diff:
                stale.append(f"{r.out} ({', '.join(f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in diff[:4])})")
    if stale:
        more = f" and {len(stale) - 3} more" if len(stale) > 3 else ""
        raise ValueError(f"run folder(s) made with a different config than this sweep plans: {'; '.join(stale[:3])}{more}. "
                         "Use a new --out folder, or delete those runs to redo them")
    return runs
