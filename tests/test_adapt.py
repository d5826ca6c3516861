"""Adapting to a survey: hosts, injections, fine-tuning, selection function, and rescoring a run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from lensnet.adapt import AdaptConfig, AdaptError
from lensnet.adapt import hosts as host_tools
from lensnet.adapt import inject as injection
from pipeline.adapt import main as adapt_main
from lensnet.checkpoint import load_config
from lensnet.simulate import components
from lensnet.simulate import render as render_lenstronomy
from lensnet.simulate.galsim_engine import render
from lensnet.simulate.profiles import get_profile
from pipeline.config import SettingsError
from pipeline.rescore import execute_rescore, prepare_rescore, rescore_settings
from pipeline.run import run_with_client
from tests.test_run import settings_for

GRI = get_profile("ground-gri")
RECIPE = injection.InjectionRecipe(psf_fwhm_arcsec=(0.8, 0.7, 0.75), zeropoints=(30.0, 30.0, 30.0))
#: Loose host cuts for the tiny mock survey (a few dozen galaxies of every kind).
LOOSE = ["--host-mag-max", "30", "--colour-min", "-5", "--concentration-min", "0",
         "--asymmetry-max", "100", "--axis-ratio-min", "0"]


def _host_stamps(n: int = 3, size: int = 64, seed: int = 0) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Elliptical galaxies off the stamp centre, on white noise; returns stamps and centres (x, y)."""
    rng = np.random.default_rng(seed)
    stamps, centres = [], []
    for _ in range(n):
        dx, dy = rng.uniform(-2, 2, 2)
        galaxy = {"groups": [{"name": "g", "lensed": False, "mags": [20.5, 19.2, 18.7],
                              "components": [components.sersic(0.8, 4.0, 0.5, 0.4)]}],
                  "lens_model": None, "psf_fwhm_arcsec": [0.8, 0.7, 0.75], "psf_moffat_beta": 3.0}
        image = render_lenstronomy(galaxy, GRI, size, offset_px=(dx, dy))
        stamps.append(image + rng.normal(0, 2.0, image.shape).astype(np.float32))
        centres.append(((size - 1) / 2 + dx, (size - 1) / 2 + dy))
    return np.stack(stamps), centres


def test_host_measurements_find_the_centroid_colour_and_shape():
    stamps, centres = _host_stamps()
    measured = host_tools.measure(stamps, 0.2, [30.0] * 3, reference=1)
    for (x, y), (_, row) in zip(centres, measured.iterrows(), strict=True):
        assert row["centroid_x_px"] == pytest.approx(x, abs=0.1) and row["centroid_y_px"] == pytest.approx(y, abs=0.1)
        assert row["host_colour"] == pytest.approx(1.3, abs=0.1)  # g - r of the painted galaxy in an aperture
        assert row["axis_ratio"] < 0.8 and row["position_angle"] == pytest.approx(0.4, abs=0.15)
        assert row["sky_sigma_0"] == pytest.approx(2.0, rel=0.15)
    selection = host_tools.HostSelection(host_mag_max=21.0, colour_min=1.0, concentration_min=0.2)
    assert host_tools.select_hosts(measured, np.zeros(3, int), selection).all()
    assert not host_tools.select_hosts(measured, np.array([0, 4, 0]), selection)[1]  # flagged
    assert not host_tools.select_hosts(measured, np.zeros(3, int), host_tools.HostSelection(colour_min=2.0)).any()


def test_the_total_magnitude_holds_the_light_a_small_aperture_truncates():
    stamps, _ = _host_stamps()
    measured = host_tools.measure(stamps, 0.2, [30.0] * 3, reference=1)
    # a de Vaucouleurs galaxy of r = 19.2 and 0.8" half-light radius: the 1.5" aperture misses a third
    assert (measured["host_mag"] > 19.5).all()
    assert measured["host_mag_total"].to_numpy() == pytest.approx(19.2, abs=0.25)


def test_host_size_grows_with_the_galaxys_half_light_radius():
    rng = np.random.default_rng(1)
    stamps = []
    for r_half in (0.3, 0.8, 1.6):
        galaxy = {"groups": [{"name": "g", "lensed": False, "mags": [20.0, 19.0, 18.5],
                              "components": [components.sersic(r_half, 4.0, 0.8, 0.4)]}],
                  "lens_model": None, "psf_fwhm_arcsec": [0.8, 0.7, 0.75], "psf_moffat_beta": 3.0}
        image = render_lenstronomy(galaxy, GRI, 64)
        stamps.append(image + rng.normal(0, 1.0, image.shape).astype(np.float32))
    size = host_tools.measure(np.stack(stamps), 0.2, [30.0] * 3, reference=1)["host_size_arcsec"].to_numpy()
    assert np.all(np.isfinite(size)) and size[0] < size[1] < size[2]
    assert 0.35 < size[0] < 0.8  # a compact galaxy: about the PSF's half-light radius (0.7" FWHM)


def test_matched_einstein_radii_go_to_the_brighter_hosts_and_keep_the_uniform_range():
    rng = np.random.default_rng(3)
    mags = rng.uniform(17.0, 22.0, 4000)
    theta = host_tools.theta_e_matched(np.random.default_rng(5), mags, 0.5, 4.0)
    assert theta.min() >= 0.5 and theta.max() <= 4.0
    # the values themselves are the uniform recipe's: log-uniform over the range
    counts, _ = np.histogram(np.log(theta), bins=4, range=(np.log(0.5), np.log(4.0)))
    assert counts.min() > 0.85 * len(theta) / 4
    order = pd.Series(theta).rank().corr(pd.Series(-mags).rank())
    assert 0.8 < order < 0.98  # tied to brightness, with scatter
    bright, faint = theta[mags < 18.0], theta[mags > 21.0]
    assert np.median(bright) > 2.5 * np.median(faint)
    # an unmeasured host gets the faintest rank; the same generator gives the same radii
    with_nan = np.concatenate([mags[:50], [np.nan]])
    assert host_tools.theta_e_matched(np.random.default_rng(1), with_nan)[-1] < 1.0
    assert np.array_equal(host_tools.theta_e_matched(np.random.default_rng(5), mags, 0.5, 4.0), theta)
    recipe = dataclasses_replace(RECIPE, theta_e="matched")
    drawn = injection.draw_theta_e(np.random.default_rng(5), recipe, pd.DataFrame({"host_mag_total": mags}))
    assert np.array_equal(drawn, theta)
    with pytest.raises(ValueError, match="uniform, host, matched"):
        injection.draw_theta_e(rng, dataclasses_replace(RECIPE, theta_e="bright"), pd.DataFrame({"host_mag": mags}))


def test_asymmetry_is_near_zero_for_a_smooth_galaxy_and_grows_with_a_companion():
    stamps, _ = _host_stamps(n=3, seed=4)
    smooth = host_tools.measure(stamps, 0.2, [30.0] * 3, reference=1)["asymmetry"].to_numpy()
    assert np.all(np.abs(smooth) < 0.03)  # off-centre galaxies: the turn is about the centroid
    companion = {"groups": [{"name": "c", "lensed": False, "mags": [21.0, 20.8, 20.7],
                             "components": [components.sersic(0.3, 1.0, 0.9, 0.0)]}],
                 "lens_model": None, "psf_fwhm_arcsec": [0.8, 0.7, 0.75], "psf_moffat_beta": 3.0}
    with_companion = stamps + render_lenstronomy(companion, GRI, 64, offset_px=(8.0, 3.0))[None]
    lopsided = host_tools.measure(with_companion, 0.2, [30.0] * 3, reference=1)["asymmetry"].to_numpy()
    assert np.all(lopsided > 0.1)
    measured = host_tools.measure(np.concatenate([stamps, with_companion]), 0.2, [30.0] * 3, reference=1)
    hosts = host_tools.select_hosts(measured, np.zeros(6, int), host_tools.HostSelection(host_mag_max=21.0))
    assert hosts.tolist() == [True] * 3 + [False] * 3


def test_the_arc_lies_at_the_einstein_radius_around_the_host_centroid():
    stamps, centres = _host_stamps(n=1, seed=2)
    measured = host_tools.measure(stamps, 0.2, [30.0] * 3, reference=1)
    profile = injection.survey_profile(list(GRI.bands), 0.2, 64, RECIPE, [2.0] * 3)
    params = injection.lens_parameters(np.random.default_rng(1), profile, RECIPE, measured.iloc[0], 1.8, 100.0)
    params["groups"] = [group for group in params["groups"] if group["name"] == "source"]
    for shape in params["groups"][0]["shapes"]:  # a round source right behind the lens: a ring
        shape.update(x=0.0, y=0.0, q=1.0)
    params["lens"].update(q=0.9999, gamma1=0.0, gamma2=0.0)
    x0, y0 = measured.iloc[0]["centroid_x_px"], measured.iloc[0]["centroid_y_px"]
    arc = render(params, profile, 64, offset_px=(x0 - 31.5, y0 - 31.5), part="lensed")[1].astype(float)
    rows, cols = np.indices(arc.shape)
    assert (arc * cols).sum() / arc.sum() == pytest.approx(x0, abs=0.15)
    assert (arc * rows).sum() / arc.sum() == pytest.approx(y0, abs=0.15)
    radius = np.hypot(cols - x0, rows - y0) * 0.2
    assert (arc * radius).sum() / arc.sum() == pytest.approx(1.8, rel=0.1)


def test_injected_flux_is_the_lensed_flux_of_the_source():
    stamps, _ = _host_stamps(n=4, seed=3)
    measured = host_tools.measure(stamps, 0.2, [30.0] * 3, reference=1)
    profile = injection.survey_profile(list(GRI.bands), 0.2, 64, RECIPE, [2.0] * 3)
    theta_e, target = np.array([0.8, 1.5, 2.5, 1.2]), np.array([20.0, 60.0, 200.0, 5.0])
    injected, arcs, truth = injection.inject(np.random.default_rng(4), stamps, measured, profile, RECIPE, theta_e,
                                             target)
    # exactly the arc is added (to float32 rounding of the sum); no gain: no extra noise
    np.testing.assert_allclose(injected - stamps, arcs, rtol=0, atol=2e-7 * np.abs(stamps).max() * 4)
    lensed_counts = arcs[:, 1].astype(np.float64).sum(axis=(1, 2))
    source_counts = np.array([profile.counts(m, 1) for m in truth["source_mag"]])
    np.testing.assert_allclose(lensed_counts, source_counts * truth["magnification"], rtol=1e-5)
    assert (truth["magnification"] > 1).all()
    for row in truth.itertuples():  # the arc reaches its target S/N against the stamp's own noise
        if 17.01 < row.source_mag < 28.49:
            assert row.arc_snr == pytest.approx(row.target_arc_snr, rel=0.03)
    noisy = dataclasses_replace(RECIPE, gain=2.0)
    with_noise, arcs2, _ = injection.inject(np.random.default_rng(4), stamps, measured, profile, noisy, theta_e, target)
    bright = arcs2 > 5
    assert bright.sum() > 50
    photon = (with_noise - stamps - arcs2)[bright]
    assert np.std(photon / np.sqrt(arcs2[bright] / 2.0)) == pytest.approx(1.0, rel=0.15)


def test_lensed_flux_equals_the_surface_brightness_integral_over_the_image_plane():
    """Lensing conserves surface brightness: the arc's flux is the integral of S(beta(theta))."""
    from lensnet.simulate.galsim_engine.lensing import deflect

    profile = injection.survey_profile(list(GRI.bands), 0.2, 64, RECIPE, [2.0] * 3)
    sigma, x0, y0, mag = 0.12, 0.25, -0.1, 22.0
    lens = {"theta_e": 1.4, "slope": 1.0, "q": 0.75, "phi": 0.6, "gamma1": 0.02, "gamma2": 0.01, "x": 0.0, "y": 0.0}
    params = {"lens": lens, "psf": [{"type": "moffat", "beta": 3.0, "fwhm": 0.7, "g1": 0.0, "g2": 0.0}] * 3,
              "psf_fwhm_arcsec": [0.7] * 3,
              "groups": [{"name": "source", "lensed": True, "mags": [mag] * 3,
                          "shapes": [{"type": "gaussian", "sigma": sigma, "x": x0, "y": y0, "flux_frac": 1.0}]}]}
    arc_flux = render(params, profile, 128, part="lensed")[1].astype(np.float64).sum()
    step = 0.005  # brute force on a grid 40 times finer than the pixels
    axis = np.arange(-6.0, 6.0, step) + step / 2
    theta_x, theta_y = np.meshgrid(axis, axis)
    beta_x, beta_y = deflect(theta_x, theta_y, lens)
    brightness = profile.counts(mag, 1) / (2 * np.pi * sigma**2) * np.exp(
        -0.5 * ((beta_x - x0) ** 2 + (beta_y - y0) ** 2) / sigma**2)
    assert arc_flux == pytest.approx(brightness.sum() * step**2, rel=0.01)
    assert arc_flux > 3 * profile.counts(mag, 1)  # strongly magnified


def dataclasses_replace(recipe, **changes):
    import dataclasses

    return dataclasses.replace(recipe, **changes)


def test_unknown_bands_need_wavelengths():
    with pytest.raises(ValueError, match="band-wavelengths"):
        injection.survey_profile(["HSC-G", "HSC-R", "HSC-I"], 0.2, 64, RECIPE, [1.0] * 3)
    profile = injection.survey_profile(["HSC-G", "HSC-R", "HSC-I"], 0.2, 64, RECIPE, [1.0] * 3, [480, 620, 770])
    assert profile.band_wavelength_nm == (480.0, 620.0, 770.0)


def test_noise_is_measured_without_the_neighbours_light_and_with_its_correlation():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    rows, cols = np.indices((64, 64))
    neighbour = 30.0 * np.exp(-((cols - 2.0) ** 2 + (rows - 40.0) ** 2) / (2 * 9.0**2))  # wings across the frame
    white = rng.normal(0.0, 2.0, (40, 3, 64, 64))
    white[20:] += neighbour
    sigma = host_tools.noise_sigma(white)
    frame = np.ones((64, 64), dtype=bool)
    frame[host_tools.EDGE_PX:-host_tools.EDGE_PX, host_tools.EDGE_PX:-host_tools.EDGE_PX] = False
    edge = white[20:, 0][:, frame]
    frame_mad = 1.4826 * np.median(np.abs(edge - np.median(edge, axis=1, keepdims=True)), axis=1)
    assert np.median(frame_mad) > 1.15 * 2.0  # the frame's MAD counts the neighbour as noise
    assert np.median(sigma[20:]) == pytest.approx(2.0, rel=0.08) and np.median(sigma[:20]) == pytest.approx(2.0, rel=0.05)
    smoothed = ndimage.uniform_filter(rng.normal(0.0, 1.0, (40, 3, 64, 64)), size=(1, 1, 2, 2))
    # adjacent-pixel differences alone would give sqrt(1 - 0.5) of the sigma of this noise
    assert np.median(host_tools.noise_sigma(smoothed)) == pytest.approx(smoothed.std(), rel=0.08)


# ------------------------------------------------------------------------------------
# End to end on the tiny mock survey
# ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tiny_survey, tiny_model, client, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapt") / "run"
    run_with_client(settings_for(tiny_survey, tiny_model, out), client, log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def adapted(finished_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapted") / "model"
    code = adapt_main([str(finished_run), "--out", str(out), "--epochs", "1", "--batch-size", "16",
                       "--max-injections", "40", "--threads", "1", "--quiet", *LOOSE])
    assert code == 0
    return out


def test_adaptation_writes_a_checkpoint_with_its_provenance_and_selection_function(adapted, finished_run, tiny_model):
    config = load_config(adapted)
    record = config.training["adaptation"]
    assert record["parent_model"] == str(tiny_model) and record["run"] == str(finished_run.resolve())
    assert record["injection"]["psf_fwhm_arcsec"] == [0.85, 0.72, 0.8]  # from the tiles' PSF_FWHM headers
    assert record["injection"]["zeropoints"] == [30.0, 30.0, 30.0]  # from MAGZERO
    assert record["options"]["host_mag_max"] == 30.0 and record["sets"]["train_injections"] > 0
    report = json.loads((adapted / "selection_function.json").read_text())
    assert report["n_injections"] > 0 and report["n_negatives"] > 0
    assert 0 < report["threshold"]["value"] <= 1 and config.threshold == report["threshold"]["value"]
    low, high = report["threshold"]["interval_95"]
    assert low <= report["threshold"]["value"] <= high
    for role in ("parent", "adapted"):
        rows = report[role]["by_bin"]["theta_e_arcsec"]
        assert sum(row["n_lenses"] for row in rows) == report["n_injections"]
        sizes = report[role]["by_bin"]["host_size_arcsec"]  # how much the host's size matters
        assert sum(row["n_lenses"] for row in sizes) == report["n_injections"]
    assert "Completeness against host_size_arcsec" in (adapted / "selection_function.md").read_text()
    assert (adapted / "selection_function.png").read_bytes()[:4] == b"\x89PNG"
    test = pd.read_parquet(adapted / "data" / "test" / "truth.parquet")
    train = pd.read_parquet(adapted / "data" / "train" / "truth.parquet")
    # split by object: no survey object is in both the training and the held-out set
    assert not set(train["object_id"]) & set(test["object_id"])


def test_rerunning_reuses_the_sets_and_another_recipe_needs_force(adapted, finished_run, capsys):
    before = (adapted / "data" / "train" / "truth.parquet").stat().st_mtime_ns
    assert adapt_main([str(finished_run), "--out", str(adapted), "--epochs", "1", "--batch-size", "16",
                       "--max-injections", "40", "--threads", "1", *LOOSE]) == 0
    assert (adapted / "data" / "train" / "truth.parquet").stat().st_mtime_ns == before
    out = capsys.readouterr().out
    assert "reusing the injected sets" in out and "no --rehearse" in out
    assert adapt_main([str(finished_run), "--out", str(adapted), "--max-injections", "50", *LOOSE]) == 2
    assert "another recipe" in capsys.readouterr().err and (adapted / "model.safetensors").is_file()


@pytest.mark.parametrize("damage, message", [
    ("no-store", "cutouts.zarr is missing"),
    ("unfinished", "candidates.parquet is missing"),
    ("no-psf", "no PSF width"),
    ("few-hosts", "look like lens galaxies"),
    ("other-bands", "takes bands"),
])
def test_bad_inputs_are_one_line_errors(damage, message, finished_run, tiny_model, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    argv = [str(run), "--out", str(tmp_path / "out"), "--quiet", *LOOSE]
    if damage == "no-store":
        shutil.rmtree(run / "cutouts.zarr")
    elif damage == "unfinished":
        (run / "candidates.parquet").unlink()
    elif damage == "no-psf":
        settings = (run / "run.yaml").read_text().replace("images:", "images_moved:")
        (run / "run.yaml").write_text(settings)
        argv += ["--zeropoints", "30,30,30"]
    elif damage == "few-hosts":
        argv = [str(run), "--out", str(tmp_path / "out"), "--quiet", "--host-mag-max", "5"]
    elif damage == "other-bands":
        import torch

        from lensnet.checkpoint import ModelConfig, save_checkpoint

        config = ModelConfig(architecture="lensresnet-tiny", bands=["g", "r", "z"], stamp_size_px=32,
                             pixel_scale_arcsec=0.2, normalisation="asinh_stretch", name="grz")
        torch.manual_seed(0)
        argv += ["--model", str(save_checkpoint(config.build(), config, tmp_path / "grz"))]
    assert adapt_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out" / "model.safetensors").exists()


@pytest.fixture(scope="module")
def simulated_set(tmp_path_factory):
    """A small simulated stamp set in the tiny survey's bands and stamp size (for rehearsal)."""
    from lensnet.simulate.dataset import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("rehearsal") / "sim", n=24, profile="ground-gri", seed=5,
                            chunk_size=12, progress=False, n_workers=1, scheduler="threads", size_px=32)


def test_rehearsal_and_bright_training_arcs(finished_run, simulated_set, tmp_path):
    out = tmp_path / "rehearsed"
    assert adapt_main([str(finished_run), "--out", str(out), "--epochs", "1", "--batch-size", "16",
                       "--max-injections", "40", "--threads", "1", "--quiet", "--rehearse", str(simulated_set),
                       "--rehearse-max", "10", "--freeze-backbone", "--train-arc-snr-min", "50",
                       "--exclude-top-fraction", "0.3", *LOOSE]) == 0
    rehearsal = pd.read_parquet(out / "data" / "rehearsal" / "truth.parquet")
    source = pd.read_parquet(simulated_set / "truth.parquet").sort_values("stamp_index").reset_index(drop=True)
    assert len(rehearsal) == 10 and rehearsal["source_index"].is_unique
    # each rehearsal stamp keeps the label it was simulated with
    assert (rehearsal["is_lens"].to_numpy() == source["is_lens"].to_numpy()[rehearsal["source_index"]]).all()
    config = load_config(out)
    record = config.training["adaptation"]
    assert record["options"]["rehearse"] == [str(simulated_set)] and record["options"]["freeze_backbone"]
    assert record["rehearsal"]["sets"][0]["stamps"] == 10
    train = pd.read_parquet(out / "data" / "train" / "truth.parquet")
    test = pd.read_parquet(out / "data" / "test" / "truth.parquet")
    # faint arcs only in the held-out injections, which measure the selection function
    assert (train.loc[train["is_lens"], "target_arc_snr"] >= 50).all()
    assert (test.loc[test["is_lens"], "target_arc_snr"] < 50).any()
    # the parent's top-ranked objects are kept out of training, but not out of the held-out
    # stamps that set the threshold
    top = set(pd.read_parquet(finished_run / "candidates.parquet").query("rank <= 18")["object_id"])
    assert not top & set(train["object_id"])
    assert top & set(test.loc[~test["is_lens"], "object_id"])
    trained_on = config.training["data"]["n_train"] + config.training["data"]["n_val"]
    assert trained_on == len(train) + len(rehearsal)


def test_rehearsal_sets_must_match_the_survey(finished_run, simulated_set, tmp_path, capsys):
    import zarr

    from lensnet.simulate.dataset import generate_dataset

    wrong = generate_dataset(tmp_path / "sim", n=4, profile="ground-gri", seed=5, chunk_size=4, progress=False,
                             n_workers=1, scheduler="threads", size_px=40)
    argv = [str(finished_run), "--out", str(tmp_path / "out"), "--quiet", "--epochs", "1", *LOOSE]
    assert adapt_main([*argv, "--rehearse", str(wrong)]) == 2
    err = capsys.readouterr().err
    assert "40-px stamps" in err and err.count("\n") == 1
    assert adapt_main([*argv, "--rehearse", str(tmp_path / "nothing")]) == 2
    assert "not a stamp set" in capsys.readouterr().err
    finer = tmp_path / "finer"
    shutil.copytree(simulated_set, finer)
    zarr.open_group(finer / "stamps.zarr", mode="r+").attrs["pixel_scale_arcsec"] = 0.1
    assert adapt_main([*argv, "--rehearse", str(finer)]) == 2
    assert "simulated at 0.1\"/px" in capsys.readouterr().err
    assert not (tmp_path / "out" / "data").exists()  # refused before any set was built


def test_a_rescored_run_is_adapted_from_the_store_it_scored(finished_run, tiny_model, client, tmp_path):
    from pipeline.adapt import read_run

    settings = rescore_settings({"rescore": str(finished_run), "model": str(tiny_model), "progress": False,
                                 "out": str(tmp_path / "rescored")})
    execute_rescore(prepare_rescore(settings, log=lambda _: None), client, log=lambda _: None)
    assert not (tmp_path / "rescored" / "cutouts.zarr").exists()
    survey = read_run(AdaptConfig(run=str(tmp_path / "rescored")))
    direct = read_run(AdaptConfig(run=str(finished_run)))
    np.testing.assert_array_equal(survey.stamps, direct.stamps)
    assert survey.parent == str(tiny_model)
    # rescoring the rescored run scores the store it scored, and writes beside it
    again = rescore_settings({"rescore": str(tmp_path / "rescored"), "model": str(tiny_model), "progress": False})
    assert again.rescore == str(finished_run)
    assert again.out == str(tmp_path / "rescored" / f"rescore-{tiny_model.name}")


def test_adapt_config_errors_are_typed():
    from pipeline.adapt import read_run

    with pytest.raises(AdaptError, match="not a run directory"):
        read_run(AdaptConfig(run="/nonexistent/run"))


# ------------------------------------------------------------------------------------
# Rescoring a run's cutout store
# ------------------------------------------------------------------------------------


def test_rescore_equals_a_fresh_run_with_that_model(finished_run, tiny_survey, client, tmp_path):
    from tests.test_run import second_model  # noqa: F401  (reused through the fixture below)

    import torch

    from lensnet.checkpoint import ModelConfig, save_checkpoint
    from tests.conftest import TINY_BANDS, TINY_STAMP_PX

    torch.manual_seed(5)
    config = ModelConfig(architecture="lensresnet-tiny", bands=TINY_BANDS, stamp_size_px=TINY_STAMP_PX,
                         pixel_scale_arcsec=0.2, normalisation="zscale", threshold=0.6, name="other")
    other = save_checkpoint(config.build().eval(), config, tmp_path / "other")
    fresh = run_with_client(settings_for(tiny_survey, other, tmp_path / "fresh"), client, log=lambda _: None)
    flags = {"rescore": str(finished_run), "model": str(other), "progress": False, "batch_size": 8}
    settings = rescore_settings(flags)
    assert settings.out == str(finished_run / "rescore-other")
    tiles_moved = tmp_path / "moved"
    shutil.move(str(tiny_survey.root / "tiles"), str(tiles_moved))  # no tile may be read
    try:
        rescored = execute_rescore(prepare_rescore(settings, log=lambda _: None), client, log=lambda _: None)
    finally:
        shutil.move(str(tiles_moved), str(tiny_survey.root / "tiles"))
    mine, theirs = pd.read_parquet(rescored.candidates), pd.read_parquet(fresh.candidates)
    pd.testing.assert_frame_equal(mine, theirs)
    pd.testing.assert_frame_equal(pd.read_parquet(rescored.failures), pd.read_parquet(fresh.failures))
    assert rescored.summary["scored"] == fresh.summary["scored"]
    from catalogs.io import read_provenance

    provenance = read_provenance(rescored.candidates)
    assert provenance["rescored_from"]["run"] == str(finished_run.resolve())
    assert provenance["model"]["name"] == "other"
    # the run itself is untouched
    assert (finished_run / "candidates.parquet").is_file()


def test_rescore_refuses_what_it_cannot_do(finished_run, tmp_path):
    with pytest.raises(SettingsError, match="no run.yaml"):
        rescore_settings({"rescore": str(tmp_path)})
    settings = rescore_settings({"rescore": str(finished_run), "out": str(finished_run)})
    with pytest.raises(SettingsError, match="is the run being rescored"):
        prepare_rescore(settings, log=lambda _: None)


def test_a_run_is_measured_against_its_truth_table(finished_run, tiny_survey, tiny_model, tmp_path, capsys):
    from lensnet.metrics import auroc
    from pipeline.against_truth import main as against_truth_main
    from pipeline.against_truth import measure

    row = measure(finished_run / "candidates.parquet", tiny_survey.truth_path, n_bootstrap=50)
    candidates = pd.read_parquet(finished_run / "candidates.parquet")
    truth = pd.read_parquet(tiny_survey.truth_path)
    joined = candidates.merge(truth, left_on="object_id", right_on="id")
    assert row["auroc"]["value"] == pytest.approx(auroc(joined["is_lens"], joined["logit"]))
    assert row["n"] == len(joined) and row["unscored_truth_rows"] == len(truth) - len(joined)
    assert {r["group"] for r in row["sanity"]} >= {"sanity lenses", "lens"}
    assert against_truth_main([str(finished_run), str(tiny_survey.truth_path), "--bootstrap", "20",
                               "--json", str(tmp_path / "row.json")]) == 0
    assert "AUROC" in capsys.readouterr().out and json.loads((tmp_path / "row.json").read_text())["n"] == len(joined)
    assert against_truth_main([str(finished_run), str(tmp_path / "missing.parquet")]) == 2
    # recorded beside a checkpoint, the survey's row appears in its model card
    from lensnet.card import render_card

    # only into the checkpoint whose weights scored the run: another model's card would show its numbers
    other = tmp_path / "other"
    shutil.copytree(_tiny_checkpoint(tmp_path), other)
    capsys.readouterr()
    assert against_truth_main([str(finished_run), str(tiny_survey.truth_path), "--bootstrap", "20", "--record",
                               str(other), "--json", str(tmp_path / "refused.json")]) == 2
    assert "the run was scored by weights sha256" in capsys.readouterr().err
    assert not (other / "evaluation.json").exists()
    assert json.loads((tmp_path / "refused.json").read_text())["n"] == len(joined)  # measured, not lost
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    # the checkpoint named by its weights file: recorded into its folder
    assert against_truth_main([str(finished_run), str(tiny_survey.truth_path), "--bootstrap", "20", "--record",
                               str(model / "model.safetensors"), "--label", "tiny mock",
                               "--description", "A tiny mock survey."]) == 0
    from lensnet.checkpoint import sha256_of

    recorded = json.loads((model / "evaluation.json").read_text())["surveys"]["tiny mock"]
    assert recorded["weights_sha256"] == sha256_of(model / "model.safetensors")
    card = render_card(model)
    assert "## Mock surveys through run_survey.py" in card and "| tiny mock |" in card
    assert "A tiny mock survey." in card
    assert recorded["tta"] is False
    # catalogues that cannot say which one model scored them are refused too
    import pyarrow.parquet as pq

    from catalogs.io import PROVENANCE_KEY
    from pipeline.against_truth import weights_for_record

    table = pq.read_table(finished_run / "candidates.parquet")
    provenance = json.loads(table.schema.metadata[PROVENANCE_KEY])
    for name, changed, message in [
        ("ensemble", {**provenance, "models": [{}, {}]}, "an ensemble of 2 models"),
        ("unhashed", {**provenance, "model": {"checkpoint": "x"}}, "predates recorded weight hashes"),
        ("bare", None, "does not say which weights scored it"),
    ]:
        metadata = {key: value for key, value in table.schema.metadata.items() if key != PROVENANCE_KEY}
        if changed is not None:
            metadata[PROVENANCE_KEY] = json.dumps(changed).encode()
        pq.write_table(table.replace_schema_metadata(metadata), tmp_path / f"{name}.parquet")
        with pytest.raises(ValueError, match=message):
            weights_for_record(tmp_path / f"{name}.parquet", model)
    # new weights in the same folder: the row describes the old ones and leaves the card
    shutil.copy(other / "model.safetensors", model / "model.safetensors")
    card = render_card(model)
    assert "| tiny mock |" not in card and "Not shown: 1 mock-survey row(s) not measured with these weights" in card


def _tiny_checkpoint(tmp_path):
    import torch

    from lensnet.checkpoint import ModelConfig, save_checkpoint

    torch.manual_seed(0)
    config = ModelConfig(architecture="lensresnet-tiny", bands=["g", "r", "i"], stamp_size_px=32,
                         pixel_scale_arcsec=0.2, normalisation="asinh_stretch", name="card-test")
    return save_checkpoint(config.build(), config, tmp_path / "card-source")


def test_true_lenses_are_binned_like_the_injections(adapted, finished_run, tiny_survey, client, tmp_path):
    from pipeline.against_truth import compare_selection, render_selection

    settings = rescore_settings({"rescore": str(finished_run), "model": str(adapted), "progress": False,
                                 "out": str(tmp_path / "rescored")})
    rescored = execute_rescore(prepare_rescore(settings, log=lambda _: None), client, log=lambda _: None)
    comparison = compare_selection(rescored.candidates, tiny_survey.truth_path, adapted / "selection_function.json")
    truth = pd.read_parquet(tiny_survey.truth_path)
    scored = pd.read_parquet(rescored.candidates)
    lenses = truth[truth["is_lens"] & truth["id"].isin(scored["object_id"])]
    for column in ("theta_e_arcsec", "arc_snr"):
        rows = comparison["bins"][column]
        assert sum(row["true_lenses"] for row in rows) == int(np.isfinite(lenses[column]).sum())
        for row in rows:
            if row["true_lenses"] and row["injections"]:
                assert isinstance(row["intervals_overlap"], bool)
            # the two-dimensional prediction: a count of found lenses and its interval
            assert row["observed_detected"] <= row["covered_lenses"] <= row["true_lenses"]
            low, high = row["expected_interval_95"]
            assert 0 <= low <= row["expected_detected"] + 1e-9 and row["expected_detected"] <= high + 1e-9
            assert high <= row["covered_lenses"]
            if row["covered_lenses"]:
                assert row["within_95"] == (low <= row["observed_detected"] <= high)
    whole = comparison["all_lenses"]
    assert whole["observed_detected"] == sum(row["observed_detected"] for row in comparison["bins"]["arc_snr"])
    text = render_selection(comparison)
    assert "true lenses" in text and "bins within the 95% interval" in text


def test_objects_the_adaptation_trained_on_can_be_left_out(adapted, finished_run, tiny_survey, capsys):
    from pipeline.against_truth import main as against_truth_main
    from pipeline.against_truth import measure, trained_objects

    trained = trained_objects(adapted)
    train_truth = pd.read_parquet(adapted / "data" / "train" / "truth.parquet")
    assert trained == set(train_truth["object_id"]) and trained
    candidates = finished_run / "candidates.parquet"
    everything = measure(candidates, tiny_survey.truth_path, n_bootstrap=10)
    held_out = measure(candidates, tiny_survey.truth_path, n_bootstrap=10, exclude=trained)
    truth_ids = set(pd.read_parquet(tiny_survey.truth_path)["id"])
    assert held_out["excluded_truth_rows"] == len(trained & truth_ids)
    assert held_out["n"] == everything["n"] - held_out["excluded_truth_rows"]
    assert against_truth_main([str(finished_run), str(tiny_survey.truth_path), "--bootstrap", "10",
                               "--exclude-trained", str(adapted)]) == 0
    assert f"({held_out['excluded_truth_rows']} objects the adaptation trained on are left out)" in capsys.readouterr().out
    assert against_truth_main([str(finished_run), str(tiny_survey.truth_path), "--bootstrap", "10",
                               "--baseline", str(finished_run)]) == 0
    auroc_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| AUROC |"))
    assert "+0.0000 [+0.0000, +0.0000] | 0% |" in auroc_line  # a run against itself gains nothing
    assert against_truth_main([str(finished_run), str(tiny_survey.truth_path), "--exclude-trained",
                               str(finished_run)]) == 2
    assert "takes the output directory of python -m pipeline.adapt" in capsys.readouterr().err


# ------------------------------------------------------------------------------------
# Cross-fitting: every object scored by a fold model that did not train on it
# ------------------------------------------------------------------------------------


def test_folds_are_balanced_and_the_same_for_every_fold():
    from lensnet.adapt.runner import fold_of_objects

    fold = fold_of_objects(103, 3, seed=5)
    assert sorted(np.bincount(fold)) == [34, 34, 35]
    assert np.array_equal(fold, fold_of_objects(103, 3, seed=5))
    assert not np.array_equal(fold, fold_of_objects(103, 3, seed=6))


def test_a_crossfit_takes_each_objects_own_fold_and_the_mean_for_unknown_objects():
    from catalogs.ensemble import CrossFit, combine_logits, combine_units

    crossfit = CrossFit("cf", ("a", "b"), (0.5, -0.5), 0.9, 0.5, pd.Series([0, 1, 1], index=[10, 11, 12]))
    by_member = {"a": np.array([1.0, 2.0, 3.0, 4.0]), "b": np.array([-1.0, -2.0, -3.0, -4.0])}
    logits = crossfit.logits([10, 11, 12, 99], by_member)
    assert logits[:3] == pytest.approx([1.5, -2.5, -3.5])
    # object 99 was not read by the adaptation: every fold is out of sample for it
    assert logits[3] == pytest.approx(float(combine_logits({"a": [4.5], "b": [-4.5]})[0]), abs=1e-6)
    # with another model, the cross-fit's out-of-fold score counts as one member
    mixed = combine_units([10, 11], {**{k: v[:2] for k, v in by_member.items()}, "parent": np.array([0.0, 0.0])},
                          [crossfit])
    assert mixed == pytest.approx(combine_logits({"cf": logits[:2], "parent": [0.0, 0.0]}), abs=1e-6)
    # two cross-fits whose directories share a name both count
    other = CrossFit("cf", ("c", "d"), (0.0, 0.0), 0.9, 0.5, pd.Series([0, 1], index=[10, 11]))
    both = combine_units([10, 11], {**{k: v[:2] for k, v in by_member.items()}, "c": np.array([3.0, 3.0]),
                                    "d": np.array([-3.0, -3.0])}, [crossfit, other])
    assert both == pytest.approx(combine_logits({"one": logits[:2], "two": [3.0, -3.0]}), abs=1e-6)


@pytest.fixture(scope="module")
def crossfit(finished_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("crossfit") / "model"
    code = adapt_main([str(finished_run), "--out", str(out), "--folds", "2", "--epochs", "1", "--batch-size", "16",
                       "--max-injections", "40", "--threads", "1", "--quiet", *LOOSE])
    assert code == 0
    return out


def test_each_fold_model_holds_out_its_own_fold(crossfit):
    record = json.loads((crossfit / "crossfit.json").read_text())
    folds = pd.read_parquet(crossfit / "folds.parquet")
    assert [fold["checkpoint"] for fold in record["folds"]] == ["fold-1", "fold-2"]
    assert folds["object_id"].is_unique and set(folds["fold"]) == {1, 2}
    injections = 0
    for number in (1, 2):
        own = set(folds.loc[folds["fold"] == number, "object_id"])
        train = pd.read_parquet(crossfit / f"fold-{number}" / "data" / "train" / "truth.parquet")
        test = pd.read_parquet(crossfit / f"fold-{number}" / "data" / "test" / "truth.parquet")
        assert not own & set(train["object_id"])  # no host and no negative from its own fold
        assert set(test["object_id"]) <= own and len(test)
        assert load_config(crossfit / f"fold-{number}").name.endswith(f"-fold{number}")
        injections += int(test["is_lens"].sum())
    report = json.loads((crossfit / "selection_function.json").read_text())
    assert report["folds"] == 2 and report["n_injections"] == injections  # the folds' held-out injections pooled
    assert record["threshold"] == report["threshold"]["value"]
    assert (crossfit / "selection_function.png").read_bytes()[:4] == b"\x89PNG"


def test_rescoring_with_a_crossfit_scores_every_object_out_of_fold(crossfit, finished_run, client, tmp_path):
    from scipy.special import expit, logit

    from catalogs import read_provenance
    from catalogs.schema import model_score_column

    settings = rescore_settings({"rescore": str(finished_run), "model": str(crossfit), "progress": False,
                                 "out": str(tmp_path / "rescored")})
    rescored = execute_rescore(prepare_rescore(settings, log=lambda _: None), client, log=lambda _: None)
    record = json.loads((crossfit / "crossfit.json").read_text())
    centre = np.mean([fold["threshold_logit"] for fold in record["folds"]])
    scored = pd.read_parquet(rescored.candidates).merge(pd.read_parquet(crossfit / "folds.parquet"), on="object_id")
    assert len(scored) == len(pd.read_parquet(crossfit / "folds.parquet"))
    names = [load_config(crossfit / f"fold-{n}").name for n in (1, 2)]
    for number, name in enumerate(names, start=1):
        rows = scored[scored["fold"] == number]
        own = rows[model_score_column(name)].to_numpy(np.float64)
        expected = expit(logit(own) + centre - record["folds"][number - 1]["threshold_logit"])
        assert rows["score"].to_numpy() == pytest.approx(expected, abs=2e-4)
    provenance = read_provenance(rescored.candidates)
    assert "cross-fit" in provenance["catalogue"]["score"]
    assert provenance["selection_function"]["file"] == str((crossfit / "selection_function.json").resolve())
    assert provenance["catalogue"]["threshold"] == pytest.approx(record["threshold"])


def test_a_crossfit_resumes_and_refuses_another_recipe(crossfit, finished_run, capsys, tmp_path):
    before = (crossfit / "fold-2" / "model.safetensors").stat().st_mtime_ns
    argv = [str(finished_run), "--out", str(crossfit), "--folds", "2", "--epochs", "1", "--batch-size", "16",
            "--max-injections", "40", "--threads", "1", *LOOSE]
    assert adapt_main(argv) == 0
    assert (crossfit / "fold-2" / "model.safetensors").stat().st_mtime_ns == before
    assert "reusing the injected sets" in capsys.readouterr().out
    assert adapt_main([*argv[:-len(LOOSE)], "--max-injections", "50", *LOOSE]) == 2
    assert "another recipe" in capsys.readouterr().err and (crossfit / "fold-1" / "model.safetensors").is_file()
    assert adapt_main([*argv[:4], "0", *argv[5:]]) == 2
    assert "--folds 0" in capsys.readouterr().err
    assert adapt_main([*argv[:4], "1000", *argv[5:]]) == 2
    assert "give fewer folds" in capsys.readouterr().err


def test_a_crossfit_is_never_written_over_a_single_adaptation(adapted, finished_run, capsys):
    before = sorted(path.name for path in adapted.iterdir())
    assert adapt_main([str(finished_run), "--out", str(adapted), "--folds", "2", *LOOSE]) == 2
    assert "holds a single adaptation" in capsys.readouterr().err
    assert sorted(path.name for path in adapted.iterdir()) == before


def test_a_single_adaptation_is_never_written_into_a_crossfit(crossfit, finished_run, capsys):
    before = sorted(path.name for path in crossfit.iterdir())
    assert adapt_main([str(finished_run), "--out", str(crossfit), *LOOSE]) == 2
    assert "holds a cross-fit" in capsys.readouterr().err
    assert sorted(path.name for path in crossfit.iterdir()) == before


def test_an_unfinished_or_reshuffled_crossfit_is_refused(crossfit, finished_run, capsys, tmp_path):
    from catalogs.ensemble import Ensemble, EnsembleError

    unfinished = tmp_path / "unfinished"
    shutil.copytree(crossfit, unfinished)
    record = json.loads((unfinished / "crossfit.json").read_text())
    (unfinished / "crossfit.json").write_text(json.dumps({"recipe": record["recipe"]}))
    with pytest.raises(EnsembleError, match="unfinished cross-fit"):
        Ensemble.from_models(str(unfinished))
    # the run's objects changed since the folds were dealt: resuming would score some in sample
    folds = pd.read_parquet(unfinished / "folds.parquet")
    folds.assign(fold=3 - folds["fold"]).to_parquet(unfinished / "folds.parquet", index=False)
    assert adapt_main([str(finished_run), "--out", str(unfinished), "--folds", "2", "--epochs", "1", "--batch-size",
                       "16", "--max-injections", "40", "--threads", "1", "--quiet", *LOOSE]) == 2
    assert "changed since the cross-fit" in capsys.readouterr().err


def test_against_truth_leaves_nothing_out_for_a_crossfit(crossfit, finished_run, tiny_survey, capsys):
    from pipeline.against_truth import main as against_truth_main
    from pipeline.against_truth import trained_objects

    assert trained_objects(crossfit) == set()
    assert against_truth_main([str(finished_run), str(tiny_survey.truth_path), "--bootstrap", "10",
                               "--exclude-trained", str(crossfit)]) == 0
    assert "is a cross-fit: every object was scored out of sample" in capsys.readouterr().out
