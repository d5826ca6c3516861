"""``python -m lensnet.adapt RUN [--out DIR] [options]``: adapt a model to the survey a run scored."""

from __future__ import annotations

import argparse
import shlex
import sys

from lensnet.adapt.runner import AdaptConfig, AdaptError, adapt, render_report

EPILOG = """\
then:  run_survey.py --rescore RUN --model RUN/adapted   (scores the stored cutouts again, no tile reading)

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
        prog="python -m lensnet.adapt", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
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
    data.add_argument("--theta-e", choices=("uniform", "host"), default="uniform",
                      help="Einstein radii log-uniform in --theta-e-range (default) or tied to the host's magnitude")
    data.add_argument("--theta-e-range", dest="theta_e_range_arcsec", type=_pair, default=(0.5, 4.0),
                      metavar="LOW,HIGH", help="Einstein radii to span, arcsec (default 0.5,4)")
    data.add_argument("--arc-snr-range", type=_pair, default=(2.0, 1000.0), metavar="LOW,HIGH",
                      help="target arc S/N (Lanusse et al. eq. 10, against each stamp's own noise), log-uniform "
                           "(default 2,1000)")
    data.add_argument("--max-injections", type=int, default=4000, help="injected lenses in all (default 4000)")
    data.add_argument("--injections-per-host", type=int, default=1, help="arcs painted on each host (default 1)")
    data.add_argument("--max-objects", type=int, default=20000,
                      help="survey stamps read from the run, a seeded random subset (default 20000)")
    data.add_argument("--test-fraction", type=float, default=0.3,
                      help="objects held out for the selection function, split by object (default 0.3)")
    data.add_argument("--exclude-top-fraction", type=float, default=0.005,
                      help="leave the parent model's top-ranked objects out of hosts and negatives (default 0.005)")
    hosts = parser.add_argument_group("hosts (plausible deflectors)")
    hosts.add_argument("--host-mag-max", type=float, default=22.0,
                       help="reference-band magnitude in a 1.5\" aperture below this (default 22)")
    hosts.add_argument("--colour-min", type=float, default=0.8,
                       help="bluest band minus reference band above this: red galaxies (default 0.8)")
    hosts.add_argument("--concentration-min", type=float, default=0.3,
                       help="flux(<0.6\")/flux(<2.5\") above this: early types (default 0.3)")
    fit = parser.add_argument_group("fine-tuning")
    fit.add_argument("--epochs", type=int, default=8)
    fit.add_argument("--batch-size", type=int, default=128)
    fit.add_argument("--learning-rate", type=float, default=3e-4)
    fit.add_argument("--patience", type=int, default=3, help="stop after this many epochs without a better "
                                                              "validation loss (default 3)")
    fit.add_argument("--target-fpr", type=float, default=0.01,
                     help="false-positive rate on the survey's held-out stamps that sets the threshold (default 0.01)")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--threads", type=int, help="PyTorch CPU threads")
    parser.add_argument("--force", action="store_true", help="discard an adaptation with another recipe in --out")
    parser.add_argument("--quiet", dest="progress", action="store_false", help="no progress messages")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    command = "python -m lensnet.adapt " + " ".join(shlex.quote(arg) for arg in (argv or sys.argv[1:]))
    try:
        config = AdaptConfig(**args)
        if config.threads:
            import torch

            torch.set_num_threads(config.threads)
        report = adapt(config, command)
    except (AdaptError, FileNotFoundError) as error:
        print(f"python -m lensnet.adapt: error: {error}", file=sys.stderr)
        return 2
    print(render_report(report))
    print(f"adapted model: {config.out_dir}  (score the run with: run_survey.py --rescore {config.run} "
          f"--model {config.out_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
