"""Random physical parameters of lenses and of the non-lenses that fool lens finders.

:func:`draw_parameters` returns a JSON-able dictionary that :func:`lensnet.simulate.render`
turns into an image. Its keys:

``kind``, ``profile``, ``is_lens``
    what was drawn and for which survey.
``psf_fwhm_arcsec``, ``psf_moffat_beta``, ``sky_sigma``, ``noise``
    per-band observing conditions of this stamp: seeing drawn across the survey's range
    (:attr:`SurveyProfile.seeing_range`), a Moffat PSF of random ``beta`` (``None``: a
    Gaussian, as mock surveys use), depth over the profile's range, and the noise's
    correlation length and the sky-subtraction residual (see :mod:`lensnet.simulate.artefacts`).
``stars``, ``artefacts``
    point sources (stars, saturated when bright) and detector artefacts (cosmic rays, bad
    columns) of the stamp.
``lens_model``
    ``{"models": ["SIE", "SHEAR"], "kwargs": [...]}`` (lenstronomy) or ``None``.
``groups``
    light groups (see :mod:`lensnet.simulate.components`); lensed groups are the source.
``meta``
    physical summary used by the truth table (Einstein radius, redshifts, magnitudes...).

Lenses: singular isothermal ellipsoid plus external shear, Einstein radius log-uniform in
0.5"-4", a deflector (de Vaucouleurs-like to discy, bright to faint) whose magnitude and
size scale with the Einstein radius, and a Sersic source, compact to extended, with
star-forming clumps. The source's distance from the lens axis is ``1.1 theta_E u^2`` (u
uniform): a third sit behind the caustics' centre (complete rings, crosses), the rest on
folds and cusps (long arcs) or outside (single arcs, doubles). Its magnitude spans
19-27.5, so arcs range from invisible to S/N of thousands. 75% of the sources are blue
star-forming galaxies, 25% red ones (which colour-based finders miss; Wilde et al. 2022).
Non-lenses are the usual false positives, as bright as the deflectors: ellipticals (and
S0s), spirals with blue arms, ring galaxies (collisional, resonance, faint outer rings
round ellipticals), discs with star-forming inner rings, mergers with tidal tails, red
galaxies with close blue (some tangentially elongated) companions, and edge-on discs (some
with a dust lane).

Longer than the project's ~400-line guide: one drawer per kind of object, all in one place so that
their brightness and size distributions can be kept alike (no shortcut between lenses and look-alikes).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from lenstronomy.Util.param_util import (
    ellipticity2phi_q,
    phi_q2_ellipticity,
    shear_polar2cartesian,
)

from lensnet.simulate import artefacts
from lensnet.simulate import components as comp
from lensnet.simulate.definitions import (
    DEFAULT_NON_LENS_WEIGHTS,
    KINDS,
    NON_LENS_KINDS,
    POPULATION,
    check_population,
)
from lensnet.simulate.profiles import SurveyProfile, get_profile
from lensnet.simulate.sed import draw_sed

__all__ = ["DEFAULT_NON_LENS_WEIGHTS", "KINDS", "NON_LENS_KINDS", "draw_conditions", "draw_parameters",
           "nominal_conditions"]

THETA_E_RANGE_ARCSEC = (0.5, 4.0)
#: Unlensed reference-band magnitudes of lensed sources; with magnifications of ~2-30 this
#: spans arcs from undetectable to S/N of thousands at ground-based depths.
SOURCE_MAG_RANGE = (19.0, 27.0)
RED_SOURCE_FRACTION = 0.25
#: Reference-band magnitudes of deflectors, and of the non-lenses that must match them.
MAIN_MAG_RANGE = (16.5, 24.0)

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
    q, phi = _u(rng, 0.35, 1.0), _u(rng, 0.0, math.pi)
    n_sersic = _u(rng, 0.8, 2.0) if rng.random() < 0.2 else _u(rng, 2.0, 6.0)  # a fifth are discy
    sersic = comp.sersic(r_eff, n_sersic, q, phi)
    return comp.group(name, [sersic], mag, draw_sed(rng, "red" if rng.random() < 0.85 else "green", z), profile)


def _lens_like_mag(rng: np.random.Generator, theta_e: float) -> float:
    """Deflector magnitude: brighter for bigger Einstein radii, with scatter and a faint tail."""
    mag = 19.8 - 2.5 * 1.2 * math.log10(theta_e) + rng.normal(0.0, 0.7) + (_u(rng, 1.0, 2.5) if rng.random() < 0.1 else 0)
    return float(np.clip(mag, *MAIN_MAG_RANGE))


def _early_type_mag(rng: np.random.Generator) -> float:
    """The deflectors' magnitudes, for early-type non-lenses (no brightness shortcut)."""
    low, high = THETA_E_RANGE_ARCSEC
    return _lens_like_mag(rng, float(math.exp(rng.uniform(math.log(low), math.log(high)))))


def _draw_lens(rng: np.random.Generator, profile: SurveyProfile, population: int = POPULATION) -> Drawn:
    low, high = THETA_E_RANGE_ARCSEC
    theta_e = float(math.exp(rng.uniform(math.log(low), math.log(high))))
    z_lens = _u(rng, 0.2, 0.9)
    lens_mag = _lens_like_mag(rng, theta_e)
    if population == 1:  # size tied to θE: larger than the non-lenses of its brightness
        r_eff = float(np.clip(theta_e * rng.lognormal(-0.2, 0.4), 0.2, 5.0))
    else:  # the early types' size-luminosity relation (one draw either way: the rest of the stream is the same)
        r_eff = _size_for_mag(rng, lens_mag, 1.0, 0.2, 5.0)
    lens_light = _early_type(rng, profile, lens_mag, r_eff, z_lens, "lens_light")
    light = lens_light["components"][0]["kwargs"]
    phi_light, q_light = (float(v) for v in ellipticity2phi_q(light["e1"], light["e2"]))
    # mass roughly aligned with light (Bolton et al. 2008) plus external shear
    q_mass = float(np.clip(q_light + rng.normal(0.0, 0.12), 0.35, 1.0))
    e1, e2 = phi_q2_ellipticity(phi_light + rng.normal(0.0, 0.2), q_mass)
    gamma = _u(rng, 0.0, 0.1)
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
    # brighter sources are rarer: a triangular distribution peaking at the faint end
    source_mag = float(rng.triangular(SOURCE_MAG_RANGE[0], SOURCE_MAG_RANGE[1] - 2.5, SOURCE_MAG_RANGE[1]))
    # distance from the lens axis 1.1 theta_E u^2: a third behind the caustics' centre
    beta = theta_e * 1.1 * rng.random() ** 2
    angle = _u(rng, 0.0, 2.0 * math.pi)
    xs, ys = beta * math.cos(angle), beta * math.sin(angle)
    r_source = float(math.exp(rng.uniform(math.log(0.05), math.log(0.6))))
    body = comp.sersic(r_source, _u(rng, 0.5, 2.0), _u(rng, 0.3, 1.0), _u(rng, 0.0, math.pi), xs, ys)
    sed = draw_sed(rng, "red" if red_source else "blue", z_source)
    n_clumps = int(rng.integers(0, 2 if red_source else 8))
    groups = [lens_light]
    if n_clumps:
        clump_frac = _u(rng, 0.1, 0.5)
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
        "lens_slope": 1.0,
        "shear_gamma": gamma,
        "lens_mag": lens_mag,
        "source_mag": source_mag,
        "main_mag": lens_mag,
        "main_r_eff_arcsec": r_eff,
    }
    return groups, lens_model, meta


def _draw_elliptical(rng: np.random.Generator, profile: SurveyProfile) -> Drawn:
    mag, z = _early_type_mag(rng), _u(rng, 0.1, 0.9)
    r_eff = _size_for_mag(rng, mag, 1.0, 0.2, 5.0)
    if rng.random() < 0.3:  # lenticular: a fainter, bigger and greener disc
        disc_frac = _u(rng, 0.2, 0.5)
        bulge = _early_type(rng, profile, _flux_mag(mag, 1 - disc_frac), r_eff, z, "bulge")
        disc = comp.sersic(r_eff * _u(rng, 1.5, 3.0), 1.0, _u(rng, 0.4, 1.0), _u(rng, 0.0, math.pi))
        groups = [bulge, comp.group("disc", [disc], _flux_mag(mag, disc_frac), draw_sed(rng, "green", z), profile)]
    else:
        groups = [_early_type(rng, profile, mag, r_eff, z, "galaxy")]
    return groups, None, {"main_mag": mag, "main_r_eff_arcsec": r_eff, "z_lens": z}


def _draw_spiral(rng: np.random.Generator, profile: SurveyProfile) -> Drawn:
    mag, z = _u(rng, 16.5, 22.5), _u(rng, 0.05, 0.6)
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
    z = _u(rng, 0.05, 0.8)
    q_incl, pa = _u(rng, 0.45, 1.0), _u(rng, 0.0, math.pi)
    width = _u(rng, 0.08, 0.3)
    if rng.random() < 0.3:  # an elliptical with a faint outer ring or shell
        mag = _early_type_mag(rng)
        r_eff = _size_for_mag(rng, mag, 1.0, 0.2, 3.0)
        ring_frac, radius = _u(rng, 0.05, 0.25), _u(rng, max(1.0, 1.2 * r_eff), 4.0)
        offset, clumpiness = 0.0, _u(rng, 0.1, 0.5)
        core = _early_type(rng, profile, _flux_mag(mag, 1 - ring_frac), r_eff, z, "nucleus")
        ring_sed = draw_sed(rng, str(rng.choice(["blue", "green", "red"])), z)
    else:  # a collisional or resonance ring galaxy
        mag = _u(rng, 16.5, 22.5)
        ring_frac, radius = _u(rng, 0.35, 0.8), _u(rng, 0.8, 4.0)
        # collisional rings often have an off-centre nucleus
        offset = radius * _u(rng, 0.0, 0.35) if rng.random() < 0.5 else 0.0
        clumpiness = _u(rng, 0.3, 0.8)
        nucleus = comp.sersic(_u(rng, 0.15, 0.6), _u(rng, 1.5, 4.0), _u(rng, 0.7, 1.0), pa)
        core = comp.group(
            "nucleus", [nucleus], _flux_mag(mag, 1 - ring_frac), draw_sed(rng, rng.choice(["red", "green"]), z), profile
        )
        ring_sed = draw_sed(rng, "blue", z)
    off_angle = _u(rng, 0.0, 2.0 * math.pi)
    n_points = int(np.clip(2 * math.pi * radius / 0.5, 12, 28))
    x, y = comp.circle_arc(radius, 0.0, 2.0 * math.pi * (1.0 - 1.0 / n_points), n_points)
    ring = comp.curve_segments(
        rng, x, y, width, q_incl, pa, offset * math.cos(off_angle), offset * math.sin(off_angle), clumpiness=clumpiness
    )
    groups = [core, comp.group("ring", ring, _flux_mag(mag, ring_frac), ring_sed, profile)]
    return groups, None, {"main_mag": mag, "main_r_eff_arcsec": radius, "z_lens": z}


def _draw_sf_ring(rng: np.random.Generator, profile: SurveyProfile) -> Drawn:
    """A disc galaxy with a star-forming inner ring of knots (and a bulge)."""
    mag, z = _u(rng, 16.5, 22.5), _u(rng, 0.05, 0.6)
    r_disc = _size_for_mag(rng, mag, 1.6, 0.6, 4.5)
    q_incl, pa = _u(rng, 0.4, 1.0), _u(rng, 0.0, math.pi)
    bulge_frac, ring_frac = _u(rng, 0.1, 0.4), _u(rng, 0.15, 0.45)
    radius = _u(rng, 0.4, max(0.5, min(2.0, 1.2 * r_disc)))
    n_points = int(np.clip(2 * math.pi * radius / 0.35, 8, 24))
    x, y = comp.circle_arc(radius, 0.0, 2.0 * math.pi * (1.0 - 1.0 / n_points), n_points)
    ring = comp.curve_segments(rng, x, y, _u(rng, 0.06, 0.2), q_incl, pa, clumpiness=_u(rng, 0.6, 1.0))
    groups = [
        comp.group("bulge", [comp.sersic(_u(rng, 0.15, 0.5), _u(rng, 1.5, 4.0), _u(rng, 0.6, 1.0), pa)],
                   _flux_mag(mag, bulge_frac), draw_sed(rng, "red", z), profile),
        comp.group("disc", [comp.sersic(r_disc, _u(rng, 0.8, 1.2), q_incl, pa)],
                   _flux_mag(mag, 1 - bulge_frac - ring_frac), draw_sed(rng, "green", z), profile),
        comp.group("ring", ring, _flux_mag(mag, ring_frac), draw_sed(rng, "blue", z), profile),
    ]
    return groups, None, {"main_mag": mag, "main_r_eff_arcsec": r_disc, "z_lens": z}


def _draw_merger(rng: np.random.Generator, profile: SurveyProfile) -> Drawn:
    z = _u(rng, 0.05, 0.8)
    mag1 = _u(rng, 16.5, 22.0)
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
    mag, z = _early_type_mag(rng), _u(rng, 0.1, 0.9)
    r_eff = _size_for_mag(rng, mag, 1.0, 0.2, 4.0)
    groups = [_early_type(rng, profile, mag, r_eff, z, "galaxy")]
    for i in range(int(rng.integers(1, 5))):
        dist, angle = _u(rng, 0.8, 3.5), _u(rng, 0.0, 2.0 * math.pi)
        x, y = dist * math.cos(angle), dist * math.sin(angle)
        if rng.random() < 0.4:
            shape = comp.gaussian(_u(rng, 0.05, 0.25), x, y)
        else:  # elongated; half of them tangentially, like an arc
            phi = angle + math.pi / 2 if rng.random() < 0.5 else _u(rng, 0.0, math.pi)
            shape = comp.sersic(_u(rng, 0.1, 0.4), _u(rng, 0.5, 1.5), _u(rng, 0.2, 1.0), phi, x, y)
        sed = draw_sed(rng, "blue" if rng.random() < 0.8 else str(rng.choice(["green", "red"])), _u(rng, 0.3, 2.5))
        groups.append(comp.group(f"companion{i}", [shape], _u(rng, 20.5, 25.0), sed, profile))
    return groups, None, {"main_mag": mag, "main_r_eff_arcsec": r_eff, "z_lens": z}


def _draw_edge_on(rng: np.random.Generator, profile: SurveyProfile) -> Drawn:
    mag, z = _u(rng, 16.5, 22.5), _u(rng, 0.05, 0.6)
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
    "sf-ring": _draw_sf_ring,
    "merger": _draw_merger,
    "companion": _draw_companion,
    "edge-on": _draw_edge_on,
}


def _draw_field_galaxies(rng: np.random.Generator, profile: SurveyProfile, main_mag: float) -> list[dict[str, Any]]:
    """0-3 faint unrelated galaxies anywhere but the central 2.5", and now and then a blend:
    a neighbour of similar brightness 1.5-4" away."""
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
    if rng.random() < 0.2:
        dist, angle = _u(rng, 1.5, 4.0), _u(rng, 0.0, 2.0 * math.pi)
        mag = float(np.clip(main_mag + _u(rng, -0.5, 2.5), 16.0, 25.0))
        shape = comp.sersic(_size_for_mag(rng, mag, 0.8, 0.15, 2.5), _u(rng, 0.8, 5.0), _u(rng, 0.3, 1.0),
                            _u(rng, 0.0, math.pi), dist * math.cos(angle), dist * math.sin(angle))
        sed = draw_sed(rng, rng.choice(["red", "green", "blue"]), _u(rng, 0.1, 1.0))
        groups.append(comp.group("field_neighbour", [shape], mag, sed, profile))
    return groups


def _draw_stars(rng: np.random.Generator, profile: SurveyProfile) -> list[dict[str, Any]]:
    """Now and then a star 2-6" from the centre, bright enough to saturate at times."""
    if rng.random() >= 0.15:
        return []
    dist, angle = _u(rng, 2.0, 6.0), _u(rng, 0.0, 2.0 * math.pi)
    sed = draw_sed(rng, rng.choice(["red", "green", "blue"]), 0.0)
    return [{"x": dist * math.cos(angle), "y": dist * math.sin(angle),
             "mags": comp.group("star", [comp.gaussian(0.1, 0.0, 0.0)], _u(rng, 15.0, 23.0), sed, profile)["mags"]}]


def draw_conditions(rng: np.random.Generator, profile: SurveyProfile) -> dict[str, Any]:
    """Observing conditions of one stamp: PSF per band (Moffat, seeing log-uniform over the
    survey's range), sky sigma per band (depth over the profile's range), noise correlation
    and background residual."""
    best, worst = profile.seeing_range
    seeing = float(math.exp(rng.uniform(math.log(best), math.log(worst))))
    nominal = profile.psf_fwhm_arcsec[profile.reference_index]
    depth = math.exp(rng.uniform(-1.0, 1.0) * math.log1p(profile.noise_jitter_frac))
    return {
        "psf_fwhm_arcsec": [float(f / nominal * seeing * rng.uniform(0.97, 1.03)) for f in profile.psf_fwhm_arcsec],
        "psf_moffat_beta": _u(rng, 2.0, 5.0),
        "sky_sigma": [float(s * depth * rng.uniform(0.95, 1.05)) for s in profile.sky_sigma],
        "noise": artefacts.draw_noise(rng),
    }


def nominal_conditions(profile: SurveyProfile | str) -> dict[str, Any]:
    """The survey's nominal conditions (Gaussian PSF, white noise): what mock surveys use."""
    profile = get_profile(profile)
    return {"psf_fwhm_arcsec": list(profile.psf_fwhm_arcsec), "psf_moffat_beta": None,
            "sky_sigma": list(profile.sky_sigma), "noise": {"correlation_sigma_px": 0.0, "background": None}}


def draw_parameters(
    rng: np.random.Generator,
    kind: str,
    profile: SurveyProfile | str,
    field_galaxies: bool = True,
    conditions: dict[str, Any] | None = None,
    population: int = POPULATION,
) -> dict[str, Any]:
    """Draw the physical and observing parameters of one object of ``kind``.

    Args:
        rng: random generator (the only source of randomness).
        kind: one of :data:`KINDS`.
        profile: survey profile or its name.
        field_galaxies: add unrelated neighbours, stars and detector artefacts inside the
            stamp (training stamps); mock surveys switch this off and place real neighbours.
        conditions: fixed observing conditions (e.g. :func:`nominal_conditions`) instead
            of drawn ones.
        population: version of the population (:data:`lensnet.simulate.definitions.POPULATIONS`).

    Returns:
        JSON-able parameters for :func:`lensnet.simulate.render` (see module docstring).
    """
    profile = get_profile(profile)
    if kind not in _DRAWERS:
        raise ValueError(f"unknown kind {kind!r}; known kinds: {', '.join(KINDS)}")
    population = check_population(population)
    observing = dict(conditions) if conditions is not None else draw_conditions(rng, profile)
    groups, lens_model, meta = _draw_lens(rng, profile, population) if kind == "lens" else _DRAWERS[kind](rng, profile)
    stars: list[dict[str, Any]] = []
    detector: dict[str, Any] = {"cosmic_rays": [], "bad_columns": []}
    if field_galaxies:
        groups += _draw_field_galaxies(rng, profile, float(meta["main_mag"]))
        stars = _draw_stars(rng, profile)
        detector = artefacts.draw_artefacts(rng, profile, observing["sky_sigma"])
    return {
        "engine": "lenstronomy",
        "kind": kind,
        "profile": profile.name,
        "is_lens": kind == "lens",
        **observing,
        "lens_model": lens_model,
        "groups": groups,
        "stars": stars,
        "artefacts": detector,
        "meta": meta,
    }
