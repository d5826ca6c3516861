"""A minimal galaxy colour model: power-law continuum, 4000 A break and UV fall-off.

Band magnitudes of a galaxy are derived from one reference-band magnitude and a
four-parameter spectral energy distribution (SED) in AB magnitudes,

    m(lambda) = m_ref + S(lambda) - S(lambda_ref),
    S(lambda) = -2.5 * slope * log10(lambda / lambda_ref)
                + break_mag * logistic((lambda_break - lambda) / (0.08 * lambda_break))
                + 2.5 * uv_slope * max(0, log10(lambda_break / lambda)),

with ``lambda_break = 400 nm * (1 + z)``. Positive ``slope`` means redder (f_nu rising with
wavelength), ``break_mag`` is the depth of the 4000 A break and ``uv_slope`` the further
fall of the flux blueward of it (steep for old stellar populations). This is not a stellar
population model: it only has to give realistic and *varied* colours for any set of bands
(g, r, i or VIS, Y, J, H) from the same few numbers, e.g. g-r ~ 1.5-1.9 and r-i ~ 0.5-0.9
for early-type galaxies at z ~ 0.2-0.8 and g-r ~ 0.0-0.3 for star-forming galaxies at z ~ 2.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from lensnet.simulate.profiles import SurveyProfile

SedType = Literal["red", "blue", "green"]

_BREAK_REST_NM = 400.0
_BREAK_WIDTH_FRAC = 0.08


def sed_magnitudes(
    mag_ref: float, profile: SurveyProfile, slope: float, break_mag: float, redshift: float, uv_slope: float = 0.0
) -> list[float]:
    """Magnitudes in every band of ``profile`` for an SED normalised to ``mag_ref``.

    Args:
        mag_ref: magnitude in the profile's reference band.
        profile: survey profile (its ``band_wavelength_nm`` and ``reference_index``).
        slope: continuum slope (positive = red).
        break_mag: depth of the 4000 A break in magnitudes.
        redshift: redshift that places the break at ``400 nm * (1 + z)``.
        uv_slope: extra reddening slope blueward of the break.
    """
    wavelength_nm = np.asarray(profile.band_wavelength_nm, dtype=float)
    ref_nm = wavelength_nm[profile.reference_index]
    break_nm = _BREAK_REST_NM * (1.0 + redshift)
    shape = -2.5 * slope * np.log10(wavelength_nm / ref_nm)
    shape += break_mag / (1.0 + np.exp(-(break_nm - wavelength_nm) / (_BREAK_WIDTH_FRAC * break_nm)))
    shape += 2.5 * uv_slope * np.maximum(0.0, np.log10(break_nm / wavelength_nm))
    return [float(m) for m in mag_ref + shape - shape[profile.reference_index]]


def draw_sed(rng: np.random.Generator, sed_type: SedType, redshift: float) -> dict[str, float | str]:
    """Draw SED parameters for a galaxy of broad type ``sed_type`` at ``redshift``.

    ``red``: passive (early-type) galaxy; ``blue``: star-forming; ``green``: in between
    (spiral discs, bulge-plus-disc mixtures).
    """
    if sed_type == "red":
        slope, break_mag, uv_slope = rng.uniform(1.6, 2.6), rng.uniform(0.8, 1.3), rng.uniform(2.5, 4.0)
    elif sed_type == "blue":
        slope, break_mag, uv_slope = rng.uniform(-0.4, 0.7), rng.uniform(0.0, 0.35), rng.uniform(0.0, 0.3)
    elif sed_type == "green":
        slope, break_mag, uv_slope = rng.uniform(0.6, 1.6), rng.uniform(0.3, 0.9), rng.uniform(0.8, 2.0)
    else:
        raise ValueError(f"unknown SED type {sed_type!r}")
    return {
        "type": str(sed_type),
        "slope": float(slope),
        "break_mag": float(break_mag),
        "uv_slope": float(uv_slope),
        "redshift": float(redshift),
    }


def group_magnitudes(mag_ref: float, profile: SurveyProfile, sed: dict[str, float | str]) -> list[float]:
    """Band magnitudes for a light group described by a :func:`draw_sed` dictionary."""
    return sed_magnitudes(
        mag_ref,
        profile,
        float(sed["slope"]),
        float(sed["break_mag"]),
        float(sed["redshift"]),
        float(sed.get("uv_slope", 0.0)),
    )
