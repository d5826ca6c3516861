"""Normalisations as torch operations, so they run where the model runs (GPU or CPU).

Each function here computes in float64 like its NumPy reference in
:mod:`lensnet.preprocess.reference` and matches it (a test compares them), but works on whole
batches in one pass on the device: at GPU inference speeds the NumPy versions would
leave the GPU waiting. Outputs are float32.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from lensnet.preprocess.stats import MAD_TO_SIGMA


def _row_median(rows: torch.Tensor, n_good: torch.Tensor) -> torch.Tensor:
    """Median of the first ``n_good`` values of each sorted row (numpy's 'linear' rule)."""
    last = (n_good - 1).clamp(min=0)
    below = torch.div(last, 2, rounding_mode="floor")
    above = torch.minimum(below + (last % 2), last)
    low = torch.gather(rows, -1, below.unsqueeze(-1)).squeeze(-1)
    high = torch.gather(rows, -1, above.unsqueeze(-1)).squeeze(-1)
    return torch.where(n_good > 0, 0.5 * (low + high), torch.full_like(low, float("nan")))


def robust_sigma(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image-band median, 1.4826*MAD (RMS about the median where the MAD is 0) and bad mask.

    ``x`` is (..., H, W); non-finite pixels are bad. Returns tensors of shape (..., 1, 1)
    and the (..., H, W) bad-pixel mask.
    """
    bad = ~torch.isfinite(x)
    rows = x.flatten(-2)
    bad_rows = bad.flatten(-2)
    n_good = (~bad_rows).sum(-1)
    infinity = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
    median = _row_median(torch.sort(torch.where(bad_rows, infinity, rows), dim=-1).values, n_good)
    deviation = (rows - median.unsqueeze(-1)).abs()
    mad = _row_median(torch.sort(torch.where(bad_rows, infinity, deviation), dim=-1).values, n_good)
    squared = torch.where(bad_rows, torch.zeros_like(deviation), deviation) ** 2
    rms = torch.sqrt(squared.sum(-1) / n_good.clamp(min=1))
    sigma = MAD_TO_SIGMA * mad
    sigma = torch.where(sigma > 0, sigma, rms)
    sigma = torch.where(n_good > 0, sigma, torch.full_like(sigma, float("nan")))
    return median[..., None, None], sigma[..., None, None], bad


def asinh_stretch(stamps: torch.Tensor, scale: float = 3.0, subtract_median: bool = True) -> torch.Tensor:
    """``arcsinh((x - median) / (scale * sigma))`` per image-band; bad pixels become 0.

    Matches :func:`lensnet.preprocess.asinh_stretch` (see there for the definition).
    """
    x = stamps.double()
    median, sigma, bad = robust_sigma(x)
    centred = x - median if subtract_median else x
    softening = scale * sigma
    valid = softening > 0
    limit = torch.finfo(torch.float64).max
    ratio = (centred / torch.where(valid, softening, torch.ones_like(softening))).nan_to_num(posinf=limit, neginf=-limit)
    out = torch.where(valid, torch.asinh(ratio), torch.zeros_like(ratio))
    return torch.where(bad | ~torch.isfinite(out), torch.zeros_like(out), out).float()


#: Normalisations with a torch implementation (same names as lensnet.preprocess.NORMALISATIONS).
TORCH_NORMALISATIONS: dict[str, Callable[..., torch.Tensor]] = {"asinh_stretch": asinh_stretch}


def normalise(stamps: np.ndarray | torch.Tensor, method: str, device: torch.device | str | None = None,
              **params: object) -> tuple[torch.Tensor, torch.Tensor]:
    """A named normalisation on a tensor; returns ``(normalised, had_bad_pixels)`` as tensors.

    A NumPy array is copied to ``device`` (float32) first; a tensor is normalised where
    it is. ``had_bad_pixels`` is True for stamps with a non-finite pixel in any band.
    """
    try:
        function = TORCH_NORMALISATIONS[method]
    except KeyError:
        raise ValueError(f"normalisation {method!r} has no torch implementation; those with one: "
                         f"{', '.join(sorted(TORCH_NORMALISATIONS))}") from None
    if isinstance(stamps, torch.Tensor):
        raw = stamps
    else:
        raw = torch.from_numpy(np.ascontiguousarray(stamps, dtype=np.float32))
        if device is not None:
            raw = raw.to(device, non_blocking=True)
    normalised = function(raw, **params)
    return normalised, ~torch.isfinite(raw).flatten(-3).all(dim=-1)
