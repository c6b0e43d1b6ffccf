"""``ferkit calibrate``: choose a detector's face crop and fit a model's temperature, into a calibrated copy."""

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
        "the file; report the model on other sets, never on the one T was fitted on.\n"
        "\n"
        "Crop geometry (--crop-proxy and/or --crop-photos): how a detector's face box becomes the model's crop\n"
        "(margin and vertical offset as fractions of the box's longer side, eye alignment on/off) is chosen on a\n"
        "grid, scored end to end (the detector, the crop, the model; a face not found counts as wrong):\n"
        "  --crop-proxy: the faces of a face-crop set's --crop-split (FER2013 PublicTest), each upscaled 3x into the\n"
        "    middle of a 320x320 canvas of its own blurred mirror image, the face over the centre scored;\n"
        "  --crop-photos: whole labelled photos (SFEW-dev), the largest face scored.\n"
        "The best mean accuracy over the sets given is stored for --detector (the shipped model's YuNet and Haar\n"
        "crops were chosen so, on FER2013 PublicTest and SFEW-dev; PrivateTest is never used to choose). The\n"
        "detector's temperature depends on its crop, so one call does the crop first and then, with --photos,\n"
        "fits that detector's temperature on the new crop:\n"
        "  ferkit calibrate --model stage34.pt --detector yunet --crop-proxy ../shared/data/fer2013 \\\n"
        "      --crop-photos ../shared/data/sfew-dev --margins=-0.05,0,0.05 --offsets=-0.05,0 \\\n"
        "      --photos ../shared/data/sfew-dev --out yunet.pt          # crop, then YuNet's temperature\n"
        "  ferkit calibrate --model yunet.pt --detector haar --crop-proxy ../shared/data/fer2013 \\\n"
        "      --crop-photos ../shared/data/sfew-dev --out both.pt       # crop only (no --photos: no temperature)\n"
        "With a crop search a temperature is fitted only when --photos is given; fit the face-crop temperature\n"
        "(no --photos, no crop options) in a call of its own.",
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
    c = p.add_argument_group("crop geometry (for --detector; done before any temperature)")
    c.add_argument("--crop-proxy", metavar="DATA", help="face-crop dataset (FER2013) whose --crop-split faces are scored "
                   "on proxy scenes")
    c.add_argument("--crop-split", default="val", metavar="SPLIT", help="--crop-proxy's split to choose on (val: PublicTest)")
    c.add_argument("--crop-photos", metavar="DATA", help="labelled whole photos (SFEW-dev) to score the crop on, end to end")
    c.add_argument("--margins", metavar="M,M,...", help="margins to try, fractions of the box's longer side per side "
                   "(may be negative); if not given, the shipped models' grid, -0.05 to 0.15 in steps of 0.05")
    c.add_argument("--offsets", metavar="O,O,...", help="vertical offsets of the crop centre to try (fraction of the "
                   "box's longer side; + is down); if not given, -0.1 to 0.05 in steps of 0.05")
    c.add_argument("--align", choices=("auto", "on", "off", "on,off"), default="auto",
                   help="eye alignment to try; auto: on and off for a detector with landmarks (YuNet), off otherwise")
    c.add_argument("--crop-limit", type=int, default=0, metavar="N",
                   help="a seeded N images per crop set (0: all); for a quick look, not for a shipped model")
    p.add_argument("--out", "-o", required=True, help="the calibrated model file to write (.pt)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    add_device(p)
    add_threads(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ferkit.engine.classify import ModelRef
    from ferkit.infer.calibration import fit_model_temperature, save_calibrated

    out = Path(args.out)
    if out.is_dir():
        raise FileExistsError(f"{out}: is a folder; give a file name such as {out / 'calibrated.pt'}")
    if out.exists() and not args.force:
        raise FileExistsError(f"{out}: already exists; use --force to overwrite it")
    if args.data and args.photos:
        raise ValueError("give --data (face crops) or --photos (whole photos), not both")
    ref = ModelRef.resolve(args.model)  # once: the search, the fit and the file written all use it
    _refuse_input_as_out(ref, out)
    crop = bool(args.crop_proxy or args.crop_photos)
    if crop and args.data:
        raise ValueError("a crop search fits no face-crop temperature (--data): the crop does not change it; "
                         "fit it in a call of its own")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    model, tmp = ref, None
    try:
        if crop:
            tmp = out.with_name(f".{out.stem}.crop-tmp.pt")
            model = ModelRef.resolve(_search_crop(args, ref, tmp if args.photos else out))
            if not args.photos:
                print(f"wrote {out}; use it with --model {out}")
                return 0
        fit = fit_model_temperature(_settings(args, model), args.photos or args.data, args.fit_split,
                                    photos=bool(args.photos), ferplus_mode=args.ferplus_mode)
        save_calibrated(model, fit, out)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    print(f"temperature {fit['temperature']:.3f} (was {fit['previous_temperature']:.3f}), fitted on {fit['fitted_on']} "
          f"({fit['n']} faces): ECE {fit['ece_before']:.3f} -> {fit['ece_after']:.3f}, "
          f"NLL {fit['nll_before']:.3f} -> {fit['nll_after']:.3f}")
    print(f"wrote {out}; use it with --model {out}")
    return 0


def _settings(args, model):
    """The Recognizer that scores photos (and, for a crop-only fit, the device): these options, the exact torch
    model, the CPU when the device is "auto" (as ``ferkit eval --photos`` scores)."""
    from ferkit.app.args import recognizer_settings
    from ferkit.infer.crosseval import photo_settings

    photos = args.photos or args.crop_proxy or args.crop_photos
    device = "cpu" if args.device == "auto" and photos else args.device
    return photo_settings(recognizer_settings(args, model=model, device=device, backend="torch"))


def _refuse_input_as_out(ref, out: Path) -> None:
    """The calibrated copy is always a new file: ``--out`` may not be (one of) the input model file(s)."""
    for member in ref.members or (ref,):
        if out.exists() and out.resolve() == member.path.resolve():
            raise FileExistsError(f"{out}: is the input model {member.spec}; write the calibrated copy to a new file")


def _numbers(text: str | None, option: str) -> tuple[float, ...] | None:
    from ferkit.errors import UsageError

    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"{option} {text}: expected numbers joined by commas, e.g. -0.05,0,0.05") from None
    return values


def _search_crop(args, ref, dest: Path) -> str:
    """The crop search of ``args`` for ``--detector``, its best geometry written to ``dest``; returns ``dest``."""
    from ferkit.infer import crop_search

    aligns = {"auto": None, "on": (True,), "off": (False,), "on,off": (True, False)}[args.align]
    fit = crop_search.search_crop_geometry(
        _settings(args, ref), proxy=args.crop_proxy, photos=args.crop_photos,
        margins=_numbers(args.margins, "--margins") or crop_search.DEFAULT_MARGINS,
        offsets=_numbers(args.offsets, "--offsets") or crop_search.DEFAULT_OFFSETS, aligns=aligns,
        proxy_split=args.crop_split, photo_split_name=args.fit_split, limit=args.crop_limit)
    b, o = fit["best"], fit["before"]
    print(f"{fit['detector']} crop on {fit['fitted_on']} ({len(fit['grid'])} geometries): margin {b['margin']:+.2f}, "
          f"offset_y {b['offset_y']:+.2f}, align {'on' if b['align'] else 'off'}: {100 * b['score']:.2f} % "
          f"(the model's present crop, margin {o['margin']:+.2f}, offset_y {o['offset_y']:+.2f}, align "
          f"{'on' if o['align'] else 'off'}: {100 * o['score']:.2f} %)")
    crop_search.save_crop_geometry(ref, fit, dest)
    if not args.photos and "temperature" in (ref.preprocess.crop_geometry.get(fit["detector"]) or {}):
        print(f"note: {ref.spec}'s {fit['detector']} temperature was fitted on its previous crop and is kept; "
              f"refit it on the new crop with --photos")
    return str(dest)
