"""Paint simulated lensed sources onto the survey's own galaxies.

For each host stamp a lens is built around the host's light: the mass is centred on its
light centroid with the axis ratio and position angle of its light (mass follows light,
with scatter), and an Einstein radius drawn log-uniformly or tied to the host's
brightness. The source (light profile, knots, colour, position relative to the caustics)
comes from the GalSim engine's lens population
(:mod:`lensnet.simulate.galsim_engine.population`); its brightness is set so that the
arc reaches a target S/N measured against *this stamp's own noise* (Lanusse et al. 2018,
eq. 10). Only the lensed light is rendered (ray-traced with caustics, convolved with the
survey's PSF per band) and added to the host stamp, whose noise, neighbours and
artefacts are real already; with a known gain the arc's own photon noise is added too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from lensnet.simulate import definitions
from lensnet.simulate.galsim_engine import calibrate_source
from lensnet.simulate.galsim_engine import population as galsim_population
from lensnet.simulate.profiles import SurveyProfile
from lensnet.simulate.stamps import single_threaded

#: Effective wavelengths (nm) of common bands, for the source colour model.
BAND_WAVELENGTHS_NM: dict[str, float] = {
    "u": 365.0, "g": 475.0, "r": 620.0, "i": 760.0, "z": 900.0, "y": 1000.0,
    "VIS": 715.0, "Y": 1080.0, "J": 1370.0, "H": 1770.0,
}


@dataclasses.dataclass(frozen=True)
class InjectionRecipe:
    """How arcs are drawn; recorded with the adapted model.

    Attributes:
        theta_e: ``"uniform"`` (log-uniform in ``theta_e_range_arcsec``), ``"host"``
            (tied to the host's magnitude, see :func:`lensnet.adapt.hosts.theta_e_for_host`) or
            ``"matched"`` (the uniform draws, larger ones to brighter hosts, see
            :func:`lensnet.adapt.hosts.theta_e_matched`).
        theta_e_range_arcsec: Einstein radii to span.
        arc_snr_range: target arc S/N, log-uniform in this range.
        psf_fwhm_arcsec: PSF FWHM per band (a Moffat profile of ``psf_moffat_beta``).
        psf_moffat_beta: the PSF's Moffat index.
        zeropoints: AB magnitude of one count per band.
        gain: electrons per count for the arc's photon noise (0: none added).
        mass_scatter: scatter (radians, and in axis ratio) of the mass's orientation and
            flattening about the light's.
    """

    psf_fwhm_arcsec: tuple[float, ...]
    zeropoints: tuple[float, ...]
    theta_e: str = "uniform"
    theta_e_range_arcsec: tuple[float, float] = (0.5, 4.0)
    arc_snr_range: tuple[float, float] = (2.0, 1000.0)
    psf_moffat_beta: float = 3.0
    gain: float = 0.0
    mass_scatter: float = 0.15


def survey_profile(bands: Sequence[str], pixel_scale_arcsec: float, stamp_size_px: int,
                   recipe: InjectionRecipe, sky_sigma: Sequence[float],
                   wavelengths_nm: Sequence[float] | None = None) -> SurveyProfile:
    """A :class:`SurveyProfile` describing the user's survey (for the simulators' photometry)."""
    if wavelengths_nm is None:
        unknown = [band for band in bands if band not in BAND_WAVELENGTHS_NM]
        if unknown:
            raise ValueError(f"no effective wavelength known for band(s) {', '.join(unknown)}; give them with "
                             f"--band-wavelengths (known: {', '.join(BAND_WAVELENGTHS_NM)})")
        wavelengths_nm = [BAND_WAVELENGTHS_NM[band] for band in bands]
    reference = "r" if "r" in bands else bands[len(bands) // 2]
    return SurveyProfile(
        name="survey", bands=tuple(bands), pixel_scale_arcsec=float(pixel_scale_arcsec),
        psf_fwhm_arcsec=tuple(float(f) for f in recipe.psf_fwhm_arcsec),
        zeropoint_mag=tuple(float(z) for z in recipe.zeropoints), sky_sigma=tuple(float(s) for s in sky_sigma),
        stamp_size_px=int(stamp_size_px), band_wavelength_nm=tuple(float(w) for w in wavelengths_nm),
        reference_band=reference)


def lens_parameters(rng: np.random.Generator, profile: SurveyProfile, recipe: InjectionRecipe, host: pd.Series,
                    theta_e: float, target_snr: float) -> dict[str, Any]:
    """GalSim-engine parameters of an arc around ``host`` (a row of :func:`hosts.measure`)."""
    conditions = {
        "psf": [{"type": "moffat", "beta": recipe.psf_moffat_beta, "fwhm": float(f), "g1": 0.0, "g2": 0.0}
                for f in recipe.psf_fwhm_arcsec],
        "psf_fwhm_arcsec": [float(f) for f in recipe.psf_fwhm_arcsec],
        "sky_sigma": [float(host[f"sky_sigma_{band}"]) for band in range(profile.n_bands)],
        "noise": {"correlation_px": 0.0, "gain": 0.0}, "background": {},
    }
    params = galsim_population.draw_parameters(rng, "lens", profile, field_galaxies=False, conditions=conditions,
                                               artefacts=False)
    drawn_theta = float(params["lens"]["theta_e"])
    scale = theta_e / drawn_theta
    q_light, pa_light = float(host["axis_ratio"]), float(host["position_angle"])
    params["lens"].update(
        theta_e=float(theta_e),
        q=float(np.clip(q_light + rng.normal(0.0, recipe.mass_scatter), 0.3, 0.9999)),
        # image rows run along +y, so the angle measured on the array is the sky angle
        phi=float(pa_light + rng.normal(0.0, recipe.mass_scatter)))
    params["groups"] = [group for group in params["groups"] if group["lensed"]]
    for group in params["groups"]:
        for shape in group["shapes"]:  # keep the source where it was relative to the caustics
            shape["x"], shape["y"] = shape["x"] * scale, shape["y"] * scale
    params["meta"].update(theta_e_arcsec=float(theta_e), target_arc_snr=float(target_snr),
                          source_offset_arcsec=float(params["meta"]["source_offset_arcsec"]) * scale,
                          lens_q=params["lens"]["q"], lens_mag=float(host["host_mag"]),
                          main_mag=float(host["host_mag"]))
    return params


def inject(rng: np.random.Generator, stamps: np.ndarray, measured: pd.DataFrame, profile: SurveyProfile,
           recipe: InjectionRecipe, theta_e: np.ndarray, target_snr: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Arcs added to each stamp; returns ``(injected, arcs, truth)``.

    ``arcs`` are the noiseless lensed images that were added (before photon noise), so that
    ``injected - stamps`` equals them exactly when ``recipe.gain`` is 0.
    """
    n, bands, size, _ = stamps.shape
    arcs = np.zeros(stamps.shape, dtype=np.float32)
    records = []
    with single_threaded():
        for index in range(n):
            host = measured.iloc[index]
            params = lens_parameters(rng, profile, recipe, host, float(theta_e[index]), float(target_snr[index]))
            offset = (float(host["centroid_x_px"]) - (size - 1) / 2, float(host["centroid_y_px"]) - (size - 1) / 2)
            arcs[index] = calibrate_source(params, profile, size, offset)
            sky = np.asarray(params["sky_sigma"], dtype=np.float64)
            centre = ((size - 1) / 2 + offset[0], (size - 1) / 2 + offset[1])
            arc = definitions.arc_truth(arcs[index], sky, profile.bands, centre,
                                        float(theta_e[index]) / profile.pixel_scale_arcsec)
            ref = profile.reference_index
            lensed_flux = float(arcs[index][ref].astype(np.float64).sum())
            source_mag = float(params["meta"]["source_mag"])
            records.append({
                "theta_e_arcsec": float(theta_e[index]), "source_mag": source_mag,
                "lensed_source_mag": profile.magnitude(lensed_flux, ref),
                "magnification": lensed_flux / profile.counts(source_mag, ref),
                "target_arc_snr": float(target_snr[index]),
                "source_offset_arcsec": float(params["meta"]["source_offset_arcsec"]),
                "source_population": str(params["meta"]["source_population"]),
                "lens_q": float(params["lens"]["q"]), "lens_phi": float(params["lens"]["phi"]), **arc,
            })
    injected = stamps.astype(np.float32) + arcs
    if recipe.gain > 0:
        noise_rng = np.random.default_rng(rng.integers(2**63 - 1))
        injected += (noise_rng.standard_normal(arcs.shape) * np.sqrt(np.clip(arcs, 0, None) / recipe.gain)
                     ).astype(np.float32)
    return injected, arcs, pd.DataFrame.from_records(records)


THETA_E_RECIPES = ("uniform", "host", "matched")


def draw_theta_e(rng: np.random.Generator, recipe: InjectionRecipe, hosts: pd.DataFrame) -> np.ndarray:
    """Einstein radii of the injections, as the recipe says (``hosts``: their rows of :func:`hosts.measure`)."""
    from lensnet.adapt.hosts import log_uniform, theta_e_for_host, theta_e_matched

    low, high = recipe.theta_e_range_arcsec
    if recipe.theta_e == "host":
        return theta_e_for_host(rng, hosts["host_mag"].to_numpy(), low, high)
    if recipe.theta_e == "matched":
        return theta_e_matched(rng, hosts["host_mag_total"].to_numpy(), low, high)
    if recipe.theta_e != "uniform":
        raise ValueError(f"theta_e must be one of {', '.join(THETA_E_RECIPES)}, not {recipe.theta_e!r}")
    return log_uniform(rng, len(hosts), low, high)


def draw_target_snr(rng: np.random.Generator, recipe: InjectionRecipe, n: int) -> np.ndarray:
    """Target arc S/N of the injections: log-uniform over the recipe's range."""
    from lensnet.adapt.hosts import log_uniform

    low, high = recipe.arc_snr_range
    if not 0 < low <= high:
        raise ValueError(f"arc_snr_range must be (low, high) with 0 < low <= high; got {recipe.arc_snr_range}")
    return log_uniform(rng, n, low, high)


__all__ = ["BAND_WAVELENGTHS_NM", "THETA_E_RECIPES", "InjectionRecipe", "draw_target_snr", "draw_theta_e", "inject",
           "lens_parameters", "survey_profile"]
