"""Simulated strong lenses and look-alikes for training and testing lens finders.

Lensing is done with lenstronomy (SIE + external shear deflectors, extended Sersic
sources with star-forming clumps); non-lenses are the usual false positives. Typical use::

    from lensnet.simulate import simulate_stamps, generate_dataset

    stamps, truth = simulate_stamps(1000, "ground-gri", seed=1)
    generate_dataset("data/train", n=100_000, profile="ground-gri", seed=1)

or ``python -m lensnet.simulate --out data/train -n 100000 --profile ground-gri``.
"""

from lensnet.simulate.dataset import generate_dataset
from lensnet.simulate.objects import DEFAULT_NON_LENS_WEIGHTS, KINDS, NON_LENS_KINDS, draw_conditions, draw_parameters
from lensnet.simulate.profiles import PROFILES, SurveyProfile, get_profile
from lensnet.simulate.rendering import render
from lensnet.simulate.stamps import draw_kinds, simulate_stamps, truth_record

__all__ = [
    "DEFAULT_NON_LENS_WEIGHTS",
    "KINDS",
    "NON_LENS_KINDS",
    "PROFILES",
    "SurveyProfile",
    "draw_conditions",
    "draw_kinds",
    "draw_parameters",
    "generate_dataset",
    "get_profile",
    "render",
    "simulate_stamps",
    "truth_record",
]
