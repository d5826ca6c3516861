"""Per-stamp image normalisations and resampling for lens-finding networks.

Every function here is a pure array function, vectorised over a chunk of stamps so that
it can be mapped over Dask blocks. Stamps have shape ``(n, bands, H, W)``; a single
image of shape ``(bands, H, W)`` is also accepted and returned without the leading axis.

Contract shared by every normalisation in :data:`NORMALISATIONS`:

* Statistics are computed **per image and per band**, so the output for one stamp never
  depends on which other stamps share its chunk, and rescaling one band leaves the
  others unchanged.
* Bad pixels are the non-finite ones (NaN, +-inf) plus those flagged ``True`` in the
  optional boolean ``mask`` (same shape as the stamps). They are excluded from the
  statistics and set to 0 **after** normalisation, as in Lanusse et al. (2018, sec. 3.3).
* The output is ``float32``, has the input's shape and is always finite, for any input
  of finite or NaN values: huge (~1e300) or tiny (subnormal) values, constant images
  and all-bad images included.
* Degenerate image-bands, i.e. constant ones (no spread among the good pixels, or fewer
  than one good pixel), normalise to all zeros. :func:`normalise` additionally reports
  which objects had bad pixels.

Overflow is avoided by first dividing each image-band by a power of two close to its
largest good absolute value. That division is exact in binary floating point, and every
normalisation here is invariant under a positive rescaling of its input, so it changes
nothing but the numerical range the statistics are computed in.

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

__all__ = [
    "MAD_TO_SIGMA",
    "NORMALISATIONS",
    "asinh_stretch",
    "minmax",
    "noise_clip",
    "normalise",
    "percentile_clip",
    "resample",
    "robust_sigma",
    "zscale",
]

#: Ratio of the standard deviation to the median absolute deviation for Gaussian noise.
MAD_TO_SIGMA = 1.482602218505602

# Percentile bounds of the two clipping schemes of Bom et al. (2022, sec. 2.2).
_PERCENTILE_SCHEMES: dict[str, tuple[float, float]] = {
    "bom": (0.1, 99.0),
    "challenge": (0.1, 98.0),  # lower bound taken as -(99.9th percentile of -x), see below
}

# Normalised values are clipped to this magnitude before arcsinh so that a vanishing
# (subnormal) noise estimate cannot produce inf; arcsinh(1e300) is only ~691.
_ASINH_INPUT_LIMIT = 1e300


# --------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------


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
    x = np.array(stamps, dtype=np.float64)  # always a copy: it is modified below
    single = x.ndim == 3
    if single:
        x = x[np.newaxis]
    if x.ndim != 4:
        raise ValueError(
            f"stamps must have shape (n, bands, H, W) or (bands, H, W); got {np.shape(stamps)}"
        )
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


# --------------------------------------------------------------------------------------
# Normalisations
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------------------


def _grid_size(size_in_px: int, factor: float, out_size_px: int | None) -> int:
    """Size of the resampled grid before cropping or padding to ``out_size_px``.

    Without a requested output size this is ``round(size * factor)``. With one, the
    nearest integer of the same parity as ``out_size_px`` is taken (the larger on a tie),
    so that the symmetric crop or pad keeps the stamp centre exactly on the centre.
    """
    natural = size_in_px * factor
    if out_size_px is None:
        return max(1, round(natural))
    candidates = [
        m
        for m in range(max(1, int(np.floor(natural)) - 1), int(np.ceil(natural)) + 2)
        if (m - out_size_px) % 2 == 0
    ]
    return min(candidates, key=lambda m: (abs(m - natural), -m))


def resample(
    stamps: npt.ArrayLike,
    factor: float,
    out_size_px: int | None = None,
    antialias: bool = True,
    *,
    mode: Literal["bilinear", "bicubic"] = "bilinear",
    conserve_flux: bool = False,
    fill_value: float = 0.0,
) -> np.ndarray:
    """Change the pixel scale of stamps, e.g. to feed one network with several surveys.

    ``factor = old_pixel_scale / new_pixel_scale``: 0.3"/px -> 0.1"/px is ``factor = 3``
    (upsampling), 0.1"/px -> 0.3"/px is ``factor = 1/3``. The work is done by
    :func:`torch.nn.functional.interpolate` with ``align_corners=False``, so pixel
    *edges* of the input and output grids coincide and the geometric centre of the stamp
    is preserved exactly; with ``antialias=True`` downsampling integrates over the
    footprint of each output pixel instead of point-sampling (it has no effect when
    upsampling).

    The output grid has ``round(H * factor)`` x ``round(W * factor)`` pixels, so the
    effective factor is ``round(H * factor) / H`` (exactly ``factor`` when ``H * factor``
    is an integer). With ``out_size_px`` the resampled stamp is then centre-cropped or
    padded with ``fill_value`` to ``out_size_px`` square; the intermediate grid size is
    chosen with the parity of ``out_size_px`` so the centre stays exact, which can change
    the effective factor by up to ``1 / (H * factor)`` relative.

    Flux semantics: interpolation preserves **surface brightness** (flux per pixel at the
    new scale equals the interpolated flux per pixel at the old one), so the total flux
    scales by about ``factor**2``. With ``conserve_flux=True`` the output is multiplied by
    the pixel-area ratio ``(H * W) / (H_out * W_out)`` of the two grids, which preserves
    total flux (exactly for bilinear upsampling by an integer factor of a source away
    from the edges, to interpolation accuracy otherwise).

    Bad pixels: any output pixel that draws weight from a non-finite input pixel is NaN,
    so it is masked and flagged by the normalisations downstream.

    Args:
        stamps: (n, bands, H, W) or (bands, H, W) array.
        factor: old / new pixel scale (> 0).
        out_size_px: optional final side length (square output).
        antialias: low-pass filter when downsampling.
        mode: "bilinear" or "bicubic" interpolation.
        conserve_flux: scale by the pixel-area ratio so that total flux is preserved.
        fill_value: value of pixels padded in to reach ``out_size_px``.

    Returns:
        Resampled array of the input's layout; float32 input stays float32, anything
        else becomes float64.
    """
    import torch  # deferred: the normalisations above do not need torch
    import torch.nn.functional as F

    if not (np.isfinite(factor) and factor > 0):
        raise ValueError(f"factor must be positive and finite; got {factor}")
    if out_size_px is not None and out_size_px < 1:
        raise ValueError(f"out_size_px must be >= 1; got {out_size_px}")
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"mode must be 'bilinear' or 'bicubic'; got {mode!r}")

    array = np.asarray(stamps)
    out_dtype = np.float32 if array.dtype == np.float32 else np.float64
    x = np.array(array, dtype=np.float64)
    single = x.ndim == 3
    if single:
        x = x[np.newaxis]
    if x.ndim != 4:
        raise ValueError(
            f"stamps must have shape (n, bands, H, W) or (bands, H, W); got {array.shape}"
        )
    height, width = x.shape[-2:]
    grid = (_grid_size(height, factor, out_size_px), _grid_size(width, factor, out_size_px))

    good = np.isfinite(x)
    with torch.no_grad():
        values = torch.from_numpy(np.where(good, x, 0.0))
        badness = torch.from_numpy((~good).astype(np.float64))
        kwargs = dict(size=grid, mode=mode, align_corners=False, antialias=antialias)
        out = F.interpolate(values, **kwargs).numpy()
        touched_bad = np.abs(F.interpolate(badness, **kwargs).numpy()) > 1e-12
    out = np.where(touched_bad, np.nan, out)
    if conserve_flux:
        out *= (height * width) / (grid[0] * grid[1])

    if out_size_px is not None:
        out = _crop_or_pad(out, out_size_px, fill_value)
    out = out.astype(out_dtype)
    return out[0] if single else out


def _crop_or_pad(x: np.ndarray, size_px: int, fill_value: float) -> np.ndarray:
    """Symmetrically centre-crop or pad the last two axes to ``size_px`` (same parity)."""
    for axis in (-2, -1):
        excess = x.shape[axis] - size_px
        if excess > 0:
            x = np.take(x, np.arange(excess // 2, excess // 2 + size_px), axis=axis)
        elif excess < 0:
            pad = [(0, 0)] * x.ndim
            pad[axis] = ((-excess) // 2, (-excess) - (-excess) // 2)
            x = np.pad(x, pad, constant_values=fill_value)
    return x
