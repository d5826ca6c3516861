"""Robust per-image-band statistics shared by the float64 normalisations.

Stamps are staged by :func:`_prepare` (a float64 copy, bad pixels as NaN, each
image-band divided by an exact power of two) and finished by :func:`_finish` (bad
pixels set to 0 after normalisation, float32); see :mod:`lensnet.preprocess` for the
contract these serve.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: Ratio of the standard deviation to the median absolute deviation for Gaussian noise.
MAD_TO_SIGMA = 1.482602218505602


def as_batch(x: np.ndarray) -> tuple[np.ndarray, bool]:
    """``x`` as a (n, bands, H, W) batch, and whether a leading axis was added to a (bands, H, W) stamp."""
    single = x.ndim == 3
    if single:
        x = x[np.newaxis]
    if x.ndim != 4:
        raise ValueError(f"stamps must have shape (n, bands, H, W) or (bands, H, W); got {x.shape}")
    return x, single


def _prepare(
    stamps: npt.ArrayLike, mask: npt.ArrayLike | None
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validate and stage the input for a normalisation.

    Returns:
        ``(x, bad, single)``: ``x`` is a float64 copy of shape (n, bands, H, W) with bad
        pixels set to NaN and each image-band divided by an exact power of two so that its
        largest good absolute value lies in [0.5, 1); ``bad`` is the boolean bad-pixel map;
        ``single`` says whether a leading axis was added to a (bands, H, W) input.
    """
    x, single = as_batch(np.array(stamps, dtype=np.float64))  # always a copy: it is modified below
    bad = ~np.isfinite(x)
    if mask is not None:
        mask_arr = np.asarray(mask)
        if mask_arr.shape != np.shape(stamps):
            raise ValueError(
                f"mask shape {mask_arr.shape} differs from stamps shape {np.shape(stamps)}"
            )
        if mask_arr.dtype != np.bool_ and not np.issubdtype(mask_arr.dtype, np.integer):
            raise ValueError(f"mask must be a boolean array (True = bad); got {mask_arr.dtype}")
        mask_arr = mask_arr.astype(bool)
        bad |= mask_arr[np.newaxis] if single else mask_arr
    x[bad] = np.nan

    # Exact power-of-two rescaling per image-band (see module docstring): frexp gives
    # max|x| = m * 2**e with m in [0.5, 1), and ldexp(x, -e) divides by 2**e exactly.
    max_abs = np.max(np.abs(np.where(bad, 0.0, x)), axis=(-2, -1), keepdims=True, initial=0.0)
    _, exponent = np.frexp(max_abs)
    x = np.ldexp(x, -exponent)
    return x, bad, single


def _finish(out: np.ndarray, bad: np.ndarray, single: bool) -> np.ndarray:
    """Zero the bad pixels (after normalisation), cast to float32 and restore the shape."""
    out = np.where(bad | ~np.isfinite(out), 0.0, out).astype(np.float32)
    return out[0] if single else out


def _row_quantiles(x: np.ndarray, quantiles: tuple[float, ...]) -> list[np.ndarray]:
    """NaN-ignoring quantiles of each image-band, fully vectorised.

    Equivalent to ``np.nanquantile(x, q, axis=(-2, -1), keepdims=True)`` with the default
    'linear' method (same virtual-index and interpolation formulas), but built on one
    sort of all rows instead of numpy's per-row Python loop for NaN-containing data.

    Args:
        x: array of shape (..., H, W) with bad pixels as NaN.
        quantiles: quantiles in [0, 1].

    Returns:
        One array of shape (..., 1, 1) per quantile; NaN where a row has no good pixel.
    """
    rows = x.reshape(*x.shape[:-2], -1)
    ordered = np.sort(rows, axis=-1)  # NaN sort to the end of each row
    n_good = np.count_nonzero(~np.isnan(rows), axis=-1)
    results = []
    for q in quantiles:
        # numpy's 'linear' method: virtual index (n - 1) q.
        virtual = (n_good - 1) * q
        below = np.clip(np.floor(virtual), 0, np.maximum(n_good - 1, 0)).astype(np.intp)
        above = np.minimum(below + 1, np.maximum(n_good - 1, 0))
        gamma = np.clip(virtual - below, 0.0, 1.0)
        a = np.take_along_axis(ordered, below[..., np.newaxis], axis=-1)[..., 0]
        b = np.take_along_axis(ordered, above[..., np.newaxis], axis=-1)[..., 0]
        # numpy's _lerp: interpolate from the nearer end for accuracy.
        diff = b - a
        value = np.where(gamma >= 0.5, b - diff * (1.0 - gamma), a + diff * gamma)
        value = np.where(n_good > 0, value, np.nan)
        results.append(value[..., np.newaxis, np.newaxis])
    return results


def _rescale_to_unit(x: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Clip to [lower, upper] and map that interval linearly onto [0, 1].

    Image-bands with ``upper <= lower`` (or NaN bounds) map to zeros.
    """
    valid = upper > lower  # False for NaN bounds too
    lower_safe = np.where(valid, lower, 0.0)
    upper_safe = np.where(valid, upper, 1.0)
    clipped = np.clip(x, lower_safe, upper_safe)
    # Clipping first keeps the ratio within [0, 1] even for a subnormal range.
    out = np.divide(clipped - lower_safe, upper_safe - lower_safe)
    return np.where(valid, np.clip(out, 0.0, 1.0), 0.0)


def robust_sigma(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Robust per-image-band location and noise scale of NaN-masked stamps.

    The scale is ``1.4826 * MAD`` (median absolute deviation about the median), which
    equals the standard deviation for Gaussian noise and ignores the bright galaxy and
    arcs. Where more than half of the good pixels share one value the MAD is 0; the
    root-mean-square deviation about the median is used instead, which is 0 only for a
    constant image-band.

    Args:
        x: array of shape (..., H, W), bad pixels as NaN.

    Returns:
        ``(median, sigma)``, each of shape (..., 1, 1); NaN where a row has no good pixel.
    """
    (median,) = _row_quantiles(x, (0.5,))
    deviation = np.abs(x - median)
    (mad,) = _row_quantiles(deviation, (0.5,))
    sigma = MAD_TO_SIGMA * mad
    n_good = np.count_nonzero(~np.isnan(x), axis=(-2, -1), keepdims=True)
    squared = np.where(np.isnan(deviation), 0.0, deviation) ** 2
    rms = np.sqrt(np.sum(squared, axis=(-2, -1), keepdims=True) / np.maximum(n_good, 1))
    sigma = np.where(sigma > 0, sigma, rms)
    return median, np.where(n_good > 0, sigma, np.nan)
