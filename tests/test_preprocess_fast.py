"""The float32 normalisations used for CPU inference agree with the float64 references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lensnet import preprocess
from lensnet.preprocess import fast as preprocess_fast
from lensnet.preprocess.fast import ATOL, RTOL, asinh_stretch


def _agree(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("subtract_median", [True, False])
def test_matches_the_reference_on_realistic_stamps(subtract_median):
    rng = np.random.default_rng(1)
    stamps = rng.normal(3.0, 2.0, (16, 3, 33, 32)).astype(np.float32)
    stamps[:, :, 14:18, 14:18] += 200.0           # a bright core
    stamps[2, 1, :5] = np.nan                      # a bad strip
    stamps[3, 0] = np.nan                          # an empty band
    stamps[4, 2] = 7.0                             # a constant band
    stamps[5, 1, 0, 0] = np.inf
    stamps[6] *= np.float32(1e-33)                 # below the fast path's range
    stamps[7, 0] = 0.0
    stamps[7, 0, :3] = 1.0                         # zero MAD: the reference uses the RMS
    _agree(asinh_stretch(stamps, scale=2.5, subtract_median=subtract_median),
           preprocess.asinh_stretch(stamps, scale=2.5, subtract_median=subtract_median))


@pytest.mark.parametrize("seed", range(20))
def test_agrees_over_sky_levels_noise_and_bright_sources(seed):
    # A sky far above the noise stresses the median subtraction: float32 rounding must be
    # relative to |x - median|, not to the sky level.
    rng = np.random.default_rng(seed)
    sky, noise = rng.uniform(-1e4, 1e4), 10 ** rng.uniform(-3, 3)
    stamps = (sky + noise * rng.normal(size=(6, 3, 20, 21))).astype(np.float32)
    stamps[:, :, 8:12, 8:12] += noise * 10 ** rng.uniform(0, 6)
    stamps[0, 1, 3, 3] = np.nan
    _agree(asinh_stretch(stamps), preprocess.asinh_stretch(stamps))


@settings(max_examples=150, deadline=None)
@given(arrays(np.float32, (2, 2, 6, 5), elements=st.floats(width=32, allow_infinity=True, allow_nan=True)))
def test_finite_and_in_agreement_on_arbitrary_inputs(stamps):
    got = asinh_stretch(stamps)
    assert np.isfinite(got).all()
    _agree(got, preprocess.asinh_stretch(stamps))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 9), st.integers(0, 2**32 - 1))
def test_any_stamp_size_and_a_stamp_never_depends_on_its_chunk(height, width, seed):
    rng = np.random.default_rng(seed)
    stamps = rng.normal(size=(5, 2, height, width)).astype(np.float32)
    stamps[1, 0, 0, 0] = np.nan  # one stamp takes the reference path
    together = asinh_stretch(stamps)
    _agree(together, preprocess.asinh_stretch(stamps))
    for index in range(len(stamps)):
        np.testing.assert_array_equal(asinh_stretch(stamps[index]), together[index])


def test_inputs_other_than_float32_and_masks_use_the_reference_exactly():
    rng = np.random.default_rng(3)
    stamps = 1e5 + 1e-3 * rng.normal(size=(3, 2, 8, 8))  # float64 detail float32 would lose
    np.testing.assert_array_equal(asinh_stretch(stamps), preprocess.asinh_stretch(stamps))
    mask = rng.random(stamps.shape) < 0.1
    np.testing.assert_array_equal(asinh_stretch(stamps.astype(np.float32), mask=mask),
                                  preprocess.asinh_stretch(stamps.astype(np.float32), mask=mask))


def test_normalise_reports_bad_pixels_like_the_reference_and_rejects_bad_arguments():
    stamps = np.random.default_rng(4).normal(size=(4, 3, 10, 10)).astype(np.float32)
    stamps[2, 1, 4, 4] = np.nan
    got, bad = preprocess_fast.normalise(stamps, "asinh_stretch", scale=3.0)
    expected, expected_bad = preprocess.normalise(stamps, "asinh_stretch", scale=3.0)
    _agree(got, expected)
    np.testing.assert_array_equal(bad, expected_bad)
    assert bad.tolist() == [False, False, True, False]
    # A normalisation without a fast version is the reference itself.
    np.testing.assert_array_equal(preprocess_fast.normalise(stamps, "zscale")[0],
                                  preprocess.normalise(stamps, "zscale")[0])
    with pytest.raises(ValueError, match="scale must be positive"):
        asinh_stretch(stamps, scale=0.0)
    with pytest.raises(ValueError, match="shape"):
        asinh_stretch(stamps[0, 0])
    with pytest.raises(ValueError, match="unknown normalisation"):
        preprocess_fast.normalise(stamps, "nope")


def test_the_default_model_scores_the_same_through_either_path():
    from lensnet.checkpoint import load_model
    from lensnet.data import simulated_stamp_set
    from lensnet.predict import forward_logits

    loaded = load_model("default")
    stamps = simulated_stamp_set(profile="ground-gri", n=48, seed=11).stamps.astype(np.float32)
    fast, _ = preprocess_fast.normalise(stamps, "asinh_stretch", **loaded.config.normalisation_params)
    slow, _ = preprocess.normalise(stamps, "asinh_stretch", **loaded.config.normalisation_params)
    difference = np.abs(forward_logits(loaded, fast) - forward_logits(loaded, slow))
    assert difference.max() < 1e-4
