"""``python -m catalogs.inspect RUN_DIR``: grade, export or share a run's top candidates.

Without ``--export``, ``--gallery`` or ``--zooniverse`` it serves the grading page on
http://127.0.0.1:8765/ until interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from catalogs.inspect.cache import MapSettings, build_cache
from catalogs.inspect.data import RunError, open_run
from catalogs.inspect.server import BindRefused, InspectionApp, check_bind_address, make_server

DEFAULT_PORT = 8765
DEFAULT_TOP = 100


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m catalogs.inspect",
        description="Inspect a run's ranked lens candidates: a local grading page (default), "
        "an export of the graded list (--export), a static gallery (--gallery) or a Zooniverse subject set "
        "(--zooniverse).",
    )
    parser.add_argument("run_dir", help="the --out directory of a run (holds candidates.parquet, cutouts.zarr)")
    parser.add_argument("--top", type=int, default=DEFAULT_TOP, help=f"candidates to show (default {DEFAULT_TOP})")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free)")
    parser.add_argument("--allow-public", action="store_true",
                        help="allow a non-loopback --host: anyone who reaches it can read candidates and post grades")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--export", metavar="OUT_PREFIX",
                        help="write the graded objects with consensus to OUT_PREFIX.parquet and OUT_PREFIX.csv")
    action.add_argument("--gallery", metavar="OUT_DIR", help="write a static gallery (index.html + PNGs) to OUT_DIR")
    action.add_argument("--zooniverse", metavar="OUT_DIR",
                        help="write the top candidates as a Zooniverse subject set (PNGs + manifest.csv) to OUT_DIR; "
                             "python -m catalogs.zooniverse has more options")
    parser.add_argument("--no-maps", action="store_true", help="skip the occlusion and Grad-CAM maps (much faster)")
    parser.add_argument("--occlusion-stride", type=int, default=4,
                        help="occlusion patch step in pixels (default 4; 8 is 3.5x faster for 64-px stamps)")
    parser.add_argument("--device", default="auto", help="torch device for the maps: auto, cpu, cuda (default auto)")
    parser.add_argument("--rebuild", action="store_true", help="remake the cached images")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return parser.parse_args(argv)


def _device(request: str) -> str:
    if request != "auto":
        return request
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    say = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    try:
        if args.export:
            from catalogs.inspect.grades import export_graded

            parquet_path, csv_path = export_graded(open_run(args.run_dir, 1).run_dir, args.export)
            print(f"graded list: {parquet_path}\n             {csv_path}")
            return 0
        if args.zooniverse:
            from catalogs.zooniverse import export_subjects

            export = export_subjects(args.run_dir, args.zooniverse, args.top)
            print(f"{export.subjects} Zooniverse subjects: {export.manifest}")
            return 0
        if not args.gallery:
            check_bind_address(args.host, args.allow_public)  # before minutes of image making
        run = open_run(args.run_dir, args.top)
        maps = MapSettings(enabled=not args.no_maps, occlusion_stride_px=args.occlusion_stride,
                           device=_device(args.device))
        cache_dir = build_cache(run, maps, rebuild=args.rebuild, progress=say)
        if args.gallery:
            from catalogs.inspect.consensus import consensus
            from catalogs.inspect.gallery import write_gallery
            from catalogs.inspect.grades import GradeStore

            graded = consensus(GradeStore(run.run_dir).read())
            index = write_gallery(cache_dir, args.gallery, graded if len(graded) else None)
            print(f"gallery: {index}")
            return 0
        server = make_server(InspectionApp(run, cache_dir), args.host, args.port, args.allow_public)
    except (RunError, BindRefused, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"grading page for {run.run_dir}: {server.url}  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
