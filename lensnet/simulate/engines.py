"""The simulation engines behind one small interface, for code that paints whole surveys.

Both engines describe an object by a JSON-able parameter dictionary and share this
interface (see :class:`Engine`); :func:`get_engine` returns one by name. Training sets use
:func:`lensnet.simulate.simulate_stamps` (which adds each engine's noise and artefacts);
mock surveys (:mod:`pipeline.mock`) draw objects under the survey's nominal conditions,
render noiseless windows at exact positions and add the noise per tile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lensnet.simulate.definitions import ENGINES, POPULATION
from lensnet.simulate.profiles import SurveyProfile, get_profile


@dataclass(frozen=True)
class Engine:
    """One simulation engine.

    Attributes:
        name: ``"lenstronomy"`` or ``"galsim"``.
        draw_parameters: ``(rng, kind, profile, conditions, population) -> params`` of an
            isolated object (no neighbours, stars or detector artefacts) under ``conditions``.
        nominal_conditions: ``profile -> conditions``: the survey's nominal PSF and noise.
        prepare: ``(params, profile) -> None``: settles what depends on the conditions
            (the GalSim engine sets a lensed source's brightness from its target S/N).
        render: ``(params, profile, size_px, offset_px, part) -> image`` (noiseless).
        truth_record: ``(params, profile, image, offset_px, arc_image) -> row``.
    """

    name: str
    draw_parameters: Callable[..., dict[str, Any]]
    nominal_conditions: Callable[[SurveyProfile], dict[str, Any]]
    prepare: Callable[[dict[str, Any], SurveyProfile], None]
    render: Callable[..., np.ndarray]
    truth_record: Callable[..., dict[str, Any]]


def _lenstronomy() -> Engine:
    from lensnet.simulate import objects, rendering, stamps

    def draw(rng: np.random.Generator, kind: str, profile: SurveyProfile, conditions: dict[str, Any],
             population: int = POPULATION) -> dict:
        return objects.draw_parameters(rng, kind, profile, field_galaxies=False, conditions=conditions,
                                       population=population)

    return Engine("lenstronomy", draw, objects.nominal_conditions, lambda params, profile: None, rendering.render,
                  stamps.truth_record)


def _galsim() -> Engine:
    from lensnet.simulate import galsim_engine as gs

    def draw(rng: np.random.Generator, kind: str, profile: SurveyProfile, conditions: dict[str, Any],
             population: int = POPULATION) -> dict:
        return gs.draw_parameters(rng, kind, profile, field_galaxies=False, conditions=conditions, artefacts=False,
                                  population=population)

    def nominal(profile: SurveyProfile) -> dict[str, Any]:
        psf = [{"type": "moffat", "beta": 3.0, "fwhm": float(f), "g1": 0.0, "g2": 0.0} for f in profile.psf_fwhm_arcsec]
        return {"psf": psf, "psf_fwhm_arcsec": list(profile.psf_fwhm_arcsec), "sky_sigma": list(profile.sky_sigma),
                "noise": {"correlation_px": 0.0, "gain": 0.0}, "background": {}}

    def prepare(params: dict[str, Any], profile: SurveyProfile) -> None:
        if params["is_lens"]:
            gs.calibrate_source(params, profile, profile.stamp_size_px)

    return Engine("galsim", draw, nominal, prepare, gs.render, gs.truth_record)


def get_engine(name: str) -> Engine:
    """The engine called ``name`` (one of :data:`lensnet.simulate.definitions.ENGINES`)."""
    if name == "lenstronomy":
        return _lenstronomy()
    if name == "galsim":
        return _galsim()
    raise ValueError(f"unknown simulation engine {name!r}; known engines: {', '.join(ENGINES)}")


__all__ = ["Engine", "get_engine", "get_profile"]
