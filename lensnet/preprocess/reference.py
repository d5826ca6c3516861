"""The reference normalisations: float64, exact power-of-two rescaling, any input.

Each normalisation in :data:`NORMALISATIONS` follows the contract stated in
:mod:`lensnet.preprocess`. The faster float32 (:mod:`lensnet.preprocess.fast`) and torch
(:mod:`lensnet.preprocess.torch_backend`) implementations are checked against these.

References (plain text in ``shared/seeds``): Bom et al. 2022 (percentile clipping, their
sec. 2.2); Magro et al. LEXACTUM (ZScale); Lanusse et al. 2018, CMU DeepLens (noise
normalisation and clipping at k = 250 sigma, their sec. 3.3).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Literal

import numpy as np
import numpy.typing as npt
from astropy.visualization import ZScaleInterval

from lensnet.preprocess.stats import _finish, _prepare, _rescale_to_unit, _row_quantiles, robust_sigma

# Percentile bounds of the two clipping schemes of Bom et al. (2022, sec. 2.2).
_PERCENTILE_SCHEMES: dict[str, tuple[float, float]] = {
    "bom": (0.1, 99.0),
    "challenge": (0.1, 98.0),  # lower bound taken as -(99.9th percentile of -x), see below
}

# Normalised values are clipped to this magnitude before arcsinh so that a vanishing
# (subnormal) noise estimate cannot produce inf; arcsinh(1e300) is only ~691.
_ASINH_INPUT_LIMIT = 1e300


def minmax(stamps: npt.ArrayLike, mask: npt.ArrayLike | None = None) -> np.ndarray:
    """Map each image-band linearly onto [0, 1] using its good-pixel minimum and maximum.

    Args:
        stamps: (n, bands, H, W) or (bands, H, W) array.
        mask: optional boolean array of the same shape, True for bad pixels.

    Returns:
        float32 array of the input shape; constant or all-bad image-bands give zeros and
        bad pixels are 0.
    """
    x, bad, single = _prepare(stamps, mask)
    lower = np.min(np.where(bad, np.inf, x), axis=(-2, -1), keepdims=True)
    upper = np.max(np.where(bad, -np.inf, x), axis=(-2, -1), keepdims=True)
    return _finish(_rescale_to_unit(x, lower, upper), bad, single)


def percentile_clip(
    stamps: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    scheme: Literal["bom", "challenge"] = "bom",
    lower: float | None = None,
    upper: float | None = None,
) -> np.ndarray:
    """Clip each image-band to percentile bounds, then scale that range to [0, 1].

    The two contrast adjustments of Bom et al. (2022), sec. 2.2 "Pre-processing":

    ``scheme="bom"`` (their adopted one)
        lower bound = 0.1th percentile, upper bound = 99th percentile.
    ``scheme="challenge"`` (the one used for the II Strong Gravitational Lens Challenge)
        lower bound "by first inverting the image, taking the 99.9 percentile, and
        multiplying it by -1", i.e. ``-P_99.9(-x)``; upper bound = 98th percentile.
        With linear interpolation ``-P_99.9(-x)`` equals ``P_0.1(x)`` up to rounding; the
        published recipe is nevertheless followed literally.

    Bom et al. take percentiles of "the full-pixel intensity distribution of each band";
    here they are taken per image and band, so that a stamp's normalisation does not
    depend on the other stamps in its chunk.

    Args:
        stamps: (n, bands, H, W) or (bands, H, W) array.
        mask: optional boolean array of the same shape, True for bad pixels.
        scheme: "bom" or "challenge", see above.
        lower: lower-bound percentile in [0, 100]; ``None`` takes the scheme's value
            (0.1 for both). With ``scheme="challenge"`` it is evaluated as
            ``-P_(100 - lower)(-x)``.
        upper: upper-bound percentile in [0, 100]; ``None`` takes the scheme's value
            (99 for "bom", 98 for "challenge").

    Returns:
        float32 array of the input shape with values in [0, 1]; image-bands whose two
        bounds coincide (e.g. constant ones) and all-bad ones give zeros; bad pixels are 0.
    """
    if scheme not in _PERCENTILE_SCHEMES:
        raise ValueError(
            f"unknown scheme {scheme!r}; expected one of {sorted(_PERCENTILE_SCHEMES)}"
        )
    default_lower, default_upper = _PERCENTILE_SCHEMES[scheme]
    lower_pct = default_lower if lower is None else float(lower)
    upper_pct = default_upper if upper is None else float(upper)
    if not 0.0 <= lower_pct <= upper_pct <= 100.0:
        raise ValueError(
            f"need 0 <= lower <= upper <= 100; got lower={lower_pct}, upper={upper_pct}"
        )

    x, bad, single = _prepare(stamps, mask)
    (upper_value,) = _row_quantiles(x, (upper_pct / 100.0,))
    if scheme == "challenge":
        (inverted,) = _row_quantiles(-x, ((100.0 - lower_pct) / 100.0,))
        lower_value = -inverted
    else:
        (lower_value,) = _row_quantiles(x, (lower_pct / 100.0,))
    return _finish(_rescale_to_unit(x, lower_value, upper_value), bad, single)


def zscale(
    stamps: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    contrast: float = 0.25,
    n_samples: int = 1000,
    max_reject: float = 0.5,
    min_npixels: int = 5,
    krej: float = 2.5,
    max_iterations: int = 5,
) -> np.ndarray:
    """IRAF ZScale limits per image and band, then scale to [0, 1] and clip (LEXACTUM).

    Magro et al. normalise every image with ZScale; this applies
    :class:`astropy.visualization.ZScaleInterval` to the good pixels of each image-band
    and maps ``[vmin, vmax]`` onto [0, 1] with clipping, as astropy's interval does.
    The keyword arguments are passed to ``ZScaleInterval`` (astropy defaults).

    ZScale has no vectorised implementation, so this loops over image-bands (in Python);
    it is the slowest normalisation here.

    Degenerate limits: where ZScale returns ``vmax <= vmin`` (e.g. more than half of the
    pixels share one value, giving a zero slope) the full good-pixel range [min, max] is
    used instead; if that is also empty (constant image-band) the output is zeros.

    Args:
        stamps: (n, bands, H, W) or (bands, H, W) array.
        mask: optional boolean array of the same shape, True for bad pixels.
        contrast: ZScale contrast (0.25 in IRAF and astropy).
        n_samples, max_reject, min_npixels, krej, max_iterations: see
            :class:`astropy.visualization.ZScaleInterval`.

    Returns:
        float32 array of the input shape with values in [0, 1]; bad pixels are 0.
    """
    interval = ZScaleInterval(
        n_samples=n_samples,
        contrast=contrast,
        max_reject=max_reject,
        min_npixels=min_npixels,
        krej=krej,
        max_iterations=max_iterations,
    )
    x, bad, single = _prepare(stamps, mask)
    lower = np.full(x.shape[:2] + (1, 1), np.nan)
    upper = np.full_like(lower, np.nan)
    for i, j in np.ndindex(*x.shape[:2]):
        good = x[i, j][~bad[i, j]]
        if good.size == 0:
            continue  # NaN bounds -> zeros
        with warnings.catch_warnings():
            # polyfit may warn that a tiny or flat sample is badly conditioned; the
            # fallback below handles the resulting limits.
            warnings.simplefilter("ignore", np.exceptions.RankWarning)
            vmin, vmax = interval.get_limits(good)
        if not vmax > vmin:
            vmin, vmax = good.min(), good.max()
        lower[i, j], upper[i, j] = vmin, vmax
    return _finish(_rescale_to_unit(x, lower, upper), bad, single)


def noise_clip(
    stamps: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    k: float = 250.0,
    subtract_median: bool = False,
) -> np.ndarray:
    """Divide by a robust noise estimate and clip to [-k, k] (CMU DeepLens).

    Lanusse et al. (2018, sec. 3.3) subtract the training-set mean image, divide each band
    by the noise standard deviation and clip extreme values at ``k = 250`` sigma, then set
    masked pixels to 0. Here the noise is estimated per image and band as
    ``1.4826 * MAD`` (see :func:`robust_sigma`) instead of once over the data set, so the
    output of a stamp depends on that stamp only; subtracting a data-set mean image, if
    wanted, belongs upstream.

    Args:
        stamps: (n, bands, H, W) or (bands, H, W) array (sky-subtracted flux).
        mask: optional boolean array of the same shape, True for bad pixels.
        k: clipping bound in units of the noise sigma (> 0).
        subtract_median: subtract the per-image-band median (a background estimate)
            before dividing; off by default, as in DeepLens, which expects sky-subtracted
            images.

    Returns:
        float32 array of the input shape with values in [-k, k], in units of the noise
        sigma; constant (zero-noise) and all-bad image-bands give zeros; bad pixels are 0.
    """
    if not (np.isfinite(k) and 0 < k <= np.finfo(np.float32).max):
        raise ValueError(f"k must be positive and finite in float32; got {k}")
    x, bad, single = _prepare(stamps, mask)
    median, sigma = robust_sigma(x)
    centred = x - median if subtract_median else x
    valid = sigma > 0  # False for NaN
    with np.errstate(over="ignore"):  # |x| < 1 over a subnormal sigma: clipped to k below
        ratio = np.divide(centred, np.where(valid, sigma, 1.0))
    out = np.where(valid, np.clip(ratio, -k, k), 0.0)
    return _finish(out, bad, single)


def asinh_stretch(
    stamps: npt.ArrayLike,
    mask: npt.ArrayLike | None = None,
    scale: float = 3.0,
    subtract_median: bool = True,
) -> np.ndarray:
    """Noise-normalise robustly, then compress the dynamic range with arcsinh.

    ``out = arcsinh((x - median) / (scale * sigma))`` per image and band, with ``sigma``
    the robust noise of :func:`robust_sigma`. The stretch is linear for
    ``|x - median| << scale * sigma`` (noise and faint arcs keep their relative contrast)
    and logarithmic well above it (bright lens-galaxy cores are compressed rather than
    saturated), in the spirit of Lupton et al. (1999) magnitudes.

    Args:
        stamps: (n, bands, H, W) or (bands, H, W) array.
        mask: optional boolean array of the same shape, True for bad pixels.
        scale: softening in units of the noise sigma (> 0): the crossover between the
            linear and the logarithmic regime.
        subtract_median: subtract the per-image-band median (background) first.

    Returns:
        float32 array of the input shape; a noise-sigma pixel maps to about
        ``arcsinh(1/scale)``; values are bounded by about +-691; constant (zero-noise)
        and all-bad image-bands give zeros; bad pixels are 0.
    """
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be positive and finite; got {scale}")
    x, bad, single = _prepare(stamps, mask)
    median, sigma = robust_sigma(x)
    centred = x - median if subtract_median else x
    softening = scale * sigma
    valid = softening > 0  # False for NaN or underflow
    with np.errstate(over="ignore"):  # a subnormal softening may overflow; clipped next
        ratio = np.divide(centred, np.where(valid, softening, 1.0))
    ratio = np.clip(ratio, -_ASINH_INPUT_LIMIT, _ASINH_INPUT_LIMIT)
    out = np.where(valid, np.arcsinh(ratio), 0.0)
    return _finish(out, bad, single)


#: Normalisations by name, as referenced by ``ModelConfig.normalisation``. Each is called
#: as ``function(stamps, mask=None, **params)`` and returns a float32 array of the
#: stamps' shape.
NORMALISATIONS: dict[str, Callable[..., np.ndarray]] = {
    "zscale": zscale,
    "percentile_clip": percentile_clip,
    "noise_clip": noise_clip,
    "minmax": minmax,
    "asinh_stretch": asinh_stretch,
}


def normalise(
    stamps: npt.ArrayLike,
    method: str,
    mask: npt.ArrayLike | None = None,
    **params: object,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply a named normalisation and report which objects had bad pixels.

    Args:
        stamps: (n, bands, H, W) or (bands, H, W) array.
        method: a key of :data:`NORMALISATIONS`.
        mask: optional boolean array of the same shape, True for bad pixels.
        **params: keyword arguments for the normalisation.

    Returns:
        ``(normalised, had_bad_pixels)``: the float32 normalised stamps, and a boolean
        array of shape (n,) (shape () for a single image) that is True for objects with
        at least one NaN, infinite or masked pixel in any band.

    Raises:
        ValueError: for an unknown method (the message lists the known ones) or
            malformed input.
    """
    try:
        function = NORMALISATIONS[method]
    except KeyError:
        raise ValueError(
            f"unknown normalisation {method!r}; known: {', '.join(sorted(NORMALISATIONS))}"
        ) from None
    normalised = function(stamps, mask=mask, **params)

    bad = ~np.isfinite(np.asarray(stamps, dtype=np.float64))
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    had_bad_pixels = bad.any(axis=(-3, -2, -1))
    return normalised, np.asarray(had_bad_pixels, dtype=bool)
