#!/usr/bin/env python
"""Find strong gravitational lenses in survey images.

Cuts a stamp around every catalogued object on the tiles, stores the stamps in Zarr,
scores them with a trained network on Dask workers (CPU or GPU), and writes a ranked
Parquet catalogue. Rerunning the same command on the same --out resumes.
"""

from __future__ import annotations

import argparse
import sys

from catalogs.flags import documentation as flags_documentation
from lensfinder.logs import LEVELS
from pipeline.config import CLUSTERS, DEVICES, STAMP_COMPRESSIONS, SettingsError, load_yaml, parse_bands, resolve

EPILOG = f"""
outputs in --out:
  candidates.parquet  one row per scored object, sorted by score (rank 1 = most lens-like)
  failures.parquet    every object that could not be scored, with the reason
  cutouts.zarr        the stamps (xarray: dims object, band, y, x)
  dask-report.html    Dask performance report; summary.json: counts and timing
flags bitmask: {flags_documentation()}

exit status: 0 done; 2 refused (bad settings or inputs, nothing run); 3 finished, but a whole tile
  could not be read or no object was scored (outputs written, one line on stderr says what)

examples:
  python run_survey.py --demo --out demo/
  python run_survey.py --images 'tiles/{{tile}}_{{band}}.fits' --catalog sources.parquet --bands g,r,i --out run1/
  python run_survey.py --config survey.yaml --scheduler tcp://10.0.0.5:8786
  python -m pipeline.adapt run1/ && python run_survey.py --rescore run1/ --model run1/adapted
  python run_survey.py --print-config > survey.yaml      # every setting, commented; edit, then --config
  python run_survey.py --config survey.yaml --dry-run    # the plan and a time estimate, nothing run
"""


#: Exit status of a run that finished and wrote its outputs but lost a whole tile or
#: every object (2: refused before starting; 0: complete).
EXIT_INCOMPLETE = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_survey.py", description=__doc__.strip().splitlines()[0],
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=None,
    )
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument("--images", metavar="PATTERN",
                        help="path pattern of the tiles with {tile} and {band}, e.g. 'tiles/{tile}_{band}.fits'; "
                             "every tile found must have every band. Without {band}: one multi-extension FITS per "
                             "tile with extensions named after the bands. Tile-compressed (fpack) files work as is")
    inputs.add_argument("--masks", metavar="PATTERN",
                        help="optional mask images (non-zero = bad pixel), with {tile} and optionally {band}")
    inputs.add_argument("--weights", metavar="PATTERN",
                        help="optional weight/inverse-variance maps (zero = bad pixel), with {tile} and optionally {band}")
    inputs.add_argument("--catalog", metavar="FILE",
                        help="CSV, FITS table or Parquet with columns id, ra, dec (degrees); other columns are carried "
                             "into the outputs")
    inputs.add_argument("--bands", metavar="LIST",
                        help="comma-separated survey band names for the model's channels, in the model's order "
                             "(default: the model's bands, from its config.json). The model's own band names are "
                             "matched by name (i,r,g for a g,r,i model is read as g,r,i); other names map by position")
    inputs.add_argument("--where", metavar="EXPR",
                        help="preselection on catalogue columns, e.g. 'mag_r < 22 and flag == 0'; rejected objects "
                             "are listed in failures.parquet as not_selected. Allowed: column names (`odd name` in "
                             "backticks), numbers, 'strings', comparisons, and/or/not (&, |, ~), in [...], "
                             "+ - * / // %% **, abs sqrt log log10 exp isnan isfinite; nothing else is evaluated")
    inputs.add_argument("--config", metavar="FILE.yaml",
                        help="YAML file of settings; every flag has a key (dashes or underscores); flags win")
    parser.add_argument("--out", metavar="DIR", help="output directory; rerunning on it resumes")
    parser.add_argument("--model", metavar="NAME_OR_CHECKPOINT",
                        help="shipped model name or checkpoint directory (default: default); a comma-separated "
                             "list scores an ensemble: score_<name> per model, score = their mean probability; "
                             "a cross-fit (pipeline.adapt --folds) scores each object with the fold model that "
                             "did not train on it")
    compute = parser.add_argument_group("compute")
    compute.add_argument("--workers", type=int, metavar="N", help="Dask workers to start (default: min(4, cores))")
    compute.add_argument("--threads-per-worker", type=int, metavar="N",
                         help="PyTorch threads per worker (default: cores / workers)")
    compute.add_argument("--scheduler", metavar="ADDRESS",
                         help="use the Dask cluster at this scheduler address instead of starting one")
    compute.add_argument("--cluster", choices=CLUSTERS,
                         help="local: CPU workers; cuda: one dask-cuda worker per GPU; slurm: dask-jobqueue")
    compute.add_argument("--device", choices=DEVICES, help="where the model runs (default: auto)")
    compute.add_argument("--shard-size", type=int, metavar="N", help="objects per Zarr chunk and task (default: 512)")
    compute.add_argument("--stamp-compression", choices=STAMP_COMPRESSIONS,
                         help="codec of the stamps in cutouts.zarr (default: none; zstd saves ~7%% of the space of "
                              "noise-dominated stamps and writes them ~5x slower)")
    compute.add_argument("--batch-size", type=int, metavar="N", help="stamps per forward pass (default: 32 on CPUs, 1024 on GPUs)")
    compute.add_argument("--tta", action="store_true", default=None,
                         help="test-time augmentation: average each stamp's probability over its 8 flips/rotations "
                              "(8x the inference cost)")
    compute.add_argument("--dashboard-address", metavar="HOST:PORT", help="Dask dashboard address (default: 127.0.0.1:8787, this machine only: "
                              "tunnel with ssh -N -L 8787:127.0.0.1:8787 HOST; ':8787' listens on every interface)")
    output = parser.add_argument_group("catalogue")
    output.add_argument("--target-prevalence", type=float, metavar="P",
                        help="lens fraction assumed in the survey for the recalibrated p_survey column (default: 1e-3)")
    output.add_argument("--known-lenses", metavar="lenscat|FILE.csv",
                        help="cross-match with known lenses: 'lenscat' (needs the lenscat package) or a CSV in its format")
    output.add_argument("--hats-min-rows", type=int, metavar="N",
                        help="also write a HEALPix-partitioned HATS copy above N rows (default: 1000000)")
    parser.add_argument("--force", action="store_true", default=None,
                        help="discard results in --out made with other inputs or settings")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="no progress bar")
    parser.add_argument("--rescore", metavar="RUN",
                        help="score the cutout store of the finished run in RUN again with --model (an adapted "
                             "checkpoint, another model or an ensemble), without reading any tile; writes a full set "
                             "of products into --out (default RUN/rescore-<model name>)")
    demo = parser.add_argument_group("demo")
    demo.add_argument("--demo", action="store_true", default=None,
                      help="generate a mock survey with known lenses in --out/mock_survey, run on it, print AUROC")
    demo.add_argument("--demo-objects", type=int, metavar="N", help="objects in the demo survey (default: 1200)")
    demo.add_argument("--demo-engine", choices=("lenstronomy", "galsim"),
                      help="simulator of the demo survey: lenstronomy (default) or galsim, the independent second "
                           "simulator (GalSim light and PSFs, caustics lensing)")
    demo.add_argument("--demo-lens-fraction", type=float, metavar="F",
                      help="fraction of lenses in the demo survey (default: 0.1)")
    demo.add_argument("--seed", type=int, help="seed of the demo survey (default: 0)")
    # Options of the command itself: they are not settings (no YAML key, not saved in run.yaml).
    command = parser.add_argument_group("command")
    command.add_argument("--dry-run", action="store_true",
                         help="check the settings and inputs and print the plan (objects per tile, objects off the "
                              "footprint, shards) with an estimate of the time on this machine; write nothing")
    command.add_argument("--print-config", action="store_true",
                         help="print every setting as a commented YAML file for --config (with the values of "
                              "--config and the flags given, if any) and exit")
    command.add_argument("--log-level", metavar="LEVEL", type=str.upper, choices=LEVELS,
                         help="DEBUG (also Dask's own log records), INFO (progress lines; the default), WARNING "
                              "or ERROR (only problems and the final summary)")
    command.add_argument("--version", action="version", version=f"%(prog)s (lensfinder) {_version()}")
    return parser


def _version() -> str:
    from pipeline.version import code_version

    return code_version()


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    config_file = args.pop("config")
    dry_run, print_config, log_level = args.pop("dry_run"), args.pop("print_config"), args.pop("log_level")
    log = print
    try:
        if log_level:
            from lensfinder.logs import configure

            log = configure(log_level)
        if print_config:
            from lensfinder.example_config import example_yaml

            values = load_yaml(config_file) if config_file else {}
            values.update({key: value for key, value in args.items() if value is not None})
            if values.get("bands") is not None:
                values["bands"] = parse_bands(values["bands"])
            sys.stdout.write(example_yaml(values))
            return 0
        truth = None
        # Imported here so that --help and argument errors answer instantly.
        if dry_run:
            if args.get("rescore") or args.get("demo"):
                raise SettingsError("--dry-run plans a run on tiles (--images, --catalog); it cannot be combined "
                                    "with --rescore or --demo")
            from lensfinder.dryrun import format_report, plan_run

            print(format_report(plan_run(resolve(config_file, **args), log)))
            return 0
        if args.get("rescore"):
            from pipeline.rescore import rescore, rescore_settings

            result = rescore(rescore_settings(args, config_file), log)
        else:
            from pipeline.resume import locked_output
            from pipeline.run import run

            settings = resolve(config_file, **args)
            if settings.demo:
                from pipeline.demo import prepare_demo

                # The demo writes its mock survey into --out, so it takes the run's lock first.
                with locked_output(settings.out):
                    settings, truth = prepare_demo(settings, log)
                    result = run(settings, log)
            else:
                result = run(settings, log)
    except (SettingsError, FileNotFoundError) as error:
        print(f"run_survey.py: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if not error.filename:
            raise
        # A file system refusal (permissions, a full disk, a file where a directory belongs).
        print(f"run_survey.py: error: {error.filename}: {error.strerror or error}; check the path, its "
              "permissions and the free space", file=sys.stderr)
        return 2
    except Exception as error:
        from lensnet.checkpoint import CheckpointError
        from pipeline.images import InputError
        from pipeline.resume import ResumeError

        if isinstance(error, (InputError, ResumeError, CheckpointError)):
            print(f"run_survey.py: error: {error}", file=sys.stderr)
            return 2
        raise
    summary = result.summary
    print(f"scored {summary['scored']} of {summary['catalogue_objects']} objects "
          f"({summary['failed']} failed: {summary['failures_by_reason'] or 'none'}); "
          f"{summary['candidates_above_threshold']} above the model's threshold; {summary['seconds']} s")
    print(f"catalogue:     {result.candidates}")
    print(f"failures:      {result.failures}")
    print(f"cutout store:  {result.store}")
    print(f"dask report:   {result.report}")
    if truth is not None and summary["scored"]:
        from pipeline.demo import VISIBLE_ARC_SNR, VISIBLE_THETA_E_ARCSEC, score_demo

        scores = score_demo(result.candidates, truth)
        print(f"demo AUROC against the truth table: {scores['auroc']:.4f} "
              f"({scores['lenses']} lenses among {scores['objects']} scored objects)")
        if "auroc_visible" in scores:
            print(f"demo AUROC for visible lenses (arc S/N > {VISIBLE_ARC_SNR:g}, θE > {VISIBLE_THETA_E_ARCSEC:.1f}″): "
                  f"{scores['auroc_visible']:.4f} "
                  f"({scores['visible_lenses']} lenses against every non-lens)")
    problem = incomplete(summary, result.failures)
    if problem:
        print(f"run_survey.py: error: {problem}", file=sys.stderr)
        return EXIT_INCOMPLETE
    return 0


def incomplete(summary: dict, failures) -> str | None:
    """One line when a finished run lost a whole tile or every object; None when it did not."""
    tiles = summary.get("unreadable_tiles") or []
    named = f"{', '.join(tiles[:5])}{', ...' if len(tiles) > 5 else ''}"
    tile_text = (f"{len(tiles)} tile(s) could not be read ({named}): their objects are in {failures} with "
                 "reason unreadable_tile and a detail naming the file; repair or remove the files and rerun "
                 "with --force")
    if summary["catalogue_objects"] and not summary["scored"]:
        reasons = ", ".join(f"{reason} {count}" for reason, count in summary["failures_by_reason"].items())
        return (f"no object was scored: all {summary['failed']} failed ({reasons}); "
                + (tile_text if tiles else f"see {failures}"))
    return tile_text if tiles else None


if __name__ == "__main__":
    sys.exit(main())
