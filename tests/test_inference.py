"""Inference details: test-time augmentation and the stable mean-probability logit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lensnet.checkpoint import load_model
from pipeline.inference import dihedral_views, forward_logits, mean_probability_logit


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
