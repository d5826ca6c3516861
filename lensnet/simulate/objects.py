"""Random physical parameters of lenses and of the non-lenses that fool lens finders.

:func:`draw_parameters` returns a JSON-able dictionary that :func:`lensnet.simulate.render`
turns into an image. Its keys:

``kind``, ``profile``, ``is_lens``
    what was drawn and for which survey.
``psf_fwhm_arcsec``, ``sky_sigma``
    per-band observing conditions of this stamp: the profile's nominal seeing and noise
    with a common random factor (and a small per-band one), so that a network cannot learn
    one fixed PSF or noise level.
``lens_model``
    ``{"models": ["SIE", "SHEAR"], "kwargs": [...]}`` (lenstronomy) or ``None``.
``groups``
    light groups (see :mod:`lensnet.simulate.components`); lensed groups are the source.
``meta``
    physical summary used by the truth table (Einstein radius, redshifts, magnitudes...).

Lenses: singular isothermal ellipsoid plus external shear, Einstein radius log-uniform in
0.5"-3", a red early-type deflector whose magnitude and size scale with the Einstein radius,
and an extended Sersic source with a few star-forming clumps placed inside ~the caustics;
80% of the sources are blue star-forming galaxies, 20% red ones (which colour-based
finders miss; Wilde et al. 2022). Non-lenses are the usual false positives: ellipticals
(and S0s), spirals with blue arms, ring galaxies, mergers with tidal tails, red galaxies
with close blue companions, and edge-on discs (some with a dust lane).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from lenstronomy.Util.param_util import phi_q2_ellipticity, shear_polar2cartesian

from lensnet.simulate import components as comp
from lensnet.simulate.profiles import SurveyProfile, get_profile
from lensnet.simulate.sed import draw_sed

KINDS: tuple[str, ...] = ("lens", "elliptical", "spiral", "ring", "merger", "companion", "edge-on")
NON_LENS_KINDS: tuple[str, ...] = KINDS[1:]
#: Default relative frequencies of the non-lens kinds in training sets and mock surveys.
DEFAULT_NON_LENS_WEIGHTS: dict[str, float] = {
    "elliptical": 0.25,
    "spiral": 0.2,
    "ring": 0.1,
    "merger": 0.15,
    "companion": 0.15,
    "edge-on": 0.15,
}
THETA_E_RANGE_ARCSEC = (0.5, 3.0)
#: Unlensed reference-band magnitudes of lensed sources; with magnifications of ~3-30 this
#: spans arcs from undetectable to S/N of several hundred at ground-based depths.
SOURCE_MAG_RANGE = (21.5, 27.0)
RED_SOURCE_FRACTION = 0.2

Drawn = tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, Any]]


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _size_for_mag(rng: np.random.Generator, mag: float, r_at_19: float, low: float, high: float) -> float:
    """Half-light radius growing with brightness (size-luminosity relation) with scatter."""
    return float(np.clip(r_at_19 * 10 ** (-0.15 * (mag - 19.0)) * rng.lognormal(0.0, 0.3), low, high))


def _flux_mag(total_mag: float, fraction: float) -> float:
    """Magnitude of a ``fraction`` of the flux of a ``total_mag`` object."""
    return total_mag - 2.5 * math.log10(fraction)


def _early_type(
    rng: np.random.Generator, profile: SurveyProfile, mag: float, r_eff: float, z: float, name: str
) -> dict[str, Any]:
    q, phi = _u(rng, 0.55, 1.0), _u(rng, 0.0, math.pi)
    sersic = comp.sersic(r_eff, _u(rng, 2.5, 6.0), q, phi)
    return comp.group(name, [sersic], mag, draw_sed(rng, "red", z), profile)


def _draw_lens(rng: np.random.Generator, profile: SurveyProfile) -> Drawn:
    low, high = THETA_E_RANGE_ARCSEC
    theta_e = float(math.exp(rng.uniform(math.log(low), math.log(high))))
    z_lens = _u(rng, 0.2, 0.8)
    # brighter, bigger deflectors for bigger Einstein radii (Faber-Jackson-like)
    lens_mag = float(np.clip(20.0 - 2.5 * math.log10(theta_e) + rng.normal(0.0, 0.5), 17.5, 21.8))
    r_eff = float(np.clip(theta_e * rng.lognormal(-0.1, 0.3), 0.3, 4.0))
    q_light, phi_light = _u(rng, 0.55, 1.0), _u(rng, 0.0, math.pi)
    lens_light = comp.group(
        "lens_light",
        [comp.sersic(r_eff, _u(rng, 3.0, 5.5), q_light, phi_light)],
        lens_mag,
        draw_sed(rng, "red", z_lens),
        profile,
    )
    # mass roughly aligned with light (Bolton et al. 2008) plus external shear
    q_mass = float(np.clip(q_light + rng.normal(0.0, 0.1), 0.4, 1.0))
    e1, e2 = phi_q2_ellipticity(phi_light + rng.normal(0.0, 0.15), q_mass)
    gamma = _u(rng, 0.0, 0.08)
    gamma1, gamma2 = shear_polar2cartesian(_u(rng, 0.0, math.pi), gamma)
    lens_model = {
        "models": ["SIE", "SHEAR"],
        "kwargs": [
            {"theta_E": theta_e, "e1": float(e1), "e2": float(e2), "center_x": 0.0, "center_y": 0.0},
            {"gamma1": float(gamma1), "gamma2": float(gamma2), "ra_0": 0.0, "dec_0": 0.0},
        ],
    }
    red_source = bool(rng.random() < RED_SOURCE_FRACTION)
    z_source = _u(rng, max(z_lens + 0.3, 0.8), 2.0 if red_source else 3.0)
    source_mag = _u(rng, *SOURCE_MAG_RANGE)
    # source centre uniform in a disc of 0.7 theta_E: multiple images, arcs and rings
    beta = theta_e * 0.7 * math.sqrt(rng.random())
    angle = _u(rng, 0.0, 2.0 * math.pi)
    xs, ys = beta * math.cos(angle), beta * math.sin(angle)
    r_source = float(math.exp(rng.uniform(math.log(0.08), math.log(0.5))))
    body = comp.sersic(r_source, _u(rng, 0.5, 1.5), _u(rng, 0.35, 1.0), _u(rng, 0.0, math.pi), xs, ys)
    sed = draw_sed(rng, "red" if red_source else "blue", z_source)
    n_clumps = int(rng.integers(0, 2 if red_source else 5))
    groups = [lens_light]
    if n_clumps:
        clump_frac = _u(rng, 0.1, 0.4)
        clumps = [
            comp.gaussian(
                _u(rng, 0.02, 0.08), xs + rng.normal(0, r_source), ys + rng.normal(0, r_source), rng.random() + 0.3
            )
            for _ in range(n_clumps)
        ]
        # star-forming knots are bluer than their host
        clump_sed = {
            **sed,
            "slope": float(sed["slope"]) - 0.4,
            "break_mag": 0.5 * float(sed["break_mag"]),
            "uv_slope": 0.5 * float(sed["uv_slope"]),
        }
        groups.append(comp.group("source", [body], _flux_mag(source_mag, 1 - clump_frac), sed, profile, lensed=True))
        groups.append(
            comp.group("source_clumps", clumps, _flux_mag(source_mag, clump_frac), clump_sed, profile, lensed=True)
        )
    else:
        groups.append(comp.group("source", [body], source_mag, sed, profile, lensed=True))
    meta = {
        "theta_e_arcsec": theta_e,
        "z_lens": z_lens,
        "z_source": z_source,
        "source_red": red_source,
        "source_offset_arcsec": beta,
        "source_r_eff_arcsec": r_source,
        "n_source_clumps": n_clumps,
        "lens_q": q_mass,
        "shear_gamma": gamma,
        "lens_mag": lens_mag,
        "source_mag": source_mag,
        "main_mag": lens_mag,
        "main_r_eff_arcsec": r_eff,
    }
    return groups, lens_model, meta


def _draw_elliptical(rng: np.random.Generator, profile: SurveyProfile) -> Drawn:
    mag, z = _u(rng, 17.5, 22.0), _u(rng, 0.1, 0.8)
    r_eff = _size_for_mag(rng, mag, 1.0, 0.2, 4.0)
    if rng.random() < 0.3:  # lenticular: a fainter, bigger and greener disc
        disc_frac = _u(rng, 0.2, 0.5)
        bulge = _early_type(rng, profile, _flux_mag(mag, 1 - disc_frac), r_eff, z, "bulge")
        disc = comp.sersic(r_eff * _u(rng, 1.5, 3.0), 1.0, _u(rng, 0.4, 1.0), _u(rng, 0.0, math.pi))
        groups = [bulge, comp.group("disc", [disc], _flux_mag(mag, disc_frac), draw_sed(rng, "green", z), profile)]
    else:
        groups = [_early_type(rng, profile, mag, r_eff, z, "galaxy")]
    return groups, None, {"main_mag": mag, "main_r_eff_arcsec": r_eff, "z_lens": z}


def _draw_spiral(rng: np.random.Generator, profile: SurveyProfile) -> Drawn:
    mag, z = _u(rng, 17.5, 22.0), _u(rng, 0.05, 0.6)
    bulge_frac, arm_frac = _u(rng, 0.05, 0.4), _u(rng, 0.25, 0.5)
    r_disc = _size_for_mag(rng, mag, 1.6, 0.5, 5.0)
    q_incl, pa = _u(rng, 0.35, 1.0), _u(rng, 0.0, math.pi)
    bulge = comp.sersic(r_disc * _u(rng, 0.1, 0.3), _u(rng, 1.5, 4.0), _u(rng, 0.7, 1.0), pa)
    disc = comp.sersic(r_disc, _u(rng, 0.8, 1.2), q_incl, pa)
    arms = []
    n_arms = int(rng.choice([2, 2, 2, 3, 4]))
    width = _u(rng, 0.1, 0.25)
    for x, y in comp.log_spiral_arms(
        rng,
        n_arms,
        r_disc * _u(rng, 0.2, 0.4),
        r_disc * _u(rng, 1.3, 2.2),
        math.radians(_u(rng, 12.0, 30.0)),
        int(rng.integers(8, 14)),
    ):
        arms += comp.curve_segments(rng, x, y, width, q_incl, pa)
    disc_mag = _flux_mag(mag, 1 - bulge_frac)
    groups = [
        comp.group("bulge", [bulge], _flux_mag(mag, bulge_frac), draw_sed(rng, "red", z), profile),
        comp.group("disc", [disc], _flux_mag(disc_mag, 1 - arm_frac), draw_sed(rng, "green", z), profile),
        comp.group("arms", arms, _flux_mag(disc_mag, arm_frac), draw_sed(rng, "blue", z), profile),
    ]
    return groups, None, {"main_mag": mag, "main_r_eff_arcsec": r_disc, "z_lens": z}


def _draw_ring(rng: np.random.Generator, profile: SurveyProfile) -> Drawn:
    mag, z = _u(rng, 18.0, 22.0), _u(rng, 0.05, 0.6)
    ring_frac = _u(rng, 0.35, 0.8)
    radius, width = _u(rng, 1.0, 3.5), _u(rng, 0.1, 0.3)
    q_incl, pa = _u(rng, 0.5, 1.0), _u(rng, 0.0, math.pi)
    # collisional rings often have an off-centre nucleus
    offset = radius * _u(rng, 0.0, 0.35) if rng.random() < 0.5 else 0.0
    off_angle = _u(rng, 0.0, 2.0 * math.pi)
    n_points = int(np.clip(2 * math.pi * radius / 0.5, 12, 24))
    x, y = comp.circle_arc(radius, 0.0, 2.0 * math.pi * (1.0 - 1.0 / n_points), n_points)
    ring = comp.curve_segments(
        rng, x, y, width, q_incl, pa, offset * math.cos(off_angle), offset * math.sin(off_angle), clumpiness=0.5
    )
    r_nucleus = _u(rng, 0.15, 0.6)
    nucleus = comp.sersic(r_nucleus, _u(rng, 1.5, 4.0), _u(rng, 0.7, 1.0), pa)
    groups = [
        comp.group(
            "nucleus", [nucleus], _flux_mag(mag, 1 - ring_frac), draw_sed(rng, rng.choice(["red", "green"]), z), profile
        ),
        comp.group("ring", ring, _flux_mag(mag, ring_frac), draw_sed(rng, "blue", z), profile),
    ]
    return groups, None, {"main_mag": mag, "main_r_eff_arcsec": radius, "z_lens": z}


def _draw_merger(rng: np.random.Generator, profile: SurveyProfile) -> Drawn:
    z = _u(rng, 0.05, 0.8)
    mag1 = _u(rng, 18.0, 21.5)
    mag2 = mag1 + _u(rng, 0.0, 2.0)
    sep, angle = _u(rng, 0.8, 3.5), _u(rng, 0.0, 2.0 * math.pi)
    x2, y2 = sep * math.cos(angle), sep * math.sin(angle)
    groups = []
    for name, m, x, y in (("primary", mag1, 0.0, 0.0), ("secondary", mag2, x2, y2)):
        r_eff = _size_for_mag(rng, m, 0.8, 0.15, 2.5)
        shape = comp.sersic(r_eff, _u(rng, 0.8, 4.0), _u(rng, 0.4, 1.0), _u(rng, 0.0, math.pi), x, y)
        groups.append(comp.group(name, [shape], m, draw_sed(rng, rng.choice(["red", "green", "blue"]), z), profile))
    if rng.random() < 0.6:  # a tidal tail curving around the pair: an arc-like feature
        radius = sep * _u(rng, 1.0, 1.6)
        extent = _u(rng, 0.8, 2.5) * rng.choice([-1.0, 1.0])
        n_points = int(np.clip(abs(radius * extent) / 0.4 + 3, 5, 20))
        tail_x, tail_y = comp.circle_arc(radius, angle, extent, n_points)
        tail = comp.curve_segments(rng, tail_x, tail_y, _u(rng, 0.15, 0.35))
        total_flux = 10 ** (-0.4 * mag1) + 10 ** (-0.4 * mag2)
        tail_mag = -2.5 * math.log10(_u(rng, 0.05, 0.2) * total_flux)
        groups.append(comp.group("tail", tail, tail_mag, draw_sed(rng, rng.choice(["blue", "green"]), z), profile))
    return groups, None, {"main_mag": mag1, "main_r_eff_arcsec": float("nan"), "z_lens": z}


def _draw_companion(rng: np.random.Generator, profile: SurveyProfile) -> Drawn:
    mag, z = _u(rng, 17.5, 21.5), _u(rng, 0.1, 0.8)
    r_eff = _size_for_mag(rng, mag, 1.0, 0.3, 3.0)
    groups = [_early_type(rng, profile, mag, r_eff, z, "galaxy")]
    for i in range(int(rng.integers(1, 4))):
        dist, angle = _u(rng, 0.8, 3.0), _u(rng, 0.0, 2.0 * math.pi)
        x, y = dist * math.cos(angle), dist * math.sin(angle)
        if rng.random() < 0.5:
            shape = comp.gaussian(_u(rng, 0.05, 0.25), x, y)
        else:
            shape = comp.sersic(_u(rng, 0.1, 0.4), _u(rng, 0.5, 1.5), _u(rng, 0.3, 1.0), _u(rng, 0.0, math.pi), x, y)
        sed = draw_sed(rng, "blue", _u(rng, 0.3, 2.5))
        groups.append(comp.group(f"companion{i}", [shape], _u(rng, 21.0, 24.5), sed, profile))
    return groups, None, {"main_mag": mag, "main_r_eff_arcsec": r_eff, "z_lens": z}


def _draw_edge_on(rng: np.random.Generator, profile: SurveyProfile) -> Drawn:
    mag, z = _u(rng, 17.5, 22.0), _u(rng, 0.05, 0.6)
    r_disc = _size_for_mag(rng, mag, 1.4, 0.6, 4.0)
    q, pa = _u(rng, 0.08, 0.22), _u(rng, 0.0, math.pi)
    bulge_frac = _u(rng, 0.0, 0.3)
    n_disc = _u(rng, 0.7, 1.3)
    if rng.random() < 0.4:  # a dust lane: two thinner halves either side of the mid-plane
        half_gap = r_disc * q * _u(rng, 0.3, 0.6)
        dx, dy = -half_gap * math.sin(pa), half_gap * math.cos(pa)
        disc = [comp.sersic(r_disc, n_disc, 0.7 * q, pa, sign * dx, sign * dy) for sign in (-1.0, 1.0)]
    else:
        disc = [comp.sersic(r_disc, n_disc, q, pa)]
    groups = [
        comp.group(
            "disc", disc, _flux_mag(mag, 1 - bulge_frac), draw_sed(rng, rng.choice(["green", "blue"]), z), profile
        )
    ]
    if bulge_frac > 0.02:
        bulge = comp.sersic(r_disc * _u(rng, 0.15, 0.4), _u(rng, 1.5, 4.0), _u(rng, 0.5, 0.9), pa)
        groups.append(comp.group("bulge", [bulge], _flux_mag(mag, bulge_frac), draw_sed(rng, "red", z), profile))
    return groups, None, {"main_mag": mag, "main_r_eff_arcsec": r_disc, "z_lens": z}


_DRAWERS: dict[str, Callable[[np.random.Generator, SurveyProfile], Drawn]] = {
    "lens": _draw_lens,
    "elliptical": _draw_elliptical,
    "spiral": _draw_spiral,
    "ring": _draw_ring,
    "merger": _draw_merger,
    "companion": _draw_companion,
    "edge-on": _draw_edge_on,
}


def _draw_field_galaxies(rng: np.random.Generator, profile: SurveyProfile) -> list[dict[str, Any]]:
    """0-3 faint unrelated galaxies anywhere in the stamp but the central 2.5"."""
    half_width = profile.stamp_size_px * profile.pixel_scale_arcsec / 2
    groups = []
    for i in range(min(int(rng.poisson(0.8)), 3)):
        while True:
            x, y = rng.uniform(-half_width, half_width, size=2)
            if math.hypot(x, y) > 2.5:
                break
        shape = comp.sersic(_u(rng, 0.15, 0.8), _u(rng, 0.8, 3.0), _u(rng, 0.4, 1.0), _u(rng, 0.0, math.pi), x, y)
        sed = draw_sed(rng, "red" if rng.random() < 0.35 else rng.choice(["blue", "green"]), _u(rng, 0.2, 2.0))
        groups.append(comp.group(f"field{i}", [shape], _u(rng, 21.5, 25.0), sed, profile))
    return groups


def draw_conditions(rng: np.random.Generator, profile: SurveyProfile) -> tuple[list[float], list[float]]:
    """Per-band PSF FWHM (arcsec) and sky sigma (counts) for one stamp, jittered around nominal."""
    seeing = rng.uniform(1.0 - profile.psf_jitter_frac, 1.0 + profile.psf_jitter_frac)
    depth = math.exp(rng.uniform(-1.0, 1.0) * math.log1p(profile.noise_jitter_frac))
    psf = [float(f * seeing * rng.uniform(0.97, 1.03)) for f in profile.psf_fwhm_arcsec]
    sky = [float(s * depth * rng.uniform(0.95, 1.05)) for s in profile.sky_sigma]
    return psf, sky


def draw_parameters(
    rng: np.random.Generator, kind: str, profile: SurveyProfile | str, field_galaxies: bool = True
) -> dict[str, Any]:
    """Draw the physical and observing parameters of one object of ``kind``.

    Args:
        rng: random generator (the only source of randomness).
        kind: one of :data:`KINDS`.
        profile: survey profile or its name.
        field_galaxies: add 0-3 faint unrelated neighbours inside the stamp (training
            stamps); mock surveys switch this off and place real neighbours instead.

    Returns:
        JSON-able parameters for :func:`lensnet.simulate.render` (see module docstring).
    """
    profile = get_profile(profile)
    if kind not in _DRAWERS:
        raise ValueError(f"unknown kind {kind!r}; known kinds: {', '.join(KINDS)}")
    psf, sky = draw_conditions(rng, profile)
    groups, lens_model, meta = _DRAWERS[kind](rng, profile)
    if field_galaxies:
        groups += _draw_field_galaxies(rng, profile)
    return {
        "kind": kind,
        "profile": profile.name,
        "is_lens": kind == "lens",
        "psf_fwhm_arcsec": psf,
        "sky_sigma": sky,
        "lens_model": lens_model,
        "groups": groups,
        "meta": meta,
    }
