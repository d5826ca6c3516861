"""Scoring stamps: the model lives once per worker (a WorkerPlugin), tasks borrow it.

The same :func:`score_stamps` serves the Dask workers and single-process use, so the
two paths give the same numbers by construction and a test checks it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from distributed import WorkerPlugin, get_worker

from lensnet.checkpoint import LoadedModel, ModelConfig, load_model
from lensnet.preprocess_fast import normalise
from lensnet.preprocess_torch import TORCH_NORMALISATIONS

PLUGIN_NAME = "lensfinder-model"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Stamps per forward pass when the run does not set one: small batches keep a CPU's
#: caches warm (benchmarks/RESULTS.md: batch 32 ran 1.4x faster than 256 on 2 cores), a
#: GPU wants large ones.
DEFAULT_BATCH = {"cpu": 32, "cuda": 1024}


#: glibc ``mallopt`` parameters (malloc.h) and the values CPU workers set.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Dask configuration key that turns the malloc tuning off (``DASK_LENSFINDER__TUNE_MALLOC=false``).
TUNE_MALLOC_KEY = "lensfinder.tune-malloc"
MALLOC_SETTINGS = {"trim_threshold": 256 * 2**20, "mmap_threshold": 32 * 2**20}


def keep_activations_on_the_heap() -> bool:
    """Stop glibc from mmap-ing and unmapping every activation tensor; True where it applied.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, and setting any
    malloc threshold turns glibc's adaptive mmap threshold off: every buffer above
    128 KiB is then a fresh mmap, page-faulted and zeroed, and unmapped after each
    forward pass. Measured on a 2-core CPU (benchmarks/RESULTS.md), that cost the default
    model about 40% of the pipeline's throughput. Raising the two thresholds at run time
    keeps the activations of one batch on the heap between batches (a worker's resident
    memory grows by about the activations of one batch). A no-op where glibc is absent,
    or where the Dask configuration sets ``lensfinder.tune-malloc: false``.
    """
    import dask

    if not dask.config.get(TUNE_MALLOC_KEY, True):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MALLOC_SETTINGS["mmap_threshold"])
                and mallopt(_M_TRIM_THRESHOLD, MALLOC_SETTINGS["trim_threshold"]))


def pick_device(request: str = "auto") -> torch.device:
    """``auto`` -> the worker's GPU when it has one (dask-cuda sets CUDA_VISIBLE_DEVICES per worker)."""
    if request == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if request == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but this worker sees no CUDA device")
    return torch.device(request)


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
    (:mod:`lensnet.preprocess_fast`: within 2e-6 of the float64 reference, about 3.4x faster
    on a CPU, where the normalisation would otherwise cost as much as the forward pass).
    """
    return normalise(stamps, config.normalisation, **config.normalisation_params)


def prepare_inputs(stamps: np.ndarray, config: ModelConfig, device: torch.device) -> torch.Tensor | np.ndarray:
    """Normalised inputs for a model on ``device``.

    On a GPU, a normalisation with a torch implementation runs there (the NumPy versions
    would leave the GPU waiting); elsewhere :func:`preprocess` runs.
    """
    if device.type == "cuda" and config.normalisation in TORCH_NORMALISATIONS:
        raw = torch.from_numpy(np.ascontiguousarray(stamps, dtype=np.float32)).to(device, non_blocking=True)
        return TORCH_NORMALISATIONS[config.normalisation](raw, **config.normalisation_params)
    inputs, _ = preprocess(stamps, config)
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
        logits[start : start + len(batch)] = output.float().cpu().numpy()
    return logits


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


class ModelPlugin(WorkerPlugin):
    """Loads a checkpoint once when a worker starts; only its name travels to the workers.

    Attributes:
        model: shipped model name or checkpoint directory, or a list of them for an ensemble
            (must be readable by the workers).
        device: ``auto``, ``cpu`` or ``cuda``.
        tta: average the probabilities over the 8 dihedral orientations of each stamp.
        torch_threads: intra-op threads for CPU inference. Dask's nanny sets OMP threads
            to 1 in workers, so the count is set here on purpose.
    """

    name = PLUGIN_NAME

    def __init__(self, model: str | list[str], device: str = "auto", torch_threads: int | None = None,
                 precision: str = "auto", tta: bool = False):
        self.models = [str(model)] if isinstance(model, (str, Path)) else [str(item) for item in model]
        self.device = device
        self.torch_threads = torch_threads
        self.precision = precision
        self.tta = tta
        self.loaded: list[LoadedModel] = []
        self.malloc_tuned = False
        self.lock = threading.Lock()

    def setup(self, worker=None) -> None:
        device = pick_device(self.device)
        if device.type == "cpu":
            self.malloc_tuned = keep_activations_on_the_heap()
            if self.torch_threads:
                torch.set_num_threads(self.torch_threads)
        self.loaded = [load_model(model, device=device) for model in self.models]
        for loaded in self.loaded:
            # Measured on a 2-core CPU: channels_last 1.5x faster than NCHW (benchmarks/RESULTS.md).
            loaded.module.to(memory_format=torch.channels_last)

    def score(self, stamps: np.ndarray, batch_size: int | None) -> dict[str, np.ndarray]:
        """Logits of every model for raw stamps, by model name."""
        # Preprocessing runs in the task's own thread on CPU workers; the forward pass runs
        # one at a time per worker, since threads sharing one model would oversubscribe the
        # cores (CPU) or the memory (GPU). With several threads per worker, the CPU work of
        # one shard overlaps the forward pass of another.
        logits = {}
        for loaded in self.loaded:
            name = loaded.config.name or loaded.path.name
            if next(loaded.module.parameters()).device.type == "cuda":
                with self.lock:
                    logits[name] = score_stamps(loaded, stamps, batch_size, self.precision, self.tta)
                continue
            inputs, _ = preprocess(stamps, loaded.config)
            with self.lock:
                logits[name] = forward_logits(loaded, inputs, batch_size, self.precision, self.tta)
        return logits

    def __getstate__(self):
        state = self.__dict__.copy()
        state["loaded"] = []
        state["lock"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.lock = threading.Lock()


def worker_model() -> ModelPlugin:
    """The plugin registered on the current worker (call inside a task)."""
    try:
        return get_worker().plugins[PLUGIN_NAME]
    except KeyError:
        raise RuntimeError("no model is loaded on this worker; register ModelPlugin with the client first") from None
