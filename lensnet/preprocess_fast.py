"""Moved to :mod:`lensnet.preprocess.fast`; this name stays importable for existing callers."""

from lensnet.preprocess.fast import ATOL, FAST_NORMALISATIONS, RTOL, asinh_stretch, normalise  # noqa: F401
