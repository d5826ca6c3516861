"""lensnet.interpret: occlusion maps and Grad-CAM on toy models with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lensnet.interpret import default_cam_layer, grad_cam, occlusion_deltas, occlusion_map, patch_starts
from lensnet.models import create_model

SIZE = 32
REGION = (slice(8, 16), slice(20, 28))  # exactly one 8x8 patch on the stride-4 grid


class LooksAtOnePatch(nn.Module):
    """logit = sum of the input inside REGION (all bands): only that patch matters."""

    def __init__(self, bands: int = 3):
        super().__init__()
        mask = torch.zeros(1, bands, SIZE, SIZE)
        mask[:, :, REGION[0], REGION[1]] = 1.0
        self.register_buffer("mask", mask)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (x * self.mask).sum(dim=(1, 2, 3))


class ConvThenRegion(nn.Module):
    """A conv feature map whose pooled value is read only inside REGION."""

    def __init__(self, bands: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(bands, 4, 3, padding=1)
        nn.init.constant_(self.conv.weight, 0.1)
        nn.init.zeros_(self.conv.bias)
        mask = torch.zeros(1, 1, SIZE, SIZE)
        mask[:, :, REGION[0], REGION[1]] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.conv(x))
        return (features * self.mask).mean(dim=(1, 2, 3))


def ones(n: int = 2, bands: int = 3) -> np.ndarray:
    return np.ones((n, bands, SIZE, SIZE), dtype=np.float32)


def test_patch_starts_cover_every_pixel():
    assert patch_starts(32, 8, 4) == [0, 4, 8, 12, 16, 20, 24]
    assert patch_starts(30, 8, 4) == [0, 4, 8, 12, 16, 20, 22]
    with pytest.raises(ValueError):
        patch_starts(8, 9, 1)
    with pytest.raises(ValueError):
        patch_starts(8, 4, 0)


def test_occluding_the_exact_patch_the_model_looks_at_changes_the_logit_most():
    module = LooksAtOnePatch()
    deltas, rows, cols = occlusion_deltas(module, ones(), patch_px=8, stride_px=4)
    assert deltas.shape == (2, len(rows), len(cols))
    best = np.unravel_index(np.argmax(deltas[0]), deltas[0].shape)
    assert (rows[best[0]], cols[best[1]]) == (REGION[0].start, REGION[1].start)
    np.testing.assert_allclose(deltas[:, best[0], best[1]], 3 * 8 * 8)  # the whole signal is gone


def test_occlusion_map_is_largest_inside_the_region_and_zero_far_from_it():
    module = LooksAtOnePatch()
    maps = occlusion_map(module, ones(3), patch_px=8, stride_px=4, batch_size=7)
    assert maps.shape == (3, SIZE, SIZE) and maps.dtype == np.float32
    peak = np.unravel_index(np.argmax(maps[0]), maps[0].shape)
    assert REGION[0].start <= peak[0] < REGION[0].stop and REGION[1].start <= peak[1] < REGION[1].stop
    assert np.all(maps[:, 24:, :] == 0) and np.all(maps[:, :, :12] == 0)
    np.testing.assert_allclose(maps[0], maps[2])


def test_occlusion_baseline_equal_to_the_image_changes_nothing():
    maps = occlusion_map(LooksAtOnePatch(), ones(1), baseline=1.0)
    np.testing.assert_allclose(maps, 0.0)


def test_occlusion_does_not_depend_on_batch_size_and_restores_training_mode():
    torch.manual_seed(0)
    module = create_model("lensresnet-tiny", bands=3)
    module.train()
    stamps = np.random.default_rng(1).normal(size=(3, 3, SIZE, SIZE)).astype(np.float32)
    a = occlusion_map(module, stamps, patch_px=8, stride_px=8, batch_size=4)
    b = occlusion_map(module, stamps, patch_px=8, stride_px=8, batch_size=64)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert module.training


def test_grad_cam_shape_finite_non_negative_on_the_real_architecture():
    torch.manual_seed(0)
    module = create_model("lensresnet-tiny", bands=3).eval()
    stamps = np.random.default_rng(2).normal(size=(5, 3, SIZE, SIZE)).astype(np.float32)
    with torch.inference_mode():  # callers scoring in inference mode can still explain
        cams = grad_cam(module, stamps, batch_size=2)
    assert cams.shape == (5, SIZE, SIZE) and cams.dtype == np.float32
    assert np.isfinite(cams).all() and (cams >= 0).all()
    assert all(parameter.grad is None for parameter in module.parameters())


def test_default_cam_layer_is_the_last_convolution_executed():
    module = create_model("lensresnet-tiny", bands=3).eval()
    layer = default_cam_layer(module, torch.zeros(1, 3, SIZE, SIZE))
    # The last block registers its 1x1 shortcut after conv2, but conv2 runs last.
    assert layer is module.stages[-1].conv2


def test_grad_cam_lights_up_the_source_the_model_reads_and_not_the_empty_sky():
    module = ConvThenRegion()
    stamps = np.zeros((2, 3, SIZE, SIZE), dtype=np.float32)
    stamps[:, :, REGION[0], REGION[1]] = 1.0  # a source where the model reads
    cams = grad_cam(module, stamps)
    inside = cams[:, REGION[0], REGION[1]].mean()
    outside = cams[:, 24:, :8].mean()
    assert inside > 0 and inside > 10 * outside


def test_grad_cam_with_an_explicit_layer_and_a_single_stamp():
    module = ConvThenRegion()
    cam = grad_cam(module, ones(1)[0], layer=module.conv)
    assert cam.shape == (1, SIZE, SIZE)


def test_inputs_of_the_wrong_rank_are_refused():
    with pytest.raises(ValueError):
        occlusion_map(LooksAtOnePatch(), np.ones((SIZE, SIZE), dtype=np.float32))
