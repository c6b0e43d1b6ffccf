"""``ferkit train``: train a zoo model from a recipe plus key=value overrides."""

from __future__ import annotations

from ferkit.app.args import add_no_progress


def register(sub, formatter) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (recipe + key=value overrides)",
        formatter_class=formatter,
        description="Train a model of the zoo. Settings come from the dataclass defaults, then the recipe, "
        "then key=value overrides, e.g.\n  ferkit train --recipe vgg9_fer2013 data=fer2013.csv epochs=10 lr=0.01 --out runs/vgg9\n"
        "Keys: see ferkit.engine.config.TrainConfig (ferkit train --list-keys). A killed run continues with --resume\n"
        "(one killed before its first checkpoint starts again from its saved config.yaml).\n"
        "On a terminal a progress bar shows each epoch; otherwise (a log file, a pipe) one line per epoch is logged.\n"
        "The shipped recipes (--list-recipes) name their data as $FERKIT_DATA/...: set FERKIT_DATA to the folder\n"
        "holding your datasets (e.g. export FERKIT_DATA=../shared/data), or give data=PATH.",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (YAML values: lists, dicts, true/false)")
    p.add_argument("--recipe", "-r", help="a recipe YAML file, or the name of a recipe shipped with ferkit (--list-recipes)")
    p.add_argument("--out", "-o", help="run folder (must be new or empty, unless --resume)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint; with none yet, start it again from its "
                        "config.yaml (or from --recipe and KEY=VALUE)")
    p.add_argument("--list-keys", action="store_true", help="print every config key with its default and exit")
    p.add_argument("--list-recipes", action="store_true", help="print the names of the recipes shipped with ferkit and exit")
    add_no_progress(p)
    p.set_defaults(func=run)


def format_summary(summary: dict, out: str, seconds: float) -> str:
    """A few lines for people: the selected epoch, its figures, the run folder, and what to run next."""
    lines = [f"best epoch {summary['best_epoch']} of {summary['epochs_run']}: "
             f"{100 * summary['best_val_acc']:.2f} % accuracy on the {summary['selected_on']} split (which selected it)"]
    for key, value in summary.items():
        if key == "test" or key.startswith("test_tta_"):
            how = "" if key == "test" else f" with TTA {key.removeprefix('test_tta_')}"
            lines.append(f"test{how}: {100 * value['accuracy']:.2f} % accuracy, macro-F1 {value['macro_f1']:.3f} "
                         f"({value['n']:,} images, held out)")
    minutes, secs = divmod(round(seconds), 60)
    lines.append(f"run folder {out} ({f'{minutes} min {secs} s' if minutes else f'{secs} s'})")
    lines.append(f"next: ferkit report {out}")
    return "\n".join(lines)


def run(args) -> int:
    import time
    from pathlib import Path

    from ferkit.engine.config import TrainConfig, list_recipes, load_config, parse_overrides
    from ferkit.engine.trainer import train

    if args.list_recipes:
        print("\n".join(list_recipes()))
        return 0
    if args.list_keys:
        for k, v in TrainConfig().to_dict().items():
            print(f"{k} = {v!r}")
        return 0
    if not args.out:
        raise ValueError("--out RUN_DIR is required")
    runtime = None
    if args.resume:
        # With a checkpoint the run keeps its saved config (only threads/device/eval_batch_size may change);
        # without one the trainer starts it again from --recipe, else from its config.yaml.
        if args.recipe and (Path(args.out) / "last.pt").is_file():
            raise ValueError("--resume continues the saved config of the run; drop --recipe")
        cfg = load_config(args.recipe, args.overrides) if args.recipe else None
        runtime = parse_overrides(args.overrides)
    else:
        cfg = load_config(args.recipe, args.overrides)
    t0 = time.perf_counter()
    summary = train(cfg, args.out, resume=args.resume, progress=not args.no_progress, runtime=runtime)
    if summary:  # under torchrun only rank 0 reports
        print(format_summary(summary, args.out, time.perf_counter() - t0))
    return 0
