"""The second simulator (GalSim light and PSFs, caustics lensing) and its agreement with the first."""

from __future__ import annotations

import copy
import dataclasses
import json

import galsim
import numpy as np
import pandas as pd
import pytest
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.Util.param_util import phi_q2_ellipticity

from lensnet.simulate import KINDS, components, definitions, get_profile, simulate_stamps
from lensnet.simulate import render as render_lenstronomy
from lensnet.simulate.galsim_engine import (
    calibrate_source,
    draw_parameters,
    observe,
    render,
    truth_record,
)
from lensnet.simulate.galsim_engine.lensing import deflect

GRI = get_profile("ground-gri")
FINE = dataclasses.replace(GRI, name="fine", pixel_scale_arcsec=0.05, stamp_size_px=128)
# One lens configuration, written once per engine: SIE + external shear.
Q, PHI, THETA_E, GAMMA1, GAMMA2 = 0.8, 0.4, 1.5, 0.03, -0.02
LENS = {"theta_e": THETA_E, "slope": 1.0, "q": Q, "phi": PHI, "gamma1": GAMMA1, "gamma2": GAMMA2, "x": 0.0, "y": 0.0}


def _psf(fwhm: float = 0.7, kind: str = "moffat", beta: float = 3.0) -> list[dict]:
    return [{"type": kind, "beta": beta, "fwhm": fwhm, "g1": 0.0, "g2": 0.0}] * 3


def _source(x: float = 0.0, y: float = 0.0, r_half: float = 0.15, mags: float = 22.0) -> dict:
    shape = {"type": "sersic", "n": 1.0, "r_half": r_half, "q": 1.0, "beta": 0.0, "x": x, "y": y, "flux_frac": 1.0}
    return {"name": "source", "lensed": True, "mags": [mags] * 3, "shapes": [shape]}


def _lens_params(source: dict, theta_e: float = 1.5, round_lens: bool = True, fwhm: float = 0.5) -> dict:
    lens = dict(LENS, theta_e=theta_e)
    if round_lens:
        lens.update(q=0.9999, gamma1=0.0, gamma2=0.0)
    return {"kind": "lens", "is_lens": True, "lens": lens, "groups": [source], "psf": _psf(fwhm),
            "psf_fwhm_arcsec": [fwhm] * 3, "sky_sigma": list(GRI.sky_sigma),
            "meta": {"theta_e_arcsec": theta_e, "source_mag": 22.0, "main_mag": 20.0}}


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_draws_json_parameters_and_renders(kind):
    params = draw_parameters(np.random.default_rng(3), kind, GRI)
    assert json.loads(json.dumps(params)) == json.loads(json.dumps(draw_parameters(np.random.default_rng(3), kind,
                                                                                   GRI)))
    assert params["engine"] == "galsim" and params["kind"] == kind and (params["lens"] is not None) == (kind == "lens")
    if params["is_lens"]:
        calibrate_source(params, GRI, 48)
    image = render(params, GRI, 48)
    assert image.shape == (3, 48, 48) and image.dtype == np.float32 and np.isfinite(image).all() and image.sum() > 0


def test_complete_ring_at_the_einstein_radius_when_the_source_sits_at_the_caustic_centre():
    params = _lens_params(_source(), theta_e=2.0)
    arcs = render(params, GRI, 80, part="lensed")[1].astype(float)
    rows, cols = np.indices(arcs.shape)
    radius = np.hypot(rows - 39.5, cols - 39.5) * GRI.pixel_scale_arcsec
    assert (arcs * radius).sum() / arcs.sum() == pytest.approx(2.0, rel=0.08)
    assert arcs[37:43, 37:43].mean() < 0.2 * arcs.max()  # hollow
    record = truth_record(params, GRI, render(params, GRI, 64))
    assert record["arc_azimuth_fraction"] > 0.9 and record["magnification"] > 8
    # the same source far outside the caustics: one arc and a faint counter-image
    away = _lens_params(_source(x=1.8), theta_e=2.0)
    assert truth_record(away, GRI, render(away, GRI, 64))["arc_azimuth_fraction"] < 0.6


def test_arc_snr_follows_source_brightness_and_calibration_hits_its_target():
    snrs = [truth_record(p, GRI, render(p, GRI, 64))["arc_snr"]
            for p in (_lens_params(_source(0.3, 0.1, mags=m)) for m in (24.0, 22.0, 20.0))]
    assert snrs[0] < snrs[1] < snrs[2] and snrs[2] / snrs[1] > 2.5
    params = draw_parameters(np.random.default_rng(9), "lens", GRI, field_galaxies=False, artefacts=False)
    for target in (10.0, 80.0, 600.0):
        trial = copy.deepcopy(params)
        trial["meta"]["target_arc_snr"] = target
        arcs = calibrate_source(trial, GRI, 64)
        record = truth_record(trial, GRI, arcs, arc_image=arcs)
        if record["source_mag"] > 17.0 + 1e-6 and record["source_mag"] < 28.5 - 1e-6:  # not clipped
            assert record["arc_snr"] == pytest.approx(target, rel=0.02)
        assert record["source_mag"] == pytest.approx(trial["meta"]["source_mag"])


@pytest.mark.parametrize("kind", ["moffat", "kolmogorov"])
@pytest.mark.parametrize("fwhm", [0.6, 1.2])
def test_psf_fwhm_measured_on_a_rendered_star(kind, fwhm):
    star = {"name": "star", "lensed": False, "mags": [20.0] * 3,
            "shapes": [{"type": "point", "x": 0.0, "y": 0.0, "flux_frac": 1.0}]}
    params = {"groups": [star], "lens": None, "psf": _psf(fwhm, kind), "psf_fwhm_arcsec": [fwhm] * 3}
    image = render(params, GRI, 64, offset_px=(0.3, -0.4))[1].astype(float)
    assert image.sum() == pytest.approx(GRI.counts(20.0, 1), rel=1e-3)
    fine = render(params, FINE, 128)[1].astype(float)  # 0.05" pixels add almost no width
    assert galsim.Image(fine, scale=0.05).calculateFWHM() == pytest.approx(fwhm, rel=0.03)


def test_unlensed_light_matches_galsim_drawing_it_directly():
    for n_sersic in (1.0, 0.6):  # no truncation below n = 2
        shape = {"type": "sersic", "n": n_sersic, "r_half": 0.4, "q": 0.7, "beta": 0.3, "x": 0.1, "y": 0.05,
                 "flux_frac": 1.0}
        params = {"groups": [{"name": "g", "lensed": False, "mags": [20.0] * 3, "shapes": [shape]}], "lens": None,
                  "psf": _psf(), "psf_fwhm_arcsec": [0.7] * 3}
        mine = render(params, GRI, 64, offset_px=(0.3, -0.2))[1].astype(float)
        galaxy = galsim.Sersic(n=n_sersic, half_light_radius=0.4, flux=GRI.counts(20.0, 1))
        galaxy = galaxy.shear(q=0.7, beta=0.3 * galsim.radians).shift(0.1, 0.05)
        direct = galsim.Convolve(galaxy, galsim.Moffat(beta=3.0, fwhm=0.7)).drawImage(
            nx=64, ny=64, scale=0.2, offset=(0.3, -0.2)).array
        assert np.abs(mine - direct).sum() / direct.sum() < 0.02


def test_the_two_engines_agree_on_the_lensing_of_one_configuration():
    """Deflections to 1e-6″; lensed images of the same source through the same PSF to 3% (L1)."""
    e1, e2 = phi_q2_ellipticity(PHI, Q)
    kwargs = [{"theta_E": THETA_E, "e1": e1, "e2": e2, "center_x": 0.0, "center_y": 0.0},
              {"gamma1": GAMMA1, "gamma2": GAMMA2, "ra_0": 0.0, "dec_0": 0.0}]
    x, y = np.meshgrid(np.linspace(-3.05, 3.05, 40), np.linspace(-3.05, 3.05, 40))
    beta_lenstronomy = LensModel(["SIE", "SHEAR"]).ray_shooting(x, y, kwargs)
    beta_caustics = deflect(x, y, LENS)
    np.testing.assert_allclose(beta_caustics, beta_lenstronomy, atol=1e-6)
    for r_half in (0.1, 0.3):
        first = {"groups": [{"name": "source", "lensed": True, "mags": [22.0] * 3,
                             "components": [components.sersic(r_half, 1.0, 0.7, 0.3, 0.1, 0.05)]}],
                 "lens_model": {"models": ["SIE", "SHEAR"], "kwargs": kwargs},
                 "psf_fwhm_arcsec": [0.7] * 3, "psf_moffat_beta": 3.0}
        shape = {"type": "sersic", "n": 1.0, "r_half": r_half, "q": 0.7, "beta": 0.3, "x": 0.1, "y": 0.05,
                 "flux_frac": 1.0}
        second = {"groups": [{"name": "source", "lensed": True, "mags": [22.0] * 3, "shapes": [shape]}],
                  "lens": LENS, "psf": _psf(), "psf_fwhm_arcsec": [0.7] * 3}
        a = render_lenstronomy(first, GRI, 64, (0.3, -0.2))[1].astype(float)
        b = render(second, GRI, 64, (0.3, -0.2))[1].astype(float)
        assert b.sum() == pytest.approx(a.sum(), rel=0.01)
        assert np.abs(a - b).sum() / a.sum() < 0.03


def test_noise_is_at_the_reported_level_white_or_correlated():
    for correlation in (0.0, 0.7):
        params = {"sky_sigma": [2.0] * 3, "noise": {"correlation_px": correlation, "gain": 0.0}, "background": {}}
        noise = observe(params, np.zeros((3, 64, 64), np.float32), GRI, seed=4)
        assert noise.std() == pytest.approx(2.0, rel=0.05)
        neighbours = np.corrcoef(noise[:, :, :-1].ravel(), noise[:, :, 1:].ravel())[0, 1]
        assert (neighbours > 0.15) == (correlation > 0)


def test_artefacts_and_saturation():
    image = np.zeros((3, 32, 32), np.float32)
    image[0, 16, 16] = 1e6  # a saturated star core
    params = {"sky_sigma": [1.0] * 3, "noise": {"correlation_px": 0.0, "gain": 0.0}, "background": {},
              "artefacts": {"cosmic_rays": [{"band": 1, "x": 5.0, "y": 5.0, "length": 8.0, "angle": 0.3,
                                             "amplitude": 200.0}],
                            "bad_columns": [{"band": 2, "x": 7, "value": None}]}}
    out = observe(params, image, GRI, seed=1)
    assert out[0].max() == GRI.saturation_counts and (out[0][:, 16] == GRI.saturation_counts).sum() > 10
    assert np.nanmax(out[1]) > 100 and np.abs(out[2][:, 6]).max() < 10
    assert np.isnan(out[2][:, 7]).all()


def test_simulate_stamps_shares_the_truth_columns_of_the_other_engine():
    stamps, truth = simulate_stamps(12, GRI, 5, lens_fraction=0.5, engine="galsim")
    again, _ = simulate_stamps(12, GRI, 5, lens_fraction=0.5, engine="galsim")
    np.testing.assert_array_equal(stamps, again)
    _, other = simulate_stamps(4, GRI, 5, lens_fraction=0.5)
    assert list(truth.columns) == list(other.columns)
    assert stamps.shape == (12, 3, 64, 64) and (truth["engine"] == "galsim").all()
    lenses = truth[truth["is_lens"]]
    assert len(lenses) == 6 and lenses["theta_e_arcsec"].between(0.5, 4.0).all()
    assert (lenses["arc_snr"] > 0).all() and truth.loc[~truth["is_lens"], "arc_snr"].isna().all()
    assert isinstance(truth, pd.DataFrame)


def test_population_spans_what_surveys_find():
    rng = np.random.default_rng(11)
    draws = [draw_parameters(rng, "lens", GRI, field_galaxies=False) for _ in range(400)]
    theta_e = np.array([d["lens"]["theta_e"] for d in draws])
    offset = np.array([d["meta"]["source_offset_arcsec"] for d in draws]) / theta_e
    target = np.array([d["meta"]["target_arc_snr"] for d in draws])
    seeing = np.array([d["psf_fwhm_arcsec"][GRI.reference_index] for d in draws])
    assert theta_e.min() < 0.6 and theta_e.max() > 3.5
    assert 0.2 < np.mean(offset < 0.08) < 0.4 and offset.max() > 1.0
    assert target.min() < 5 and target.max() > 1000 and 30 < np.median(target) < 100
    assert seeing.min() < 0.55 and seeing.max() > 1.3
    assert {d["psf"][0]["type"] for d in draws} == {"moffat", "kolmogorov"}
    red = np.mean([d["meta"]["source_population"] == "passive" for d in draws])
    assert 0.08 < red < 0.25
    assert definitions.ENGINES == ("lenstronomy", "galsim")
