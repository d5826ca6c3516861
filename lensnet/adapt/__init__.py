"""Adapt a model to the user's survey: simulated arcs painted onto the survey's own galaxies.

``python -m pipeline.adapt RUN`` reads a finished ``run_survey.py`` run; this package chooses plausible
deflectors among its stamps (:mod:`lensnet.adapt.hosts`), adds lensed sources around them
(:mod:`lensnet.adapt.inject`), fine-tunes the run's model on those injections against the
survey's own stamps, and measures the survey's injection-recovery selection function
(:mod:`lensnet.adapt.runner`). ``run_survey.py --rescore RUN --model RUN/adapted`` then
scores the stored cutouts with the adapted model, without reading the tiles again.
"""

from lensnet.adapt.hosts import HostSelection, measure, select_hosts
from lensnet.adapt.inject import InjectionRecipe
from lensnet.adapt.runner import AdaptConfig, AdaptError, adapt

__all__ = ["AdaptConfig", "AdaptError", "HostSelection", "InjectionRecipe", "adapt", "measure",
           "select_hosts"]
