import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.nddata import Cutout2D
from astropy.wcs.utils import skycoord_to_pixel

from catalogs.flags import Flag
from pipeline.cutouts import assign_to_tiles, crowded, cut_stamps, stamp_flags
from pipeline.tiles import Tile, discover_tiles, read_tile_headers
from tests.fits_helpers import index_image, tan_wcs, write_tile

SHAPE = (120, 150)
SIZE = 16


def make_tile(name, crval, rotation_deg=0.0):
    tile = Tile(name, {})
    tile.shape, tile.wcs, tile.pixel_scale_arcsec = SHAPE, tan_wcs(crval, SHAPE, 0.2, rotation_deg), 0.2
    return tile


@pytest.mark.parametrize("rotation_deg", [0.0, 30.0, -117.0])
def test_stamp_centre_is_the_wcs_pixel(rotation_deg):
    rng = np.random.default_rng(1)
    tile = make_tile("t0", (150.0, 2.0), rotation_deg)
    image = index_image(SHAPE)
    x_true = rng.uniform(SIZE, SHAPE[1] - SIZE, 200)
    y_true = rng.uniform(SIZE, SHAPE[0] - SIZE, 200)
    ra, dec = tile.wcs.all_pix2world(x_true, y_true, 0)

    assigned = assign_to_tiles(ra, dec, [tile])
    stamps, padded = cut_stamps(image, assigned["x_px"].to_numpy(), assigned["y_px"].to_numpy(), SIZE)

    # Independent path: astropy's SkyCoord -> pixel conversion of the same catalogue.
    x_ref, y_ref = skycoord_to_pixel(SkyCoord(ra, dec, unit="deg"), tile.wcs, origin=0)
    centre = stamps[:, SIZE // 2, SIZE // 2].astype(np.int64)
    np.testing.assert_array_equal(centre // SHAPE[1], np.floor(y_ref + 0.5).astype(int))
    np.testing.assert_array_equal(centre % SHAPE[1], np.floor(x_ref + 0.5).astype(int))
    assert (padded == 0).all()
    # Rows and columns of the stamp follow the image's axes, one pixel per step.
    np.testing.assert_array_equal(np.diff(stamps, axis=2), 1.0)
    np.testing.assert_array_equal(np.diff(stamps, axis=1), SHAPE[1])


def test_matches_astropy_cutout2d_on_odd_stamps():
    # Away from exact half-pixel ties (where we round half up), the stamps are Cutout2D's.
    image = index_image(SHAPE)
    positions = [(40.2, 50.7), (75.51, 60.49), (100.0, 30.0), (20.49, 99.5001)]
    stamps, _ = cut_stamps(image, np.array([p[0] for p in positions]), np.array([p[1] for p in positions]), 15)
    for stamp, position in zip(stamps, positions):
        np.testing.assert_array_equal(stamp, Cutout2D(image, position, 15, mode="strict").data)


def test_edge_stamps_are_padded_with_nan_and_flagged():
    image = index_image(SHAPE)
    x = np.array([2.0, 75.0, SHAPE[1] - 1.0, -5.0])
    y = np.array([60.0, 60.0, SHAPE[0] - 1.0, -40.0])
    stamps, padded = cut_stamps(image, x, y, SIZE)
    assert padded[1] == 0 and np.isfinite(stamps[1]).all()
    # Object at x=2: columns x0=-6..-1 fall outside.
    assert padded[0] == 6 * SIZE
    assert np.isnan(stamps[0][:, :6]).all() and np.isfinite(stamps[0][:, 6:]).all()
    assert stamps[0][SIZE // 2, SIZE // 2] == 60 * SHAPE[1] + 2
    assert padded[3] == SIZE * SIZE and np.isnan(stamps[3]).all()

    flags, empty = stamp_flags(stamps[:, None], padded, np.zeros(4, bool))
    assert list(flags & Flag.EDGE) == [Flag.EDGE, 0, Flag.EDGE, Flag.EDGE]
    assert not (flags & Flag.BAD_PIXELS).any()
    assert list(empty) == [False, False, False, True]


def test_bad_pixels_are_flagged_apart_from_padding():
    image = index_image(SHAPE)
    image[58:62, 70:80] = np.nan
    stamps, padded = cut_stamps(image, np.array([75.0, 2.0, 30.0]), np.array([60.0, 60.0, 30.0]), SIZE)
    flags, empty = stamp_flags(stamps[:, None], padded, np.array([False, False, True]))
    assert flags[0] == Flag.BAD_PIXELS
    assert flags[1] == Flag.EDGE
    assert flags[2] == Flag.CROWDED
    assert not empty.any()


def test_overlapping_tiles_cut_each_object_once_from_its_most_central_tile():
    left = make_tile("a", (150.0, 2.0))
    # Tile b is centred 100 px east of a's centre (east = smaller x), so b spans a's
    # columns -100.5 .. 49.5 and the two overlap on a's columns -0.5 .. 49.5.
    ra_b, dec_b = left.wcs.all_pix2world([(SHAPE[1] - 1) / 2 - 100], [(SHAPE[0] - 1) / 2], 0)
    right = make_tile("b", (float(ra_b[0]), float(dec_b[0])))
    x = np.array([140.0, 30.0, 5.0, 75.0])
    y = np.full(4, 60.0)
    ra, dec = left.wcs.all_pix2world(x, y, 0)
    assigned = assign_to_tiles(np.append(ra, 149.0), np.append(dec, 2.0), [left, right])
    # x=30 is 30.5 px from a's edge but 19.5 px from b's: a. x=5 is 5.5 px from a's edge
    # and 44.5 px from b's: b (at its x=105). The last object is far from both.
    assert list(assigned["tile"].iloc[:4]) == ["a", "a", "b", "a"]
    assert assigned["tile"].isna().iloc[4]
    np.testing.assert_allclose(assigned["x_px"].iloc[2], 105.0, atol=1e-6)
    np.testing.assert_allclose(assigned["edge_distance_px"].iloc[:4], [9.5, 30.5, 44.5, 59.5], atol=1e-5)
    assert np.isnan(assigned["x_px"].iloc[4])


def test_invalid_coordinates_are_assigned_nowhere():
    tile = make_tile("t", (150.0, 2.0))
    assigned = assign_to_tiles(np.array([np.nan, 150.0, 150.0]), np.array([2.0, 95.0, 2.0]), [tile])
    assert list(assigned["tile"].isna()) == [True, True, False]


def test_crowded_pairs():
    ra = np.array([10.0, 10.0 + 1.0 / 3600, 11.0])
    assert list(crowded(ra, np.zeros(3), 2.0)) == [True, True, False]


def test_discover_tiles_requires_every_band(tmp_path):
    wcs = tan_wcs((150, 2), (8, 8))
    for tile, bands in {"t1": "gri", "t2": "gr"}.items():
        for band in bands:
            write_tile(tmp_path / f"{tile}_{band}.fits", np.zeros((8, 8), np.float32), wcs)
    pattern = str(tmp_path / "{tile}_{band}.fits")
    assert [t.name for t in discover_tiles(pattern, ["g", "r"])] == ["t1", "t2"]
    with pytest.raises(ValueError, match=r"t2 lacks .*t2_i\.fits"):
        discover_tiles(pattern, ["g", "r", "i"])
    with pytest.raises(ValueError, match="no file matches"):
        discover_tiles(str(tmp_path / "{tile}-{band}.fits"), ["g"])


def test_tile_header_errors_are_recorded_not_raised(tmp_path):
    wcs = tan_wcs((150, 2), (8, 8), rotation_deg=10)
    write_tile(tmp_path / "ok_g.fits", np.zeros((8, 8), np.float32), wcs)
    (tmp_path / "bad_g.fits").write_bytes(b"not a fits file at all" * 10)
    tiles = read_tile_headers(discover_tiles(str(tmp_path / "{tile}_{band}.fits"), ["g"]))
    by_name = {tile.name: tile for tile in tiles}
    assert by_name["ok"].error is None and by_name["ok"].shape == (8, 8)
    assert by_name["ok"].pixel_scale_arcsec == pytest.approx(0.2)
    assert by_name["bad"].error is not None
