"""Bands on different pixel grids: stamps resampled onto the reference grid, checked against the WCS."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from astropy.io import fits

from pipeline.cutouts import cut_stamps, resample_stamps
from pipeline.run import run_with_client
from tests.conftest import TINY_STAMP_PX
from tests.fits_helpers import tan_wcs, write_tile
from tests.test_faults import settings_for

CENTRE = (150.0, 2.0)
FINE_SHAPE = (320, 320)


def sky_function(ra_deg, dec_deg):
    """A smooth field on the sky (linear plus a gentle curvature), in arbitrary units."""
    ra_arcsec = (np.asarray(ra_deg) - CENTRE[0]) * 3600 * np.cos(np.radians(CENTRE[1]))
    dec_arcsec = (np.asarray(dec_deg) - CENTRE[1]) * 3600
    return 100 + 2.0 * ra_arcsec - 3.0 * dec_arcsec + 0.01 * ra_arcsec * dec_arcsec


def painted(shape, wcs):
    rows, columns = np.mgrid[: shape[0], : shape[1]]
    return sky_function(*wcs.all_pix2world(columns, rows, 0)).astype(np.float32)


def coarse_wcs():
    # A third of the resolution, rotated by 25 degrees, tangent point 3" away.
    return tan_wcs((CENTRE[0] + 3 / 3600, CENTRE[1] - 2 / 3600), (110, 110), pixel_scale_arcsec=0.6,
                   rotation_deg=25.0)


def test_resampled_pixels_sample_the_band_at_their_sky_positions():
    fine = tan_wcs(CENTRE, FINE_SHAPE, 0.2)
    coarse = coarse_wcs()
    image = painted((110, 110), coarse)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(60, 260, 25), rng.uniform(60, 260, 25)
    stamps, padded = resample_stamps(image, fine, coarse, x, y, 16)
    # Where each output pixel lies on the sky, from the reference grid's own WCS.
    index_stamps, _ = cut_stamps(np.arange(np.prod(FINE_SHAPE), dtype=np.float64).reshape(FINE_SHAPE), x, y, 16)
    rows, columns = np.divmod(index_stamps.astype(np.int64), FINE_SHAPE[1])
    expected = sky_function(*fine.all_pix2world(columns, rows, 0))
    assert (padded == 0).all()
    # Bilinear interpolation of a smooth field sampled every 0.6": errors from the
    # curvature term only, far below the field's 0.4-per-fine-pixel gradient.
    np.testing.assert_allclose(stamps, expected, atol=0.02)


def test_a_band_on_its_own_grid_equals_plain_slicing():
    fine = tan_wcs(CENTRE, FINE_SHAPE, 0.2)
    image = painted(FINE_SHAPE, fine)
    x, y = np.array([100.3, 201.7]), np.array([150.2, 99.9])
    resampled, _ = resample_stamps(image, fine, fine, x, y, 16)
    sliced, _ = cut_stamps(image, x, y, 16)
    np.testing.assert_allclose(resampled, sliced, atol=1e-4)


def test_pipeline_stores_multi_resolution_stamps_that_match_the_wcs(tiny_model, client, tmp_path):
    fine = tan_wcs(CENTRE, FINE_SHAPE, 0.2)
    coarse = coarse_wcs()
    rng = np.random.default_rng(1)
    write_tile(tmp_path / "tiles" / "t0_g.fits", rng.normal(0, 1, FINE_SHAPE).astype(np.float32), fine)
    write_tile(tmp_path / "tiles" / "t0_r.fits", painted((110, 110), coarse), coarse)
    write_tile(tmp_path / "tiles" / "t0_i.fits", rng.normal(0, 1, FINE_SHAPE).astype(np.float32), fine)
    x, y = rng.uniform(40, 280, 30), rng.uniform(40, 280, 30)
    ra, dec = fine.all_pix2world(x, y, 0)
    pd.DataFrame({"id": np.arange(30), "ra": ra, "dec": dec}).to_parquet(tmp_path / "cat.parquet")

    class Survey:
        image_pattern = str(tmp_path / "tiles" / "{tile}_{band}.fits")
        catalog_path = tmp_path / "cat.parquet"
        bands = ("g", "r", "i")

    result = run_with_client(settings_for(Survey, tiny_model, tmp_path / "out"), client, log=lambda _: None)
    store = xr.open_zarr(result.store, consolidated=False)
    r_stamps = store["stamps"].sel(band="r").values
    x_px, y_px = store["x_px"].values, store["y_px"].values
    index_stamps, _ = cut_stamps(np.arange(np.prod(FINE_SHAPE), dtype=np.float64).reshape(FINE_SHAPE), x_px, y_px,
                                 TINY_STAMP_PX)
    rows, columns = np.divmod(index_stamps.astype(np.int64), FINE_SHAPE[1])
    expected = sky_function(*fine.all_pix2world(columns, rows, 0))
    np.testing.assert_allclose(r_stamps, expected, atol=0.05)
    with fits.open(tmp_path / "tiles" / "t0_g.fits") as hdul:
        g_sliced, _ = cut_stamps(hdul[0].data, x_px, y_px, TINY_STAMP_PX)
    np.testing.assert_array_equal(store["stamps"].sel(band="g").values, g_sliced)
    assert len(pd.read_parquet(result.candidates)) == 30
