"""``ferkit train``: train a zoo model from a recipe plus key=value overrides."""

from __future__ import annotations

import json


def register(sub, formatter) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (recipe + key=value overrides)",
        formatter_class=formatter,
        description="Train a model of the zoo. Settings come from the dataclass defaults, then the recipe, "
        "then key=value overrides, e.g.\n  ferkit train --recipe vgg9_fer2013 data=fer2013.csv epochs=10 lr=0.01 --out runs/vgg9\n"
        "Keys: see ferkit.engine.config.TrainConfig (ferkit train --list-keys). A killed run continues with --resume.",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (YAML values: lists, dicts, true/false)")
    p.add_argument("--recipe", "-r", help="recipe YAML file or name from recipes/")
    p.add_argument("--out", "-o", help="run folder (must be new or empty, unless --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--list-keys", action="store_true", help="print every config key with its default and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ferkit.engine.config import TrainConfig, load_config, parse_overrides
    from ferkit.engine.trainer import train

    if args.list_keys:
        for k, v in TrainConfig().to_dict().items():
            print(f"{k} = {v!r}")
        return 0
    if not args.out:
        raise ValueError("--out RUN_DIR is required")
    runtime = None
    if args.resume:
        if args.recipe:
            raise ValueError("--resume continues the saved config of the run; drop --recipe")
        cfg, runtime = None, parse_overrides(args.overrides)  # only threads/device/eval_batch_size may change
    else:
        cfg = load_config(args.recipe, args.overrides)
    summary = train(cfg, args.out, resume=args.resume, progress=not args.no_progress, runtime=runtime)
    if summary:  # under torchrun only rank 0 reports
        print(json.dumps(summary, indent=2))
    return 0
