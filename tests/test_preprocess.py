"""Tests for lensnet.preprocess: golden values, bad-pixel handling, robustness, resampling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lensnet import preprocess as pp

# A 1x1x3x3 ramp 1..9: every statistic below can be worked out by hand.
RAMP = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
MAD_SIGMA_RAMP = 2.0 * pp.MAD_TO_SIGMA  # median 5, |x - 5| = 4,3,2,1,0,1,2,3,4 -> MAD 2


def _gaussian_stamp(
    size_px: int = 33, sigma_px: float = 2.0, centre_px: float | None = None
) -> np.ndarray:
    """A (1, 2, size, size) stamp with a round Gaussian source in both bands."""
    centre = (size_px - 1) / 2 if centre_px is None else centre_px
    yy, xx = np.mgrid[:size_px, :size_px]
    source = np.exp(-((yy - centre) ** 2 + (xx - centre) ** 2) / (2 * sigma_px**2))
    return np.stack([source, 3.0 * source])[np.newaxis]


def _centroid_px(image: np.ndarray) -> tuple[float, float]:
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    total = image.sum()
    return float((yy * image).sum() / total), float((xx * image).sum() / total)


# --------------------------------------------------------------------------------------
# Golden values
# --------------------------------------------------------------------------------------


def test_minmax_golden() -> None:
    np.testing.assert_allclose(pp.minmax(RAMP), (RAMP - 1.0) / 8.0, rtol=1e-7)


def test_percentile_clip_bom_golden() -> None:
    # n = 9, linear interpolation: P0.1 at index 8 * 0.001 -> 1.008; P99 at 7.92 -> 8.92.
    lower, upper = 1.008, 8.92
    expected = (np.clip(RAMP, lower, upper) - lower) / (upper - lower)
    out = pp.percentile_clip(RAMP, scheme="bom")
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert out.min() == 0.0 and out.max() == 1.0


def test_percentile_clip_challenge_golden() -> None:
    # -x sorted is -9..-1; its P99.9 at index 7.992 -> -1.008, so the lower bound is 1.008;
    # the upper bound P98 at index 7.84 -> 8.84 (Bom et al. 2022, sec. 2.2).
    lower, upper = 1.008, 8.84
    expected = (np.clip(RAMP, lower, upper) - lower) / (upper - lower)
    np.testing.assert_allclose(pp.percentile_clip(RAMP, scheme="challenge"), expected, rtol=1e-6)


def test_percentile_clip_custom_bounds_and_errors() -> None:
    # P25 of 1..9 is 3, P75 is 7.
    expected = (np.clip(RAMP, 3.0, 7.0) - 3.0) / 4.0
    np.testing.assert_allclose(pp.percentile_clip(RAMP, lower=25, upper=75), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="scheme"):
        pp.percentile_clip(RAMP, scheme="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lower"):
        pp.percentile_clip(RAMP, lower=60, upper=50)


def test_percentile_clip_matches_numpy_nanpercentile() -> None:
    rng = np.random.default_rng(3)
    x = rng.lognormal(size=(5, 3, 11, 13))
    x[rng.random(x.shape) < 0.2] = np.nan
    expected = np.empty_like(x)
    for i, j in np.ndindex(*x.shape[:2]):
        lo, hi = np.nanpercentile(x[i, j], [0.1, 99.0])
        expected[i, j] = (np.clip(x[i, j], lo, hi) - lo) / (hi - lo)
    expected[np.isnan(x)] = 0.0
    np.testing.assert_allclose(pp.percentile_clip(x), expected, rtol=1e-6, atol=1e-7)


def test_zscale_golden() -> None:
    # Samples 1..9 lie on a line of slope 1 (in sample index); IRAF zscale divides the
    # slope by the contrast and sets vmin = median - (centre - 1) * slope,
    # vmax = median + (npix - centre) * slope, with centre = (9 - 1) // 2 = 4, clamped to
    # the data range. contrast = 1: [5 - 3, 5 + 5] -> [2, 9].
    np.testing.assert_allclose(
        pp.zscale(RAMP, contrast=1.0), np.clip((RAMP - 2.0) / 7.0, 0.0, 1.0), rtol=1e-6, atol=1e-7
    )
    # contrast = 0.25: slope 4 -> [5 - 12, 5 + 20] clamped to [1, 9].
    np.testing.assert_allclose(pp.zscale(RAMP), (RAMP - 1.0) / 8.0, rtol=1e-6, atol=1e-7)


def test_zscale_degenerate_limits_fall_back_to_range() -> None:
    # Mostly zeros with one bright pixel: the zscale slope is 0 (vmin = vmax = 0); the
    # documented fallback uses the full data range so the source is not lost.
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 10.0
    out = pp.zscale(x)
    assert out[0, 0, 2, 2] == 1.0
    assert np.count_nonzero(out) == 1


def test_noise_clip_golden() -> None:
    np.testing.assert_allclose(pp.noise_clip(RAMP), RAMP / MAD_SIGMA_RAMP, rtol=1e-6)
    np.testing.assert_allclose(
        pp.noise_clip(RAMP, k=2.0), np.clip(RAMP / MAD_SIGMA_RAMP, -2.0, 2.0), rtol=1e-6
    )
    np.testing.assert_allclose(
        pp.noise_clip(RAMP, subtract_median=True),
        (RAMP - 5.0) / MAD_SIGMA_RAMP,
        rtol=1e-6,
        atol=1e-7,
    )
    with pytest.raises(ValueError, match="k must"):
        pp.noise_clip(RAMP, k=0.0)


def test_noise_clip_mad_zero_falls_back_to_rms() -> None:
    # Seven zeros and two ones: the MAD is 0, so the RMS about the median (0) is used.
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 0, :2] = 1.0
    rms = np.sqrt(2.0 / 9.0)
    np.testing.assert_allclose(pp.noise_clip(x), x / rms, rtol=1e-6)


def test_asinh_stretch_golden() -> None:
    expected = np.arcsinh((RAMP - 5.0) / (3.0 * MAD_SIGMA_RAMP))
    np.testing.assert_allclose(pp.asinh_stretch(RAMP), expected, rtol=1e-6, atol=1e-7)
    expected = np.arcsinh(RAMP / MAD_SIGMA_RAMP)
    np.testing.assert_allclose(
        pp.asinh_stretch(RAMP, scale=1.0, subtract_median=False), expected, rtol=1e-6
    )
    with pytest.raises(ValueError, match="scale"):
        pp.asinh_stretch(RAMP, scale=-1.0)


# --------------------------------------------------------------------------------------
# Bad pixels, degenerate images, layout
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(pp.NORMALISATIONS))
def test_nan_and_mask_are_equivalent_and_zeroed(method: str) -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 2, 9, 9))
    mask = np.zeros(x.shape, dtype=bool)
    mask[1, 0, 4, 4] = True
    mask[2, 1, 0, :3] = True
    with_nan = np.where(mask, np.nan, x)

    out_mask, flags_mask = pp.normalise(x, method, mask=mask)
    out_nan, flags_nan = pp.normalise(with_nan, method)

    np.testing.assert_array_equal(out_mask, out_nan)
    assert np.all(out_mask[mask] == 0.0)
    np.testing.assert_array_equal(flags_mask, [False, True, True])
    np.testing.assert_array_equal(flags_nan, [False, True, True])
    # The bad pixel is excluded from the statistics: a huge value there changes nothing.
    spiked = np.where(mask, 1e30, x)
    np.testing.assert_array_equal(pp.normalise(spiked, method, mask=mask)[0], out_mask)


def test_masked_pixel_golden() -> None:
    mask = np.zeros(RAMP.shape, dtype=bool)
    mask[0, 0, 2, 2] = True  # the 9
    expected = np.where(mask, 0.0, (RAMP - 1.0) / 7.0)
    out, flags = pp.normalise(RAMP, "minmax", mask=mask)
    np.testing.assert_allclose(out, expected, rtol=1e-7)
    np.testing.assert_array_equal(flags, [True])


@pytest.mark.parametrize("method", sorted(pp.NORMALISATIONS))
def test_degenerate_images(method: str) -> None:
    x = np.stack(
        [
            np.full((2, 4, 4), np.nan),  # all bad
            np.full((2, 4, 4), 7.5),  # constant
        ]
    )
    x[1, 1] = -3e-300  # constant and tiny in the other band
    out, flags = pp.normalise(x, method)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.zeros_like(out))
    np.testing.assert_array_equal(flags, [True, False])


@pytest.mark.parametrize("method", sorted(pp.NORMALISATIONS))
def test_bands_are_independent_and_scale_invariant(method: str) -> None:
    rng = np.random.default_rng(11)
    x = rng.lognormal(size=(4, 3, 10, 10))
    reference = pp.NORMALISATIONS[method](x)
    scaled = x.copy()
    scaled[:, 1] *= 2.0**40  # exact in binary floating point
    out = pp.NORMALISATIONS[method](scaled)
    np.testing.assert_array_equal(out[:, [0, 2]], reference[:, [0, 2]])
    np.testing.assert_array_equal(out[:, 1], reference[:, 1])
    # A non-power-of-two rescaling of one band: the others are untouched.
    scaled[:, 1] *= 1e7
    out = pp.NORMALISATIONS[method](scaled)
    np.testing.assert_array_equal(out[:, [0, 2]], reference[:, [0, 2]])


@pytest.mark.parametrize("method", sorted(pp.NORMALISATIONS))
def test_single_image_layout(method: str) -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    batch, flags = pp.normalise(x, method)
    single, flag = pp.normalise(x[1], method)
    assert single.shape == (3, 8, 8) and flag.shape == ()
    np.testing.assert_array_equal(single, batch[1])
    assert not flags.any() and not flag


def test_normalise_errors() -> None:
    with pytest.raises(ValueError, match="known: .*minmax"):
        pp.normalise(RAMP, "no-such-method")
    with pytest.raises(ValueError, match="shape"):
        pp.minmax(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="mask shape"):
        pp.minmax(RAMP, mask=np.zeros((3, 3), dtype=bool))
    with pytest.raises(ValueError, match="boolean"):
        pp.minmax(RAMP, mask=np.zeros(RAMP.shape))


# --------------------------------------------------------------------------------------
# Property tests: finite output for any finite-or-NaN input
# --------------------------------------------------------------------------------------

_stamp_shapes = hnp.array_shapes(min_dims=4, max_dims=4, min_side=1, max_side=5)
_stamps64 = hnp.arrays(
    np.float64, _stamp_shapes, elements=st.floats(allow_nan=True, allow_infinity=False)
)
_stamps32 = hnp.arrays(
    np.float32, _stamp_shapes, elements=st.floats(allow_nan=True, allow_infinity=False, width=32)
)


@pytest.mark.parametrize("method", sorted(pp.NORMALISATIONS))
@settings(max_examples=100, deadline=None)
@given(stamps=st.one_of(_stamps64, _stamps32), data=st.data())
def test_output_always_finite(method: str, stamps: np.ndarray, data: st.DataObject) -> None:
    mask = data.draw(st.none() | hnp.arrays(np.bool_, stamps.shape))
    out, flags = pp.normalise(stamps, method, mask=mask)
    assert out.dtype == np.float32
    assert out.shape == stamps.shape
    assert np.all(np.isfinite(out))
    bad = np.isnan(stamps) if mask is None else np.isnan(stamps) | mask
    assert np.all(out[bad] == 0.0)
    np.testing.assert_array_equal(flags, bad.any(axis=(1, 2, 3)))
    if method in ("minmax", "percentile_clip", "zscale"):
        assert out.min() >= 0.0 and out.max() <= 1.0
    if method == "noise_clip":
        assert np.abs(out).max() <= 250.0


@settings(max_examples=100, deadline=None)
@given(
    stamps=hnp.arrays(
        np.float64,
        _stamp_shapes,
        elements=st.floats(-1e30, 1e30) | st.just(np.nan),
    ),
    factor=st.sampled_from([0.25, 1 / 3, 0.5, 1.0, 2.0, 2.63, 3.0]),
    out_size_px=st.none() | st.integers(1, 9),
)
def test_resample_shape_and_finiteness(
    stamps: np.ndarray, factor: float, out_size_px: int | None
) -> None:
    out = pp.resample(stamps, factor, out_size_px)
    height, width = stamps.shape[-2:]
    expected = (
        (out_size_px, out_size_px)
        if out_size_px is not None
        else (max(1, round(height * factor)), max(1, round(width * factor)))
    )
    assert out.shape == stamps.shape[:2] + expected
    assert out.dtype == np.float64
    if not np.isnan(stamps).any():
        assert np.all(np.isfinite(out))


# --------------------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("antialias", [True, False])
def test_resample_upsampling_conserves_flux_and_centre(antialias: bool) -> None:
    stamp = _gaussian_stamp(33)  # 0.3"/px -> 0.1"/px
    out = pp.resample(stamp, 3.0, antialias=antialias, conserve_flux=True)
    assert out.shape == (1, 2, 99, 99)
    np.testing.assert_allclose(out.sum(axis=(-2, -1)), stamp.sum(axis=(-2, -1)), rtol=1e-12)
    for band in range(2):
        np.testing.assert_allclose(_centroid_px(out[0, band]), (49.0, 49.0), atol=1e-9)
        assert np.unravel_index(out[0, band].argmax(), (99, 99)) == (49, 49)
    # Default: surface brightness is preserved, so the total flux grows by factor**2.
    default = pp.resample(stamp, 3.0, antialias=antialias)
    np.testing.assert_allclose(
        default.sum(axis=(-2, -1)), 9.0 * stamp.sum(axis=(-2, -1)), rtol=1e-12
    )
    np.testing.assert_allclose(default.max(), stamp.max(), rtol=0.02)


def test_resample_downsampling_conserves_flux_and_centre() -> None:
    stamp = _gaussian_stamp(99, sigma_px=6.0)  # 0.1"/px -> 0.3"/px
    out = pp.resample(stamp, 1.0 / 3.0, conserve_flux=True)
    assert out.shape == (1, 2, 33, 33)
    np.testing.assert_allclose(out.sum(axis=(-2, -1)), stamp.sum(axis=(-2, -1)), rtol=1e-3)
    np.testing.assert_allclose(_centroid_px(out[0, 0]), (16.0, 16.0), atol=1e-9)


@pytest.mark.parametrize("out_size_px", [41, 64, 99, 100, 120])
def test_resample_to_fixed_size_keeps_centre(out_size_px: int) -> None:
    out = pp.resample(_gaussian_stamp(33), 3.0, out_size_px=out_size_px)
    assert out.shape == (1, 2, out_size_px, out_size_px)
    centre = (out_size_px - 1) / 2
    np.testing.assert_allclose(_centroid_px(out[0, 1]), (centre, centre), atol=1e-6)


def test_resample_off_centre_source_maps_to_new_coordinates() -> None:
    # Pixel-edge alignment: input pixel centre c maps to (c + 0.5) * factor - 0.5.
    stamp = _gaussian_stamp(33, sigma_px=1.5, centre_px=10.0)
    out = pp.resample(stamp, 3.0)
    np.testing.assert_allclose(_centroid_px(out[0, 0]), (31.0, 31.0), atol=1e-6)


def test_resample_bad_pixels_and_dtype() -> None:
    stamp = _gaussian_stamp(15).astype(np.float32)
    stamp[0, 0, 3, 3] = np.nan
    out = pp.resample(stamp, 2.0)
    assert out.dtype == np.float32 and out.shape == (1, 2, 30, 30)
    nan = np.isnan(out)
    assert nan[0, 0, 6:8, 6:8].all()  # the footprint of the bad pixel
    assert not nan[0, 1].any() and nan[0, 0].sum() < 20
    single = pp.resample(stamp[0], 0.5, out_size_px=9, mode="bicubic")
    assert single.shape == (2, 9, 9)


def test_resample_errors() -> None:
    with pytest.raises(ValueError, match="factor"):
        pp.resample(RAMP, 0.0)
    with pytest.raises(ValueError, match="out_size_px"):
        pp.resample(RAMP, 2.0, out_size_px=0)
    with pytest.raises(ValueError, match="mode"):
        pp.resample(RAMP, 2.0, mode="nearest")  # type: ignore[arg-type]
