"""``ferkit calibrate``: fit a model's temperature (calibrated probabilities) and write a calibrated copy."""

from __future__ import annotations

from pathlib import Path

from ferkit.app.args import add_detector, add_device, add_model, add_threads


def register(sub, formatter) -> None:
    p = sub.add_parser(
        "calibrate",
        help="make a model's probabilities say how often it is right (temperature scaling), into a new file",
        formatter_class=formatter,
        description="Fit temperature scaling (Guo et al. 2017): the logits are divided by one number T, chosen to\n"
        "minimise the negative log-likelihood on a held-out split, so a face given 70 % is right about 70 % of the\n"
        "time. The top class never changes, so accuracy stays the same. The result is a new checkpoint with T in its\n"
        "preprocessing (every backend applies it; `ferkit export` carries it into ONNX metadata), e.g.\n"
        "  ferkit calibrate --model runs/vgg9 --out runs/vgg9/calibrated.pt          # on PublicTest (val)\n"
        "  ferkit calibrate --model default,ferplus --out ensemble_calibrated.pt     # an ensemble, on its mean\n"
        "  ferkit calibrate --model default --photos ../shared/data/sfew-dev --out film.pt   # on real photos\n"
        "With --photos the temperature is stored for that detector's faces (what ferkit predict and serve see);\n"
        "on face crops it is the model's own.\n"
        "By default T is fitted on the val split of the dataset the model was trained on (FER2013 PublicTest, with\n"
        "FER+ labels for a FER+ model). A temperature fitted on a dev set such as SFEW-dev is recorded as such in\n"
        "the file; report the model on other sets, never on the one T was fitted on.",
    )
    add_model(p)
    p.add_argument("--data", "-d", help="dataset of face crops to fit on; if not given, the one the model was trained on")
    p.add_argument("--photos", metavar="DATA", help="fit on a labelled set of whole photos instead, end to end (the detector, "
                   "the model's crop, the largest face; photos with no face found are left out)")
    p.add_argument("--fit-split", default="val", metavar="SPLIT",
                   help="the split to fit on: never the one you report (a photo set with one split uses it)")
    add_detector(p)  # for --photos: its temperature is stored for this detector
    p.add_argument("--ferplus-mode", choices=("majority", "soft", "off"),
                   help="a FER+ model on its own dataset: which FER+ labels to fit on (default: as in training)")
    p.add_argument("--out", "-o", required=True, help="the calibrated model file to write (.pt)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    add_device(p)
    add_threads(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ferkit.infer.calibration import fit_model_temperature, save_calibrated

    out = Path(args.out)
    if out.is_dir():
        raise FileExistsError(f"{out}: is a folder; give a file name such as {out / 'calibrated.pt'}")
    if out.exists() and not args.force:
        raise FileExistsError(f"{out}: already exists; use --force to overwrite it")
    if args.data and args.photos:
        raise ValueError("give --data (face crops) or --photos (whole photos), not both")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    fit = fit_model_temperature(args.model, args.photos or args.data, args.fit_split, photos=bool(args.photos),
                                detector=args.detector, yunet_path=args.yunet, min_face=args.min_face, device=args.device,
                                threads=args.threads,
                                ferplus_mode=args.ferplus_mode)
    save_calibrated(args.model, fit, out)
    print(f"temperature {fit['temperature']:.3f} (was {fit['previous_temperature']:.3f}), fitted on {fit['fitted_on']} "
          f"({fit['n']} faces): ECE {fit['ece_before']:.3f} -> {fit['ece_after']:.3f}, "
          f"NLL {fit['nll_before']:.3f} -> {fit['nll_after']:.3f}")
    print(f"wrote {out}; use it with --model {out}")
    return 0
