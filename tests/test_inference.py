"""Inference details: test-time augmentation and the stable mean-probability logit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lensnet.checkpoint import load_model
from lensnet.predict import dihedral_views, forward_logits, mean_probability_logit


def test_mean_probability_logit_is_exact_and_stable():
    logits = torch.tensor([[-3.0, 0.0, 120.0, -120.0], [1.0, 0.0, 118.0, -119.0]])
    expected = torch.logit(torch.sigmoid(logits.double()).mean(0))
    got = mean_probability_logit(logits)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got[:2].double(), expected[:2], rtol=1e-5, atol=1e-5)
    # Where float64 sigmoid saturates, the stable form still orders and bounds correctly.
    assert 117.0 < got[2] < 120.0 and -120.0 < got[3] < -118.0
    same = mean_probability_logit(torch.full((8, 3), 2.5))
    torch.testing.assert_close(same, torch.full((3,), 2.5))


def test_tta_scores_are_invariant_to_flips_and_rotations(tiny_model):
    loaded = load_model(tiny_model)
    inputs = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    reference = forward_logits(loaded, inputs, batch_size=4, tta=True)
    for view in dihedral_views(inputs):
        np.testing.assert_allclose(forward_logits(loaded, view, batch_size=4, tta=True), reference,
                                   rtol=1e-4, atol=1e-4)
    plain = forward_logits(loaded, inputs, batch_size=4)
    assert not np.allclose(plain, reference)  # the tiny random model is not symmetric by itself
    manual = torch.stack([torch.from_numpy(forward_logits(loaded, view)) for view in dihedral_views(inputs)])
    np.testing.assert_allclose(reference, mean_probability_logit(manual).numpy(), rtol=1e-5, atol=1e-5)


def test_tta_is_part_of_the_run_fingerprint(tiny_survey, tiny_model, client, tmp_path):
    from pipeline.resume import ResumeError
    from pipeline.run import run_with_client
    from tests.test_faults import settings_for

    out = tmp_path / "out"
    result = run_with_client(settings_for(tiny_survey, tiny_model, out, tta=True), client, log=lambda _: None)
    assert result.summary["scored"] > 0
    with pytest.raises(ResumeError, match="tta"):
        run_with_client(settings_for(tiny_survey, tiny_model, out), client, log=lambda _: None)


_MMAPPED = """
import ctypes, sys
import numpy as np

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "tuned":
    from pipeline.inference import keep_activations_on_the_heap
    assert keep_activations_on_the_heap()
for _ in range(3):
    buffer = np.ones(2**20)  # 8 MiB, about the activations of one CPU batch
    alive = libc.mallinfo2().hblkhd  # bytes in mmap-ed chunks
    del buffer
    print(alive - libc.mallinfo2().hblkhd)
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="glibc malloc")
def test_workers_reuse_activation_memory_instead_of_mmapping_it_again(tmp_path):
    # Under Dask's nanny environment (MALLOC_TRIM_THRESHOLD_=65536) every 8 MiB buffer is
    # a fresh mmap, page-faulted and zeroed each time; after keep_activations_on_the_heap
    # every one of them comes from the heap.
    import os
    import subprocess
    import sys

    script = tmp_path / "mmapped.py"
    script.write_text(_MMAPPED)
    environment = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536",
                   "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}

    def mmapped_bytes(mode: str) -> list[int]:
        output = subprocess.run([sys.executable, str(script), mode], env=environment, capture_output=True,
                                text=True, check=True).stdout
        return [int(line) for line in output.split()]

    assert all(size >= 2**23 for size in mmapped_bytes("plain"))
    assert mmapped_bytes("tuned") == [0, 0, 0]


def test_cpu_workers_tune_malloc_when_the_model_loads(tiny_model, client):
    from pipeline.inference import PLUGIN_NAME, ModelPlugin

    client.register_plugin(ModelPlugin(tiny_model, device="cpu", torch_threads=1))
    tuned = client.run(lambda dask_worker: dask_worker.plugins[PLUGIN_NAME].malloc_tuned)
    assert len(tuned) == 2 and all(tuned.values())
