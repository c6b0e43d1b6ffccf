"""``ferkit sweep``: train a grid of configurations x seeds and compare them in one table and two plots."""

from __future__ import annotations

from ferkit.app.args import add_no_progress


def register(sub, formatter) -> None:
    p = sub.add_parser(
        "sweep",
        help="train a grid of configurations x seeds; summary table and comparison plots",
        formatter_class=formatter,
        description="Run every configuration of a grid with every seed, each in its own run folder "
        "OUT/<config>/seed<k>/, then write OUT/summary.md, summary.csv, runs.csv, curves.png and bars.png, e.g.\n"
        "  ferkit sweep --grid optimizers --out runs/sweeps/optimizers\n"
        "  ferkit sweep --recipe vgg9_fer2013 --grid optimizer=sgd,adam lr=0.01,0.001 --seeds 0,1 --out runs/opt epochs=5\n"
        "A sweep file names a base recipe, fixed overrides, a grid (key: [values]) and/or named configurations,\n"
        "and seeds (see src/ferkit/recipes/sweeps/). Every configuration is checked before anything runs. Re-running the\n"
        "same command skips finished runs and resumes interrupted ones.",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="fixed overrides of every run")
    p.add_argument("--recipe", "-r", help="base recipe (replaces the sweep file's)")
    p.add_argument("--grid", "-g", nargs="+", default=[], action="extend", metavar="SWEEP.yaml|KEY=V1,V2",
                   help="a sweep YAML file and/or grid axes key=v1,v2 (YAML values; commas inside [...] kept)")
    p.add_argument("--seeds", help="comma list of seeds, e.g. 0,1 (replaces the sweep file's; without either: seed 0)")
    p.add_argument("--out", "-o", required=True, help="sweep folder (created; re-use it to resume)")
    p.add_argument("--parallel", "-j", type=int, default=1,
                   help="runs at once, as separate 'ferkit train' processes (CPU threads split between them)")
    p.add_argument("--devices", help="comma list such as cuda:0,cuda:1: one process per device")
    p.add_argument("--only", help="run only the configurations matching these comma-separated names or patterns "
                   "(e.g. 'adam*,sgd*'); the sweep folder then describes just those")
    p.add_argument("--dry-run", action="store_true", help="check the grid and list the runs with their status; train nothing")
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ferkit.engine.sweep import load_sweep, plan_runs, run_sweep, select_configs, split_values

    sweep = load_sweep(args.grid, recipe=args.recipe, seeds=args.seeds, overrides=args.overrides)
    if args.only:
        sweep = select_configs(sweep, split_values(args.only))
    devices = split_values(args.devices) if args.devices else None
    if args.dry_run:
        runs = plan_runs(sweep, args.out)
        print(f"{len(sweep.configs)} configuration(s) x {len(sweep.seeds)} seed(s) = {len(runs)} runs in {args.out}:")
        for r in runs:
            print(f"  {r.status:7s} {r.label}")
        return 0
    result = run_sweep(sweep, args.out, parallel=args.parallel, devices=devices, progress=not args.no_progress)
    print((Path(args.out) / "summary.md").read_text())
    print(f"{len(result.ran)} runs trained, {len(result.resumed)} resumed, {len(result.skipped)} already finished; "
          f"wrote summary.md, summary.csv, runs.csv, curves.png and bars.png to {args.out}")
    return 0
