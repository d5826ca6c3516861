"""Cutout stage: the project's strided gather vs astropy ``Cutout2D`` per object.

Both sides start from sky coordinates (ra, dec) and FITS files on disk and end with
float32 stamps (n, bands, S, S), NaN outside the image:

* project: one vectorised ``WCS.all_world2pix`` per tile (as the planner does), then per
  band ``pipeline.images.read_image`` (memory map) and ``pipeline.cutouts.cut_stamps``
  (one fancy-indexing gather on a ``sliding_window_view``);
* baseline, as a user would write it: ``fits.open`` + ``WCS(header)`` once per band, then
  per object one ``SkyCoord`` and per band one ``Cutout2D(data, coord, (S, S), wcs=wcs,
  mode="partial", fill_value=nan)``. It is timed on a subset of the objects (every
  ``n / subset``-th, so edge objects are sampled too) and its cost per object is
  extrapolated to all of them; the report says so.

The two run in interleaved rounds (ours, Cutout2D, ours, Cutout2D, ...) on the same files.
The first round is the cold one (the files were just written, so the page cache holds
them, but first calls still pay for imports and caches) and is reported apart; the
speed-up is computed per warm round (Cutout2D's seconds per object over ours, same
round) and summarised by its median and spread. The stamps are checked to be identical:
``Cutout2D`` centres an even-sized cutout half a pixel differently (its origin is
``ceil(x - S/2)``, the project's ``floor(x + 0.5) - S//2``), so the check feeds
``cut_stamps`` Cutout2D's integer centre.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from benchmarks.common import interleaved, log, paired_ratios, per_second, spread
from pipeline.cutouts import cut_stamps
from pipeline.images import read_image
from pipeline.mock import tan_header

BANDS = ("g", "r", "i")


def write_tile(directory: Path, size_px: int, seed: int = 0) -> tuple[dict[str, Path], WCS]:
    """One tile: a float32 FITS image per band with a TAN WCS at 0.2"/px."""
    header = tan_header((150.0, 2.0), ((size_px + 1) / 2, (size_px + 1) / 2), 0.2, 0.0)
    rng = np.random.default_rng(seed)
    paths = {}
    for band in BANDS:
        image = rng.standard_normal((size_px, size_px), dtype=np.float32)
        paths[band] = directory / f"tile_{band}.fits"
        fits.PrimaryHDU(image, header=header).writeto(paths[band], overwrite=True)
    return paths, WCS(header)


def project_cutouts(paths: dict[str, Path], header_wcs: WCS, ra: np.ndarray, dec: np.ndarray,
                    size_px: int) -> np.ndarray:
    x, y = header_wcs.all_world2pix(ra, dec, 0)
    stamps = np.empty((len(ra), len(paths), size_px, size_px), dtype=np.float32)
    for index, path in enumerate(paths.values()):
        stamps[:, index], _ = cut_stamps(read_image(path), x, y, size_px)
    return stamps


def cutout2d_cutouts(paths: dict[str, Path], ra: np.ndarray, dec: np.ndarray, size_px: int) -> np.ndarray:
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from astropy.nddata import Cutout2D

    opened = [fits.open(path) for path in paths.values()]
    try:
        images = [(hdul[0].data, WCS(hdul[0].header)) for hdul in opened]
        stamps = np.empty((len(ra), len(paths), size_px, size_px), dtype=np.float32)
        for i in range(len(ra)):
            coord = SkyCoord(ra[i] * u.deg, dec[i] * u.deg)
            for b, (data, wcs) in enumerate(images):
                stamps[i, b] = Cutout2D(data, coord, (size_px, size_px), wcs=wcs, mode="partial",
                                        fill_value=np.nan).data
        return stamps
    finally:
        for hdul in opened:
            hdul.close()


def measure(tile_px: int, n_objects: int, subset: int, size_px: int, repeats: int) -> dict:
    """Ours vs Cutout2D in one cold and ``repeats`` warm interleaved rounds; see the module doc."""
    with tempfile.TemporaryDirectory(prefix="bench-cutouts-") as scratch:
        paths, wcs = write_tile(Path(scratch), tile_px)
        rng = np.random.default_rng(1)
        # Uniform over the tile, so ~2 S / tile_px of the stamps reach past an edge.
        x = rng.uniform(-0.5, tile_px - 0.5, n_objects)
        y = rng.uniform(-0.5, tile_px - 0.5, n_objects)
        ra, dec = wcs.all_pix2world(x, y, 0)
        pick = np.linspace(0, n_objects - 1, subset).astype(int)
        last: dict[str, np.ndarray] = {}

        def with_cutout2d() -> None:
            last["baseline"] = cutout2d_cutouts(paths, ra[pick], dec[pick], size_px)

        timings = interleaved({"project": lambda: project_cutouts(paths, wcs, ra, dec, size_px),
                               "cutout2d": with_cutout2d}, repeats, cold_rounds=1)

        # Same pixels, given Cutout2D's centring of even-sized cutouts.
        px, py = wcs.all_world2pix(ra[pick], dec[pick], 0)
        cx, cy = np.ceil(px - size_px / 2) + size_px // 2, np.ceil(py - size_px / 2) + size_px // 2
        aligned = np.stack([cut_stamps(read_image(p), cx, cy, size_px)[0] for p in paths.values()], axis=1)
        identical = float(np.mean([np.array_equal(a, b, equal_nan=True) for a, b in zip(aligned, last["baseline"])]))

    project, cutout2d = timings["project"], timings["cutout2d"]
    project_rates = spread(per_second(n_objects, project["warm_s"]))
    baseline_rates = spread(per_second(subset, cutout2d["warm_s"]))
    # Per round: Cutout2D's seconds per object / ours, i.e. our rate / its rate in the same round.
    speed_up = paired_ratios(per_second(n_objects, project["warm_s"]), per_second(subset, cutout2d["warm_s"]))
    result = {
        "tile_px": tile_px, "bands": len(BANDS), "stamp_px": size_px, "objects": n_objects,
        "baseline_objects_timed": subset, "baseline_extrapolated": subset < n_objects,
        "repeats": repeats, "n": speed_up["n"],
        "statistic": "median of warm interleaved rounds; speed-up per round",
        "project_timing": project, "baseline_timing": cutout2d,
        "project_s_all": project["all_s"], "baseline_s_all": cutout2d["all_s"],
        "project_cutouts_per_s": project_rates["median"], "project_cutouts_per_s_spread": project_rates,
        "baseline_cutouts_per_s": baseline_rates["median"], "baseline_cutouts_per_s_spread": baseline_rates,
        "project_first_pass_cutouts_per_s": n_objects / project["cold_s"],
        "baseline_first_pass_cutouts_per_s": subset / cutout2d["cold_s"],
        "cold_speed_up": (cutout2d["cold_s"] / subset) / (project["cold_s"] / n_objects),
        "baseline_s_extrapolated_to_all": n_objects / baseline_rates["median"],
        "speed_up": speed_up["median"], "speed_up_spread": speed_up,
        "identical_stamps_fraction": identical,
        "unit": "one cutout = one object in all bands",
        **{key: project[key] for key in ("load_before", "load_after", "other_cores", "steal_cores",
                                         "other_cores_per_round") if key in project},
    }
    log(f"  cutouts: project {project_rates['median']:,.0f}/s, Cutout2D {baseline_rates['median']:,.0f}/s -> "
        f"{speed_up['median']:.0f}x [{speed_up['min']:.0f}-{speed_up['max']:.0f}] over {speed_up['n']} warm rounds "
        f"(cold {result['cold_speed_up']:.0f}x; identical: {identical:.0%})")
    return result
