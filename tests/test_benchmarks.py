"""Correctness of the benchmark helpers (benchmarks/): no timings here, only that what the
benchmarks compare computes the same thing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.cutouts import cutout2d_cutouts, write_tile
from benchmarks.fold import fold_batchnorm
from benchmarks.pipeline_e2e import replicate_survey
from lensnet.models import create_model
from pipeline.cutouts import assign_to_tiles, cut_stamps
from pipeline.images import read_image
from pipeline.tiles import discover_tiles, read_tile_headers


def _randomise_batchnorm(module: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    for layer in module.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.running_mean.copy_(torch.randn(layer.num_features, generator=generator) * 0.1)
            layer.running_var.copy_(torch.rand(layer.num_features, generator=generator) + 0.5)
            layer.weight.data.copy_(torch.rand(layer.num_features, generator=generator) + 0.5)
            layer.bias.data.copy_(torch.randn(layer.num_features, generator=generator) * 0.1)


@pytest.mark.parametrize("name, stages", [("lensresnet-small", 4), ("lensresnet-tiny", 3)])
def test_folded_batchnorm_gives_the_same_logits(name, stages):
    torch.manual_seed(0)
    module = create_model(name, bands=3).eval()
    _randomise_batchnorm(module)
    folded, report = fold_batchnorm(module)
    # Pre-activation blocks: the BN after each block's first conv and the BNs after the
    # conv+projection sums fold; the two whose input also feeds an identity shortcut stay.
    assert report == {"batchnorms": 2 * stages + 1, "folded_after_conv": stages,
                      "folded_after_conv_sum": stages - 1, "left": 2}
    x = torch.randn(4, 3, 64, 64)
    with torch.inference_mode():
        np.testing.assert_allclose(folded(x).numpy(), module(x).numpy(), rtol=1e-4, atol=1e-4)
        # The original is untouched.
        assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules()) == 2 * stages + 1


def test_cut_stamps_match_cutout2d_given_its_centring(tmp_path):
    paths, wcs = write_tile(tmp_path, 200)
    rng = np.random.default_rng(3)
    x, y = rng.uniform(-0.5, 199.5, 40), rng.uniform(-0.5, 199.5, 40)  # some reach past the edges
    ra, dec = wcs.all_pix2world(x, y, 0)
    size = 32
    baseline = cutout2d_cutouts(paths, ra, dec, size)
    px, py = wcs.all_world2pix(ra, dec, 0)
    # Cutout2D puts an even-sized cutout's origin at ceil(x - S/2); give cut_stamps that centre.
    cx, cy = np.ceil(px - size / 2) + size // 2, np.ceil(py - size / 2) + size // 2
    ours = np.stack([cut_stamps(read_image(p), cx, cy, size)[0] for p in paths.values()], axis=1)
    np.testing.assert_array_equal(ours, baseline)
    assert np.isnan(ours).any()  # the edge case was exercised


def test_replicated_survey_puts_every_copy_on_the_same_pixels(tiny_survey, tmp_path):
    source = {"image_pattern": tiny_survey.image_pattern, "catalog": str(tiny_survey.catalog_path),
              "tiles": len(tiny_survey.tiles)}
    copies = replicate_survey(source, tmp_path / "x3", 3)
    catalog = pd.read_parquet(copies["catalog"])
    original = pd.read_parquet(tiny_survey.catalog_path)
    assert len(catalog) == 3 * len(original) == copies["objects"]
    tiles = read_tile_headers(discover_tiles(copies["image_pattern"], list(tiny_survey.bands)))
    assert len(tiles) == 3 * len(tiny_survey.tiles)
    placed = assign_to_tiles(catalog["ra"].to_numpy(), catalog["dec"].to_numpy(), tiles)
    n = len(original)
    first = placed.iloc[:n].reset_index(drop=True)
    for copy in (1, 2):
        other = placed.iloc[copy * n:(copy + 1) * n].reset_index(drop=True)
        on_tile = first["tile"].notna()
        assert (other["tile"].notna() == on_tile).all()
        assert (other["tile"][on_tile].str[2:] == first["tile"][on_tile].str[2:]).all()
        assert (other["tile"][on_tile].str[:2] == f"c{copy}").all()
        np.testing.assert_allclose(other[["x_px", "y_px"]][on_tile], first[["x_px", "y_px"]][on_tile], atol=1e-6)


def test_stage_costs_compare_like_with_like():
    from benchmarks.stage_costs import codecs, normalisation

    stamps = np.random.default_rng(0).normal(100.0, 5.0, (16, 3, 24, 24)).astype(np.float32)
    norm = normalisation(stamps, repeats=1)
    assert norm["max_abs_difference"] < 2e-6 and set(norm["stamps_per_s_one_thread"]) == {
        "float64 reference", "float32 (pipeline)"}
    store = codecs(stamps, repeats=1)["codecs"]
    # Uncompressed stamps take exactly their bytes on disk; zstd's size is what it wrote.
    assert store["none"]["stamp_bytes_on_disk"] == stamps.nbytes and store["none"]["compression_ratio"] == 1.0
    assert 0 < store["zstd"]["stamp_bytes_on_disk"] < stamps.nbytes
