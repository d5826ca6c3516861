"""``python -m pipeline.adapt RUN [--out DIR] [options]``: adapt a model to the survey a run scored.

Reads the finished run directory through :mod:`catalogs.layout` (the stamps in
``cutouts.zarr``, the scored objects in ``candidates.parquet``, the settings in ``run.yaml``)
and hands them to :func:`lensnet.adapt.adapt`, which injects, fine-tunes and measures the
selection function without knowing the run layout.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from catalogs import layout
from lensnet.adapt.crossfit import adapt_crossfit
from lensnet.adapt.inject import THETA_E_RECIPES
from lensnet.adapt.runner import AdaptConfig, AdaptError, Survey, adapt, render_report
from lensnet.checkpoint import load_config

#: What the adaptation reads from a run directory (catalogs.layout names them).
RUN_FILES = {"store": layout.STORE_DIR, "candidates": layout.CANDIDATES_FILE, "settings": layout.SETTINGS_FILE}


def read_run(config: AdaptConfig) -> Survey:
    """The run's scored stamps (up to ``max_objects``, a seeded random subset), checked against the model."""
    run = Path(config.run)
    if not run.is_dir():
        raise AdaptError(f"{run} is not a run directory; give the --out of a finished run_survey.py run")
    settings_file = run / RUN_FILES["settings"]
    settings = (yaml.safe_load(settings_file.read_text()) or {}) if settings_file.is_file() else {}
    # a rescored run (run_survey.py --rescore) scored the cutout store of the run it names
    store = layout.RunLayout(settings.get("rescore") or run).store
    for role, path in (("settings", settings_file), ("candidates", run / RUN_FILES["candidates"]), ("store", store)):
        if not path.exists():
            hint = ("the run did not finish: run run_survey.py on it again to complete it" if role != "settings"
                    else "it was not written by run_survey.py")
            raise AdaptError(f"{path} is missing: {hint}")
    parent = config.model or str(settings.get("model", "default")).split(",")[0]
    try:
        model = load_config(parent)
    except (FileNotFoundError, ValueError) as error:
        raise AdaptError(f"--model {parent}: {error}") from None
    catalogue = pd.read_parquet(run / RUN_FILES["candidates"])
    if not len(catalogue):
        raise AdaptError(f"{run / RUN_FILES['candidates']} holds no scored object: nothing to adapt to")
    with layout.open_store(store) as dataset:
        bands = [str(band) for band in dataset[layout.BAND].to_numpy()]
        size = int(dataset[layout.STAMPS].shape[-1])
    if bands != list(model.bands) or size != model.stamp_size_px:
        raise AdaptError(f"model {parent} takes bands {','.join(model.bands)} in {model.stamp_size_px}-px stamps; the "
                         f"run's store holds {','.join(bands)} in {size}-px stamps: choose a model made for this "
                         "survey with --model")
    rng = np.random.default_rng(config.seed)
    if len(catalogue) > config.max_objects:
        catalogue = catalogue.iloc[np.sort(rng.choice(len(catalogue), config.max_objects, replace=False))]
    catalogue = catalogue.sort_values("cutout_index").reset_index(drop=True)
    stamps = layout.read_cutouts(store, catalogue["cutout_index"].to_numpy())
    if np.isnan(stamps).all(axis=(1, 2, 3)).any():
        raise AdaptError(f"{store} has empty stamps for scored objects: the store is incomplete; "
                         "run run_survey.py on the run again")
    return Survey(stamps, catalogue, bands, settings, parent)


EPILOG = """\
then:  run_survey.py --rescore RUN --model RUN/adapted   (scores the stored cutouts again, no tile reading)

One adapted model trains on most of the survey's objects as non-lenses, so its scores of those
objects are in sample; --folds K (e.g. 3) adapts K models and scores each object with the one
that held it out.

Lenses are ~1e-4 of galaxies, so the survey's own stamps serve as non-lenses; the parent
model's top-scored objects (--exclude-top-fraction) are left out of them and of the hosts.
"""


def _floats(text: str) -> list[float]:
    try:
        return [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _pair(text: str) -> tuple[float, float]:
    values = _floats(text)
    if len(values) != 2 or not 0 < values[0] <= values[1]:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH with 0 < LOW <= HIGH, got {text!r}")
    return values[0], values[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.adapt", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Paint simulated lensed arcs onto the survey's own galaxies, fine-tune the run's model on them "
                    "against the survey's own stamps, and measure the survey's injection-recovery selection function.")
    parser.add_argument("run", help="a finished run_survey.py output directory (cutouts.zarr, candidates.parquet)")
    parser.add_argument("--out", help="output directory: the adapted checkpoint and its reports (default RUN/adapted)")
    parser.add_argument("--model", help="the model to adapt (default: the run's own model)")
    data = parser.add_argument_group("injections")
    data.add_argument("--zeropoints", type=_floats, metavar="ZP,...",
                      help="AB magnitude of one count per band (default: MAGZERO/MAGZP/ZP in the tiles' headers)")
    data.add_argument("--psf-fwhm", dest="psf_fwhm_arcsec", type=_floats, metavar="FWHM,...",
                      help="PSF FWHM per band in arcsec, measured on the survey's stars (default: PSF_FWHM/SEEING/"
                           "FWHM in the tiles' headers)")
    data.add_argument("--psf-moffat-beta", type=float, default=3.0, help="Moffat index of the PSF (default 3)")
    data.add_argument("--gain", type=float, default=0.0,
                      help="electrons per count, to add the arcs' own photon noise (default 0: none)")
    data.add_argument("--band-wavelengths", dest="band_wavelengths_nm", type=_floats, metavar="NM,...",
                      help="effective wavelength per band (only for bands other than u g r i z y VIS Y J H)")
    data.add_argument("--theta-e", choices=THETA_E_RECIPES, default="matched",
                      help="Einstein radii log-uniform in --theta-e-range, handed out by the hosts' 4\" brightness, "
                           "larger radii to brighter hosts (matched, the default); log-uniform whatever the host "
                           "(uniform); or tied to the host's 1.5\" magnitude by the GalSim engine's relation (host)")
    data.add_argument("--theta-e-range", dest="theta_e_range_arcsec", type=_pair, default=(0.5, 4.0),
                      metavar="LOW,HIGH", help="Einstein radii to span, arcsec (default 0.5,4)")
    data.add_argument("--arc-snr-range", type=_pair, default=(2.0, 1000.0), metavar="LOW,HIGH",
                      help="target arc S/N (Lanusse et al. eq. 10, against each stamp's own noise), log-uniform "
                           "(default 2,1000)")
    data.add_argument("--train-arc-snr-min", type=float, default=0.0, metavar="SNR",
                      help="training injections only: target arc S/N from this up (the held-out injections that "
                           "measure the selection function keep the whole --arc-snr-range; default 0: no limit)")
    data.add_argument("--max-injections", type=int, default=4000, help="injected lenses in all (default 4000)")
    data.add_argument("--injections-per-host", type=int, default=1, help="arcs painted on each host (default 1)")
    data.add_argument("--max-objects", type=int, default=20000,
                      help="survey stamps read from the run, a seeded random subset (default 20000)")
    data.add_argument("--test-fraction", type=float, default=0.3,
                      help="objects held out for the selection function, split by object (default 0.3; with "
                           "--folds, one fold)")
    data.add_argument("--folds", type=int, default=1, metavar="K",
                      help="cross-fit: adapt K models, each holding out one K-th of the survey's objects, so that "
                           "rescoring gives every object the score of a model that did not train on it (K "
                           "fine-tunes; default 1: one model, whose training objects are scored in sample)")
    data.add_argument("--exclude-top-fraction", type=float, default=0.005,
                      help="leave the parent model's top-ranked objects out of hosts and negatives (default 0.005)")
    hosts = parser.add_argument_group("hosts (plausible deflectors)")
    hosts.add_argument("--host-mag-max", type=float, default=22.0,
                       help="reference-band magnitude in a 1.5\" aperture below this (default 22)")
    hosts.add_argument("--colour-min", type=float, default=0.8,
                       help="bluest band minus reference band above this: red galaxies (default 0.8)")
    hosts.add_argument("--concentration-min", type=float, default=0.15,
                       help="flux(<0.6\")/flux(<2.5\") above this (default 0.15: keeps the large early types "
                            "that have the large Einstein radii; 0.3 keeps only compact ones)")
    hosts.add_argument("--asymmetry-max", type=float, default=0.05,
                       help="rotational asymmetry in the 2.5\" circle below this: smooth early types (default 0.05)")
    hosts.add_argument("--axis-ratio-min", type=float, default=0.5,
                       help="axis ratio of the light above this: no flatter than E5 (default 0.5)")
    fit = parser.add_argument_group("fine-tuning")
    fit.add_argument("--epochs", type=int, default=8)
    fit.add_argument("--batch-size", type=int, default=128)
    fit.add_argument("--learning-rate", type=float, default=3e-4)
    fit.add_argument("--patience", type=int, default=3, help="stop after this many epochs without a better "
                                                              "validation loss (default 3)")
    fit.add_argument("--freeze-backbone", action="store_true",
                     help="fine-tune only the final layer, keeping the parent's features")
    fit.add_argument("--rehearse", type=lambda text: [item for item in text.split(",") if item], metavar="DIR,...",
                     help="stamp sets (python -m lensnet.simulate output, e.g. the parent's training data) whose "
                          "simulated lenses and contaminants are trained on alongside the injections, so that the "
                          "model keeps what it knew")
    fit.add_argument("--rehearse-max", type=int, default=6000,
                     help="simulated stamps taken from --rehearse in all, a seeded random subset (default 6000)")
    fit.add_argument("--target-fpr", type=float, default=0.01,
                     help="false-positive rate on the survey's held-out stamps that sets the threshold (default 0.01)")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--threads", type=int, help="PyTorch CPU threads")
    parser.add_argument("--force", action="store_true", help="discard an adaptation with another recipe in --out")
    parser.add_argument("--quiet", dest="progress", action="store_false", help="no progress messages")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    command = "python -m pipeline.adapt " + " ".join(shlex.quote(arg) for arg in (argv or sys.argv[1:]))
    try:
        config = AdaptConfig(**args)
        if config.threads:
            import torch

            torch.set_num_threads(config.threads)
        if config.folds < 1:
            raise AdaptError(f"--folds {config.folds}: give 1 (one adapted model) or more")
        run = read_run(config)
        report = (adapt_crossfit if config.folds > 1 else adapt)(config, run, command)
    except (AdaptError, FileNotFoundError) as error:
        print(f"python -m pipeline.adapt: error: {error}", file=sys.stderr)
        return 2
    print(render_report(report))
    print(f"adapted model: {config.out_dir}  (score the run with: run_survey.py --rescore {config.run} "
          f"--model {config.out_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
