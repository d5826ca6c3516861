"""The torch normalisations used on GPUs agree with the NumPy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lensnet.preprocess import asinh_stretch as reference
from lensnet.preprocess.torch_backend import TORCH_NORMALISATIONS, asinh_stretch


@pytest.mark.parametrize("subtract_median", [True, False])
def test_matches_the_numpy_reference_on_realistic_stamps(subtract_median):
    rng = np.random.default_rng(1)
    stamps = rng.normal(3.0, 2.0, (16, 3, 33, 32)).astype(np.float32)
    stamps[:, :, 14:18, 14:18] += 200.0          # a bright core
    stamps[2, 1, :5] = np.nan                      # a bad strip
    stamps[3, 0] = np.nan                          # an empty band
    stamps[4, 2] = 7.0                             # a constant band
    stamps[5, 1, 0, 0] = np.inf
    expected = reference(stamps, scale=2.5, subtract_median=subtract_median)
    got = asinh_stretch(torch.from_numpy(stamps), scale=2.5, subtract_median=subtract_median).numpy()
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=2e-5)


@settings(max_examples=80, deadline=None)
@given(arrays(np.float32, (2, 2, 6, 5), elements=st.floats(width=32, allow_infinity=False) | st.just(float("nan"))))
def test_output_is_finite_and_agrees_on_arbitrary_inputs(stamps):
    got = asinh_stretch(torch.from_numpy(stamps)).numpy()
    assert got.shape == stamps.shape and np.isfinite(got).all()
    np.testing.assert_allclose(got, reference(stamps), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("seed", range(20))
def test_agrees_with_the_reference_over_sky_levels_and_noise(seed):
    # Sky levels far above the noise stress the median subtraction.
    rng = np.random.default_rng(seed)
    sky, noise = rng.uniform(-1e4, 1e4), 10 ** rng.uniform(-3, 3)
    stamps = (sky + noise * rng.normal(size=(4, 3, 20, 20))).astype(np.float32)
    stamps[:, :, 8:12, 8:12] += noise * 10 ** rng.uniform(0, 4)
    stamps[rng.random(stamps.shape) < 0.02] = np.nan
    np.testing.assert_allclose(asinh_stretch(torch.from_numpy(stamps)).numpy(), reference(stamps), atol=1e-4, rtol=1e-4)


def test_registry_names_match_the_numpy_registry():
    from lensnet.preprocess import NORMALISATIONS

    assert set(TORCH_NORMALISATIONS) <= set(NORMALISATIONS)
