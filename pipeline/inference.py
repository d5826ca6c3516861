"""Scoring on Dask workers: the model lives once per worker (a WorkerPlugin), tasks borrow it.

The forward passes themselves live in :mod:`lensnet.predict` (usable without Dask); the
plugin calls the same functions as single-process use, so the two paths give the same
numbers by construction and a test checks it. What is here is the workers' side: the
plugin that holds the models, the workers' malloc tuning, and the GPU streaming scorer.

GPU workers score a run of shards per task through :func:`stream_scores`: reader threads
read the next shards from the store, a staging thread gathers them into a GPU-sized block
in pinned host memory, copies it to the device and normalises it there on a side stream,
while the task's own thread runs the forward pass of the block before. Each shard's time
in every stage (read, pin, host-to-device, normalise, forward, waiting for the reader) is
measured and returned with its logits.

(About 480 lines, on purpose: the streaming scorer and the plugin share the models, the
lock that serialises forward passes and the batch that fits the device, and are read
together when tuning a GPU node; the forward passes themselves are in lensnet.predict.)
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from distributed import WorkerPlugin, get_worker

from lensnet.checkpoint import LoadedModel, ModelConfig, load_model
from lensnet.predict import DEFAULT_BATCH, forward_logits, forward_logits_fitting, preprocess, score_stamps
from lensnet.preprocess import has_backend, normalise

PLUGIN_NAME = "lensfinder-model"
#: Shards read ahead per scoring task by its reader threads, and blocks staged ahead.
DEFAULT_READERS = 2
DEFAULT_PREFETCH = 2
#: Stamps normalised at once on a GPU: the float64 normalisation and its sorts need several
#: times the stamps' own size in device memory, so large blocks go through in slices.
GPU_NORMALISE_STAMPS = 4096


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


# ----------------------------------------------------------------------------- streaming scorer

#: Seconds per shard that :func:`stream_scores` reports. ``read_s`` is the shard's own;
#: the others are its block's, shared among the block's shards by their objects:
#: ``pin_s`` gathering the block into one host buffer (pinned on CUDA), ``h2d_s`` the copy
#: to the device, ``normalise_s`` the normalisation, ``forward_s`` the forward passes (on
#: CUDA these three are GPU times from CUDA events), ``wait_s`` how long the forward
#: thread waited for the block (reading and staging that did not overlap the forward).
TIMING_STAGES = ("read_s", "pin_s", "h2d_s", "normalise_s", "forward_s", "wait_s")


@dataclass
class ShardStamps:
    """One shard's usable raw stamps (n, bands, S, S) as a reader returns them; ``meta`` rides along."""

    stamps: np.ndarray
    meta: Any = None


@dataclass
class ScoredShard:
    """Logits of one shard's stamps by model name, with its ``meta`` and timings (see :data:`TIMING_STAGES`)."""

    index: int
    meta: Any
    logits: dict[str, np.ndarray]
    timings: dict[str, Any]


@dataclass
class _Block:
    """Consecutive shards scored together, so that a GPU sees full batches whatever the shard size."""

    number: int
    shards: list[int]
    metas: list[Any]
    counts: list[int]
    read_s: list[float]
    inputs: dict[str, Any] = field(default_factory=dict)  # normalisation -> normalised inputs
    seconds: dict[str, float] = field(default_factory=dict)
    events: list[Any] = field(default_factory=list)  # CUDA events: start, copied, normalised
    ready: Any = None  # CUDA event after which the inputs may be used

    @property
    def objects(self) -> int:
        return sum(self.counts)


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def normalisation_key(config: ModelConfig) -> str:
    """Models of an ensemble that normalise alike share one normalised copy of a block."""
    return json.dumps([config.normalisation, config.normalisation_params], sort_keys=True, default=str)


def _stage(block: _Block, parts: list[np.ndarray], normalisations: dict[str, ModelConfig], device: torch.device,
           stream) -> None:
    """Gather the block's stamps, move them to ``device`` and normalise them once per normalisation.

    On CUDA the stamps are gathered straight into pinned host memory, and the copy and
    the normalisation are queued on ``stream`` (a side stream, or None for the current
    one) so that they overlap the forward pass of the block before; ``block.ready``
    marks their end. Elsewhere the normalisation runs here, as the CPU path's does.
    """
    n = block.objects
    if n == 0:
        return
    started = time.perf_counter()
    shape = (n, *parts[0].shape[1:])
    if device.type == "cuda":
        host = torch.empty(shape, dtype=torch.float32, pin_memory=True)
        np.concatenate(parts, out=host.numpy(), casting="same_kind")
    else:
        host = np.concatenate(parts).astype(np.float32, copy=False)
    block.seconds["pin_s"] = time.perf_counter() - started
    if device.type != "cuda":
        started = time.perf_counter()
        for key, config in normalisations.items():
            block.inputs[key], _ = preprocess(host, config)
        block.seconds["normalise_s"] = time.perf_counter() - started
        return
    with torch.cuda.device(device), (torch.cuda.stream(stream) if stream is not None else nullcontext()):
        events = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
        events[0].record()
        raw = host.to(device, non_blocking=True)
        events[1].record()
        for key, config in normalisations.items():
            if has_backend(config, "torch"):
                # Per stamp, in float64 with sorts: slices bound the device memory it needs.
                inputs = torch.cat([normalise(raw[start:start + GPU_NORMALISE_STAMPS], config, backend="torch")[0]
                                    for start in range(0, n, GPU_NORMALISE_STAMPS)])
            else:  # no torch version: the CPU one, then a pinned copy
                inputs = torch.from_numpy(preprocess(host.numpy(), config)[0]).pin_memory().to(device, non_blocking=True)
            block.inputs[key] = inputs.contiguous(memory_format=torch.channels_last)
        events[2].record()
    block.events, block.ready = events, events[2]


def stream_scores(
    models: list[LoadedModel],
    read: Callable[[int], ShardStamps],
    n_shards: int,
    batch_size: int | None = None,
    precision: str = "auto",
    tta: bool = False,
    block_objects: int | None = None,
    readers: int = DEFAULT_READERS,
    prefetch: int = DEFAULT_PREFETCH,
    lock: threading.Lock | None = None,
) -> Iterator[ScoredShard]:
    """Logits of shards ``0 .. n_shards-1`` (``read(i)`` returns shard i's stamps), in order.

    Consecutive shards are scored together in blocks of at least ``block_objects`` stamps
    (default: one batch), so a GPU sees full batches whatever the shard size. With
    ``prefetch`` > 0, ``readers`` threads read shards ahead and a staging thread prepares
    up to ``prefetch`` blocks ahead (gather, pin, copy, normalise; see :func:`_stage`)
    while the calling thread runs the forward passes; with ``prefetch=0`` everything runs
    in the calling thread, one step after another. Both give the same logits: the same
    blocks go through the same functions. ``lock`` serialises the forward passes with
    other users of the same models (the plugin's lock).
    """
    device = next(models[0].module.parameters()).device
    batch = batch_size or DEFAULT_BATCH.get(device.type, 256)
    block_objects = max(1, block_objects or batch)
    normalisations = {normalisation_key(loaded.config): loaded.config for loaded in models}
    lock = lock if lock is not None else threading.Lock()

    def timed_read(index: int) -> tuple[ShardStamps, float]:
        started = time.perf_counter()
        shard = read(index)
        return shard, time.perf_counter() - started

    def blocks(read_shard: Callable[[int], tuple[ShardStamps, float]],
               stop: threading.Event | None = None) -> Iterator[tuple[_Block, list[np.ndarray]]]:
        number, block, parts = 0, None, []
        for index in range(n_shards):
            if stop is not None and stop.is_set():
                return
            shard, seconds = read_shard(index)
            if block is None:
                block, parts = _Block(number, [], [], [], []), []
            block.shards.append(index)
            block.metas.append(shard.meta)
            block.counts.append(len(shard.stamps))
            block.read_s.append(seconds)
            parts.append(shard.stamps)
            if block.objects >= block_objects or index == n_shards - 1:
                yield block, parts
                number, block = number + 1, None

    if prefetch <= 0 or n_shards <= 1:
        for block, parts in blocks(timed_read):
            _stage(block, parts, normalisations, device, None)
            batch = yield from _finish(block, models, device, batch, precision, tta, lock, 0.0, prefetched=False)
        return

    ready: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()
    side_stream = torch.cuda.Stream(device) if device.type == "cuda" else None
    window = max(1, 2 * readers)

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def stage_all() -> None:
        try:
            with concurrent.futures.ThreadPoolExecutor(max(1, readers), thread_name_prefix="lensfinder-read") as pool:
                futures = {index: pool.submit(timed_read, index) for index in range(min(n_shards, window))}

                def read_ahead(index: int) -> tuple[ShardStamps, float]:
                    result = futures.pop(index).result()
                    if index + window < n_shards:
                        futures[index + window] = pool.submit(timed_read, index + window)
                    return result

                try:
                    for block, parts in blocks(read_ahead, stop):
                        _stage(block, parts, normalisations, device, side_stream)
                        del parts
                        if not put(block):
                            return
                finally:
                    for future in futures.values():
                        future.cancel()
            put(None)
        except BaseException as error:  # noqa: BLE001 (handed to the forward thread, which raises it)
            put(_Failed(error))

    stager = threading.Thread(target=stage_all, name="lensfinder-stage", daemon=True)
    stager.start()
    try:
        while True:
            started = time.perf_counter()
            item = ready.get()
            waited = time.perf_counter() - started
            if item is None:
                return
            if isinstance(item, _Failed):
                raise item.error
            batch = yield from _finish(item, models, device, batch, precision, tta, lock, waited, prefetched=True)
    finally:
        stop.set()
        while stager.is_alive():
            try:
                ready.get(timeout=0.1)
            except queue.Empty:
                pass
        stager.join()


def _finish(block: _Block, models: list[LoadedModel], device: torch.device, batch: int, precision: str, tta: bool,
            lock: threading.Lock, waited: float, prefetched: bool):
    """Forward passes of a staged block; yields one :class:`ScoredShard` per shard; returns the batch used."""
    if device.type == "cuda" and block.ready is not None:
        current = torch.cuda.current_stream(device)
        current.wait_event(block.ready)
        for inputs in block.inputs.values():
            inputs.record_stream(current)  # allocated on the side stream, used on this one
    logits: dict[str, np.ndarray] = {}
    forward_seconds, forward_events = 0.0, []
    for loaded in models:
        name = loaded.config.name or loaded.path.name
        if block.objects == 0:
            logits[name] = np.empty(0, np.float32)
            continue
        with lock:
            started = time.perf_counter()
            if device.type == "cuda":
                forward_events.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
                forward_events[-1][0].record()
            logits[name], batch = forward_logits_fitting(loaded, block.inputs[normalisation_key(loaded.config)],
                                                         batch, precision, tta)
            if device.type == "cuda":
                forward_events[-1][1].record()
            forward_seconds += time.perf_counter() - started
    seconds = {"pin_s": block.seconds.get("pin_s", 0.0), "h2d_s": 0.0,
               "normalise_s": block.seconds.get("normalise_s", 0.0), "forward_s": forward_seconds, "wait_s": waited}
    if device.type == "cuda" and block.objects:
        # Wait for this block's events only: a device-wide synchronize would also wait for
        # the next block, which the staging thread is copying and normalising meanwhile.
        for event in (*block.events, *(end for _, end in forward_events)):
            event.synchronize()
        if block.events:
            seconds["h2d_s"] = block.events[0].elapsed_time(block.events[1]) / 1000
            seconds["normalise_s"] = block.events[1].elapsed_time(block.events[2]) / 1000
        seconds["forward_s"] = sum(start.elapsed_time(end) for start, end in forward_events) / 1000
    block.inputs.clear()
    offsets = np.concatenate([[0], np.cumsum(block.counts)]).astype(int)
    for position, index in enumerate(block.shards):
        count = block.counts[position]
        share = count / block.objects if block.objects else 1 / len(block.shards)
        timings: dict[str, Any] = {"objects": count, "read_s": block.read_s[position],
                                   **{key: value * share for key, value in seconds.items()},
                                   "block": block.number, "block_shards": len(block.shards),
                                   "block_objects": block.objects, "batch_size": batch, "device": str(device),
                                   "prefetch": prefetched}
        yield ScoredShard(index, block.metas[position],
                          {name: values[offsets[position]:offsets[position + 1]] for name, values in logits.items()},
                          timings)
    return batch


class ModelPlugin(WorkerPlugin):
    """Loads a checkpoint once per worker; only its name travels to the workers.

    On a cluster with GPU workers, workers that declare only the cut stage's resource
    (``CPU``, see :mod:`pipeline.cluster`) do not load the model when they start: they never
    score. Should a score task reach one anyway, the model is loaded then.

    Attributes:
        model: shipped model name or checkpoint directory, or a list of them for an ensemble
            (must be readable by the workers).
        device: ``auto``, ``cpu`` or ``cuda``.
        tta: average the probabilities over the 8 dihedral orientations of each stamp.
        torch_threads: intra-op threads for CPU inference. Dask's nanny sets OMP threads
            to 1 in workers, so the count is set here on purpose.
        readers: threads per scoring task that read shards ahead (:func:`stream_scores`).
    """

    name = PLUGIN_NAME

    def __init__(self, model: str | list[str], device: str = "auto", torch_threads: int | None = None,
                 precision: str = "auto", tta: bool = False, readers: int = DEFAULT_READERS):
        self.models = [str(model)] if isinstance(model, (str, Path)) else [str(item) for item in model]
        self.device = device
        self.torch_threads = torch_threads
        self.precision = precision
        self.tta = tta
        self.readers = readers
        self.loaded: list[LoadedModel] = []
        self.malloc_tuned = False
        self.lock = threading.Lock()

    def setup(self, worker=None) -> None:
        if worker is not None and not scores_here(getattr(getattr(worker, "state", None), "total_resources", None)):
            return  # a cut-only worker on a cluster with GPU workers: load on demand
        self.ensure_loaded()

    def ensure_loaded(self) -> list[LoadedModel]:
        """The models, loaded on this worker's device the first time."""
        with self.lock:
            if self.loaded:
                return self.loaded
            device = pick_device(self.device)
            if device.type == "cpu":
                self.malloc_tuned = keep_activations_on_the_heap()
                if self.torch_threads:
                    torch.set_num_threads(self.torch_threads)
            else:
                # Fixed input shapes: let cuDNN pick its fastest algorithms once.
                torch.backends.cudnn.benchmark = True
            loaded = [load_model(model, device=device) for model in self.models]
            for model in loaded:
                # Measured on a 2-core CPU: channels_last 1.5x faster than NCHW (benchmarks/RESULTS.md).
                model.module.to(memory_format=torch.channels_last)
            self.loaded = loaded
            return loaded

    def score(self, stamps: np.ndarray, batch_size: int | None,
              timings: dict[str, float] | None = None) -> dict[str, np.ndarray]:
        """Logits of every model for raw stamps, by model name; ``timings`` gets normalise_s and forward_s."""
        # Preprocessing runs in the task's own thread on CPU workers; the forward pass runs
        # one at a time per worker, since threads sharing one model would oversubscribe the
        # cores (CPU) or the memory (GPU). With several threads per worker, the CPU work of
        # one shard overlaps the forward pass of another.
        logits = {}
        spent = {"normalise_s": 0.0, "forward_s": 0.0}
        for loaded in self.ensure_loaded():
            name = loaded.config.name or loaded.path.name
            if next(loaded.module.parameters()).device.type == "cuda":
                started = time.perf_counter()
                with self.lock:
                    logits[name] = score_stamps(loaded, stamps, batch_size, self.precision, self.tta)
                spent["forward_s"] += time.perf_counter() - started
                continue
            started = time.perf_counter()
            inputs, _ = preprocess(stamps, loaded.config)
            spent["normalise_s"] += time.perf_counter() - started
            with self.lock:
                started = time.perf_counter()
                logits[name] = forward_logits(loaded, inputs, batch_size, self.precision, self.tta)
                spent["forward_s"] += time.perf_counter() - started
        if timings is not None:
            timings.update(spent)
        return logits

    def score_stream(self, read: Callable[[int], ShardStamps], n_shards: int, batch_size: int | None,
                     prefetch: int = DEFAULT_PREFETCH, block_objects: int | None = None) -> Iterator[ScoredShard]:
        """:func:`stream_scores` with this worker's models, precision, TTA, readers and lock."""
        models = self.ensure_loaded()
        return stream_scores(models, read, n_shards, batch_size, self.precision, self.tta,
                             block_objects=block_objects, readers=self.readers, prefetch=prefetch, lock=self.lock)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["loaded"] = []
        state["lock"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.lock = threading.Lock()


def scores_here(resources: dict[str, float] | None) -> bool:
    """Whether a worker with these declared resources should hold the model.

    Every worker does, except one that declares the cut stage's ``CPU`` resource and no
    ``GPU``: on a cluster with GPU workers the score tasks go to those (pipeline.cluster).
    """
    from pipeline.cluster import CPU_RESOURCE, GPU_RESOURCE

    resources = resources or {}
    return not (resources.get(CPU_RESOURCE, 0) > 0 and not resources.get(GPU_RESOURCE, 0) > 0)


def worker_model() -> ModelPlugin:
    """The plugin registered on the current worker (call inside a task)."""
    try:
        return get_worker().plugins[PLUGIN_NAME]
    except KeyError:
        raise RuntimeError("no model is loaded on this worker; register ModelPlugin with the client first") from None
