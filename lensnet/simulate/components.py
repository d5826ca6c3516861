"""Building blocks of simulated objects: lenstronomy light components and light groups.

A *component* is one lenstronomy light profile with its shape keyword arguments and its
share of the flux of its group::

    {"model": "SERSIC_ELLIPSE", "kwargs": {...no amp...}, "flux_frac": 0.7}

A *group* is a set of components that share a spectrum and are either lensed or not::

    {"name": "lens_light", "lensed": False, "sed": {...}, "mags": [m_g, m_r, m_i],
     "components": [...]}

Everything is plain Python floats, lists and dicts so that parameters are JSON-able.
Angles are in radians, lengths in arcsec, and the object's origin is (0, 0).

Extended features (spiral arms, star-forming rings, tidal tails) are chains of
elongated Gaussians laid along a curve: lenstronomy has no such light profiles, and a
few tens of Gaussians evaluate quickly while staying analytic (exact total flux).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from lenstronomy.Util.param_util import phi_q2_ellipticity

from lensnet.simulate.profiles import SurveyProfile
from lensnet.simulate.sed import group_magnitudes

Component = dict[str, Any]
Group = dict[str, Any]


def _ellipticity(q: float, phi_rad: float) -> tuple[float, float]:
    e1, e2 = phi_q2_ellipticity(phi_rad, q)
    return float(e1), float(e2)


def sersic(
    r_eff_arcsec: float,
    n_sersic: float,
    q: float,
    phi_rad: float,
    x: float = 0.0,
    y: float = 0.0,
    flux_frac: float = 1.0,
) -> Component:
    """Elliptical Sersic component (lenstronomy ``SERSIC_ELLIPSE``)."""
    e1, e2 = _ellipticity(q, phi_rad)
    return {
        "model": "SERSIC_ELLIPSE",
        "kwargs": {
            "R_sersic": float(r_eff_arcsec),
            "n_sersic": float(n_sersic),
            "e1": e1,
            "e2": e2,
            "center_x": float(x),
            "center_y": float(y),
        },
        "flux_frac": float(flux_frac),
    }


def gaussian(sigma_arcsec: float, x: float, y: float, flux_frac: float = 1.0) -> Component:
    """Round Gaussian component (lenstronomy ``GAUSSIAN``)."""
    return {
        "model": "GAUSSIAN",
        "kwargs": {"sigma": float(sigma_arcsec), "center_x": float(x), "center_y": float(y)},
        "flux_frac": float(flux_frac),
    }


def gaussian_ellipse(
    sigma_major_arcsec: float, sigma_minor_arcsec: float, phi_rad: float, x: float, y: float, flux_frac: float = 1.0
) -> Component:
    """Elongated Gaussian (lenstronomy ``GAUSSIAN_ELLIPSE``) with the given axis sigmas."""
    q = min(sigma_minor_arcsec / sigma_major_arcsec, 1.0)
    # lenstronomy's elliptical profiles use the product-average radius: sigma_major = sigma / sqrt(q)
    sigma = math.sqrt(sigma_major_arcsec * sigma_minor_arcsec)
    e1, e2 = _ellipticity(q, phi_rad)
    return {
        "model": "GAUSSIAN_ELLIPSE",
        "kwargs": {"sigma": float(sigma), "e1": e1, "e2": e2, "center_x": float(x), "center_y": float(y)},
        "flux_frac": float(flux_frac),
    }


def group(
    name: str,
    components: list[Component],
    mag_ref: float,
    sed: dict[str, Any],
    profile: SurveyProfile,
    lensed: bool = False,
) -> Group:
    """A light group: components sharing the spectrum ``sed`` with total ``mag_ref``."""
    total = sum(c["flux_frac"] for c in components)
    for c in components:  # normalise so that the group's magnitude is exactly mag_ref
        c["flux_frac"] = float(c["flux_frac"] / total)
    return {
        "name": name,
        "lensed": bool(lensed),
        "sed": sed,
        "mags": group_magnitudes(mag_ref, profile, sed),
        "components": components,
    }


def project(
    x: np.ndarray, y: np.ndarray, q_incl: float, pa_rad: float, x0: float = 0.0, y0: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Project disc-plane coordinates onto the sky: squash y by ``q_incl``, rotate by ``pa_rad``."""
    ys = y * q_incl
    c, s = math.cos(pa_rad), math.sin(pa_rad)
    return x0 + c * x - s * ys, y0 + s * x + c * ys


def curve_segments(
    rng: np.random.Generator,
    x: np.ndarray,
    y: np.ndarray,
    width_arcsec: float,
    q_incl: float = 1.0,
    pa_rad: float = 0.0,
    x0: float = 0.0,
    y0: float = 0.0,
    clumpiness: float = 0.4,
) -> list[Component]:
    """Elongated Gaussians tracing a curve given by disc-plane points ``(x, y)``.

    Each point becomes a Gaussian stretched along the local tangent (so that neighbours
    overlap into a continuous feature) with log-normal flux scatter ``clumpiness``; the
    curve is then inclined and rotated like its host disc.
    """
    xs, ys = project(np.asarray(x, float), np.asarray(y, float), q_incl, pa_rad, x0, y0)
    tangent_x, tangent_y = np.gradient(xs), np.gradient(ys)
    step = np.hypot(tangent_x, tangent_y)
    fluxes = rng.lognormal(0.0, clumpiness, size=len(xs))
    components = []
    for i in range(len(xs)):
        sigma_major = max(0.6 * step[i], width_arcsec)
        phi = math.atan2(tangent_y[i], tangent_x[i])
        components.append(gaussian_ellipse(sigma_major, width_arcsec, phi, xs[i], ys[i], fluxes[i]))
    return components


def log_spiral_arms(
    rng: np.random.Generator, n_arms: int, r_start_arcsec: float, r_end_arcsec: float, pitch_rad: float, n_per_arm: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Disc-plane points along each of ``n_arms`` log spirals, r = r0 exp(theta tan(pitch))."""
    theta_max = math.log(r_end_arcsec / r_start_arcsec) / math.tan(pitch_rad)
    theta = np.linspace(0.0, theta_max, n_per_arm)
    radius = r_start_arcsec * np.exp(theta * math.tan(pitch_rad))
    phase0 = rng.uniform(0.0, 2.0 * math.pi)
    arms = []
    for arm in range(n_arms):
        phase = phase0 + theta + 2.0 * math.pi * arm / n_arms
        arms.append((radius * np.cos(phase), radius * np.sin(phase)))
    return arms


def circle_arc(
    radius_arcsec: float, start_rad: float, extent_rad: float, n_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """Points along a circular arc centred on the origin."""
    angle = start_rad + np.linspace(0.0, extent_rad, n_points)
    return radius_arcsec * np.cos(angle), radius_arcsec * np.sin(angle)
