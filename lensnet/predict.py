"""Forward passes of a loaded model: batches, precision, test-time augmentation, timing.

Everything here is plain PyTorch on arrays, usable without Dask: the survey pipeline's
worker plugin (:mod:`pipeline.inference`), :mod:`lensnet.evaluate` and :mod:`lensnet.compare`
all score through these functions, so a notebook, an evaluation and a survey run give
the same numbers by construction.

* :func:`forward_logits` -- logits of normalised inputs in batches (channels_last), with
  optional dihedral test-time averaging (:func:`dihedral_views`);
* :func:`mean_probability_logit` -- the logit of the mean probability of several
  logits (TTA views, or the members of an ensemble), without overflow;
* :func:`score_stamps` -- raw stamps in, logits out: the model's normalisation, then
  :func:`forward_logits`;
* :func:`forward_images_per_second` -- the timing helper of benchmarks and comparisons.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

import numpy as np
import torch

from lensnet.checkpoint import LoadedModel, ModelConfig
from lensnet.preprocess import normalise

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Stamps per forward pass when the caller does not set one: small batches keep a CPU's
#: caches warm (benchmarks/RESULTS.md: batch 32 ran 1.4x faster than 256 on 2 cores), a
#: GPU wants large ones (the default model's bare forward on an H200 peaked at 4096 in
#: bf16). A batch that does not fit the GPU's memory is halved until it does
#: (:func:`forward_logits_fitting`).
DEFAULT_BATCH = {"cpu": 32, "cuda": 4096}


def autocast_for(device: torch.device, precision: str = "auto"):
    """Mixed precision on GPUs (bf16 by default), full precision on CPUs."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def preprocess(stamps: np.ndarray, config: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """The normalisation named by the model's config; returns (inputs, had-bad-pixels).

    Float32 stamps go through the fast float32 implementation where one exists
    (:mod:`lensnet.preprocess.fast`: within 2e-6 of the float64 reference, about 3.4x faster
    on a CPU, where the normalisation would otherwise cost as much as the forward pass).
    """
    return normalise(stamps, config, backend="fast")


def prepare_inputs(stamps: np.ndarray, config: ModelConfig, device: torch.device) -> torch.Tensor | np.ndarray:
    """Normalised inputs for a model on ``device``.

    On a GPU, a normalisation with a torch implementation runs there (the NumPy versions
    would leave the GPU waiting); elsewhere :func:`preprocess` runs (the ``auto`` backend of
    :func:`lensnet.preprocess.normalise`).
    """
    inputs, _ = normalise(stamps, config, backend="auto", device=device)
    return inputs


def score_stamps(
    loaded: LoadedModel, stamps: np.ndarray, batch_size: int | None = None, precision: str = "auto", tta: bool = False
) -> np.ndarray:
    """Logits for raw stamps (n, bands, S, S): preprocess, then batched forward passes."""
    device = next(loaded.module.parameters()).device
    return forward_logits(loaded, prepare_inputs(stamps, loaded.config, device), batch_size, precision, tta)


def dihedral_views(batch: torch.Tensor) -> list[torch.Tensor]:
    """The 8 symmetries of the square applied to a batch (rotations by 90 degrees, with and without a flip)."""
    return [torch.rot90(view, turns, dims=(-2, -1)) for view in (batch, batch.flip(-1)) for turns in range(4)]


def mean_probability_logit(logits: torch.Tensor) -> torch.Tensor:
    """``logit(mean(sigmoid(logits)))`` over the first axis, without overflow for confident logits.

    log(sum sigma(l)) - log(sum (1 - sigma(l))) with log sigma(l) = -softplus(-l).
    """
    return (torch.logsumexp(-torch.nn.functional.softplus(-logits), dim=0)
            - torch.logsumexp(-torch.nn.functional.softplus(logits), dim=0))


@torch.inference_mode()
def forward_logits(
    loaded: LoadedModel, inputs: np.ndarray | torch.Tensor, batch_size: int | None = None, precision: str = "auto",
    tta: bool = False,
) -> np.ndarray:
    """Logits for already-normalised inputs (an array, or a tensor on any device), in batches.

    With ``tta``, each stamp is scored in its 8 dihedral orientations and the lens
    probabilities are averaged (test-time augmentation); the logit of that mean is returned.
    """
    device = next(loaded.module.parameters()).device
    if isinstance(inputs, np.ndarray):
        inputs = torch.from_numpy(np.ascontiguousarray(inputs))
    logits = np.empty(len(inputs), dtype=np.float32)
    batch_size = batch_size or DEFAULT_BATCH.get(device.type, 256)
    on_device = []  # on a GPU the logits stay there until the end: one synchronisation per call
    for start in range(0, len(inputs), batch_size):
        # channels_last matches the layout oneDNN (CPU) and cuDNN (tensor cores) prefer.
        batch = inputs[start : start + batch_size].to(device, non_blocking=True).contiguous(
            memory_format=torch.channels_last)
        with autocast_for(device, precision):
            if tta:
                output = mean_probability_logit(torch.stack([loaded.module(view).float()
                                                             for view in dihedral_views(batch)]))
            else:
                output = loaded.module(batch)
        if device.type == "cuda":
            on_device.append(output.float())
        else:
            logits[start : start + len(batch)] = output.float().cpu().numpy()
    if on_device:
        logits[:] = torch.cat(on_device).cpu().numpy()
    return logits


def forward_logits_fitting(
    loaded: LoadedModel, inputs: np.ndarray | torch.Tensor, batch_size: int, precision: str = "auto",
    tta: bool = False,
) -> tuple[np.ndarray, int]:
    """:func:`forward_logits`, halving the batch while the device runs out of memory; returns the batch used.

    GPUs differ in memory by an order of magnitude and models in activation size by more,
    so the GPU default batch (4096) is a first try, not a promise.
    """
    while True:
        try:
            return forward_logits(loaded, inputs, batch_size, precision, tta), batch_size
        except torch.OutOfMemoryError:
            if batch_size <= 1:
                raise
            batch_size //= 2
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def forward_images_per_second(loaded: LoadedModel, inputs: np.ndarray | torch.Tensor, batch_size: int,
                              repeats: int = 3) -> float:
    """Images/s of :func:`forward_logits` over ``inputs``: one warm-up batch, then the best of ``repeats`` passes."""
    forward_logits(loaded, inputs[:batch_size], batch_size)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        forward_logits(loaded, inputs, batch_size)
        best = min(best, time.perf_counter() - started)
    return len(inputs) / best
