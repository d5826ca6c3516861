"""Tests of lensnet.simulate: profiles, parameters, lenstronomy rendering, truth, datasets."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from lensnet.simulate import (
    KINDS,
    NON_LENS_KINDS,
    PROFILES,
    draw_kinds,
    draw_parameters,
    generate_dataset,
    get_profile,
    render,
    simulate_stamps,
    truth_record,
)
from lensnet.simulate import components as comp
from lensnet.simulate.__main__ import main as cli_main
from lensnet.simulate.sed import draw_sed

GRI = get_profile("ground-gri")


@pytest.fixture(scope="module")
def stamps_and_truth():
    return simulate_stamps(40, "ground-gri", seed=7, lens_fraction=0.5)


def _centred_lens(theta_e: float, seed: int = 0) -> dict:
    """A lens with a round mass, no shear and a clump-free source right behind it."""
    params = draw_parameters(np.random.default_rng(seed), "lens", GRI, field_galaxies=False)
    sie, shear = params["lens_model"]["kwargs"]
    sie.update(theta_E=theta_e, e1=0.0, e2=0.0)
    shear.update(gamma1=0.0, gamma2=0.0)
    params["groups"] = [g for g in params["groups"] if g["name"] != "source_clumps"]
    source = next(g for g in params["groups"] if g["lensed"])
    source["components"][0]["kwargs"].update(center_x=0.0, center_y=0.0, R_sersic=0.15, e1=0.0, e2=0.0)
    params["meta"]["theta_e_arcsec"] = theta_e
    return params


def test_profiles():
    assert {"ground-gri", "euclid-like"} <= set(PROFILES)
    assert GRI.bands == ("g", "r", "i") and GRI.pixel_scale_arcsec == 0.2 and GRI.stamp_size_px == 64
    assert all(0.7 <= f <= 0.9 for f in GRI.psf_fwhm_arcsec)
    assert get_profile(GRI) is GRI
    with pytest.raises(KeyError, match="ground-gri"):
        get_profile("hsc-deep")
    euclid = get_profile("euclid-like")
    assert euclid.is_multi_resolution and not GRI.is_multi_resolution
    assert euclid.resolution_groups == {0.1: ("VIS",), 0.3: ("Y", "J", "H")}
    assert GRI.magnitude(GRI.counts(21.3, 1), 1) == pytest.approx(21.3)


@pytest.mark.parametrize("kind", KINDS)
def test_parameters_are_json_and_deterministic(kind):
    params = draw_parameters(np.random.default_rng(11), kind, GRI)
    again = draw_parameters(np.random.default_rng(11), kind, GRI)
    assert json.loads(json.dumps(params)) == json.loads(json.dumps(again))
    assert params["kind"] == kind and params["is_lens"] == (kind == "lens")
    assert (params["lens_model"] is not None) == (kind == "lens")
    assert len(params["psf_fwhm_arcsec"]) == len(params["sky_sigma"]) == GRI.n_bands
    image = render(params, GRI, 48)
    assert image.shape == (3, 48, 48) and image.dtype == np.float32
    assert np.isfinite(image).all() and image.sum() > 0


def test_unknown_kind_and_weights():
    with pytest.raises(ValueError, match="unknown kind"):
        draw_parameters(np.random.default_rng(0), "quasar", GRI)
    with pytest.raises(ValueError, match="lens_fraction"):
        draw_kinds(np.random.default_rng(0), 10, 0.5, {"lens": 1.0})
    kinds = draw_kinds(np.random.default_rng(0), 50, 0.3, {"ring": 1.0, "spiral": 0.0})
    assert kinds.count("lens") == 15 and set(kinds) == {"lens", "ring"}


def test_render_conserves_flux():
    sed = draw_sed(np.random.default_rng(1), "green", 0.4)
    parts = [
        comp.sersic(0.6, 4.0, 0.7, 0.3, 0.4, -0.2, flux_frac=2.0),
        comp.sersic(1.0, 1.0, 0.4, 1.2),
        comp.gaussian(0.1, -1.0, 0.5, flux_frac=0.5),
        comp.gaussian_ellipse(0.5, 0.1, 0.7, 1.0, 1.0, flux_frac=0.5),
    ]
    group = comp.group("galaxy", parts, 19.5, sed, GRI)
    params = {"groups": [group], "lens_model": None, "psf_fwhm_arcsec": [0.8, 0.7, 0.9]}
    flux = render(params, GRI, 160).sum(axis=(1, 2))
    expected = [GRI.counts(m, b) for b, m in enumerate(group["mags"])]
    np.testing.assert_allclose(flux, expected, rtol=0.01)


def test_render_offset_moves_the_centroid():
    params = draw_parameters(np.random.default_rng(3), "elliptical", GRI, field_galaxies=False)
    for group in params["groups"]:  # compact and without wide wings: the stamp edges clip no light
        for component in group["components"]:
            component["kwargs"].update(R_sersic=0.4, n_sersic=1.0)
    size = 64
    image = render(params, GRI, size, offset_px=(3.25, -2.5))[1].astype(float)
    rows, cols = np.indices(image.shape)
    centre = (size - 1) / 2
    assert (image * cols).sum() / image.sum() == pytest.approx(centre + 3.25, abs=0.02)
    assert (image * rows).sum() / image.sum() == pytest.approx(centre - 2.5, abs=0.02)


@pytest.mark.parametrize("theta_e", [0.8, 1.5, 2.5])
def test_arcs_form_at_the_einstein_radius(theta_e):
    params = _centred_lens(theta_e)
    arcs = render(params, GRI, 80, part="lensed")[1].astype(float)
    rows, cols = np.indices(arcs.shape)
    radius_arcsec = np.hypot(rows - 39.5, cols - 39.5) * GRI.pixel_scale_arcsec
    mean_radius = (arcs * radius_arcsec).sum() / arcs.sum()
    assert mean_radius == pytest.approx(theta_e, rel=0.12)
    if theta_e > 4 * GRI.psf_fwhm_arcsec[1]:  # a resolved ring is hollow
        assert arcs[38:42, 38:42].mean() < 0.2 * arcs.max()


def test_lens_and_source_flux():
    params = _centred_lens(1.5)
    lens_light = render(params, GRI, 200, part="unlensed").sum(axis=(1, 2))
    group = next(g for g in params["groups"] if g["name"] == "lens_light")
    # a de Vaucouleurs-like deflector has some light beyond 20": allow 4%
    np.testing.assert_allclose(lens_light, [GRI.counts(m, b) for b, m in enumerate(group["mags"])], rtol=0.04)
    record = truth_record(params, GRI, render(params, GRI, 64))
    assert record["magnification"] > 5  # a source right behind the lens is strongly magnified


def test_arc_snr_grows_when_noise_drops():
    params = _centred_lens(1.2, seed=4)
    image = render(params, GRI, 64)
    noisy = truth_record(params, GRI, image)
    quiet_params = copy.deepcopy(params)
    quiet_params["sky_sigma"] = [s / 3 for s in params["sky_sigma"]]
    quiet = truth_record(quiet_params, GRI, image)
    assert quiet["arc_snr"] > noisy["arc_snr"] > 0
    assert quiet["npix_arc_1sigma"] >= noisy["npix_arc_1sigma"]


def test_simulate_stamps(stamps_and_truth):
    stamps, truth = stamps_and_truth
    assert stamps.shape == (40, 3, 64, 64) and stamps.dtype == np.float32
    assert np.isfinite(stamps).all()
    assert truth["stamp_index"].tolist() == list(range(40))
    assert truth["is_lens"].sum() == 20
    lenses, others = truth[truth["is_lens"]], truth[~truth["is_lens"]]
    assert (lenses["kind"] == "lens").all() and set(others["kind"]) <= set(NON_LENS_KINDS)
    assert lenses["theta_e_arcsec"].between(0.5, 3.0).all()
    assert others["theta_e_arcsec"].isna().all() and others["arc_snr"].isna().all()
    assert (lenses["arc_snr"] >= 0).all() and (lenses["npix_arc_1sigma"] >= 0).all()
    assert lenses["lens_mag"].between(17.5, 21.8).all()
    # the noise in each stamp is at the level its truth row reports
    edge = np.concatenate([stamps[:, 0, :4, :].reshape(40, -1), stamps[:, 0, -4:, :].reshape(40, -1)], axis=1)
    robust_sigma = 1.4826 * np.median(np.abs(edge - np.median(edge, axis=1, keepdims=True)), axis=1)
    assert np.median(robust_sigma / truth["sky_sigma_g"].to_numpy()) == pytest.approx(1.0, abs=0.15)


def test_simulate_stamps_is_deterministic(stamps_and_truth):
    stamps, truth = simulate_stamps(6, "ground-gri", seed=7, lens_fraction=0.5, size_px=32)
    again, truth_again = simulate_stamps(6, "ground-gri", seed=7, lens_fraction=0.5, size_px=32)
    other, _ = simulate_stamps(6, "ground-gri", seed=8, lens_fraction=0.5, size_px=32)
    assert stamps.shape == (6, 3, 32, 32)
    np.testing.assert_array_equal(stamps, again)
    pd.testing.assert_frame_equal(truth, truth_again)
    assert not np.array_equal(stamps, other)


def test_population_colours_and_ranges():
    rng = np.random.default_rng(5)
    draws = [draw_parameters(rng, "lens", GRI, field_galaxies=False) for _ in range(300)]
    lens_g_r = [next(g for g in p["groups"] if g["name"] == "lens_light")["mags"] for p in draws]
    assert min(m[0] - m[1] for m in lens_g_r) > 0.8  # red deflectors
    red = np.array([p["meta"]["source_red"] for p in draws])
    assert 0.12 < red.mean() < 0.28
    source_g_r = np.array([next(g for g in p["groups"] if g["name"] == "source")["mags"] for p in draws])
    colour = source_g_r[:, 0] - source_g_r[:, 1]
    assert np.median(colour[~red]) < 0.4 and np.median(colour[red]) > 0.6
    theta_e = np.array([p["meta"]["theta_e_arcsec"] for p in draws])
    assert theta_e.min() >= 0.5 and theta_e.max() <= 3.0 and theta_e.min() < 0.6 and theta_e.max() > 2.5


def test_arc_snr_spans_faint_to_bright():
    _, truth = simulate_stamps(60, "ground-gri", seed=21, lens_fraction=1.0, size_px=48)
    snr = truth["arc_snr"]
    assert (snr < 8).any() and (snr > 50).any() and (snr > 20).mean() > 0.3


def test_euclid_like_renders_on_the_vis_grid():
    euclid = get_profile("euclid-like")
    stamps, truth = simulate_stamps(2, euclid, seed=0, lens_fraction=0.5, size_px=40)
    assert stamps.shape == (2, 4, 40, 40)
    assert {"arc_snr_VIS", "arc_snr_H"} <= set(truth.columns)


def test_generate_dataset_independent_of_workers(tmp_path):
    kwargs = dict(n=23, profile="ground-gri", seed=5, lens_fraction=0.4, chunk_size=10, progress=False, size_px=32)
    one = generate_dataset(tmp_path / "one", n_workers=1, **kwargs)
    two = generate_dataset(tmp_path / "two", n_workers=2, scheduler="threads", **kwargs)
    a = xr.open_zarr(one / "stamps.zarr")
    b = xr.open_zarr(two / "stamps.zarr")
    assert a["stamps"].dims == ("object", "band", "y", "x")
    assert [str(band) for band in a["band"].values] == ["g", "r", "i"]
    assert a["stamps"].shape == (23, 3, 32, 32) and a["stamps"].encoding["chunks"][0] == 10
    np.testing.assert_array_equal(a["stamps"].values, b["stamps"].values)
    truth = pd.read_parquet(one / "truth.parquet")
    pd.testing.assert_frame_equal(truth, pd.read_parquet(two / "truth.parquet"))
    assert truth["stamp_index"].tolist() == list(range(23))
    # chunk k is simulate_stamps seeded with SeedSequence([seed, k])
    chunk, chunk_truth = simulate_stamps(
        3, "ground-gri", np.random.SeedSequence([5, 2]), lens_fraction=0.4, size_px=32, index_offset=20
    )
    np.testing.assert_array_equal(a["stamps"].values[20:], chunk)
    pd.testing.assert_frame_equal(truth.iloc[20:].reset_index(drop=True), chunk_truth)
    assert math.isclose(a.attrs["pixel_scale_arcsec"], 0.2) and a.attrs["seed"] == 5


def test_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--help"])
    assert exit_info.value.code == 0 and "--lens-fraction" in capsys.readouterr().out
    assert (
        cli_main(["--out", str(tmp_path), "-n", "3", "--seed", "2", "--workers", "1", "--size", "24", "--no-progress"])
        == 0
    )
    assert len(pd.read_parquet(tmp_path / "truth.parquet")) == 3
    assert xr.open_zarr(tmp_path / "stamps.zarr")["stamps"].shape == (3, 3, 24, 24)
