"""The second, independently written simulation engine: GalSim light and PSFs, caustics lensing.

It shares no rendering or population code with the lenstronomy engine
(:mod:`lensnet.simulate`); both use the survey profiles and the truth definitions of
:mod:`lensnet.simulate.definitions`, so that a model trained on one can be measured on
the other (leave one simulator out). Select it with ``engine="galsim"`` in
:func:`lensnet.simulate.simulate_stamps`, data specs and ``python -m lensnet.simulate``.
"""

from lensnet.simulate.galsim_engine.population import draw_conditions, draw_parameters
from lensnet.simulate.galsim_engine.stamps import calibrate_source, observe, render, simulate_stamps, truth_record

__all__ = ["calibrate_source", "draw_conditions", "draw_parameters", "observe", "render", "simulate_stamps",
           "truth_record"]
