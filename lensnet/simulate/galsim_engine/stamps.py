"""Images, noisy stamps and truth of the GalSim engine.

:func:`render` draws an object's noiseless PSF-convolved light: unlensed light with GalSim
(``Convolve(galaxy, psf).drawImage``, which integrates over pixels), lensed light by
ray-tracing sub-pixels through caustics (:mod:`lensnet.simulate.galsim_engine.lensing`),
convolving with the GalSim PSF drawn at the sub-pixel scale, and summing the sub-pixels.
:func:`calibrate_source` sets a lensed source's brightness from its target arc S/N.
:func:`observe` adds background residuals, noise, saturation and artefacts.
:func:`simulate_stamps` does it all and returns stamps with a truth table whose columns are
the lenstronomy engine's (definitions in :mod:`lensnet.simulate.definitions`).

Pixel convention (shared with the other engine): x along columns, y along rows, and the
object's origin at pixel ``((size-1)/2 + offset_y, (size-1)/2 + offset_x)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import galsim
import numpy as np
import pandas as pd
from scipy.signal import fftconvolve

from lensnet.simulate import definitions
from lensnet.simulate.galsim_engine import lensing, observe as obs, shapes
from lensnet.simulate.definitions import POPULATION
from lensnet.simulate.galsim_engine.population import ENGINE, SOURCE_MAG_RANGE, draw_parameters
from lensnet.simulate.profiles import SurveyProfile, get_profile

Part = Literal["all", "lensed", "unlensed"]
#: Sub-pixels per pixel and axis: lensed light is ray-traced at sub-pixel centres on a
#: grid of LENSED_SUPERSAMPLING^2 per pixel; light is convolved with the PSF on a grid of
#: CONVOLUTION_SUPERSAMPLING^2 per pixel (lensed sub-pixels summed into it, unlensed light
#: integrated over it by GalSim) and then summed into pixels.
LENSED_SUPERSAMPLING = 4
CONVOLUTION_SUPERSAMPLING = 2
CENTRING_JITTER_PX = 1.0
#: Draws of an object that GalSim could not render before giving up.
MAX_REDRAWS = 3


def _band_counts(group: Mapping[str, Any], profile: SurveyProfile) -> np.ndarray:
    return np.array([profile.counts(m, b) for b, m in enumerate(group["mags"])])


def _unlensed(groups: Sequence[Mapping[str, Any]], params: Mapping[str, Any], profile: SurveyProfile, size_px: int,
              offset_px: tuple[float, float]) -> np.ndarray:
    """Unlensed light: each group drawn once by GalSim on a sub-pixel grid (see
    :func:`shapes.draw_subpixels`), combined per band, convolved with that band's PSF and
    binned into pixels.

    Binning k x k sub-pixel integrals integrates over the pixel, so this equals GalSim's
    ``Convolve(galaxy, psf).drawImage`` up to the PSF's sampling, at a fraction of the cost
    for PSFs with broad wings (a Moffat's Fourier transform is expensive to tabulate).
    """
    out = np.zeros((profile.n_bands, size_px, size_px))
    if not groups:
        return out
    k = CONVOLUTION_SUPERSAMPLING
    scale = profile.pixel_scale_arcsec
    margin = _psf_margin_px(params, profile)
    padded = size_px + 2 * margin
    combined = np.zeros((profile.n_bands, padded * k, padded * k))
    for group in groups:
        drawn = shapes.draw_subpixels(group["shapes"], padded * k, scale / k, (offset_px[0] * k, offset_px[1] * k))
        combined += _band_counts(group, profile)[:, None, None] * drawn[None]
    return _convolve_and_bin(combined, params, profile, k, margin, size_px)


def _convolve_and_bin(combined: np.ndarray, params: Mapping[str, Any], profile: SurveyProfile, k: int, margin: int,
                      size_px: int) -> np.ndarray:
    """Per band: convolve a padded sub-pixel image with the PSF, sum k x k sub-pixels, crop."""
    scale = profile.pixel_scale_arcsec
    padded = size_px + 2 * margin
    kernel_px = 2 * int(margin * k) + 1
    out = np.zeros((profile.n_bands, size_px, size_px))
    for band in range(profile.n_bands):
        kernel = obs.psf_kernel(params["psf"][band], scale / k, kernel_px)
        blurred = fftconvolve(combined[band], kernel, mode="same")
        binned = blurred.reshape(padded, k, padded, k).sum(axis=(1, 3))
        out[band] = binned[margin : margin + size_px, margin : margin + size_px]
    return out


def _psf_margin_px(params: Mapping[str, Any], profile: SurveyProfile) -> int:
    return int(math.ceil(2.5 * max(params["psf_fwhm_arcsec"]) / profile.pixel_scale_arcsec)) + 2


def _lensed(groups: Sequence[Mapping[str, Any]], params: Mapping[str, Any], profile: SurveyProfile, size_px: int,
            offset_px: tuple[float, float]) -> np.ndarray:
    if not groups:
        return np.zeros((profile.n_bands, size_px, size_px))
    if params.get("lens") is None:
        raise ValueError("an object with lensed light needs a lens")
    k = LENSED_SUPERSAMPLING
    scale = profile.pixel_scale_arcsec
    margin = _psf_margin_px(params, profile)
    padded = size_px + 2 * margin
    origin = (offset_px[0] * scale, offset_px[1] * scale)
    combined = np.zeros((profile.n_bands, padded * k, padded * k))
    fold = k // CONVOLUTION_SUPERSAMPLING
    for group in groups:
        centre_x = float(np.mean([s["x"] for s in group["shapes"]]))
        centre_y = float(np.mean([s["y"] for s in group["shapes"]]))
        extent = max(math.hypot(s["x"] - centre_x, s["y"] - centre_y) + shapes.extent_arcsec(s) for s in group["shapes"])
        smallest = min(float(s.get("knot_sigma", s.get("r_half", s.get("sigma", 0.1)))) for s in group["shapes"])
        sub = lensing.lensed_subpixels(shapes.group_object(group["shapes"]), (centre_x, centre_y), extent, smallest,
                                       params["lens"], padded, scale, k, origin)
        combined += _band_counts(group, profile)[:, None, None] * sub[None]
    n_conv = padded * CONVOLUTION_SUPERSAMPLING
    combined = combined.reshape(profile.n_bands, n_conv, fold, n_conv, fold).sum(axis=(2, 4))
    return _convolve_and_bin(combined, params, profile, CONVOLUTION_SUPERSAMPLING, margin, size_px)


def render(params: Mapping[str, Any], profile: SurveyProfile | str, size_px: int,
           offset_px: tuple[float, float] = (0.0, 0.0), part: Part = "all") -> np.ndarray:
    """Noiseless PSF-convolved image (bands, size, size) of an object, float32 counts.

    ``part``: ``"all"``, ``"lensed"`` (the lensed source only) or ``"unlensed"`` (the rest).
    """
    if part not in ("all", "lensed", "unlensed"):
        raise ValueError(f"part must be 'all', 'lensed' or 'unlensed', not {part!r}")
    profile = get_profile(profile)
    image = np.zeros((profile.n_bands, size_px, size_px))
    groups = params["groups"]
    if part in ("all", "lensed"):
        image += _lensed([g for g in groups if g["lensed"]], params, profile, size_px, offset_px)
    if part in ("all", "unlensed"):
        image += _unlensed([g for g in groups if not g["lensed"]], params, profile, size_px, offset_px)
    return image.astype(np.float32)


def calibrate_source(params: dict[str, Any], profile: SurveyProfile | str, size_px: int,
                     offset_px: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Set a lens's source magnitude so that its arc S/N is ``meta["target_arc_snr"]``.

    The lensed groups' magnitudes are those of a source of total magnitude 0 until this
    is called (see the population); the S/N of eq. 10 grows monotonically with the source
    flux, so the magnitude is found by bisection, then kept inside the population's source
    magnitude range. Returns the calibrated noiseless lensed image (bands, size, size).
    """
    profile = get_profile(profile)
    unit = render(params, profile, size_px, offset_px, part="lensed").astype(np.float64)  # source of mag 0
    sky = np.asarray(params["sky_sigma"], dtype=np.float64)
    target = float(params["meta"]["target_arc_snr"])

    def snr(mag: float) -> float:
        return float(definitions.arc_snr(unit * 10 ** (-0.4 * mag), sky).max())

    low, high = SOURCE_MAG_RANGE  # bright, faint
    if snr(low) <= target:
        mag = low
    elif snr(high) >= target:
        mag = high
    else:
        for _ in range(40):
            middle = 0.5 * (low + high)
            low, high = (middle, high) if snr(middle) > target else (low, middle)
        mag = 0.5 * (low + high)
    for group in params["groups"]:
        if group["lensed"]:
            group["mags"] = [m + mag for m in group["mags"]]
    params["meta"]["source_mag"] = mag
    return (unit * 10 ** (-0.4 * mag)).astype(np.float32)


def observe(params: Mapping[str, Any], image: np.ndarray, profile: SurveyProfile | str, seed: int) -> np.ndarray:
    """A noisy, saturated stamp with artefacts from a noiseless one (bands, size, size)."""
    profile = get_profile(profile)
    size = image.shape[-1]
    out = np.empty(image.shape, dtype=np.float32)
    seeds = np.random.SeedSequence(seed).generate_state(profile.n_bands)
    for band in range(profile.n_bands):
        sky = float(params["sky_sigma"][band])
        noiseless = image[band].astype(np.float64) + obs.background(size, sky, params.get("background"))
        noisy = obs.add_noise(noiseless, sky, params["noise"], profile.pixel_scale_arcsec, int(seeds[band]))
        out[band] = obs.saturate(noisy, profile.saturation_counts)
    artefacts = params.get("artefacts") or {}
    for ray in artefacts.get("cosmic_rays", []):
        obs.cosmic_ray(out[int(ray["band"])], ray)
    for column in artefacts.get("bad_columns", []):
        obs.bad_column(out[int(column["band"])], column)
    return out


def _mags(groups: Sequence[Mapping[str, Any]], profile: SurveyProfile) -> np.ndarray:
    if not groups:
        return np.full(profile.n_bands, np.nan)
    counts = sum(_band_counts(g, profile) for g in groups)
    return np.asarray(profile.zeropoint_mag) - 2.5 * np.log10(counts)


def truth_record(params: Mapping[str, Any], profile: SurveyProfile | str, image_noiseless: np.ndarray,
                 offset_px: tuple[float, float] = (0.0, 0.0), arc_image: np.ndarray | None = None) -> dict[str, Any]:
    """The truth row of one object, with the lenstronomy engine's columns and meanings."""
    profile = get_profile(profile)
    meta, bands, ref = params["meta"], profile.bands, profile.reference_index
    size = image_noiseless.shape[-1]
    nan = float("nan")
    is_lens = bool(params["is_lens"])
    lensed_groups = [g for g in params["groups"] if g["lensed"]]
    if is_lens:
        arcs = arc_image if arc_image is not None else render(params, profile, size, offset_px, part="lensed")
        centre = ((size - 1) / 2 + offset_px[0], (size - 1) / 2 + offset_px[1])
        arc = definitions.arc_truth(arcs, np.asarray(params["sky_sigma"]), bands, centre,
                                    float(meta["theta_e_arcsec"]) / profile.pixel_scale_arcsec)
        lensed_flux = float(np.asarray(arcs[ref], np.float64).sum())
        lensed_mag = profile.magnitude(lensed_flux, ref)
        magnification = lensed_flux / profile.counts(float(meta["source_mag"]), ref)
    else:
        arc = definitions.no_arc_truth(bands)
        lensed_mag = magnification = nan
    object_groups = [g for g in params["groups"] if not g["lensed"] and not g["name"].startswith("field")]
    object_mags = _mags(object_groups, profile)
    lens_mags = _mags([g for g in params["groups"] if g["name"] == "lens_light"], profile)
    source_mags = _mags(lensed_groups, profile)
    psf = params["psf_fwhm_arcsec"]
    sky = params["sky_sigma"]
    artefacts = params.get("artefacts") or {}
    record: dict[str, Any] = {
        "engine": ENGINE, "kind": str(params["kind"]), "is_lens": is_lens,
        "theta_e_arcsec": float(meta.get("theta_e_arcsec", nan)), "lens_mag": float(meta.get("lens_mag", nan)),
        "source_mag": float(meta.get("source_mag", nan)), "main_mag": float(meta["main_mag"]),
        "stamp_mag": profile.magnitude(float(np.asarray(image_noiseless[ref], np.float64).sum()), ref),
        "arc_snr": arc["arc_snr"], "arc_band": arc["arc_band"], "npix_arc_1sigma": arc["npix_arc_1sigma"],
        "arc_azimuth_fraction": arc["arc_azimuth_fraction"], "lensed_source_mag": lensed_mag,
        "magnification": magnification, "z_lens": float(meta.get("z_lens", nan)),
        "z_source": float(meta.get("z_source", nan)), "source_red": bool(meta.get("source_red", False)),
        "source_offset_arcsec": float(meta.get("source_offset_arcsec", nan)),
        "source_r_eff_arcsec": float(meta.get("source_r_eff_arcsec", nan)),
        "n_source_clumps": int(meta.get("n_source_clumps", 0)), "lens_q": float(meta.get("lens_q", nan)),
        "lens_slope": float(meta.get("lens_slope", nan)), "shear_gamma": float(meta.get("shear_gamma", nan)),
        "main_r_eff_arcsec": float(meta.get("main_r_eff_arcsec", nan)),
        "psf_fwhm_arcsec": float(psf[ref]), "sky_sigma": float(sky[ref]),
        "n_stars": sum(1 for g in params["groups"] if g["name"] == "field_star"),
        "n_cosmic_rays": len(artefacts.get("cosmic_rays", [])), "n_bad_columns": len(artefacts.get("bad_columns", [])),
    }
    for b, band in enumerate(bands):
        record[f"arc_snr_{band}"] = arc[f"arc_snr_{band}"]
        record[f"object_mag_{band}"] = float(object_mags[b])
        record[f"lens_mag_{band}"] = float(lens_mags[b])
        record[f"source_mag_{band}"] = float(source_mags[b])
        record[f"psf_fwhm_{band}"] = float(psf[b])
        record[f"sky_sigma_{band}"] = float(sky[b])
    return record


def simulate_stamps(n: int, profile: SurveyProfile | str, seed: int | np.random.SeedSequence,
                    kinds: Sequence[str], size_px: int | None = None, index_offset: int = 0,
                    population: int = POPULATION) -> tuple[np.ndarray, pd.DataFrame]:
    """``n`` noisy stamps of the given kinds, with their truth table (one row per stamp)."""
    profile = get_profile(profile)
    if len(kinds) != n:
        raise ValueError(f"{len(kinds)} kinds for {n} stamps")
    size = int(size_px or profile.stamp_size_px)
    rng = np.random.default_rng(seed)
    stamps = np.empty((n, profile.n_bands, size, size), dtype=np.float32)
    records = []
    for index, kind in enumerate(kinds):
        for attempt in range(MAX_REDRAWS + 1):
            params = draw_parameters(rng, kind, profile, population=population)
            offset = tuple(float(v) for v in rng.uniform(-CENTRING_JITTER_PX, CENTRING_JITTER_PX, size=2))
            try:
                arcs = calibrate_source(params, profile, size, offset) if params["is_lens"] else None
                unlensed = render(params, profile, size, offset, part="unlensed")
                break
            except (galsim.GalSimError, ValueError, RuntimeError):
                # a rare corner of parameter space GalSim cannot draw: draw the object anew,
                # and say so in the truth (column redraws) rather than stop a long simulation
                if attempt == MAX_REDRAWS:
                    raise
        image = unlensed if arcs is None else arcs + unlensed
        stamps[index] = observe(params, image, profile, int(rng.integers(2**63 - 1)))
        record = {"stamp_index": index_offset + index, **truth_record(params, profile, image, offset, arcs)}
        record["offset_x_px"], record["offset_y_px"] = offset
        record["redraws"] = attempt
        records.append(record)
    truth = pd.DataFrame.from_records(records)
    if n == 0:
        truth = pd.DataFrame({"stamp_index": pd.Series(dtype="int64")})
    return stamps, truth
