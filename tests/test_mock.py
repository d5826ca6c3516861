"""Tests of pipeline.mock: the mock survey's tiles, WCS, catalogue and truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from pipeline.mock import OFF_FOOTPRINT_KIND, make_mock_survey

TILE_PX = 300
OVERLAP_PX = 80


def _tiles(survey, band="r"):
    """Tile name -> (image, WCS) for one band."""
    out = {}
    for tile in survey.tiles:
        with fits.open(survey.image_pattern.format(tile=tile, band=band)) as hdul:
            out[tile] = (hdul[0].data, WCS(hdul[0].header))
    return out


def _inside(wcs, ra, dec, size_px):
    x, y = wcs.world_to_pixel_values(ra, dec)
    return (x >= -0.5) & (x < size_px - 0.5) & (y >= -0.5) & (y < size_px - 0.5)


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    return make_mock_survey(
        tmp_path_factory.mktemp("mock"),
        n_objects=40,
        lens_fraction=0.25,
        seed=1,
        tiles_x=2,
        tiles_y=2,
        tile_size_px=TILE_PX,
        overlap_px=OVERLAP_PX,
        n_off_footprint=5,
    )


@pytest.fixture(scope="module", params=[(0.0, "lenstronomy"), (30.0, "lenstronomy"), (30.0, "galsim")])
def ellipticals(request, tmp_path_factory):
    """A sparse survey of point-symmetric objects, to locate their light centroids."""
    rotation, engine = request.param
    return make_mock_survey(
        tmp_path_factory.mktemp(f"ellipticals{rotation:.0f}{engine}"),
        engine=engine,
        n_objects=12,
        lens_fraction=0.0,
        seed=2,
        tiles_x=2,
        tiles_y=1,
        tile_size_px=400,
        overlap_px=OVERLAP_PX,
        rotation_deg=rotation,
        kind_weights={"elliptical": 1.0},
    )


def test_files_and_headers(survey):
    assert survey.tiles == ["t00", "t01", "t10", "t11"] and survey.bands == ("g", "r", "i")
    for tile in survey.tiles:
        for band in survey.bands:
            with fits.open(survey.image_pattern.format(tile=tile, band=band)) as hdul:
                data, header = hdul[0].data, hdul[0].header
                assert data.dtype.type is np.float32 and data.shape == (TILE_PX, TILE_PX)
                assert np.isfinite(data).all()
                assert {"CD1_1", "CD1_2", "CD2_1", "CD2_2"} <= set(header) and header["FILTER"] == band
                wcs = WCS(header)
                assert wcs.has_celestial and wcs.wcs.ctype[0] == "RA---TAN"
                np.testing.assert_allclose(proj_plane_pixel_scales(wcs) * 3600, 0.2, rtol=1e-9)


def test_catalogue_and_truth(survey):
    catalog = pd.read_parquet(survey.catalog_path)
    truth = pd.read_parquet(survey.truth_path)
    assert list(catalog.columns) == ["id", "ra", "dec", "mag_r"] and catalog["id"].dtype == np.int64
    assert catalog["id"].is_unique and len(catalog) == 45
    assert set(truth["id"]) == set(catalog["id"])
    on = truth[truth["in_footprint"]]
    assert len(on) == 40 and on["is_lens"].sum() == 10
    assert (on.loc[on["is_lens"], "theta_e_arcsec"] > 0).all() and on.loc[~on["is_lens"], "theta_e_arcsec"].isna().all()
    assert {"kind", "arc_snr", "npix_arc_1sigma", "lens_mag", "source_mag"} <= set(truth.columns)
    assert catalog.loc[catalog["id"] < 40, "mag_r"].between(14, 26).all()


def test_tiles_form_a_grid_with_overlap(survey):
    tiles = _tiles(survey)
    # the last OVERLAP_PX columns of t00 are the first ones of t01 (and rows of t10)
    for a, b, axis in (("t00", "t01", 0), ("t00", "t10", 1)):
        pixel = np.array([[TILE_PX - OVERLAP_PX + 10.0, 40.0]])
        pixel = pixel if axis == 0 else pixel[:, ::-1]
        ra, dec = tiles[a][1].pixel_to_world_values(pixel[:, 0], pixel[:, 1])
        x, y = tiles[b][1].world_to_pixel_values(ra, dec)
        expected = (10.0, 40.0) if axis == 0 else (40.0, 10.0)
        np.testing.assert_allclose([x[0], y[0]], expected, atol=1e-3)


def test_rotated_tiles_form_a_grid(ellipticals):
    tiles = _tiles(ellipticals)
    settings = pd.read_json(ellipticals.root / "survey.json", typ="series")
    rotation = np.radians(settings["rotation_deg"])
    header = fits.getheader(ellipticals.image_pattern.format(tile="t00", band="g"))
    assert np.arctan2(header["CD1_2"], header["CD2_2"]) == pytest.approx(rotation, abs=1e-9)
    ra, dec = tiles["t00"][1].pixel_to_world_values(400 - OVERLAP_PX + 5.0, 200.0)
    x, y = tiles["t01"][1].world_to_pixel_values(ra, dec)
    np.testing.assert_allclose([x, y], [5.0, 200.0], atol=1e-3)


def test_overlap_objects_are_painted_identically(survey):
    truth = pd.read_parquet(survey.truth_path)
    shared = truth[truth["tiles"].str.count(",") >= 1]
    assert len(shared) > 0
    tiles = _tiles(survey)
    sigma = 2.257  # nominal r-band sky sigma of ground-gri
    compared = 0
    for row in shared.itertuples():
        a, b = row.tiles.split(",")[:2]
        cutouts = []
        for name in (a, b):
            image, wcs = tiles[name]
            x, y = wcs.world_to_pixel_values(row.ra, row.dec)
            col, r = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
            cutouts.append(image[max(r - 6, 0) : r + 7, max(col - 6, 0) : col + 7])
        if cutouts[0].shape != cutouts[1].shape:
            continue  # clipped by a tile edge
        difference = cutouts[0] - cutouts[1]
        # identical objects, independent noise: the difference is noise only
        assert abs(difference.mean()) < 4 * np.sqrt(2) * sigma / np.sqrt(difference.size)
        assert np.std(difference) == pytest.approx(np.sqrt(2) * sigma, rel=0.3)
        compared += 1
    assert compared > 0


def test_catalogue_positions_are_light_centroids(ellipticals):
    catalog = pd.read_parquet(ellipticals.catalog_path)
    tiles = _tiles(ellipticals)
    separation = np.hypot(*(catalog[["ra", "dec"]].to_numpy()[:, None, :] - catalog[["ra", "dec"]].to_numpy()[None]).T)
    np.fill_diagonal(separation, np.inf)
    offsets = []
    for index, row in catalog.iterrows():
        if row.mag_r > 20.5 or separation[index].min() * 3600 < 12:  # bright and isolated only
            continue
        for image, wcs in tiles.values():
            x, y = wcs.world_to_pixel_values(row.ra, row.dec)
            if not (20 <= x < image.shape[1] - 20 and 20 <= y < image.shape[0] - 20):
                continue
            # iterate a circular-aperture centroid: unbiased for a point-symmetric object
            cx, cy = float(x), float(y)
            rows, cols = np.indices(image.shape)
            for _ in range(5):
                weight = image * (np.hypot(cols - cx, rows - cy) < 6)
                cx, cy = (weight * cols).sum() / weight.sum(), (weight * rows).sum() / weight.sum()
            offsets.append((cx - x, cy - y))
    offsets = np.array(offsets)
    assert len(offsets) >= 5
    # noise and neighbours' wings move single centroids by a few hundredths of a pixel (a
    # tenth for faint, flattened ones); a convention error (half a pixel, a flipped axis)
    # would be far larger and systematic
    assert np.abs(offsets).max() < 0.15
    assert np.abs(offsets.mean(axis=0)).max() < 0.03


def test_off_footprint_rows_lie_outside_every_tile(survey):
    catalog = pd.read_parquet(survey.catalog_path)
    truth = pd.read_parquet(survey.truth_path).set_index("id")
    off = catalog[~truth.loc[catalog["id"], "in_footprint"].to_numpy()]
    assert len(off) == 5 and (truth.loc[off["id"], "kind"] == OFF_FOOTPRINT_KIND).all()
    on = catalog[truth.loc[catalog["id"], "in_footprint"].to_numpy()]
    covered = np.zeros(len(on), dtype=bool)
    for _, wcs in _tiles(survey).values():
        assert not _inside(wcs, off["ra"].to_numpy(), off["dec"].to_numpy(), TILE_PX).any()
        covered |= _inside(wcs, on["ra"].to_numpy(), on["dec"].to_numpy(), TILE_PX)
    assert covered.all()


def test_tile_flux_matches_the_catalogue(tmp_path):
    single = make_mock_survey(
        tmp_path / "single",
        n_objects=20,
        lens_fraction=0.2,
        seed=4,
        tiles_x=1,
        tiles_y=1,
        tile_size_px=400,
        overlap_px=0,
    )
    catalog = pd.read_parquet(single.catalog_path)
    image = fits.getdata(single.image_pattern.format(tile="t00", band="r"))
    expected = (10 ** (-0.4 * (catalog["mag_r"] - 30.0))).sum()
    noise = 2.257 * image.shape[0]  # sigma of the sum of all pixels
    # objects near the outer edge lose a little light beyond it
    assert image.sum() == pytest.approx(expected, rel=0.01, abs=5 * noise)
    assert image.sum() < expected + 5 * noise


def test_deterministic(tmp_path):
    kwargs = dict(n_objects=6, seed=9, tiles_x=1, tiles_y=1, tile_size_px=200, overlap_px=0, n_off_footprint=2)
    first = make_mock_survey(tmp_path / "a", **kwargs)
    second = make_mock_survey(tmp_path / "b", **kwargs)
    for band in first.bands:
        np.testing.assert_array_equal(
            fits.getdata(first.image_pattern.format(tile="t00", band=band)),
            fits.getdata(second.image_pattern.format(tile="t00", band=band)),
        )
    pd.testing.assert_frame_equal(pd.read_parquet(first.catalog_path), pd.read_parquet(second.catalog_path))
    pd.testing.assert_frame_equal(pd.read_parquet(first.truth_path), pd.read_parquet(second.truth_path))


def test_rendering_in_worker_processes_writes_the_same_survey(tmp_path, monkeypatch):
    # Parameters are drawn in order in the calling process; only rendering is spread out, so the
    # files are byte-for-byte those of a one-process run (objects in the overlap included).
    import concurrent.futures

    pools = []

    class CountedPool(concurrent.futures.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(kwargs.get("max_workers"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", CountedPool)
    kwargs = dict(n_objects=10, seed=4, tiles_x=2, tiles_y=1, tile_size_px=260, overlap_px=120, engine="galsim",
                  population=2, lens_fraction=0.3)
    one = make_mock_survey(tmp_path / "one", **kwargs)
    assert pools == []
    two = make_mock_survey(tmp_path / "two", workers=2, **kwargs)
    assert pools == [2]  # the second survey was rendered by two worker processes
    truth = pd.read_parquet(two.truth_path)
    assert truth["tiles"].str.contains(",").any()  # some object lies in both tiles
    for tile in one.tiles:
        for band in one.bands:
            np.testing.assert_array_equal(fits.getdata(one.image_pattern.format(tile=tile, band=band)),
                                          fits.getdata(two.image_pattern.format(tile=tile, band=band)))
    pd.testing.assert_frame_equal(pd.read_parquet(one.truth_path), truth)
    pd.testing.assert_frame_equal(pd.read_parquet(one.catalog_path), pd.read_parquet(two.catalog_path))


def test_too_many_objects_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="could only place"):
        make_mock_survey(tmp_path, n_objects=200, tiles_x=1, tiles_y=1, tile_size_px=200, overlap_px=0)


def test_the_command_line_writes_a_survey_that_run_survey_reads(tmp_path, capsys):
    from pipeline.mock import main

    assert main([str(tmp_path / "m"), "--objects", "12", "--lens-fraction", "0.25", "--tiles", "1x1",
                 "--tile-size", "300", "--overlap", "0", "--seed", "3", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "run_survey.py --images" in printed and "--bands g,r,i" in printed
    truth = pd.read_parquet(tmp_path / "m" / "truth.parquet")
    assert len(truth) == 12 and int(truth["is_lens"].sum()) == 3
    assert len(list((tmp_path / "m" / "tiles").glob("*.fits"))) == 3  # one tile, three bands


@pytest.mark.parametrize("argv, message", [
    (["--tiles", "three"], "--tiles must look like 3x3"),
    (["--lens-fraction", "1.5"], "--lens-fraction must lie in [0, 1]"),
    (["--engine", "pixie"], "invalid choice"),
    (["--workers", "0"], "--objects, --workers and the tile grid must be positive"),
])
def test_the_command_line_refuses_bad_options_in_one_line(argv, message, tmp_path, capsys):
    from pipeline.mock import main

    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "m"), *argv])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
