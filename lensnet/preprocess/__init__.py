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

Three implementations (backends) of the normalisations, one module each:

``reference`` (:mod:`lensnet.preprocess.reference`)
    float64 NumPy, any input: the definition the others are checked against, and what
    training uses.
``fast`` (:mod:`lensnet.preprocess.fast`)
    float32 NumPy where one exists (``asinh_stretch``), within 2e-6 of the reference and
    about 3.4x faster on a CPU; the reference for the others.
``torch`` (:mod:`lensnet.preprocess.torch_backend`)
    float64 torch on the model's device, so a GPU does not wait for the CPU.

:func:`normalise` is the one entry point: ``normalise(stamps, "zscale", **params)`` runs
the reference, as it always has; ``normalise(stamps, model_config, backend="auto",
device=...)`` runs the model's own normalisation through the best backend for the
device (torch on a CUDA device where the normalisation has a torch version, else fast).
Resampling to another pixel scale is :func:`resample` (:mod:`lensnet.preprocess.resampling`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from lensnet.preprocess import reference  # first: fast builds on it
from lensnet.preprocess import fast
from lensnet.preprocess.reference import (NORMALISATIONS, asinh_stretch, minmax, noise_clip, percentile_clip,
                                          zscale)
from lensnet.preprocess.resampling import resample
from lensnet.preprocess.stats import MAD_TO_SIGMA, robust_sigma

if TYPE_CHECKING:
    import torch

    from lensnet.checkpoint import ModelConfig

__all__ = [
    "BACKENDS",
    "MAD_TO_SIGMA",
    "NORMALISATIONS",
    "asinh_stretch",
    "has_backend",
    "minmax",
    "noise_clip",
    "normalise",
    "percentile_clip",
    "resample",
    "robust_sigma",
    "zscale",
]

#: The implementations :func:`normalise` can run (``auto`` picks one of the others).
BACKENDS = ("reference", "fast", "torch", "auto")


def has_backend(method: str | ModelConfig, backend: str) -> bool:
    """Whether the normalisation ``method`` (or a model config's) has its own ``backend`` implementation.

    Every normalisation has ``reference``; ``fast`` and ``torch`` exist for some (``fast``
    falls back to the reference for the others, ``torch`` does not).
    """
    name = method if isinstance(method, str) else method.normalisation
    if backend == "torch":
        from lensnet.preprocess.torch_backend import TORCH_NORMALISATIONS

        return name in TORCH_NORMALISATIONS
    if backend == "fast":
        return name in fast.FAST_NORMALISATIONS
    if backend == "reference":
        return name in NORMALISATIONS
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def _on_cuda(device: Any) -> bool:
    return device is not None and getattr(device, "type", str(device).split(":")[0]) == "cuda"


def normalise(
    stamps: npt.ArrayLike | torch.Tensor,
    method: str | ModelConfig,
    mask: npt.ArrayLike | None = None,
    *,
    backend: str | None = None,
    device: torch.device | str | None = None,
    **params: object,
) -> tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]:
    """Apply a named normalisation, or a model's, and report which objects had bad pixels.

    Args:
        stamps: (n, bands, H, W) or (bands, H, W) array (a tensor for the torch backend).
        method: a key of :data:`NORMALISATIONS`, or a model config, whose normalisation and
            ``normalisation_params`` are used (``params`` given here override them).
        mask: optional boolean array of the same shape, True for bad pixels (with a mask,
            ``fast`` and ``auto`` run the reference; ``torch`` refuses one).
        backend: ``reference`` (the default for a method name), ``fast``, ``torch``, or
            ``auto`` (the default for a config): torch on a CUDA ``device`` where the
            normalisation has a torch version, else fast.
        device: where the torch backend puts NumPy stamps; for ``auto``, the model's device.
        **params: keyword arguments for the normalisation.

    Returns:
        ``(normalised, had_bad_pixels)``: the float32 normalised stamps, and a boolean
        array of shape (n,) (shape () for a single image) that is True for objects with
        at least one NaN, infinite or masked pixel in any band. Tensors (on the stamps'
        device) from the torch backend, arrays from the others.

    Raises:
        ValueError: for an unknown method or backend (the message lists the known ones),
            a normalisation without a torch version asked for on ``torch``, or malformed
            input.
    """
    if not isinstance(method, str):
        params = {**method.normalisation_params, **params}
        method = method.normalisation
        backend = backend or "auto"
    backend = backend or "reference"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = "torch" if mask is None and _on_cuda(device) and has_backend(method, "torch") else "fast"
    if backend == "torch":
        if mask is not None:
            raise ValueError("the torch backend takes no mask: set the bad pixels to NaN, or use the reference")
        from lensnet.preprocess import torch_backend

        return torch_backend.normalise(stamps, method, device=device, **params)
    if backend == "fast" and mask is None:
        return fast.normalise(stamps, method, **params)
    return reference.normalise(stamps, method, mask=mask, **params)
