"""Inputs as surveys ship them: multi-extension, tile-compressed, masks and weight maps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from catalogs.flags import Flag
from pipeline.images import cache_stats, clear_cache, read_image, split_reference
from pipeline.run import run_with_client
from tests.test_faults import settings_for


def _tile_images(survey):
    for tile in survey.tiles:
        yield tile, {band: fits.open(survey.image_pattern.format(tile=tile, band=band))[0] for band in survey.bands}


@pytest.fixture(scope="module")
def plain_run(tiny_survey, tiny_model, client, tmp_path_factory):
    return run_with_client(settings_for(tiny_survey, tiny_model, tmp_path_factory.mktemp("plain") / "out"), client,
                           log=lambda _: None)


def test_reference_syntax():
    assert split_reference("a/b.fits[g]") == (split_reference("a/b.fits")[0], "g")
    assert split_reference("a/b.fits")[1] is None


def test_multi_extension_tiles_give_the_same_catalogue(tiny_survey, tiny_model, client, plain_run, tmp_path):
    for tile, hdus in _tile_images(tiny_survey):
        extensions = [fits.ImageHDU(hdu.data, hdu.header, name=band.upper()) for band, hdu in hdus.items()]
        fits.HDUList([fits.PrimaryHDU(), *extensions]).writeto(tmp_path / f"{tile}.fits")
    settings = settings_for(tiny_survey, tiny_model, tmp_path / "out", images=str(tmp_path / "{tile}.fits"))
    result = run_with_client(settings, client, log=lambda _: None)
    pd.testing.assert_frame_equal(pd.read_parquet(result.candidates), pd.read_parquet(plain_run.candidates))


def test_a_missing_band_extension_fails_only_that_tile(tiny_survey, tiny_model, client, tmp_path):
    for index, (tile, hdus) in enumerate(_tile_images(tiny_survey)):
        kept = {band: hdu for band, hdu in hdus.items() if not (index == 0 and band == "i")}
        extensions = [fits.ImageHDU(hdu.data, hdu.header, name=band) for band, hdu in kept.items()]
        fits.HDUList([fits.PrimaryHDU(), *extensions]).writeto(tmp_path / f"{tile}.fits")
    settings = settings_for(tiny_survey, tiny_model, tmp_path / "out", images=str(tmp_path / "{tile}.fits"))
    result = run_with_client(settings, client, log=lambda _: None)
    failures = pd.read_parquet(result.failures)
    assert failures["detail"].str.contains(tiny_survey.tiles[0]).any()
    assert tiny_survey.tiles[0] not in set(pd.read_parquet(result.candidates)["tile"])


def test_tile_compressed_images_are_decompressed_once_per_worker(tiny_survey, tiny_model, client, plain_run, tmp_path):
    for tile, hdus in _tile_images(tiny_survey):
        for band, hdu in hdus.items():
            # GZIP_2 with quantize_level=0 is lossless for float32, so scores must not change.
            compressed = fits.CompImageHDU(hdu.data, hdu.header, compression_type="GZIP_2", quantize_level=0)
            fits.HDUList([fits.PrimaryHDU(), compressed]).writeto(tmp_path / f"{tile}_{band}.fits.fz")
    client.run(clear_cache)
    before = {worker: stats["misses"] for worker, stats in client.run(cache_stats).items()}
    settings = settings_for(tiny_survey, tiny_model, tmp_path / "out", images=str(tmp_path / "{tile}_{band}.fits.fz"),
                            shard_size=4)
    result = run_with_client(settings, client, log=lambda _: None)
    pd.testing.assert_frame_equal(pd.read_parquet(result.candidates).drop(columns="cutout_index"),
                                  pd.read_parquet(plain_run.candidates).drop(columns="cutout_index"),
                                  check_exact=False, rtol=1e-5)
    decompressions = sum(stats["misses"] for stats in client.run(cache_stats).values()) - sum(before.values())
    images = len(tiny_survey.tiles) * len(tiny_survey.bands)
    shards = result.summary["shards"]
    assert shards > 2 * len(tiny_survey.tiles)  # several shards per tile, so a cache matters
    assert decompressions <= images * len(client.scheduler_info()["workers"])


def test_masks_and_weights_mark_pixels_bad(tiny_survey, tiny_model, client, tmp_path):
    tile = tiny_survey.tiles[0]
    shape = read_image(tiny_survey.image_pattern.format(tile=tile, band="g")).shape
    for name in tiny_survey.tiles:
        mask = np.zeros(shape, np.int16)
        weight = np.ones(shape, np.float32)
        if name == tile:
            mask[:, :60] = 1          # left band of the first tile masked in every band
            weight[-60:, :] = 0.0     # top band of the first tile has no weight
        fits.PrimaryHDU(mask).writeto(tmp_path / f"{name}_mask.fits")
        fits.PrimaryHDU(weight).writeto(tmp_path / f"{name}_weight.fits")
    settings = settings_for(tiny_survey, tiny_model, tmp_path / "out", masks=str(tmp_path / "{tile}_mask.fits"),
                            weights=str(tmp_path / "{tile}_weight.fits"))
    result = run_with_client(settings, client, log=lambda _: None)
    candidates = pd.read_parquet(result.candidates)
    first = candidates[candidates["tile"] == tile]
    near_masked = first[(first["x_px"] < 60 + 14) | (first["y_px"] > shape[0] - 60 - 14)]
    clear = first[(first["x_px"] > 60 + 18) & (first["y_px"] < shape[0] - 60 - 18)]
    assert len(near_masked) and ((near_masked["flags"] & int(Flag.BAD_PIXELS)) != 0).all()
    assert len(clear) and ((clear["flags"] & int(Flag.BAD_PIXELS)) == 0).all()


def test_missing_mask_files_are_named(tiny_survey, tiny_model, client, tmp_path):
    from pipeline.images import InputError

    settings = settings_for(tiny_survey, tiny_model, tmp_path / "out", masks=str(tmp_path / "{tile}_mask.fits"))
    with pytest.raises(InputError, match="masks file"):
        run_with_client(settings, client, log=lambda _: None)
