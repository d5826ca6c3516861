"""Float32 inference-time normalisations, checked against the float64 reference.

:mod:`lensnet.preprocess.reference` is the reference: float64, exact power-of-two rescaling, any
input. On a CPU it costs about as much as a small network's forward pass, mostly in
``np.arcsinh`` (no SIMD kernel) and float64 sorts. The functions here compute the same
statistics in float32 over whole chunks:

* the median and the MAD come from float32 sorts (numpy's SIMD sort); the order
  statistics are exactly the reference's, the MAD differs from it by the float32
  rounding of ``|x - median|``;
* ``arcsinh(r)`` is ``sign(r) log(|r| + sqrt(r^2 + 1))``, whose float32 ``log`` and
  ``sqrt`` are vectorised.

An image-band the fast path cannot take with float32 accuracy goes through the
reference instead: one with a bad pixel (or a masked one), a zero MAD (the reference
then falls back to the RMS), or a dynamic range where float32 would overflow or lose
the noise (``|x - median| / sigma`` beyond 1e15, or values beyond 1e30 or below 1e-30
in magnitude). Whole stamps are rerouted, so an output never mixes the two paths.

The outputs agree with the reference to an absolute 2e-6 plus a relative 2e-6 (a test
checks that over random and adversarial stamps, and that the default model's logits
move by less than 1e-4); both are far below the noise the model was trained on.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from lensnet.preprocess import reference
from lensnet.preprocess.stats import MAD_TO_SIGMA, as_batch

#: Agreement with the reference promised by this module (and tested).
ATOL = 2e-6
RTOL = 2e-6

# Beyond these, float32 arithmetic on the pixels or on (x - median) / sigma is not safe.
_MAX_ABS_VALUE = 1e30
_MIN_SIGMA = 1e-30
_MAX_RATIO = 1e15


def _middle(ordered: np.ndarray) -> np.ndarray:
    """Median of each sorted float32 row, in float64 (numpy's 'linear' rule)."""
    n = ordered.shape[-1]
    low = ordered[..., (n - 1) // 2].astype(np.float64)
    high = ordered[..., n // 2].astype(np.float64)
    return low + 0.5 * (high - low)


def _fast_rows(x: np.ndarray, scale: float, subtract_median: bool) -> tuple[np.ndarray, np.ndarray]:
    """The float32 stretch of every stamp, and which stamps it is valid for."""
    n, bands, height, width = x.shape
    rows = np.ascontiguousarray(x).reshape(n, bands, height * width)
    finite = np.isfinite(rows).all(axis=-1)
    in_range = np.abs(rows).max(axis=-1, initial=0.0) < _MAX_ABS_VALUE
    # The median is low + half with low and high the two middle values: x - low is exact
    # in float32 for pixels near the median, so rounding is relative to |x - median|,
    # never to |median| (which may be a large sky level above a small noise).
    ordered = np.sort(rows, axis=-1)
    size = rows.shape[-1]
    low = ordered[..., (size - 1) // 2, np.newaxis]
    half = (0.5 * (ordered[..., size // 2, np.newaxis].astype(np.float64) - low)).astype(np.float32)
    centred = rows - low
    centred -= half
    deviation = np.abs(centred)
    sigma = MAD_TO_SIGMA * _middle(np.sort(deviation, axis=-1))
    numerator = deviation if subtract_median else np.abs(rows)
    largest_ratio = numerator.max(axis=-1, initial=0.0) / np.where(sigma > 0, sigma, 1.0)
    fast = finite & in_range & (sigma > _MIN_SIGMA) & (largest_ratio < _MAX_RATIO)
    fast_stamp = fast.all(axis=-1)

    inverse = np.where(fast, 1.0 / (scale * np.where(fast, sigma, 1.0)), 0.0).astype(np.float32)[..., np.newaxis]
    ratio = centred if subtract_median else rows.copy()
    ratio *= inverse
    magnitude = np.abs(ratio)
    out = np.square(magnitude)
    out += np.float32(1.0)
    np.sqrt(out, out=out)
    out += magnitude
    np.log(out, out=out)
    np.copysign(out, ratio, out=out)
    out = out.reshape(x.shape)
    return out, fast_stamp


def asinh_stretch(
    stamps: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    scale: float = 3.0,
    subtract_median: bool = True,
) -> np.ndarray:
    """:func:`lensnet.preprocess.asinh_stretch` in float32 (see the module docstring)."""
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be positive and finite; got {scale}")
    x, single = as_batch(np.asarray(stamps))
    if mask is not None or x.dtype != np.float32 or x.shape[-1] * x.shape[-2] == 0:
        out = reference.asinh_stretch(x, mask=None if mask is None else np.asarray(mask).reshape(x.shape),
                                      scale=scale, subtract_median=subtract_median)
        return out[0] if single else out

    # Non-finite or extreme rows may warn below; they leave the fast path and are redone.
    with np.errstate(invalid="ignore", over="ignore"):
        out, fast_stamp = _fast_rows(x, scale, subtract_median)

    slow = np.flatnonzero(~fast_stamp)
    if len(slow):
        out[slow] = reference.asinh_stretch(x[slow], scale=scale, subtract_median=subtract_median)
    return out[0] if single else out


#: Fast implementations by normalisation name (the others have none and use the reference).
FAST_NORMALISATIONS: dict[str, Callable[..., np.ndarray]] = {"asinh_stretch": asinh_stretch}


def normalise(stamps: npt.ArrayLike, method: str, **params: object) -> tuple[np.ndarray, np.ndarray]:
    """:func:`lensnet.preprocess.normalise`, through the fast path where one exists."""
    function = FAST_NORMALISATIONS.get(method)
    if function is None:
        return reference.normalise(stamps, method, **params)
    x = np.asarray(stamps)
    normalised = function(x, **params)
    had_bad_pixels = ~np.isfinite(x).all(axis=(-3, -2, -1))
    return normalised, np.asarray(had_bad_pixels, dtype=bool)
