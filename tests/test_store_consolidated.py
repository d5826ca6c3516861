"""The cutout store's metadata is consolidated: xarray opens it in one read, without warning."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from pipeline import store


def objects(n: int) -> pd.DataFrame:
    return pd.DataFrame({"object_id": np.arange(n), "ra": np.linspace(10, 11, n), "dec": np.zeros(n),
                         "tile": ["t00"] * n, "x_px": np.arange(n, dtype=float), "y_px": np.zeros(n)})


@pytest.fixture
def filled_store(tmp_path):
    path = tmp_path / "cutouts.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no zarr warning about consolidated format-3 metadata either
        store.create_store(path, objects(10), ["g", "r"], 8, 4, attrs={"bands": ["g", "r"]})
    stamps = np.arange(4 * 2 * 8 * 8, dtype=np.float32).reshape(4, 2, 8, 8)
    store.write_shard(path, 4, stamps, np.full(4, 2, dtype=np.int32))
    return path, stamps


def test_root_holds_consolidated_metadata_of_every_array(filled_store):
    path, _ = filled_store
    root = json.loads((path / "zarr.json").read_text())
    consolidated = root["consolidated_metadata"]["metadata"]
    assert {"stamps", "flags", "object_id", "ra", "dec", "tile", "x_px", "y_px", "band"} <= set(consolidated)
    assert consolidated["stamps"]["shape"] == [10, 2, 8, 8]


def test_xarray_opens_it_without_warning_and_reads_the_shards(filled_store):
    path, stamps = filled_store
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = xr.open_zarr(path)  # xarray's default: consolidated metadata expected
        np.testing.assert_array_equal(dataset["stamps"].values[4:8], stamps)
        assert np.isnan(dataset["stamps"].values[:4]).all()
        assert dataset["flags"].values.tolist() == [0] * 4 + [2] * 4 + [0] * 2
        assert dataset.attrs["bands"] == ["g", "r"]
        assert store.open_store(path)["stamps"].shape == (10, 2, 8, 8)
    # zarr itself uses the consolidated view when asked for it
    assert zarr.open_consolidated(str(path), zarr_format=3)["stamps"].shape == (10, 2, 8, 8)


def test_stores_from_before_consolidation_still_open_and_can_be_consolidated(tmp_path):
    path = tmp_path / "old.zarr"
    store.create_store(path, objects(6), ["g"], 4, 3)
    root = json.loads((path / "zarr.json").read_text())
    root.pop("consolidated_metadata")  # as written by earlier versions
    (path / "zarr.json").write_text(json.dumps(root))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.open_store(path)["stamps"].shape == (6, 1, 4, 4)
    store.consolidate(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert xr.open_zarr(path)["stamps"].shape == (6, 1, 4, 4)
