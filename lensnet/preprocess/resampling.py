"""Resampling stamps to another pixel scale (:func:`resample`), with bad pixels kept bad."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from lensnet.preprocess.stats import as_batch


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
    x, single = as_batch(np.array(array, dtype=np.float64))
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
