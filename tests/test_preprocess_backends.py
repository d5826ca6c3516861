"""lensnet.preprocess.normalise: one entry point, a model's config in, the backend chosen for the device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lensnet.checkpoint import ModelConfig
from lensnet.preprocess import NORMALISATIONS, has_backend, normalise
from lensnet.preprocess import fast, reference, torch_backend


def config(normalisation="asinh_stretch", **params):
    return ModelConfig(architecture="lensresnet-tiny", bands=["g", "r", "i"], stamp_size_px=16, pixel_scale_arcsec=0.2,
                       normalisation=normalisation, normalisation_params=params)


@pytest.fixture()
def stamps():
    values = np.random.default_rng(5).normal(10, 3, size=(6, 3, 16, 16)).astype(np.float32)
    values[2, 1, 3, 4] = np.nan
    return values


def test_a_method_name_runs_the_reference_as_before(stamps):
    got, bad = normalise(stamps, "asinh_stretch", scale=2.0)
    expected, expected_bad = reference.normalise(stamps, "asinh_stretch", scale=2.0)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(bad, expected_bad)
    assert bad.tolist() == [False, False, True, False, False, False]
    assert NORMALISATIONS is reference.NORMALISATIONS


def test_a_config_runs_its_own_normalisation_and_params_on_the_fast_backend_on_cpus(stamps):
    model = config(scale=2.5)
    got, bad = normalise(stamps, model)
    expected, expected_bad = fast.normalise(stamps, "asinh_stretch", scale=2.5)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(bad, expected_bad)
    np.testing.assert_array_equal(normalise(stamps, model, device="cpu")[0], expected)
    np.testing.assert_array_equal(normalise(stamps, model, backend="reference")[0],
                                  reference.normalise(stamps, "asinh_stretch", scale=2.5)[0])
    # a normalisation without a fast version goes through the reference
    np.testing.assert_array_equal(normalise(stamps, config("zscale"))[0], reference.normalise(stamps, "zscale")[0])


def test_the_torch_backend_matches_its_registry_and_reports_bad_pixels(stamps):
    got, bad = normalise(stamps, config(scale=3.0), backend="torch")
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    expected = torch_backend.TORCH_NORMALISATIONS["asinh_stretch"](torch.from_numpy(stamps), scale=3.0)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert bad.tolist() == [False, False, True, False, False, False]
    with pytest.raises(ValueError, match="no torch implementation"):
        normalise(stamps, "zscale", backend="torch")
    with pytest.raises(ValueError, match="no mask"):
        normalise(stamps, "asinh_stretch", mask=np.zeros(stamps.shape, bool), backend="torch")


def test_backends_are_named_and_checked(stamps):
    assert has_backend("asinh_stretch", "torch") and has_backend(config(), "fast")
    assert not has_backend("zscale", "torch") and has_backend("zscale", "reference")
    with pytest.raises(ValueError, match="unknown backend"):
        normalise(stamps, "asinh_stretch", backend="gpu")
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalise(stamps, "nope")
