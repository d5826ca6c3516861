"""``lensfinder``: one command for everything the project does.

Each subcommand is the existing module's own command line (the same flags, the same
``--help``), so ``lensfinder run`` is ``python run_survey.py``, ``lensfinder train`` is
``python -m lensnet.train`` and so on; ``run_survey.py`` stays the entry point of a run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from typing import Callable

from lensfinder.logs import LEVELS

PROG = "lensfinder"


@dataclass(frozen=True)
class Command:
    """A subcommand: the module whose ``main(argv)`` it calls, and one line of help."""

    module: str
    help: str
    #: arguments put before the user's (``rescore RUN`` -> ``run_survey.py --rescore RUN``)
    prefix: Callable[[list[str]], list[str]] | None = None
    #: takes --log-level itself (run_survey.py); the others get it through Python's logging
    own_log_level: bool = False


def _rescore_prefix(argv: list[str]) -> list[str]:
    if not argv or argv[0].startswith("-"):
        return argv if any(arg in ("-h", "--help") for arg in argv) else ["--rescore", *argv]
    return ["--rescore", *argv]


COMMANDS: dict[str, Command] = {
    "run": Command("run_survey", "find lenses in survey tiles: cut, store, score, rank (run_survey.py)",
                   own_log_level=True),
    "rescore": Command("run_survey", "score a finished run's cutouts again with another model: rescore RUN --model M "
                                     "(run_survey.py --rescore)", prefix=_rescore_prefix, own_log_level=True),
    "simulate": Command("lensnet.simulate.__main__", "simulate labelled training stamps (python -m lensnet.simulate)"),
    "train": Command("lensnet.train", "train a model on simulated stamps (python -m lensnet.train)"),
    "evaluate": Command("lensnet.evaluate", "measure a model on held-out stamps (python -m lensnet.evaluate)"),
    "compare": Command("lensnet.compare", "train and compare architectures on one recipe (python -m lensnet.compare)"),
    "build": Command("lensnet.build", "simulate, train and evaluate from one recipe into one folder, resumable "
                                      "(python -m lensnet.build)"),
    "adapt": Command("pipeline.adapt", "fine-tune the model on arcs injected into a run's own galaxies "
                                       "(python -m pipeline.adapt)"),
    "inspect": Command("catalogs.inspect.__main__", "grade the top candidates in the browser, export the grades, "
                                                    "a gallery or a Zooniverse subject set (python -m catalogs.inspect)"),
    "card": Command("lensnet.card", "write a model's card from its checkpoint (python -m lensnet.card)"),
}


def _epilog() -> str:
    width = max(len(name) for name in COMMANDS) + 2
    lines = ["commands:"] + [f"  {name:<{width}}{command.help}" for name, command in COMMANDS.items()]
    lines.append(f"  {'version':<{width}}print the versions of lensfinder and of the libraries it runs on")
    lines += ["", f"`{PROG} COMMAND --help` lists a command's options.", "",
              "examples:",
              f"  {PROG} run --demo --out demo/",
              f"  {PROG} run --print-config > survey.yaml && {PROG} run --config survey.yaml --dry-run",
              f"  {PROG} adapt run1/ && {PROG} rescore run1/ --model run1/adapted",
              f"  {PROG} inspect run1/ --zooniverse zooniverse/ --top 500"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from lensfinder import version

    parser = argparse.ArgumentParser(
        prog=PROG, description="Survey-scale strong gravitational lens finding.", epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}")
    parser.add_argument("--log-level", metavar="LEVEL", type=str.upper, choices=LEVELS,
                        help="DEBUG, INFO (default), WARNING or ERROR; passed on to the command")
    parser.add_argument("command", choices=[*COMMANDS, "version"], metavar="COMMAND",
                        help="one of: " + ", ".join([*COMMANDS, "version"]))
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the command's own options")
    return parser


def versions() -> dict[str, str]:
    """lensfinder's version and those of the libraries whose versions change results or speed."""
    from importlib.metadata import PackageNotFoundError, version as installed

    import platform

    from lensfinder import version

    found = {"lensfinder": version(), "python": platform.python_version()}
    for name in ("numpy", "pandas", "pyarrow", "astropy", "dask", "distributed", "xarray", "zarr", "torch",
                 "torchvision", "timm", "lenstronomy", "galsim", "caustics", "lenscat", "dask-cuda",
                 "dask-jobqueue", "hats", "lsdb", "panoptes-client"):
        try:
            found[name] = installed(name)
        except PackageNotFoundError:
            continue
    try:
        import torch

        found["cuda"] = (f"{torch.version.cuda} ({torch.cuda.device_count()} device(s) visible)"
                         if torch.cuda.is_available() else f"none visible (torch built for {torch.version.cuda or 'CPU'})")
    except ImportError:
        pass
    return found


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "version":
        for name, value in versions().items():
            print(f"{name:<16}{value}")
        return 0
    command = COMMANDS[args.command]
    forwarded = list(args.args)
    if command.prefix is not None:
        forwarded = command.prefix(forwarded)
    if args.log_level:
        if command.own_log_level:
            forwarded = ["--log-level", args.log_level, *forwarded]
        else:
            from lensfinder.logs import configure

            configure(args.log_level)
    module = importlib.import_module(command.module)
    try:
        return int(module.main(forwarded) or 0)
    except Exception as error:  # the commands' own user errors, as one line
        message = _user_error(error)
        if message is None:
            raise
        print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
        return 2


def _user_error(error: Exception) -> str | None:
    """One line for an error the user can fix (a missing file, a bad checkpoint or YAML); None otherwise."""
    import yaml

    from lensnet.checkpoint import CheckpointError

    if isinstance(error, FileNotFoundError):
        if error.filename:
            return f"{error.filename}: no such file or directory"
        return str(error)
    if isinstance(error, (CheckpointError, yaml.YAMLError)):
        return " ".join(str(error).split())
    return None


if __name__ == "__main__":
    sys.exit(main())
