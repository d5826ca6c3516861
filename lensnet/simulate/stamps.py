"""Noisy training stamps and their truth table, from either simulation engine.

:func:`simulate_stamps` draws the kinds of ``n`` objects and has the chosen engine
(``"lenstronomy"``, this package's own, or ``"galsim"``, :mod:`lensnet.simulate.galsim_engine`)
draw, render and observe them. Both engines write the same truth columns with the same
meanings: whether it is a lens, its Einstein radius, magnitudes and colours, the
observing conditions, the artefacts in the stamp, and how visible the arcs are
(``arc_snr``, ``npix_arc_1sigma``, ``arc_azimuth_fraction``; defined in
:mod:`lensnet.simulate.definitions`). Quantities that do not apply (the Einstein radius of
a non-lens) are NaN.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

from lensnet.simulate import artefacts, definitions
from lensnet.simulate.definitions import (
    DEFAULT_NON_LENS_WEIGHTS,
    ENGINES,
    NON_LENS_KINDS,
    POPULATION,
    check_population,
)
from lensnet.simulate.objects import draw_parameters
from lensnet.simulate.profiles import SurveyProfile, get_profile
from lensnet.simulate.rendering import render

#: Training stamps are centred to within +-1 pixel (per axis), like cutouts of a catalogue.
CENTRING_JITTER_PX = 1.0
_NAN = float("nan")


def _group_band_mags(groups: list[Mapping[str, Any]], profile: SurveyProfile) -> np.ndarray:
    """Combined magnitude per band of several light groups (NaN if there are none)."""
    if not groups:
        return np.full(profile.n_bands, np.nan)
    counts = np.zeros(profile.n_bands)
    for group in groups:
        counts += [profile.counts(m, b) for b, m in enumerate(group["mags"])]
    return np.asarray(profile.zeropoint_mag) - 2.5 * np.log10(counts)


def truth_record(
    params: Mapping[str, Any],
    profile: SurveyProfile | str,
    image_noiseless: np.ndarray,
    offset_px: tuple[float, float] = (0.0, 0.0),
    arc_image: np.ndarray | None = None,
) -> dict[str, Any]:
    """Truth-table row for one simulated object.

    Args:
        params: parameters from :func:`lensnet.simulate.draw_parameters`.
        profile: survey profile or its name.
        image_noiseless: the object's noiseless stamp (n_bands, size, size), as rendered.
        offset_px: the (x, y) offset it was rendered with.
        arc_image: the noiseless lensed-source-only image (``render(..., part="lensed")``)
            if the caller has it; otherwise it is rendered here.

    Returns:
        A flat dict of plain Python values; every kind has the same keys (NaN where a
        quantity does not apply, e.g. ``theta_e_arcsec`` of a non-lens).
    """
    profile = get_profile(profile)
    meta = params["meta"]
    sky = np.asarray(params["sky_sigma"], dtype=float)
    psf = np.asarray(params["psf_fwhm_arcsec"], dtype=float)
    ref = profile.reference_index
    is_lens = bool(params["is_lens"])
    bands = profile.bands

    lensed_groups = [g for g in params["groups"] if g["lensed"]]
    size = image_noiseless.shape[-1]
    lensed_mag, magnification = _NAN, _NAN
    if is_lens:
        if arc_image is None:
            arc_image = render(params, profile, size, offset_px, part="lensed")
        arcs = np.asarray(arc_image, dtype=np.float64)
        centre = ((size - 1) / 2 + offset_px[0], (size - 1) / 2 + offset_px[1])
        arc = definitions.arc_truth(arcs, sky, bands, centre, meta["theta_e_arcsec"] / profile.pixel_scale_arcsec)
        lensed_mag = profile.magnitude(float(arcs[ref].sum()), ref)
        magnification = float(arcs[ref].sum() / profile.counts(meta["source_mag"], ref))
    else:
        arc = definitions.no_arc_truth(bands)

    object_groups = [g for g in params["groups"] if not g["lensed"] and not g["name"].startswith("field")]
    object_mags = _group_band_mags(object_groups, profile)
    lens_mags = _group_band_mags([g for g in params["groups"] if g["name"] == "lens_light"], profile)
    source_mags = _group_band_mags(lensed_groups, profile)

    detector = params.get("artefacts") or {}
    record: dict[str, Any] = {
        "engine": str(params.get("engine", "lenstronomy")),
        "kind": str(params["kind"]),
        "is_lens": is_lens,
        "theta_e_arcsec": float(meta.get("theta_e_arcsec", _NAN)),
        "lens_mag": float(meta.get("lens_mag", _NAN)),
        "source_mag": float(meta.get("source_mag", _NAN)),
        "main_mag": float(meta["main_mag"]),
        "stamp_mag": profile.magnitude(float(image_noiseless[ref].sum()), ref),
        "arc_snr": arc["arc_snr"],
        "arc_band": arc["arc_band"],
        "npix_arc_1sigma": arc["npix_arc_1sigma"],
        "arc_azimuth_fraction": arc["arc_azimuth_fraction"],
        "lensed_source_mag": lensed_mag,
        "magnification": magnification,
        "z_lens": float(meta.get("z_lens", _NAN)),
        "z_source": float(meta.get("z_source", _NAN)),
        "source_red": bool(meta.get("source_red", False)),
        "source_offset_arcsec": float(meta.get("source_offset_arcsec", _NAN)),
        "source_r_eff_arcsec": float(meta.get("source_r_eff_arcsec", _NAN)),
        "n_source_clumps": int(meta.get("n_source_clumps", 0)),
        "lens_q": float(meta.get("lens_q", _NAN)),
        "lens_slope": float(meta.get("lens_slope", _NAN)),
        "shear_gamma": float(meta.get("shear_gamma", _NAN)),
        "main_r_eff_arcsec": float(meta.get("main_r_eff_arcsec", _NAN)),
        "psf_fwhm_arcsec": float(psf[ref]),
        "sky_sigma": float(sky[ref]),
        "n_stars": len(params.get("stars") or []),
        "n_cosmic_rays": len(detector.get("cosmic_rays", [])),
        "n_bad_columns": len(detector.get("bad_columns", [])),
    }
    for b, band in enumerate(bands):
        record[f"arc_snr_{band}"] = arc[f"arc_snr_{band}"]
        record[f"object_mag_{band}"] = float(object_mags[b])
        record[f"lens_mag_{band}"] = float(lens_mags[b])
        record[f"source_mag_{band}"] = float(source_mags[b])
        record[f"psf_fwhm_{band}"] = float(psf[b])
        record[f"sky_sigma_{band}"] = float(sky[b])
    return record


def draw_kinds(
    rng: np.random.Generator, n: int, lens_fraction: float, kind_weights: Mapping[str, float] | None = None
) -> list[str]:
    """Kinds of ``n`` objects: exactly ``round(n * lens_fraction)`` lenses, in random order.

    Args:
        kind_weights: relative frequencies of the non-lens kinds (default
            :data:`DEFAULT_NON_LENS_WEIGHTS`); the lens share is set by ``lens_fraction``.
    """
    if not 0.0 <= lens_fraction <= 1.0:
        raise ValueError(f"lens_fraction must be in [0, 1], not {lens_fraction}")
    weights = dict(DEFAULT_NON_LENS_WEIGHTS if kind_weights is None else kind_weights)
    unknown = set(weights) - set(NON_LENS_KINDS)
    if unknown:
        raise ValueError(
            f"kind_weights keys must be non-lens kinds {NON_LENS_KINDS} "
            f"(set the share of lenses with lens_fraction); got {sorted(unknown)}"
        )
    names = list(weights)
    p = np.asarray([weights[k] for k in names], dtype=float)
    n_lens = round(n * lens_fraction)
    if n_lens < n and (p.sum() <= 0 or (p < 0).any()):
        raise ValueError("kind_weights must be non-negative with a positive sum")
    others = list(rng.choice(names, size=n - n_lens, p=p / p.sum())) if n_lens < n else []
    kinds = ["lens"] * n_lens + [str(k) for k in others]
    return [kinds[i] for i in rng.permutation(n)]


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run the simulation on one thread: parallelism comes from processes (one per core).

    caustics (torch) and GalSim (OpenMP) would otherwise each start a thread per core in
    every worker process; with a process per core that oversubscription made simulating
    nine times slower on a 2-core machine. The previous settings are restored afterwards.
    """
    import galsim
    import torch

    torch_threads, omp_threads = torch.get_num_threads(), galsim.get_omp_threads()
    torch.set_num_threads(1)
    galsim.set_omp_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        galsim.set_omp_threads(omp_threads)


def simulate_stamps(
    n: int,
    profile: SurveyProfile | str,
    seed: int | np.random.SeedSequence,
    lens_fraction: float = 0.5,
    kind_weights: dict[str, float] | None = None,
    size_px: int | None = None,
    index_offset: int = 0,
    engine: str = "lenstronomy",
    population: int = POPULATION,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Simulate ``n`` noisy stamps with their truth table.

    Each stamp has its own observing conditions, neighbours and artefacts, and its object
    is offset from the stamp centre by up to :data:`CENTRING_JITTER_PX` per axis.

    Args:
        n: number of stamps.
        profile: survey profile or its name.
        seed: seed (or SeedSequence); the output depends on nothing else.
        lens_fraction: exact fraction of lenses (rounded to a whole number).
        kind_weights: relative frequencies of the non-lens kinds.
        size_px: stamp side (default: the profile's ``stamp_size_px``).
        index_offset: first value of the ``stamp_index`` column (for chunked datasets).
        engine: ``"lenstronomy"`` or ``"galsim"`` (the independent second simulator).
        population: version of the object population
            (:data:`lensnet.simulate.definitions.POPULATIONS`; default
            :data:`lensnet.simulate.definitions.POPULATION`).

    Returns:
        float32 stamps (n, n_bands, size, size) in counts, and a truth DataFrame with one
        row per stamp (column ``stamp_index`` gives the stamp's position plus ``index_offset``).
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown simulation engine {engine!r}; known engines: {', '.join(ENGINES)}")
    population = check_population(population)
    profile = get_profile(profile)
    size = int(size_px or profile.stamp_size_px)
    rng = np.random.default_rng(seed)
    kinds = draw_kinds(rng, n, lens_fraction, kind_weights)
    if engine == "galsim":
        from lensnet.simulate.galsim_engine import simulate_stamps as simulate_galsim

        with single_threaded():
            return simulate_galsim(n, profile, int(rng.integers(2**63 - 1)), kinds, size, index_offset, population)
    stamps = np.empty((n, profile.n_bands, size, size), dtype=np.float32)
    records = []
    for i, kind in enumerate(kinds):
        params = draw_parameters(rng, kind, profile, population=population)
        jitter_x, jitter_y = rng.uniform(-CENTRING_JITTER_PX, CENTRING_JITTER_PX, size=2)
        offset = (float(jitter_x), float(jitter_y))
        # rendered in two parts so that the truth record reuses the arcs-only image
        arcs = render(params, profile, size, offset_px=offset, part="lensed")
        image = arcs + render(params, profile, size, offset_px=offset, part="unlensed")
        stamps[i] = artefacts.observe(params, image, profile, rng)
        record = {
            "stamp_index": index_offset + i,
            **truth_record(params, profile, image, offset_px=offset, arc_image=arcs),
        }
        record["offset_x_px"], record["offset_y_px"] = offset
        record["redraws"] = 0
        records.append(record)
    truth = pd.DataFrame.from_records(records)
    if n == 0:
        truth = pd.DataFrame({"stamp_index": pd.Series(dtype="int64")})
    return stamps, truth
