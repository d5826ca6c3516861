"""Tests of lensnet.simulate: profiles, parameters, lenstronomy rendering, truth, datasets."""

from __future__ import annotations

import copy
import dataclasses
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
    nominal_conditions,
    render,
    simulate_stamps,
    truth_record,
)
from lensnet.simulate import artefacts
from lensnet.simulate import components as comp
from lensnet.simulate.__main__ import main as cli_main
from lensnet.simulate.sed import draw_sed

GRI = get_profile("ground-gri")


@pytest.fixture(scope="module")
def stamps_and_truth():
    return simulate_stamps(40, "ground-gri", seed=7, lens_fraction=0.5)


def _centred_lens(theta_e: float, seed: int = 0) -> dict:
    """A lens with a round mass, no shear and a clump-free source right behind it, seen
    through a narrow Gaussian PSF."""
    params = draw_parameters(np.random.default_rng(seed), "lens", GRI, field_galaxies=False,
                             conditions=nominal_conditions(GRI))
    params["psf_fwhm_arcsec"] = [0.5, 0.5, 0.5]
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
    assert GRI.seeing_range == (0.5, 1.4)
    euclid_like = get_profile("euclid-like")
    nominal = euclid_like.psf_fwhm_arcsec[0]
    assert euclid_like.seeing_range == pytest.approx((nominal * 0.95, nominal * 1.05))
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


def test_stars_and_artefacts_of_training_stamps():
    rng = np.random.default_rng(2)
    draws = [draw_parameters(rng, "elliptical", GRI) for _ in range(300)]
    assert 0.08 < np.mean([bool(p["stars"]) for p in draws]) < 0.25
    assert any(p["artefacts"]["cosmic_rays"] for p in draws) and any(p["artefacts"]["bad_columns"] for p in draws)
    isolated = draw_parameters(rng, "elliptical", GRI, field_galaxies=False)
    assert not isolated["stars"] and not isolated["artefacts"]["cosmic_rays"]


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
    deflector = next(g for g in params["groups"] if g["name"] == "lens_light")["components"][0]["kwargs"]
    deflector.update(R_sersic=1.0, n_sersic=4.0)
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
    # finite but for the bad columns the truth reports
    finite_stamps = np.isfinite(stamps).all(axis=(1, 2, 3))
    assert (finite_stamps | (truth["n_bad_columns"].to_numpy() > 0)).all()
    assert truth["stamp_index"].tolist() == list(range(40))
    assert truth["is_lens"].sum() == 20
    lenses, others = truth[truth["is_lens"]], truth[~truth["is_lens"]]
    assert (lenses["kind"] == "lens").all() and set(others["kind"]) <= set(NON_LENS_KINDS)
    assert lenses["theta_e_arcsec"].between(0.5, 4.0).all()
    assert others["theta_e_arcsec"].isna().all() and others["arc_snr"].isna().all()
    assert (lenses["arc_snr"] >= 0).all() and (lenses["npix_arc_1sigma"] >= 0).all()
    assert lenses["lens_mag"].between(16.5, 24.0).all()
    assert (truth["engine"] == "lenstronomy").all()
    # the noise in each stamp is at the level its truth row reports
    edge = np.concatenate([stamps[:, 0, :4, :].reshape(40, -1), stamps[:, 0, -4:, :].reshape(40, -1)], axis=1)
    robust_sigma = 1.4826 * np.nanmedian(np.abs(edge - np.nanmedian(edge, axis=1, keepdims=True)), axis=1)
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
    lens_g_r = np.array([next(g for g in p["groups"] if g["name"] == "lens_light")["mags"] for p in draws])
    assert np.mean(lens_g_r[:, 0] - lens_g_r[:, 1] > 0.8) > 0.8  # mostly red deflectors
    red = np.array([p["meta"]["source_red"] for p in draws])
    assert 0.17 < red.mean() < 0.33
    source_g_r = np.array([next(g for g in p["groups"] if g["name"] == "source")["mags"] for p in draws])
    colour = source_g_r[:, 0] - source_g_r[:, 1]
    assert np.median(colour[~red]) < 0.4 and np.median(colour[red]) > 0.6
    theta_e = np.array([p["meta"]["theta_e_arcsec"] for p in draws])
    assert theta_e.min() >= 0.5 and theta_e.max() <= 4.0 and theta_e.min() < 0.6 and theta_e.max() > 3.5
    # a third of the sources sit behind the caustics' centre (rings and crosses)
    offset = np.array([p["meta"]["source_offset_arcsec"] / p["meta"]["theta_e_arcsec"] for p in draws])
    assert 0.2 < np.mean(offset < 0.1) < 0.45 and offset.max() > 0.9
    seeing = np.array([p["psf_fwhm_arcsec"][GRI.reference_index] for p in draws])
    assert seeing.min() < 0.6 and seeing.max() > 1.25


def test_arc_snr_spans_faint_to_bright():
    _, truth = simulate_stamps(80, "ground-gri", seed=21, lens_fraction=1.0)
    snr = truth["arc_snr"]
    assert (snr < 8).any() and (snr > 500).any() and (snr > 20).mean() > 0.5


def test_arc_snr_follows_source_brightness():
    params = _centred_lens(1.5, seed=6)
    snrs = []
    for shift in (2.0, 0.0, -2.0):  # fainter, as drawn, brighter
        brighter = copy.deepcopy(params)
        for group in brighter["groups"]:
            if group["lensed"]:
                group["mags"] = [m + shift for m in group["mags"]]
        snrs.append(truth_record(brighter, GRI, render(brighter, GRI, 64))["arc_snr"])
    assert snrs[0] < snrs[1] < snrs[2]
    assert snrs[2] / snrs[1] > 2.5  # 2 mag is 6.3x the flux: S/N grows at least as sqrt of it


def test_complete_ring_when_the_source_sits_at_the_caustic_centre():
    params = _centred_lens(2.0, seed=3)
    record = truth_record(params, GRI, render(params, GRI, 64))
    assert record["arc_azimuth_fraction"] > 0.9
    # moved well outside the caustics, the same source makes a short arc and a counter-image
    for group in params["groups"]:
        for component in group["components"] if group["lensed"] else []:
            component["kwargs"].update(center_x=1.8)
    assert truth_record(params, GRI, render(params, GRI, 64))["arc_azimuth_fraction"] < 0.6


@pytest.mark.parametrize("beta", [None, 2.5, 4.5])
@pytest.mark.parametrize("fwhm", [0.8, 1.3])
def test_psf_fwhm_measured_on_a_rendered_star(beta, fwhm):
    import galsim

    params = {"psf_fwhm_arcsec": [fwhm] * 3, "psf_moffat_beta": beta, "groups": [], "lens_model": None,
              "stars": [{"x": 0.03, "y": -0.05, "mags": [20.0, 20.0, 20.0]}]}
    star = render(params, GRI, 64)[1].astype(float)
    assert star.sum() == pytest.approx(GRI.counts(20.0, 1), rel=2e-3)
    # measured on fine pixels (0.05"), which add almost no width of their own
    fine = dataclasses.replace(GRI, name="fine", pixel_scale_arcsec=0.05, stamp_size_px=128)
    params["stars"][0].update(x=0.0, y=0.0)
    star = render(params, fine, 128)[1].astype(float)
    assert galsim.Image(star, scale=0.05).calculateFWHM() == pytest.approx(fwhm, rel=0.03)


def test_correlated_noise_keeps_the_per_pixel_sigma():
    rng = np.random.default_rng(0)
    for correlation in (0.0, 0.5, 0.9):
        noise = np.stack([artefacts.noise(rng, (64, 64), 3.0, correlation) for _ in range(20)])
        assert noise.std() == pytest.approx(3.0, rel=0.05)
        neighbours = np.corrcoef(noise[:, :, :-1].ravel(), noise[:, :, 1:].ravel())[0, 1]
        assert (neighbours > 0.15) == (correlation > 0)


def test_saturation_clips_and_bleeds_along_the_column():
    image = np.zeros((30, 30), np.float32)
    image[15, 10] = 10.0
    image[14:17, 10] += 3.0
    artefacts.saturate(image, 4.0)
    assert image.max() == 4.0
    column = image[:, 10]
    assert (column == 4.0).sum() > 3  # the excess spilled up and down the column
    assert (image[:, 9] == 0).all() and (image[:, 11] == 0).all()


def test_detector_artefacts_touch_one_band():
    params = {"sky_sigma": [1.0, 1.0, 1.0], "noise": {}, "artefacts": {
        "cosmic_rays": [{"band": 1, "x0": 10.0, "y0": 10.0, "length_px": 8.0, "angle": 0.5, "peak": 100.0}],
        "bad_columns": [{"band": 2, "column": 5, "offset": None}]}}
    out = artefacts.observe(params, np.zeros((3, 32, 32), np.float32), GRI, np.random.default_rng(1))
    assert np.nanmax(out[1]) > 50 and np.nanmax(out[0]) < 10
    assert np.isnan(out[2][:, 5]).all() and np.isfinite(out[:2]).all()


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


def _size_at_fixed_brightness_auroc(engine: str, population: int, n: int = 1500) -> float:
    """How well a deflector's size for its magnitude tells it from a non-lens elliptical."""
    from lensnet.metrics import auroc
    from lensnet.simulate.galsim_engine import population as galsim_population

    draw = draw_parameters if engine == "lenstronomy" else galsim_population.draw_parameters
    rng = np.random.default_rng(8)
    rows = []
    for kind in ("lens", "elliptical"):
        for _ in range(n):
            meta = draw(rng, kind, "ground-gri", field_galaxies=False, population=population)["meta"]
            rows.append((kind == "lens", meta["main_mag"], math.log10(meta["main_r_eff_arcsec"])))
    is_lens, mag, log_size = (np.array(column) for column in zip(*rows, strict=True))
    slope, intercept = np.polyfit(mag[~is_lens], log_size[~is_lens], 1)  # the ellipticals' size-luminosity relation
    return auroc(is_lens, log_size - (slope * mag + intercept))


@pytest.mark.parametrize("engine", ["lenstronomy", "galsim"])
def test_population_2_deflectors_are_no_larger_than_ellipticals_of_their_brightness(engine):
    # population 1 ties a deflector's size to θE: larger than a non-lens of its magnitude
    assert _size_at_fixed_brightness_auroc(engine, 1) > 0.55
    assert 0.45 < _size_at_fixed_brightness_auroc(engine, 2) < 0.55


@pytest.mark.parametrize("engine", ["lenstronomy", "galsim"])
def test_populations_differ_only_in_the_deflector_size(engine):
    from lensnet.simulate.galsim_engine import population as galsim_population

    draw = draw_parameters if engine == "lenstronomy" else galsim_population.draw_parameters
    one, two = (draw(np.random.default_rng(21), "lens", "ground-gri", population=p) for p in (1, 2))
    # the same mass, source, neighbours and conditions: one draw either way, so the stream is not shifted
    assert {k: v for k, v in one.items() if k not in ("groups", "meta")} == \
        {k: v for k, v in two.items() if k not in ("groups", "meta")}
    assert len(one["groups"]) == len(two["groups"])
    changed = [a["name"] for a, b in zip(one["groups"], two["groups"], strict=True) if a != b]
    assert changed == ["lens_light"]
    assert one["meta"]["main_r_eff_arcsec"] != two["meta"]["main_r_eff_arcsec"]
    same = {key: value for key, value in one["meta"].items() if key != "main_r_eff_arcsec"}
    assert json.dumps(same, sort_keys=True) == json.dumps(
        {key: value for key, value in two["meta"].items() if key != "main_r_eff_arcsec"}, sort_keys=True)
    for kind in ("elliptical", "ring"):  # non-lenses do not depend on the population
        assert draw(np.random.default_rng(3), kind, "ground-gri", population=1) == \
            draw(np.random.default_rng(3), kind, "ground-gri", population=2)
    with pytest.raises(ValueError, match="population must be one of 1, 2"):
        draw(np.random.default_rng(0), "lens", "ground-gri", population=3)
