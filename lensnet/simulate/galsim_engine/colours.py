"""Galaxy colours of the GalSim engine: two stellar black bodies, a Balmer break and dust.

An independent colour model from the lenstronomy engine's (:mod:`lensnet.simulate.sed`):
the rest-frame spectrum is a mix of an old population (a ~5,000 K black body whose flux
blueward of 400 nm is suppressed by a break of ``break_mag`` magnitudes) and a young one
(a ~20,000 K black body), with a fraction ``young`` of the light at 550 nm in the young part
and dust attenuation ``A(lambda) = av * (lambda / 550 nm) ** -0.7``. Band magnitudes follow
from the spectrum redshifted to ``z``, normalised to the reference band's magnitude.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lensnet.simulate.profiles import SurveyProfile

_HC_OVER_K_NM_K = 1.4388e7  # h c / k in nm K
_OLD_K, _YOUNG_K = 5200.0, 20000.0
_BREAK_NM, _BREAK_WIDTH_NM = 400.0, 12.0

#: Broad classes and the ranges their parameters are drawn from.
_CLASSES: dict[str, dict[str, tuple[float, float]]] = {
    "passive": {"young": (0.0, 0.006), "av": (0.0, 0.3), "break_mag": (0.9, 1.4)},
    "intermediate": {"young": (0.04, 0.25), "av": (0.1, 0.8), "break_mag": (0.5, 1.0)},
    "starforming": {"young": (0.35, 1.0), "av": (0.0, 1.0), "break_mag": (0.1, 0.5)},
}


def _black_body_fnu(wavelength_nm: np.ndarray, temperature_k: float) -> np.ndarray:
    """Planck f_nu up to a constant: nu^3 / (exp(h nu / k T) - 1)."""
    x = _HC_OVER_K_NM_K / (wavelength_nm * temperature_k)
    return wavelength_nm ** -3.0 / np.expm1(np.minimum(x, 700.0))


def rest_fnu(wavelength_nm: np.ndarray, young: float, av: float, break_mag: float) -> np.ndarray:
    """Rest-frame f_nu (arbitrary units) of the two-population model."""
    wavelength_nm = np.asarray(wavelength_nm, dtype=np.float64)
    blueward = 1.0 / (1.0 + np.exp((wavelength_nm - _BREAK_NM) / _BREAK_WIDTH_NM))
    old = _black_body_fnu(wavelength_nm, _OLD_K) * 10.0 ** (-0.4 * break_mag * blueward)
    new = _black_body_fnu(wavelength_nm, _YOUNG_K)
    at_550 = np.array([550.0])
    old /= (_black_body_fnu(at_550, _OLD_K) * 10.0 ** (-0.4 * break_mag / (1 + math.exp(150.0 / 12.0))))[0]
    new /= _black_body_fnu(at_550, _YOUNG_K)[0]
    dust = 10.0 ** (-0.4 * av * (wavelength_nm / 550.0) ** -0.7)
    return ((1.0 - young) * old + young * new) * dust


def draw_colour(rng: np.random.Generator, population: str, redshift: float) -> dict[str, Any]:
    """Draw the spectrum of a galaxy of class ``passive``, ``intermediate`` or ``starforming``."""
    if population not in _CLASSES:
        raise ValueError(f"unknown population {population!r}; known: {', '.join(_CLASSES)}")
    ranges = _CLASSES[population]
    return {"population": population, "redshift": float(redshift),
            **{key: float(rng.uniform(*bounds)) for key, bounds in ranges.items()}}


def band_magnitudes(mag_ref: float, colour: dict[str, Any], profile: SurveyProfile) -> list[float]:
    """AB magnitude in every band of ``profile`` of a galaxy with ``mag_ref`` in the reference band."""
    observed = np.asarray(profile.band_wavelength_nm, dtype=np.float64)
    fnu = rest_fnu(observed / (1.0 + float(colour["redshift"])), float(colour["young"]), float(colour["av"]),
                   float(colour["break_mag"]))
    mags = -2.5 * np.log10(fnu)
    return [float(m) for m in mag_ref + mags - mags[profile.reference_index]]
