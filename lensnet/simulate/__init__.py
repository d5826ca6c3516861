"""Simulated strong lenses and look-alikes for training and testing lens finders.

Two independently written engines share only the survey profiles and the truth
definitions (:mod:`lensnet.simulate.definitions`):

``lenstronomy`` (this package)
    SIE + external shear deflectors, Sersic light, Moffat PSFs and star-forming clumps,
    all through lenstronomy, with its own population and colour model.
``galsim`` (:mod:`lensnet.simulate.galsim_engine`)
    elliptical power-law + shear deflectors ray-traced by caustics, GalSim light profiles
    (Sersic, random knots, inclined discs) and Moffat/Kolmogorov PSFs, GalSim noise, with
    its own population and colour model.

A model trained on one and measured on the other tells how far it generalises beyond
its simulator. Typical use::

    from lensnet.simulate import simulate_stamps, generate_dataset

    stamps, truth = simulate_stamps(1000, "ground-gri", seed=1)
    stamps, truth = simulate_stamps(1000, "ground-gri", seed=1, engine="galsim")
    generate_dataset("data/train", n=100_000, profile="ground-gri", seed=1, engine="galsim")

or ``python -m lensnet.simulate --out data/train -n 100000 --engine galsim``.
"""

from lensnet.simulate.dataset import generate_dataset
from lensnet.simulate.definitions import DEFAULT_NON_LENS_WEIGHTS, ENGINES, KINDS, NON_LENS_KINDS
from lensnet.simulate.objects import draw_conditions, draw_parameters, nominal_conditions
from lensnet.simulate.profiles import PROFILES, SurveyProfile, get_profile
from lensnet.simulate.rendering import render
from lensnet.simulate.stamps import draw_kinds, simulate_stamps, truth_record

__all__ = [
    "DEFAULT_NON_LENS_WEIGHTS",
    "ENGINES",
    "KINDS",
    "NON_LENS_KINDS",
    "PROFILES",
    "SurveyProfile",
    "draw_conditions",
    "draw_kinds",
    "draw_parameters",
    "generate_dataset",
    "get_profile",
    "nominal_conditions",
    "render",
    "simulate_stamps",
    "truth_record",
]
