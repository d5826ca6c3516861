"""A mock imaging survey with known lenses: FITS tiles, a source catalogue and its truth.

Layout written under ``root``::

    tiles/{tile}_{band}.fits   one float32 2-D image per tile and band, celestial TAN WCS
    sources.parquet            id, ra, dec (deg), mag_r: what a real input catalogue holds
    truth.parquet              id plus the simulation's truth (is_lens, kind, theta_e_arcsec,
                               arc_snr, ...); for scoring only
    survey.json                the settings, PSF and noise of the survey

Geometry: tiles form a ``tiles_x`` x ``tiles_y`` grid on the sky, neighbours sharing
``overlap_px`` pixels. Each tile has its own tangent point (CRVAL at its centre) and a CD
matrix with the profile's pixel scale rotated by ``rotation_deg``. Objects are placed at
random in the union footprint, at least half a stamp apart and half a stamp from its
outer edge (so every catalogued object has a complete stamp in some tile when the overlap
exceeds a stamp). Each object is rendered by the chosen simulation engine
(:mod:`lensnet.simulate.engines`: lenstronomy, or GalSim + caustics) at its exact WCS
position in every tile its light reaches, so objects in an overlap appear, identically, in
both tiles; then white Gaussian sky noise is added per tile and band. The whole survey
shares the profile's nominal PSF (Gaussian for lenstronomy, Moffat beta = 3 for GalSim)
and noise level (the per-stamp jitter of training sets is for robustness, not for this).
A survey from the GalSim engine is one a model trained on lenstronomy simulations has
never seen anything of: the cross-simulator test through ``run_survey.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS

from lensnet.simulate import draw_kinds, get_profile
from lensnet.simulate.definitions import POPULATION, POPULATIONS, check_population
from lensnet.simulate.engines import get_engine
from lensnet.simulate.profiles import SurveyProfile
from lensnet.simulate.stamps import single_threaded

#: Objects are painted through a square window this many pixels wider than a stamp,
#: odd so that its centre is a pixel centre; light beyond it is negligible.
WINDOW_MARGIN_PX = 33
OFF_FOOTPRINT_KIND = "off-footprint"


@dataclass
class MockSurvey:
    """Where a mock survey's files are and what they contain.

    Attributes:
        root: directory holding everything.
        image_pattern: tile images, with ``{tile}`` and ``{band}`` placeholders.
        catalog_path: ``sources.parquet`` (id, ra, dec, mag_r).
        truth_path: ``truth.parquet`` (id plus truth columns).
        bands: band names.
        tiles: tile names.
    """

    root: Path
    image_pattern: str
    catalog_path: Path
    truth_path: Path
    bands: tuple[str, ...]
    tiles: list[str]


def tan_header(
    crval_deg: tuple[float, float], crpix: tuple[float, float], pixel_scale_arcsec: float, rotation_deg: float
) -> fits.Header:
    """FITS header of a celestial TAN WCS with a CD matrix (east to the left at zero rotation)."""
    scale = pixel_scale_arcsec / 3600.0
    theta = math.radians(rotation_deg)
    header = fits.Header()
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CUNIT1"], header["CUNIT2"] = "deg", "deg"
    header["CRVAL1"], header["CRVAL2"] = float(crval_deg[0]), float(crval_deg[1])
    header["CRPIX1"], header["CRPIX2"] = float(crpix[0]), float(crpix[1])
    header["CD1_1"], header["CD1_2"] = -scale * math.cos(theta), scale * math.sin(theta)
    header["CD2_1"], header["CD2_2"] = scale * math.sin(theta), scale * math.cos(theta)
    header["RADESYS"], header["EQUINOX"] = "ICRS", 2000.0
    return header


def _place(rng: np.random.Generator, n: int, low: np.ndarray, high: np.ndarray, min_sep: float) -> np.ndarray:
    """``n`` uniform random points in a box, no two closer than ``min_sep`` (dart throwing)."""
    cell = min_sep / math.sqrt(2.0)  # at most one point per grid cell
    grid: dict[tuple[int, int], np.ndarray] = {}
    points: list[np.ndarray] = []
    for _ in range(50 * n + 1000):
        if len(points) == n:
            break
        p = rng.uniform(low, high)
        key = (int(p[0] // cell), int(p[1] // cell))
        neighbours = (grid.get((key[0] + i, key[1] + j)) for i in range(-2, 3) for j in range(-2, 3))
        if all(q is None or np.hypot(*(p - q)) >= min_sep for q in neighbours):
            grid[key] = p
            points.append(p)
    if len(points) < n:
        raise ValueError(
            f"could only place {len(points)} of {n} objects {min_sep:.0f} px apart; use fewer objects or bigger tiles"
        )
    return np.array(points).reshape(n, 2)


def _paint(image: np.ndarray, window: np.ndarray, col: int, row: int) -> None:
    """Add ``window`` (bands, w, w) into ``image`` (bands, H, W) centred on (row, col), clipped."""
    half = window.shape[-1] // 2
    rows, cols = image.shape[-2:]
    r0, c0 = row - half, col - half
    ra, ca = max(r0, 0), max(c0, 0)
    rb, cb = min(r0 + window.shape[-2], rows), min(c0 + window.shape[-1], cols)
    if ra < rb and ca < cb:
        image[:, ra:rb, ca:cb] += window[:, ra - r0 : rb - r0, ca - c0 : cb - c0]


#: Where an object is painted: tile name, integer pixel of its centre, sub-pixel offset.
Placement = tuple[str, int, int, tuple[float, float]]


def render_object(engine: str, survey: SurveyProfile, params: dict[str, Any], window_px: int,
                  placements: list[Placement]) -> tuple[list[tuple[str, int, int, np.ndarray]], float, dict[str, Any]]:
    """Render one object into a window per placement; return the windows, its reference-band
    magnitude and its truth record (both from the first placement). Pure, and on one thread
    whichever process runs it (parallelism comes from processes; see ``single_threaded``)."""
    with single_threaded():
        simulator = get_engine(engine)
        simulator.prepare(params, survey)
        windows, first_arcs = [], None
        for name, col, row, offset in placements:
            arcs = simulator.render(params, survey, window_px, offset, part="lensed")
            windows.append((name, col, row, arcs + simulator.render(params, survey, window_px, offset,
                                                                    part="unlensed")))
            first_arcs = arcs if first_arcs is None else first_arcs
        window, ref = windows[0][3], survey.reference_index
        record = simulator.truth_record(params, survey, window, placements[0][3], first_arcs)
    return windows, survey.magnitude(float(window[ref].sum()), ref), record


def _rendered(jobs: list[tuple], workers: int, progress: bool) -> Iterator[tuple]:
    """``render_object`` of every job, in order: here, or in ``workers`` spawned processes."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="rendering objects", unit="object", disable=not progress)
    try:
        if workers <= 1 or len(jobs) < 2:
            for job in jobs:
                yield render_object(*job)
                bar.update()
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the simulators import torch (caustics), which must not be forked.
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for result in pool.map(render_object, *zip(*jobs, strict=True), chunksize=8):
                yield result
                bar.update()
    finally:
        bar.close()


def _off_footprint_truth(truth: pd.DataFrame, ids: np.ndarray) -> pd.DataFrame:
    """Truth rows for catalogue entries that no tile covers: same columns, neutral values."""
    rows: dict[str, Any] = {}
    for column, dtype in truth.dtypes.items():
        if pd.api.types.is_bool_dtype(dtype):
            rows[column] = np.zeros(len(ids), dtype=bool)
        elif pd.api.types.is_integer_dtype(dtype):
            rows[column] = np.zeros(len(ids), dtype=dtype)
        elif pd.api.types.is_float_dtype(dtype):
            rows[column] = np.full(len(ids), np.nan)
        else:
            rows[column] = [""] * len(ids)
    off = pd.DataFrame(rows)
    off["id"], off["kind"] = ids, OFF_FOOTPRINT_KIND
    return off.astype(truth.dtypes.to_dict())


def make_mock_survey(
    root: str | Path,
    n_objects: int = 1200,
    lens_fraction: float = 0.1,
    seed: int = 0,
    profile: str = "ground-gri",
    tiles_x: int = 2,
    tiles_y: int = 2,
    tile_size_px: int = 1600,
    overlap_px: int = 100,
    rotation_deg: float = 0.0,
    n_off_footprint: int = 0,
    centre_radec: tuple[float, float] = (150.0, 2.0),
    kind_weights: dict[str, float] | None = None,
    engine: str = "lenstronomy",
    population: int = POPULATION,
    workers: int = 1,
    progress: bool = False,
) -> MockSurvey:
    """Write a mock survey under ``root`` and describe it (see the module docstring).

    Args:
        root: output directory (created; existing files are overwritten).
        n_objects: objects painted into the tiles.
        lens_fraction: exact fraction of them that are lenses.
        seed: the survey depends on nothing else.
        profile: survey profile name (single-resolution profiles only).
        tiles_x, tiles_y: tile grid.
        tile_size_px: side of a square tile.
        overlap_px: pixels shared by neighbouring tiles.
        rotation_deg: rotation of the pixel grid on the sky (CD matrix).
        n_off_footprint: extra catalogue rows outside every tile.
        centre_radec: sky position (deg) of the centre of the footprint.
        kind_weights: relative frequencies of the non-lens kinds.
        engine: simulation engine, ``"lenstronomy"`` or ``"galsim"``.
        population: version of the object population
            (:data:`lensnet.simulate.definitions.POPULATIONS`).
        workers: processes rendering the objects (the survey is the same for any number); they
            are spawned, so a script calling this with ``workers > 1`` needs the
            ``if __name__ == "__main__":`` guard.
        progress: show a progress bar over the objects.
    """
    population = check_population(population)
    simulator = get_engine(engine)
    survey = get_profile(profile)
    if survey.is_multi_resolution:
        raise NotImplementedError(f"mock surveys support single-resolution profiles only, not {survey.name!r}")
    step = tile_size_px - overlap_px
    if step <= 0:
        raise ValueError("overlap_px must be smaller than tile_size_px")
    root = Path(root)
    (root / "tiles").mkdir(parents=True, exist_ok=True)
    place_rng, object_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))

    width, height = tiles_x * step + overlap_px, tiles_y * step + overlap_px
    scale = survey.pixel_scale_arcsec
    frame = WCS(tan_header(centre_radec, ((width + 1) / 2, (height + 1) / 2), scale, rotation_deg))
    digits = len(str(max(tiles_x, tiles_y) - 1))
    headers: dict[str, fits.Header] = {}
    for j in range(tiles_y):
        for i in range(tiles_x):
            centre = frame.pixel_to_world_values(i * step + (tile_size_px - 1) / 2, j * step + (tile_size_px - 1) / 2)
            crval = (float(centre[0]), float(centre[1]))
            headers[f"t{j:0{digits}d}{i:0{digits}d}"] = tan_header(
                crval, ((tile_size_px + 1) / 2,) * 2, scale, rotation_deg
            )
    tiles = {name: WCS(header) for name, header in headers.items()}

    # positions in the frame's pixel coordinates, then on the sky
    edge = survey.stamp_size_px / 2
    xy = _place(place_rng, n_objects, np.array([edge, edge]), np.array([width - 1 - edge, height - 1 - edge]), edge)
    ra, dec = frame.pixel_to_world_values(xy[:, 0], xy[:, 1]) if n_objects else (np.empty(0), np.empty(0))

    window_px = survey.stamp_size_px + WINDOW_MARGIN_PX
    window_px += 1 - window_px % 2
    half = window_px // 2
    images = {name: np.zeros((survey.n_bands, tile_size_px, tile_size_px), dtype=np.float32) for name in tiles}
    kinds = draw_kinds(object_rng, n_objects, lens_fraction, kind_weights)
    mag_ref, records = np.empty(n_objects), []
    conditions = simulator.nominal_conditions(survey)
    # Parameters are drawn here, in order, so the survey does not depend on how many processes render it.
    jobs, where = [], []
    for index, kind in enumerate(kinds):
        params = simulator.draw_parameters(object_rng, kind, survey, conditions, population)
        placements: list[Placement] = []
        covering: list[str] = []
        for name, wcs in tiles.items():
            x, y = wcs.world_to_pixel_values(ra[index], dec[index])
            col, row = math.floor(x + 0.5), math.floor(y + 0.5)
            if not (-half <= col < tile_size_px + half and -half <= row < tile_size_px + half):
                continue
            placements.append((name, col, row, (float(x - col), float(y - row))))
            if -0.5 <= x < tile_size_px - 0.5 and -0.5 <= y < tile_size_px - 0.5:
                covering.append(name)
        assert placements  # every object lies inside the footprint, so some tile has it
        jobs.append((engine, survey, params, window_px, placements))
        where.append(",".join(covering))

    for index, (windows, magnitude, record) in enumerate(_rendered(jobs, workers, progress)):
        for name, col, row, window in windows:
            _paint(images[name], window, col, row)
        mag_ref[index] = magnitude
        records.append({"id": index, "ra": float(ra[index]), "dec": float(dec[index]), **record,
                        "tiles": where[index], "in_footprint": True})

    for name, image in images.items():
        for b, band in enumerate(survey.bands):
            image[b] += noise_rng.standard_normal(image[b].shape, dtype=np.float32) * np.float32(survey.sky_sigma[b])
            header = headers[name].copy()
            header["BUNIT"] = "count"
            header["FILTER"] = (band, "band")
            header["MAGZERO"] = (survey.zeropoint_mag[b], "AB mag of 1 count")
            header["PSF_FWHM"] = (survey.psf_fwhm_arcsec[b], "PSF FWHM [arcsec]")
            header["SIMULATR"] = (engine, "simulation engine")
            header["SKYSIGMA"] = (survey.sky_sigma[b], "per-pixel noise sigma [count]")
            header["TILE"] = name
            fits.PrimaryHDU(image[b], header=header).writeto(root / "tiles" / f"{name}_{band}.fits", overwrite=True)

    off_ids = np.arange(n_objects, n_objects + n_off_footprint, dtype=np.int64)
    off_ra, off_dec = _off_footprint_positions(
        place_rng, n_off_footprint, frame, width, height, list(tiles.values()), tile_size_px
    )
    catalog = pd.DataFrame(
        {
            "id": np.concatenate([np.arange(n_objects, dtype=np.int64), off_ids]),
            "ra": np.concatenate([ra, off_ra]),
            "dec": np.concatenate([dec, off_dec]),
            "mag_r": np.concatenate([mag_ref, place_rng.uniform(18.0, 22.0, n_off_footprint)]),
        }
    )
    truth = pd.DataFrame.from_records(records)
    if n_off_footprint and len(truth):
        off = _off_footprint_truth(truth, off_ids)
        off["ra"], off["dec"] = off_ra, off_dec
        truth = pd.concat([truth, off], ignore_index=True)
    catalog_path, truth_path = root / "sources.parquet", root / "truth.parquet"
    catalog.to_parquet(catalog_path, index=False)
    truth.to_parquet(truth_path, index=False)
    settings = {
        "n_objects": n_objects,
        "lens_fraction": lens_fraction,
        "seed": seed,
        "profile": survey.name,
        "tiles_x": tiles_x,
        "tiles_y": tiles_y,
        "tile_size_px": tile_size_px,
        "overlap_px": overlap_px,
        "rotation_deg": rotation_deg,
        "n_off_footprint": n_off_footprint,
        "engine": engine,
        "population": population,
        "centre_radec": list(centre_radec),
        "bands": list(survey.bands),
        "pixel_scale_arcsec": scale,
        "psf_fwhm_arcsec": list(survey.psf_fwhm_arcsec),
        "sky_sigma": list(survey.sky_sigma),
        "zeropoint_mag": list(survey.zeropoint_mag),
    }
    (root / "survey.json").write_text(json.dumps(settings, indent=2))
    return MockSurvey(
        root=root,
        image_pattern=str(root / "tiles" / "{tile}_{band}.fits"),
        catalog_path=catalog_path,
        truth_path=truth_path,
        bands=survey.bands,
        tiles=list(tiles),
    )


def _off_footprint_positions(
    rng: np.random.Generator, n: int, frame: WCS, width: int, height: int, tiles: list[WCS], tile_size_px: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sky positions well outside every tile (checked against each tile's WCS)."""
    angle = rng.uniform(0.0, 2.0 * math.pi, n)
    radius = rng.uniform(0.8, 1.5, n) * math.hypot(width, height)  # beyond the half-diagonal
    x = (width - 1) / 2 + radius * np.cos(angle)
    y = (height - 1) / 2 + radius * np.sin(angle)
    ra, dec = frame.pixel_to_world_values(x, y)
    ra, dec = np.atleast_1d(ra).astype(float), np.atleast_1d(dec).astype(float)
    for wcs in tiles:
        tx, ty = wcs.world_to_pixel_values(ra, dec)
        inside = (tx >= -0.5) & (tx < tile_size_px - 0.5) & (ty >= -0.5) & (ty < tile_size_px - 0.5)
        if inside.any():  # cannot happen beyond the half-diagonal; guards the geometry above
            raise RuntimeError("an off-footprint position fell on a tile")
    return ra, dec


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.mock OUT``: write a mock survey (tiles, catalogue, truth) to run a model over."""
    import argparse
    import time

    from lensnet.simulate.definitions import ENGINES
    from pipeline.config import usable_cpus

    parser = argparse.ArgumentParser(
        prog="python -m pipeline.mock",
        description="Write a mock survey: FITS tiles per band with a TAN WCS, a source catalogue (Parquet) "
                    "and its truth table, from either simulation engine. Run it with run_survey.py and "
                    "measure the run with `python -m pipeline.against_truth RUN OUT/truth.parquet`.")
    parser.add_argument("out", help="output directory (created; existing files are overwritten)")
    parser.add_argument("--objects", type=int, default=1200, help="objects painted into the tiles (default 1200)")
    parser.add_argument("--lens-fraction", type=float, default=0.1,
                        help="exact fraction of lenses among them (default 0.1)")
    parser.add_argument("--engine", choices=sorted(ENGINES), default="lenstronomy", help="simulation engine")
    parser.add_argument("--population", type=int, choices=POPULATIONS, default=POPULATION,
                        help=f"version of the object population (default {POPULATION}); 2 gives the deflectors the "
                             "non-lens early types' size-luminosity relation, so a deflector is not larger than a "
                             "non-lens of its brightness (population 1 ties its size to θE)")
    parser.add_argument("--seed", type=int, default=0, help="the survey depends on nothing else (default 0)")
    parser.add_argument("--profile", default="ground-gri", help="survey profile (default ground-gri)")
    parser.add_argument("--tiles", default="2x2", metavar="NXxNY", help="tile grid (default 2x2)")
    parser.add_argument("--tile-size", type=int, default=1600, metavar="PX", help="side of a tile (default 1600)")
    parser.add_argument("--overlap", type=int, default=100, metavar="PX", help="pixels shared by neighbours")
    parser.add_argument("--rotation", type=float, default=0.0, metavar="DEG", help="rotation of the pixel grid")
    parser.add_argument("--off-footprint", type=int, default=0, metavar="N",
                        help="extra catalogue rows outside every tile")
    parser.add_argument("--workers", type=int, default=usable_cpus(), metavar="N",
                        help="processes rendering the objects (default: all cores); the survey is the same for any N")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        nx, ny = (int(part) for part in args.tiles.lower().split("x"))
    except ValueError:
        parser.error(f"--tiles must look like 3x3, not {args.tiles!r}")
    if args.objects < 1 or nx < 1 or ny < 1 or args.workers < 1:
        parser.error("--objects, --workers and the tile grid must be positive")
    if not 0.0 <= args.lens_fraction <= 1.0:
        parser.error(f"--lens-fraction must lie in [0, 1], not {args.lens_fraction}")
    start = time.perf_counter()
    try:
        survey = make_mock_survey(args.out, n_objects=args.objects, lens_fraction=args.lens_fraction, seed=args.seed,
                                  profile=args.profile, tiles_x=nx, tiles_y=ny, tile_size_px=args.tile_size,
                                  overlap_px=args.overlap, rotation_deg=args.rotation,
                                  n_off_footprint=args.off_footprint, engine=args.engine,
                                  population=args.population, workers=args.workers,
                                  progress=not args.no_progress)
    except (ValueError, KeyError, NotImplementedError) as error:
        parser.exit(2, f"python -m pipeline.mock: error: {error}\n")
    print(f"wrote {len(survey.tiles)} tiles × {len(survey.bands)} bands in {time.perf_counter() - start:.0f} s")
    print(f"images:  {survey.image_pattern}")
    print(f"catalog: {survey.catalog_path}")
    print(f"truth:   {survey.truth_path}")
    print(f"run it:  run_survey.py --images '{survey.image_pattern}' --catalog {survey.catalog_path} "
          f"--bands {','.join(survey.bands)} --out RUN")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
