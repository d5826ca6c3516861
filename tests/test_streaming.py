"""The streaming scorer of GPU workers (pipeline.inference.stream_scores), checked on CPUs.

It must give exactly the logits of the serial scorer (same blocks, same functions), keep
the shards' order and metadata, report each shard's time per stage, pass a reader's error
to the caller, and halve a batch that does not fit the device's memory. The GPU versions
of these checks are the ``gpu``-marked tests at the end.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lensnet.checkpoint import load_model
from lensnet.predict import forward_logits_fitting, score_stamps
from pipeline.inference import TIMING_STAGES, ShardStamps, stream_scores

# Shard sizes with an empty shard and one larger than a block, as real shards can be.
SHARD_SIZES = [16, 5, 0, 23, 16, 1, 16]


@pytest.fixture(scope="module")
def shards():
    rng = np.random.default_rng(11)
    stamps = [rng.normal(0.0, 1.0, (n, 3, 32, 32)).astype(np.float32) for n in SHARD_SIZES]
    stamps[0][2, 1, 5:9, 5:9] = np.nan  # a stamp with bad pixels
    stamps[3][4] += 40.0 * np.exp(-((np.arange(32) - 16.0) ** 2) / 8.0)[None, None, :]
    return stamps


def reader(stamps):
    def read(index: int) -> ShardStamps:
        return ShardStamps(stamps[index], meta=f"shard-{index}")
    return read


@pytest.fixture(scope="module")
def ensemble(tiny_model):
    """The tiny model twice, the second normalising otherwise (zscale): an ensemble of two normalisations."""
    first = load_model(tiny_model)
    second = load_model(tiny_model)
    second = dataclasses.replace(second, config=dataclasses.replace(second.config, name="other",
                                                                    normalisation="zscale", normalisation_params={}))
    return [first, second]


def run(models, stamps, **options):
    return list(stream_scores(models, reader(stamps), len(stamps), **options))


@pytest.mark.parametrize("block_objects", [1, 20, 1000])
def test_prefetching_scorer_gives_exactly_the_serial_logits(ensemble, shards, block_objects):
    serial = run(ensemble, shards, batch_size=8, block_objects=block_objects, prefetch=0)
    prefetched = run(ensemble, shards, batch_size=8, block_objects=block_objects, prefetch=2, readers=3)
    assert [item.index for item in prefetched] == list(range(len(SHARD_SIZES)))
    assert [item.meta for item in prefetched] == [f"shard-{i}" for i in range(len(SHARD_SIZES))]
    for one, other, size in zip(serial, prefetched, SHARD_SIZES):
        assert set(one.logits) == set(other.logits) == {"tiny-test", "other"}
        for name in one.logits:
            assert one.logits[name].shape == (size,)
            np.testing.assert_array_equal(one.logits[name], other.logits[name])
    assert all(item.timings["prefetch"] for item in prefetched)
    assert not any(item.timings["prefetch"] for item in serial)


def test_streamed_logits_are_those_of_a_single_pass(ensemble, shards):
    streamed = run(ensemble, shards, batch_size=8, block_objects=20, prefetch=2)
    everything = np.concatenate(shards)
    for loaded in ensemble:
        name = loaded.config.name
        single = score_stamps(loaded, everything, batch_size=1000)
        np.testing.assert_allclose(np.concatenate([item.logits[name] for item in streamed]), single,
                                   rtol=1e-5, atol=1e-5)
    # The two members normalise differently, so their logits differ.
    assert not np.allclose(streamed[0].logits["tiny-test"], streamed[0].logits["other"])


def test_blocks_gather_whole_shards_until_a_batch_is_full(ensemble, shards):
    scored = run(ensemble[:1], shards, batch_size=8, block_objects=20, prefetch=2)
    blocks: dict[int, list] = {}
    for item in scored:
        blocks.setdefault(item.timings["block"], []).append(item)
    # 16+5 | 0+23 | 16+1+16: a block closes once it holds 20 stamps, or at the last shard.
    assert [[item.index for item in members] for _, members in sorted(blocks.items())] == [[0, 1], [2, 3], [4, 5, 6]]
    for members in blocks.values():
        objects = sum(item.timings["objects"] for item in members)
        assert all(item.timings["block_objects"] == objects for item in members)


def test_every_shard_reports_its_time_per_stage(ensemble, shards):
    scored = run(ensemble, shards, batch_size=8, block_objects=20, prefetch=2)
    for item, size in zip(scored, SHARD_SIZES):
        timings = item.timings
        assert timings["objects"] == size and timings["device"] == "cpu" and timings["batch_size"] == 8
        for stage in TIMING_STAGES:
            assert timings[stage] >= 0.0, stage
        if size:
            assert timings["forward_s"] > 0 and timings["normalise_s"] > 0
        else:
            assert timings["forward_s"] == 0.0  # an empty shard's share of its block
    # A block's stage times are shared among its shards by their objects.
    block = [item for item in scored if item.timings["block"] == 2]
    per_object = [item.timings["forward_s"] / item.timings["objects"] for item in block]
    np.testing.assert_allclose(per_object, per_object[0])


def test_a_reader_error_reaches_the_caller(ensemble, shards):
    def read(index: int) -> ShardStamps:
        if index == 4:
            raise OSError("shard 4 is unreadable")
        return ShardStamps(shards[index], index)

    seen = []
    with pytest.raises(OSError, match="shard 4 is unreadable"):
        for item in stream_scores(ensemble[:1], read, len(shards), batch_size=8, block_objects=1, prefetch=2):
            seen.append(item.index)
    assert seen == [0, 1, 2, 3]


def test_leaving_early_stops_the_readers(ensemble, shards):
    import threading

    stream = stream_scores(ensemble[:1], reader(shards), len(shards), batch_size=8, block_objects=1, prefetch=1)
    assert next(stream).index == 0
    stream.close()
    assert not any(thread.name.startswith(("lensfinder-stage", "lensfinder-read")) and thread.is_alive()
                   for thread in threading.enumerate())


class _SmallMemory(torch.nn.Module):
    """Fails like a full GPU for batches above 4; a fixed linear score otherwise."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.linspace(-1, 1, 3 * 32 * 32))
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(len(x))
        if len(x) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return x.flatten(1) @ self.weight


def test_a_batch_too_large_for_the_device_is_halved(tiny_model, shards):
    loaded = dataclasses.replace(load_model(tiny_model), module=_SmallMemory())
    inputs = torch.from_numpy(np.nan_to_num(shards[0]))
    logits, batch = forward_logits_fitting(loaded, inputs, 16)
    assert batch == 4 and loaded.module.batches[:3] == [16, 8, 4]
    np.testing.assert_allclose(logits, (inputs.flatten(1) @ loaded.module.weight).detach().numpy(), rtol=1e-5)
    scored = run([loaded], shards, batch_size=16, block_objects=16, prefetch=0)
    assert {item.timings["batch_size"] for item in scored} == {4}  # the halved batch is kept for later blocks


# --- on a GPU -------------------------------------------------------------------------------

#: GPU logits vs CPU fp32 logits of the default model. fp32 on a GPU convolves in TF32 by
#: default (10-bit mantissa); bf16 autocast keeps 8 bits. Measured differences are far
#: below these bounds, which are a small fraction of the spread of logits (~several units).
GPU_FP32_ATOL = 0.05
GPU_BF16_ATOL = 0.3


def _default_stamps(n: int = 512) -> np.ndarray:
    rng = np.random.default_rng(5)
    stamps = rng.normal(0.0, 1.0, (n, 3, 64, 64)).astype(np.float32)
    yy, xx = np.mgrid[:64, :64]
    stamps[: n // 2] += (30.0 * np.exp(-((xx - 32.0) ** 2 + (yy - 32.0) ** 2) / 20.0)).astype(np.float32)
    stamps[3, 0, :4, :4] = np.nan
    return stamps


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision, tolerance", [("fp32", GPU_FP32_ATOL), ("bf16", GPU_BF16_ATOL)])
def test_gpu_stream_logits_match_the_cpu_within_tolerance(precision, tolerance):
    stamps = _default_stamps()
    reference = score_stamps(load_model("default"), stamps, batch_size=256, precision="fp32")
    gpu = load_model("default", device="cuda")
    gpu.module.to(memory_format=torch.channels_last)
    shards = [stamps[start:start + 100] for start in range(0, len(stamps), 100)]
    streamed = np.concatenate([item.logits["default"] for item in run([gpu], shards, batch_size=128,
                                                                      precision=precision, prefetch=2)])
    assert np.abs(streamed - reference).max() <= tolerance
    assert np.corrcoef(streamed, reference)[0, 1] > 0.999


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_prefetching_scorer_gives_exactly_the_serial_logits():
    gpu = load_model("default", device="cuda")
    stamps = _default_stamps(600)
    shards = [stamps[start:start + 70] for start in range(0, len(stamps), 70)]
    serial = run([gpu], shards, batch_size=128, block_objects=200, prefetch=0)
    prefetched = run([gpu], shards, batch_size=128, block_objects=200, prefetch=2, readers=3)
    for one, other in zip(serial, prefetched):
        np.testing.assert_array_equal(one.logits["default"], other.logits["default"])
    timings = prefetched[0].timings
    assert timings["device"].startswith("cuda") and timings["h2d_s"] > 0 and timings["forward_s"] > 0
