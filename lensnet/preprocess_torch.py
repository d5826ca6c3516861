"""Moved to :mod:`lensnet.preprocess.torch_backend`; this name stays importable for existing callers."""

from lensnet.preprocess.torch_backend import TORCH_NORMALISATIONS, asinh_stretch, robust_sigma  # noqa: F401
