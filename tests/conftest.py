"""Shared fixtures: a tiny seeded mock survey, a tiny untrained model, a local Dask cluster."""

from __future__ import annotations

import pytest
import torch
from distributed import Client, LocalCluster

from lensnet.checkpoint import ModelConfig, save_checkpoint

TINY_BANDS = ["g", "r", "i"]
TINY_STAMP_PX = 32


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A lensresnet-tiny checkpoint with random weights (scores are arbitrary but fixed)."""
    torch.manual_seed(0)
    config = ModelConfig(
        architecture="lensresnet-tiny", bands=TINY_BANDS, stamp_size_px=TINY_STAMP_PX, pixel_scale_arcsec=0.2,
        normalisation="asinh_stretch", threshold=0.5, name="tiny-test",
    )
    module = config.build()
    # Random running statistics so that batch norm is not the identity in eval mode.
    for layer in module.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.running_mean.normal_(0, 0.1)
            layer.running_var.uniform_(0.5, 2.0)
    return save_checkpoint(module, config, tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def tiny_survey(tmp_path_factory):
    """Two overlapping 320x320 tiles in g, r, i; 60 objects plus 3 off the footprint."""
    from pipeline.mock import make_mock_survey

    return make_mock_survey(
        tmp_path_factory.mktemp("tiny_survey"), n_objects=60, lens_fraction=0.3, seed=3,
        tiles_x=2, tiles_y=1, tile_size_px=320, overlap_px=60, n_off_footprint=3,
    )


@pytest.fixture(scope="session")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as dask_client:
            yield dask_client
