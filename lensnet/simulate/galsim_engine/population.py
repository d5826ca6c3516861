"""The GalSim engine's population: lenses and look-alikes, drawn independently of the other engine.

:func:`draw_parameters` returns a JSON-able dictionary:

``engine``, ``kind``, ``profile``, ``is_lens``
    what was drawn, by which engine, for which survey.
``psf``, ``psf_fwhm_arcsec``, ``sky_sigma``, ``noise``, ``background``, ``artefacts``
    the stamp's observing conditions (see :mod:`lensnet.simulate.galsim_engine.observe`):
    seeing across the survey's whole range with Moffat or Kolmogorov profiles, depth over
    +-1 mag around nominal, white or correlated noise, photon noise, background residuals,
    cosmic rays, bad columns.
``lens``
    an elliptical power-law mass (slope 0.8-1.2 about isothermal) with external shear, or None.
``groups``
    light groups, each with a colour (:mod:`lensnet.simulate.galsim_engine.colours`), band
    magnitudes and GalSim shapes (:mod:`lensnet.simulate.galsim_engine.shapes`); lensed
    groups are the source, in source-plane coordinates.
``meta``
    the physical summary behind the truth table.

Lenses span what surveys find: Einstein radii 0.5-4", sources from right behind the lens
(complete rings, crosses) through folds and cusps to well outside the caustics (single
arcs); source sizes from compact to extended with star-forming knots; a target arc S/N
drawn log-normally (median ~55, from 3 to 5,000) that sets the source's brightness; lens
galaxies from discy to de Vaucouleurs, bright to faint. Non-lenses share the lenses'
brightness distribution and carry every feature a lens has somewhere in the population:
rings (collisional, resonant, faint shells around ellipticals, star-forming rings in
discs), blue tangential companions, spiral arms, tidal tails, dust lanes.

Longer than the project's ~400-line guide: one drawer per kind of object, kept together for the
same reason as the lenstronomy engine's (matched brightness and size distributions across kinds).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from lensnet.simulate.definitions import KINDS, POPULATION, check_population
from lensnet.simulate.galsim_engine.colours import band_magnitudes, draw_colour
from lensnet.simulate.profiles import SurveyProfile, get_profile

ENGINE = "galsim"
THETA_E_RANGE_ARCSEC = (0.5, 4.0)
#: log10 of the target arc S/N: normal, truncated to [log10 3, log10 5000].
LOG_ARC_SNR_MEAN, LOG_ARC_SNR_SIGMA = 1.75, 0.55
ARC_SNR_RANGE = (3.0, 5000.0)
#: The source's reference-band magnitude is kept inside this range whatever S/N was targeted.
SOURCE_MAG_RANGE = (17.0, 28.5)
MAIN_MAG_RANGE = (16.5, 24.0)

Drawn = tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, Any]]


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _log_u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(1, 2**31 - 1))


def _group(name: str, shapes: list[dict[str, Any]], mag_ref: float, colour: dict[str, Any], profile: SurveyProfile,
           lensed: bool = False) -> dict[str, Any]:
    return {"name": name, "lensed": lensed, "colour": colour, "mags": band_magnitudes(mag_ref, colour, profile),
            "shapes": shapes}


def _sersic(n: float, r_half: float, q: float, beta: float, x: float = 0.0, y: float = 0.0,
            flux_frac: float = 1.0) -> dict[str, Any]:
    return {"type": "sersic", "n": float(n), "r_half": float(r_half), "q": float(q), "beta": float(beta),
            "x": float(x), "y": float(y), "flux_frac": float(flux_frac)}


def _frac_mag(total_mag: float, fraction: float) -> float:
    return total_mag - 2.5 * math.log10(fraction)


def _deflector_magnitude(rng: np.random.Generator, theta_e: float) -> float:
    """Brighter galaxies for bigger Einstein radii, with scatter and a tail of faint deflectors."""
    mag = 19.8 - 3.0 * math.log10(theta_e) + rng.normal(0.0, 0.7)
    if rng.random() < 0.1:
        mag += _u(rng, 1.0, 2.5)
    return float(np.clip(mag, *MAIN_MAG_RANGE))


def _early_type_like_magnitude(rng: np.random.Generator) -> float:
    """The deflectors' magnitude distribution, for non-lenses that must not differ in brightness."""
    return _deflector_magnitude(rng, _log_u(rng, *THETA_E_RANGE_ARCSEC))


def _size(rng: np.random.Generator, mag: float, r_at_19: float, low: float, high: float) -> float:
    return float(np.clip(r_at_19 * 10 ** (-0.15 * (mag - 19.0)) * rng.lognormal(0.0, 0.35), low, high))


def _early_type_group(rng: np.random.Generator, profile: SurveyProfile, name: str, mag: float, r_half: float,
                      z: float) -> dict[str, Any]:
    n = _u(rng, 0.8, 2.0) if rng.random() < 0.2 else _u(rng, 2.0, 6.0)
    population = "passive" if rng.random() < 0.85 else "intermediate"
    shape = _sersic(n, r_half, _u(rng, 0.35, 1.0), _u(rng, 0.0, math.pi))
    return _group(name, [shape], mag, draw_colour(rng, population, z), profile)


def _source_population(rng: np.random.Generator) -> str:
    u = rng.random()
    return "starforming" if u < 0.7 else ("intermediate" if u < 0.85 else "passive")


def _draw_lens(rng: np.random.Generator, profile: SurveyProfile, population: int = POPULATION) -> Drawn:
    theta_e = _log_u(rng, *THETA_E_RANGE_ARCSEC)
    z_lens = _u(rng, 0.15, 0.9)
    lens_mag = _deflector_magnitude(rng, theta_e)
    if population == 1:  # size tied to θE: larger than the non-lenses of its brightness
        r_half = float(np.clip(0.8 * theta_e * rng.lognormal(0.0, 0.45), 0.2, 5.0))
    else:  # the ellipticals' size-luminosity relation (one draw either way: the rest of the stream is the same)
        r_half = _size(rng, lens_mag, 1.2, 0.2, 5.0)
    lens_light = _early_type_group(rng, profile, "lens_light", lens_mag, r_half, z_lens)
    light = lens_light["shapes"][0]
    gamma, gamma_angle = _u(rng, 0.0, 0.1), _u(rng, 0.0, math.pi)
    lens = {"theta_e": theta_e, "slope": _u(rng, 0.8, 1.2),
            "q": float(np.clip(light["q"] + rng.normal(0.0, 0.15), 0.3, 0.9999)),
            "phi": float(light["beta"] + rng.normal(0.0, 0.25)),
            "gamma1": gamma * math.cos(2 * gamma_angle), "gamma2": gamma * math.sin(2 * gamma_angle),
            "x": 0.0, "y": 0.0}
    # where the source sits: behind the caustics' centre (rings, crosses), on the folds and
    # cusps (long arcs), or outside them (single arcs and doubles)
    u = rng.random()
    offset = theta_e * (_u(rng, 0.0, 0.08) if u < 0.3 else _u(rng, 0.08, 0.5) if u < 0.7 else _u(rng, 0.5, 1.1))
    angle = _u(rng, 0.0, 2 * math.pi)
    xs, ys = offset * math.cos(angle), offset * math.sin(angle)
    population = _source_population(rng)
    z_source = _u(rng, z_lens + 0.3, 2.0 if population == "passive" else 3.0)
    colour = draw_colour(rng, population, z_source)
    r_source = _log_u(rng, 0.05, 0.6)
    body = _sersic(_u(rng, 0.5, 2.0), r_source, _u(rng, 0.3, 1.0), _u(rng, 0.0, math.pi), xs, ys)
    groups = [lens_light]
    n_knots = 0
    if population != "passive" and rng.random() < 0.6:
        n_knots = int(rng.integers(5, 41))
        knot_frac = _u(rng, 0.15, 0.6)
        knots = {"type": "knots", "npoints": n_knots, "r_half": r_source * _u(rng, 0.8, 1.5), "seed": _seed(rng),
                 "knot_sigma": _u(rng, 0.01, 0.04), "q": body["q"], "beta": body["beta"], "x": xs, "y": ys,
                 "flux_frac": 1.0}
        knot_colour = {**colour, "young": min(1.0, float(colour["young"]) * 1.5 + 0.1), "av": 0.5 * float(colour["av"])}
        groups.append(_group("source", [body], _frac_mag(0.0, 1.0 - knot_frac), colour, profile, lensed=True))
        groups.append(_group("source_knots", [knots], _frac_mag(0.0, knot_frac), knot_colour, profile, lensed=True))
    else:
        groups.append(_group("source", [body], 0.0, colour, profile, lensed=True))
    # The lensed groups' magnitudes are those of a source of total magnitude 0 for now:
    # calibrate_source() adds the source magnitude that gives the target arc S/N.
    target = 10 ** float(np.clip(rng.normal(LOG_ARC_SNR_MEAN, LOG_ARC_SNR_SIGMA),
                                 math.log10(ARC_SNR_RANGE[0]), math.log10(ARC_SNR_RANGE[1])))
    meta = {"theta_e_arcsec": theta_e, "z_lens": z_lens, "z_source": z_source, "source_red": population == "passive",
            "source_population": population, "source_offset_arcsec": offset, "source_r_eff_arcsec": r_source,
            "n_source_clumps": n_knots, "lens_q": lens["q"], "lens_slope": lens["slope"], "shear_gamma": gamma,
            "lens_mag": lens_mag, "main_mag": lens_mag, "main_r_eff_arcsec": r_half, "target_arc_snr": target,
            "source_mag": float("nan")}
    return groups, lens, meta


def _draw_elliptical(rng: np.random.Generator, profile: SurveyProfile) -> Drawn:
    mag, z = _early_type_like_magnitude(rng), _u(rng, 0.1, 0.9)
    r_half = _size(rng, mag, 1.2, 0.2, 5.0)
    galaxy = _early_type_group(rng, profile, "galaxy", mag, r_half, z)
    groups = [galaxy]
    if rng.random() < 0.35:  # a lenticular: a fainter, larger, greener disc
        disc_frac = _u(rng, 0.2, 0.5)
        galaxy["mags"] = band_magnitudes(_frac_mag(mag, 1 - disc_frac), galaxy["colour"], profile)
        disc = _sersic(1.0, r_half * _u(rng, 1.5, 3.0), _u(rng, 0.3, 1.0), galaxy["shapes"][0]["beta"])
        groups.append(_group("disc", [disc], _frac_mag(mag, disc_frac), draw_colour(rng, "intermediate", z), profile))
    return groups, None, {"main_mag": mag, "main_r_eff_arcsec": r_half, "z_lens": z}


def _draw_spiral(rng: np.random.Generator, profile: SurveyProfile) -> Drawn:
    mag, z = _u(rng, 16.5, 22.5), _u(rng, 0.05, 0.7)
    h = _size(rng, mag, 1.0, 0.3, 3.0)
    q, beta = _u(rng, 0.3, 1.0), _u(rng, 0.0, math.pi)
    bulge_frac, arm_frac = _u(rng, 0.05, 0.4), _u(rng, 0.3, 0.6)
    disc_frac = 1.0 - bulge_frac - arm_frac * (1.0 - bulge_frac)
    arms = {"type": "spiral", "scale_length": h, "n_arms": int(rng.choice([2, 2, 2, 3, 4])),
            "pitch": math.radians(_u(rng, 10.0, 30.0)), "arm_contrast": _u(rng, 1.0, 6.0),
            "n_knots": int(rng.integers(0, 30)), "knot_frac": _u(rng, 0.1, 0.5), "seed": _seed(rng),
            "q": q, "beta": beta, "x": 0.0, "y": 0.0, "flux_frac": 1.0}
    groups = [
        _group("bulge", [_sersic(_u(rng, 1.5, 4.0), h * _u(rng, 0.15, 0.4), _u(rng, 0.6, 1.0), beta)],
               _frac_mag(mag, bulge_frac), draw_colour(rng, "passive", z), profile),
        _group("disc", [_sersic(1.0, 1.68 * h, q, beta)], _frac_mag(mag, disc_frac),
               draw_colour(rng, "intermediate", z), profile),
        _group("arms", [arms], _frac_mag(mag, arm_frac * (1.0 - bulge_frac)), draw_colour(rng, "starforming", z),
               profile),
    ]
    return groups, None, {"main_mag": mag, "main_r_eff_arcsec": 1.68 * h, "z_lens": z}


def _ring_shape(rng: np.random.Generator, radius: float, width: float, n_knots: int, q: float, beta: float,
                x: float = 0.0, y: float = 0.0) -> dict[str, Any]:
    return {"type": "ring", "radius": radius, "width": width, "lopsidedness": _u(rng, 0.0, 0.7),
            "n_knots": n_knots, "knot_frac": _u(rng, 0.2, 0.7) if n_knots else 0.0, "seed": _seed(rng),
            "q": q, "beta": beta, "x": x, "y": y, "flux_frac": 1.0}


def _draw_ring(rng: np.random.Generator, profile: SurveyProfile) -> Drawn:
    z = _u(rng, 0.05, 0.8)
    q, beta = _u(rng, 0.4, 1.0), _u(rng, 0.0, math.pi)
    if rng.random() < 0.3:  # a smooth early-type galaxy with a faint outer ring or shell
        mag = _early_type_like_magnitude(rng)
        r_half = _size(rng, mag, 1.2, 0.2, 4.0)
        host = _early_type_group(rng, profile, "nucleus", mag, r_half, z)
        ring_frac = _u(rng, 0.05, 0.25)
        radius = _u(rng, max(1.0, 1.2 * r_half), max(4.0, 1.2 * r_half + 0.5))
        ring = _ring_shape(rng, radius, _u(rng, 0.08, 0.3), int(rng.integers(0, 8)), q, beta)
        ring_colour = draw_colour(rng, str(rng.choice(["starforming", "intermediate", "passive"])), z)
    else:  # a collisional or resonance ring galaxy, often with an off-centre nucleus
        mag = _u(rng, 16.5, 22.5)
        ring_frac = _u(rng, 0.3, 0.8)
        radius = _u(rng, 0.8, 4.0)
        r_half = _u(rng, 0.15, 0.6)
        host = _group("nucleus", [_sersic(_u(rng, 1.5, 4.0), r_half, _u(rng, 0.6, 1.0), beta)], mag,
                      draw_colour(rng, str(rng.choice(["passive", "intermediate"])), z), profile)
        shift = radius * _u(rng, 0.0, 0.35) if rng.random() < 0.5 else 0.0
        angle = _u(rng, 0.0, 2 * math.pi)
        ring = _ring_shape(rng, radius, _u(rng, 0.08, 0.35), int(rng.integers(0, 25)), q, beta,
                           shift * math.cos(angle), shift * math.sin(angle))
        ring_colour = draw_colour(rng, "starforming" if rng.random() < 0.8 else "intermediate", z)
    host["mags"] = band_magnitudes(_frac_mag(mag, 1 - ring_frac), host["colour"], profile)
    groups = [host, _group("ring", [ring], _frac_mag(mag, ring_frac), ring_colour, profile)]
    return groups, None, {"main_mag": mag, "main_r_eff_arcsec": radius, "z_lens": z}


def _draw_sf_ring(rng: np.random.Generator, profile: SurveyProfile) -> Drawn:
    mag, z = _u(rng, 16.5, 22.5), _u(rng, 0.05, 0.7)
    r_disc = _size(rng, mag, 1.8, 0.6, 4.5)
    q, beta = _u(rng, 0.4, 1.0), _u(rng, 0.0, math.pi)
    bulge_frac, ring_frac = _u(rng, 0.1, 0.4), _u(rng, 0.15, 0.45)
    disc_frac = 1.0 - bulge_frac - ring_frac
    radius = _u(rng, 0.4, max(0.5, min(2.0, 1.2 * r_disc)))
    ring = _ring_shape(rng, radius, _u(rng, 0.08, 0.25), int(rng.integers(5, 26)), q, beta)
    groups = [
        _group("bulge", [_sersic(_u(rng, 1.5, 4.0), _u(rng, 0.15, 0.5), _u(rng, 0.6, 1.0), beta)],
               _frac_mag(mag, bulge_frac), draw_colour(rng, "passive", z), profile),
        _group("disc", [_sersic(1.0, r_disc, q, beta)], _frac_mag(mag, disc_frac), draw_colour(rng, "intermediate", z),
               profile),
        _group("ring", [ring], _frac_mag(mag, ring_frac), draw_colour(rng, "starforming", z), profile),
    ]
    return groups, None, {"main_mag": mag, "main_r_eff_arcsec": r_disc, "z_lens": z}


def _draw_merger(rng: np.random.Generator, profile: SurveyProfile) -> Drawn:
    z = _u(rng, 0.05, 0.8)
    mag1 = _u(rng, 16.5, 22.0)
    mag2 = mag1 + _u(rng, 0.0, 2.0)
    sep, angle = _u(rng, 0.6, 3.5), _u(rng, 0.0, 2 * math.pi)
    x2, y2 = sep * math.cos(angle), sep * math.sin(angle)
    groups = []
    for name, mag, x, y in (("primary", mag1, 0.0, 0.0), ("secondary", mag2, x2, y2)):
        shape = _sersic(_u(rng, 0.8, 4.0), _size(rng, mag, 0.9, 0.15, 3.0), _u(rng, 0.35, 1.0),
                        _u(rng, 0.0, math.pi), x, y)
        population = str(rng.choice(["passive", "intermediate", "starforming"]))
        groups.append(_group(name, [shape], mag, draw_colour(rng, population, z), profile))
    if rng.random() < 0.7:  # tidal tails curving around the pair
        total_flux = 10 ** (-0.4 * mag1) + 10 ** (-0.4 * mag2)
        for index in range(int(rng.integers(1, 3))):
            tail = {"type": "tail", "radius": sep * _u(rng, 0.8, 1.8), "start": _u(rng, 0.0, 2 * math.pi),
                    "extent": _u(rng, 0.8, 2.5) * float(rng.choice([-1.0, 1.0])), "width": _u(rng, 0.1, 0.35),
                    "seed": _seed(rng), "x": x2 / 2, "y": y2 / 2, "flux_frac": 1.0}
            tail_mag = -2.5 * math.log10(_u(rng, 0.05, 0.25) * total_flux)
            population = "starforming" if rng.random() < 0.5 else "intermediate"
            groups.append(_group(f"tail{index}", [tail], tail_mag, draw_colour(rng, population, z), profile))
    return groups, None, {"main_mag": mag1, "main_r_eff_arcsec": float("nan"), "z_lens": z}


def _draw_companion(rng: np.random.Generator, profile: SurveyProfile) -> Drawn:
    mag, z = _early_type_like_magnitude(rng), _u(rng, 0.1, 0.9)
    r_half = _size(rng, mag, 1.2, 0.2, 4.0)
    groups = [_early_type_group(rng, profile, "galaxy", mag, r_half, z)]
    for index in range(int(rng.integers(1, 5))):
        distance, angle = _u(rng, 0.8, 3.5), _u(rng, 0.0, 2 * math.pi)
        x, y = distance * math.cos(angle), distance * math.sin(angle)
        if rng.random() < 0.4:
            shape = {"type": "gaussian", "sigma": _u(rng, 0.05, 0.2), "x": x, "y": y, "flux_frac": 1.0}
        else:  # elongated, half of them tangentially like an arc
            beta = angle + math.pi / 2 if rng.random() < 0.5 else _u(rng, 0.0, math.pi)
            shape = _sersic(_u(rng, 0.5, 1.5), _u(rng, 0.1, 0.4), _u(rng, 0.2, 1.0), beta, x, y)
        u = rng.random()
        population = "starforming" if u < 0.75 else ("intermediate" if u < 0.9 else "passive")
        groups.append(_group(f"companion{index}", [shape], _u(rng, 20.5, 25.0),
                             draw_colour(rng, population, _u(rng, 0.3, 2.5)), profile))
    return groups, None, {"main_mag": mag, "main_r_eff_arcsec": r_half, "z_lens": z}


def _draw_edge_on(rng: np.random.Generator, profile: SurveyProfile) -> Drawn:
    mag, z = _u(rng, 16.5, 22.5), _u(rng, 0.05, 0.7)
    r_half = _size(rng, mag, 1.6, 0.5, 4.5)
    beta, inclination = _u(rng, 0.0, math.pi), math.radians(_u(rng, 80.0, 89.5))
    h_over_r = _u(rng, 0.05, 0.2)
    disc = {"type": "inclined", "r_half": r_half, "h_over_r": h_over_r, "inclination": inclination,
            "beta": beta, "x": 0.0, "y": 0.0, "flux_frac": 1.0}
    shapes = [disc]
    if rng.random() < 0.4:  # a dust lane: a thinner disc of negative light along the mid-plane
        lane = {**disc, "h_over_r": h_over_r / 3.0, "flux_frac": -_u(rng, 0.1, 0.25)}
        shapes.append(lane)
    bulge_frac = _u(rng, 0.05, 0.3) if rng.random() < 0.5 else 0.0
    groups = [_group("disc", shapes, _frac_mag(mag, 1 - bulge_frac),
                     draw_colour(rng, str(rng.choice(["intermediate", "starforming"])), z), profile)]
    if bulge_frac:
        bulge = _sersic(_u(rng, 1.5, 4.0), r_half * _u(rng, 0.15, 0.4), _u(rng, 0.5, 0.9), beta)
        groups.append(_group("bulge", [bulge], _frac_mag(mag, bulge_frac), draw_colour(rng, "passive", z), profile))
    return groups, None, {"main_mag": mag, "main_r_eff_arcsec": r_half, "z_lens": z}


_DRAWERS: dict[str, Callable[[np.random.Generator, SurveyProfile], Drawn]] = {
    "lens": _draw_lens, "elliptical": _draw_elliptical, "spiral": _draw_spiral, "ring": _draw_ring,
    "sf-ring": _draw_sf_ring, "merger": _draw_merger, "companion": _draw_companion, "edge-on": _draw_edge_on,
}
assert set(_DRAWERS) == set(KINDS)


def _neighbours(rng: np.random.Generator, profile: SurveyProfile, main_mag: float) -> list[dict[str, Any]]:
    """Unrelated galaxies in the stamp, a close bright neighbour now and then, and stars."""
    half_width = profile.stamp_size_px * profile.pixel_scale_arcsec / 2 + 1.0
    groups = []

    def position(low: float, high: float) -> tuple[float, float]:
        radius, angle = math.sqrt(_u(rng, low**2, high**2)), _u(rng, 0.0, 2 * math.pi)
        return radius * math.cos(angle), radius * math.sin(angle)

    for index in range(min(int(rng.poisson(1.2)), 4)):
        x, y = position(2.5, half_width)
        shape = _sersic(_u(rng, 0.8, 4.0), _u(rng, 0.1, 0.8), _u(rng, 0.3, 1.0), _u(rng, 0.0, math.pi), x, y)
        population = str(rng.choice(["passive", "intermediate", "starforming"]))
        groups.append(_group(f"field{index}", [shape], _u(rng, 21.0, 25.5), draw_colour(rng, population,
                                                                                        _u(rng, 0.1, 2.0)), profile))
    if rng.random() < 0.2:  # a blended neighbour of similar brightness
        x, y = position(1.5, 4.0)
        mag = float(np.clip(main_mag + _u(rng, -0.5, 2.5), 16.0, 25.0))
        shape = _sersic(_u(rng, 0.8, 5.0), _size(rng, mag, 0.9, 0.15, 2.5), _u(rng, 0.3, 1.0), _u(rng, 0.0, math.pi),
                        x, y)
        population = str(rng.choice(["passive", "intermediate", "starforming"]))
        groups.append(_group("field_neighbour", [shape], mag, draw_colour(rng, population, _u(rng, 0.1, 1.0)),
                             profile))
    if rng.random() < 0.15:
        x, y = position(2.0, 6.0)
        star_colour = {"population": "passive", "redshift": 0.0, "young": _u(rng, 0.0, 1.0), "av": 0.0,
                       "break_mag": _u(rng, 0.0, 0.5)}
        groups.append(_group("field_star", [{"type": "point", "x": x, "y": y, "flux_frac": 1.0}],
                             _u(rng, 15.0, 23.0), star_colour, profile))
    return groups


def draw_conditions(rng: np.random.Generator, profile: SurveyProfile) -> dict[str, Any]:
    """Seeing, PSF shape, depth, noise correlation, gain and background of one stamp."""
    best, worst = profile.seeing_range
    seeing = _log_u(rng, best, worst)
    nominal_ref = profile.psf_fwhm_arcsec[profile.reference_index]
    moffat = rng.random() < 0.6
    beta = _u(rng, 2.2, 5.0)
    g, g_angle = _u(rng, 0.0, 0.05), _u(rng, 0.0, math.pi)
    psf = [{"type": "moffat" if moffat else "kolmogorov", "beta": beta,
            "fwhm": float(seeing * nominal / nominal_ref * rng.uniform(0.96, 1.04)),
            "g1": g * math.cos(2 * g_angle), "g2": g * math.sin(2 * g_angle)} for nominal in profile.psf_fwhm_arcsec]
    depth = math.exp(rng.uniform(-1.0, 1.0) * math.log1p(profile.noise_jitter_frac))
    sky = [float(s * depth * rng.uniform(0.93, 1.07)) for s in profile.sky_sigma]
    noise = {"correlation_px": _u(rng, 0.4, 0.9) if rng.random() < 0.4 else 0.0,
             "gain": _log_u(rng, 5.0, 50.0) if rng.random() < 0.7 else 0.0}
    background: dict[str, Any] = {}
    if rng.random() < 0.5:
        background["gradient"] = [float(rng.normal(0.0, 0.5)), float(rng.normal(0.0, 0.5))]
    if rng.random() < 0.2:
        angle, distance = _u(rng, 0.0, 2 * math.pi), _u(rng, 0.6, 1.2) * profile.stamp_size_px
        background["bump"] = [_u(rng, 0.5, 3.0), distance * math.cos(angle), distance * math.sin(angle),
                              _u(rng, 0.25, 0.6) * profile.stamp_size_px]
    return {"psf": psf, "psf_fwhm_arcsec": [p["fwhm"] for p in psf], "sky_sigma": sky, "noise": noise,
            "background": background}


def draw_artefacts(rng: np.random.Generator, profile: SurveyProfile, sky_sigma: list[float]) -> dict[str, Any]:
    """Cosmic-ray tracks (one band each) and bad or hot columns, in stamp pixels."""
    size = profile.stamp_size_px
    rays = []
    for band, sigma in enumerate(sky_sigma):
        if rng.random() < 0.06:
            for _ in range(int(rng.integers(1, 3))):
                rays.append({"band": band, "x": _u(rng, 0, size), "y": _u(rng, 0, size), "length": _u(rng, 2.0, 12.0),
                             "angle": _u(rng, 0.0, math.pi), "amplitude": sigma * _log_u(rng, 5.0, 200.0)})
    columns = []
    if rng.random() < 0.04:
        band = int(rng.integers(0, len(sky_sigma)))
        columns.append({"band": band, "x": int(rng.integers(0, size)),
                        "value": None if rng.random() < 0.5 else sky_sigma[band] * _u(rng, 3.0, 30.0)})
    return {"cosmic_rays": rays, "bad_columns": columns}


def draw_parameters(rng: np.random.Generator, kind: str, profile: SurveyProfile | str, field_galaxies: bool = True,
                    conditions: dict[str, Any] | None = None, artefacts: bool = True,
                    population: int = POPULATION) -> dict[str, Any]:
    """Draw one object of ``kind`` with its observing conditions (see the module docstring).

    Args:
        rng: the only source of randomness.
        kind: one of :data:`lensnet.simulate.definitions.KINDS`.
        profile: survey profile or its name.
        field_galaxies: add unrelated neighbours and stars in the stamp (training stamps);
            mock surveys place real neighbours instead.
        conditions: fixed observing conditions (a mock survey's) instead of drawn ones.
        artefacts: draw cosmic rays and bad columns.
        population: version of the population (:data:`lensnet.simulate.definitions.POPULATIONS`).
    """
    profile = get_profile(profile)
    if kind not in _DRAWERS:
        raise ValueError(f"unknown kind {kind!r}; known kinds: {', '.join(KINDS)}")
    population = check_population(population)
    observing = conditions if conditions is not None else draw_conditions(rng, profile)
    groups, lens, meta = _draw_lens(rng, profile, population) if kind == "lens" else _DRAWERS[kind](rng, profile)
    if field_galaxies:
        groups += _neighbours(rng, profile, float(meta["main_mag"]))
    return {
        "engine": ENGINE, "kind": kind, "profile": profile.name, "is_lens": kind == "lens", **observing,
        "artefacts": draw_artefacts(rng, profile, observing["sky_sigma"]) if artefacts else
        {"cosmic_rays": [], "bad_columns": []},
        "lens": lens, "groups": groups, "meta": meta,
    }
