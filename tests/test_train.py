"""Training: augmentation semantics, a tiny end-to-end run, resuming."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from lensnet.augment import random_affine, random_dihedral
from lensnet.checkpoint import load_model
from lensnet.train import TrainConfig, evaluation_report, train


def test_dihedral_outputs_are_exact_symmetries_of_their_inputs():
    images = torch.randn(64, 2, 9, 9)
    out = random_dihedral(images, torch.Generator().manual_seed(0))
    seen = set()
    for image, result in zip(images, out):
        candidates = [torch.rot90(base, k, dims=(-2, -1)) for base in (image, image.flip(-1)) for k in range(4)]
        matches = [index for index, candidate in enumerate(candidates) if torch.equal(candidate, result)]
        assert matches, "output is not a symmetry of the input"
        seen.add(matches[0])
    assert len(seen) == 8


def test_dihedral_draws_the_same_symmetry_per_image_as_the_subset_by_subset_version():
    # The batched selection must give exactly what transforming each drawn subset gives, so that
    # a recipe's augmentation (and a resumed run) is unchanged by how it is computed.
    from lensnet.augment import _dihedral_by_subset

    images = torch.randn(200, 3, 16, 16)
    batched = random_dihedral(images, torch.Generator().manual_seed(7))
    choice = torch.randint(0, 8, (200,), generator=torch.Generator().manual_seed(7))
    assert torch.equal(batched, _dihedral_by_subset(images, choice))


def test_affine_identity_and_rotation():
    image = torch.zeros(1, 1, 33, 33)
    image[0, 0, 16, 24] = 1.0  # 8 px right of the centre
    generator = torch.Generator().manual_seed(0)
    same = random_affine(image, generator, max_rotation_deg=0.0, zoom=(1.0, 1.0), max_shift_px=0.0)
    torch.testing.assert_close(same, image, atol=1e-5, rtol=0)
    flux_before = image.sum()
    turned = random_affine(image.repeat(16, 1, 1, 1), generator, max_rotation_deg=180.0, zoom=(1.0, 1.0),
                           max_shift_px=0.0)
    # A rotation about the centre keeps the point 8 px from the centre.
    ys, xs = torch.meshgrid(torch.arange(33.0), torch.arange(33.0), indexing="ij")
    weights = turned[:, 0] / turned[:, 0].sum(dim=(-2, -1), keepdim=True)
    radius = torch.sqrt(((weights * xs).sum((-2, -1)) - 16) ** 2 + ((weights * ys).sum((-2, -1)) - 16) ** 2)
    torch.testing.assert_close(radius, torch.full_like(radius, 8.0), atol=0.35, rtol=0)
    torch.testing.assert_close(turned.sum(dim=(-2, -1)).mean(), flux_before, atol=0.05, rtol=0)


def write_stamp_set(directory, n=96, size=32, seed=0):
    """A learnable toy set: 'lenses' carry a ring, non-lenses a blob; on a noise floor."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[:size, :size] - (size - 1) / 2
    radius = np.hypot(xs, ys)
    is_lens = np.arange(n) % 2 == 0
    stamps = rng.normal(0, 1, (n, 3, size, size)).astype(np.float32)
    stamps[is_lens] += (10 * np.exp(-0.5 * ((radius - 8) / 1.2) ** 2))[None, None]
    stamps[~is_lens] += (10 * np.exp(-0.5 * (radius / 3) ** 2))[None, None]
    directory.mkdir(parents=True)
    xr.Dataset({"stamps": (("object", "band", "y", "x"), stamps)}, coords={"band": np.array(["g", "r", "i"], dtype=object)},
               attrs={"pixel_scale_arcsec": 0.2}).to_zarr(directory / "stamps.zarr", zarr_format=3,
                                                          consolidated=False)
    pd.DataFrame({"stamp_index": np.arange(n), "is_lens": is_lens, "theta_e_arcsec": np.where(is_lens, 1.6, np.nan),
                  "arc_snr": np.where(is_lens, 30.0, np.nan)}).to_parquet(directory / "truth.parquet")
    return directory


def test_training_learns_saves_a_loadable_checkpoint_and_resumes(tmp_path):
    data = write_stamp_set(tmp_path / "data")
    config = TrainConfig(data=str(data), out=str(tmp_path / "model"), architecture="lensresnet-tiny", epochs=2,
                         batch_size=16, learning_rate=5e-3, validation_fraction=0.25, threads=1, seed=3,
                         test_data=str(data))
    out = train(config)
    loaded = load_model(out)
    assert loaded.config.bands == ["g", "r", "i"] and loaded.config.stamp_size_px == 32
    assert loaded.config.pixel_scale_arcsec == 0.2
    assert 0.0 < loaded.config.threshold < 1.0
    assert loaded.config.training["recipe"]["architecture"] == "lensresnet-tiny"
    assert loaded.config.metrics["auroc"]["value"] > 0.9
    history = loaded.config.training["history"]
    assert len(history) >= 1

    # Interrupted after one epoch, then resumed: the same weights as the uninterrupted run.
    split = TrainConfig(**{**config.__dict__, "out": str(tmp_path / "split"), "stop_after_epochs": 1})
    train(split)
    assert len(torch.load(tmp_path / "split" / "last.pt", weights_only=True)["history"]) == 1
    train(TrainConfig(**{**split.__dict__, "stop_after_epochs": None, "resume": True}))
    whole = torch.load(out / "last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert [entry["epoch"] for entry in resumed["history"]] == [1, 2]
    for key, value in whole["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0)
    with pytest.raises(ValueError, match="2-epoch schedule"):
        train(TrainConfig(**{**split.__dict__, "epochs": 3, "resume": True}))


def test_bf16_precision_trains_under_autocast_on_a_cpu_and_says_so(tmp_path, monkeypatch, capsys):
    import lensnet.train as train_module

    data = write_stamp_set(tmp_path / "data")
    settings = {"data": str(data), "architecture": "lensresnet-tiny", "epochs": 2, "batch_size": 16,
                "learning_rate": 5e-3, "validation_fraction": 0.25, "threads": 1, "seed": 3, "test_data": str(data)}
    # what train_step autocasts to, step by step
    seen = []
    step = train_module.train_step

    def recording_step(module, optimizer, scheduler, batch, target, pos_weight, use_amp=False):
        seen.append((use_amp, batch.is_contiguous(memory_format=torch.channels_last) and
                     not batch.is_contiguous()))
        return step(module, optimizer, scheduler, batch, target, pos_weight, use_amp)

    monkeypatch.setattr(train_module, "train_step", recording_step)
    bf16 = load_model(train(TrainConfig(out=str(tmp_path / "bf16"), precision="bf16", **settings)))
    assert seen and all(amp and channels_last for amp, channels_last in seen)
    assert bf16.config.training["precision"] == "bf16 autocast"
    assert bf16.config.training["recipe"]["precision"] == "bf16"
    from lensnet.card import render_card

    assert "class-weighted BCE, bf16 autocast;" in render_card(tmp_path / "bf16")
    assert bf16.config.metrics["auroc"]["value"] > 0.9  # it still learns the toy rings
    seen.clear()
    default = load_model(train(TrainConfig(out=str(tmp_path / "auto"), **settings)))
    assert seen and not any(amp or channels_last for amp, channels_last in seen)  # auto on a CPU: fp32, as before
    assert default.config.training["precision"] == "fp32"
    # the same stamps, seed and schedule: the two precisions train different weights
    assert not torch.equal(bf16.module.state_dict()["stem.weight"], default.module.state_dict()["stem.weight"])
    # a run is resumed in the precision it started with
    with pytest.raises(ValueError, match="was trained in bf16 autocast, not fp32"):
        train(TrainConfig(out=str(tmp_path / "bf16"), precision="fp32", resume=True, **settings))
    monkeypatch.setattr(train_module, "cpu_has_native_bf16", lambda: False)
    train(TrainConfig(out=str(tmp_path / "emulated"), precision="bf16", **{**settings, "epochs": 1}))
    assert "no bf16 instructions" in capsys.readouterr().out
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16"):
        train(TrainConfig(out=str(tmp_path / "x"), precision="fp16", **settings))
    assert train_module.resolve_precision("auto", torch.device("cuda")).bf16
    assert not train_module.resolve_precision("fp32", torch.device("cuda")).bf16


def test_evaluation_report_counts_the_deeplens_completeness_subset():
    truth = pd.DataFrame({"is_lens": [1, 1, 1, 0, 0, 0], "theta_e_arcsec": [2.0, 2.0, 0.5, np.nan, np.nan, np.nan],
                          "arc_snr": [30.0, 10.0, 50.0, np.nan, np.nan, np.nan]})
    logits = np.array([3.0, 2.0, 1.0, -1.0, -2.0, 0.5])
    report = evaluation_report(truth, logits, threshold=0.5, n_resamples=20)
    assert report["completeness_theta_e_gt_1.4_snr_gt_20"] == {"value": 1.0, "n_lenses": 1, "n_detected": 1}
    assert report["auroc"]["value"] == pytest.approx(1.0)
    assert report["fpr_at_threshold"] == pytest.approx(1 / 3)


def test_flatten_head_architectures_are_sized_from_the_data(tmp_path):
    data = write_stamp_set(tmp_path / "data", n=32, size=64)
    out = train(TrainConfig(data=str(data), out=str(tmp_path / "ou"), architecture="ou-66", epochs=1, batch_size=16,
                            threads=1, augment=False))
    loaded = load_model(out)
    assert loaded.config.arch_kwargs["input_size_px"] == 64
    assert loaded.module(torch.zeros(2, 3, 64, 64)).shape == (2,)


def test_early_stopping_counts_epochs_since_the_best_validation_loss(tmp_path):
    from lensnet.train import _stale_epochs

    assert _stale_epochs([]) == 0
    history = [{"val_loss": v} for v in (0.7, 0.5, 0.6, 0.55)]
    assert _stale_epochs(history) == 2 and _stale_epochs(history[:2]) == 0
    with pytest.raises(ValueError, match="patience"):
        train(TrainConfig(data="unused", out=str(tmp_path), patience=0))


@pytest.mark.parametrize("argv, message", [
    (["--out", "o"], "missing --data"),
    (["--data", "d", "--out", "o", "--epochs", "two"], "invalid int value"),
    (["--config", "CONFIG", "--out", "o"], "unknown key(s) epoch"),
    (["--config", "TYPES", "--out", "o"], "epochs: '12' is not a int"),
])
def test_train_command_line_mistakes_are_one_line(argv, message, tmp_path, capsys):
    from lensnet.train import main as train_main

    (tmp_path / "bad.yaml").write_text("data: d\nepoch: 3\n")
    (tmp_path / "types.yaml").write_text("data: d\nepochs: '12'\n")
    argv = [str(tmp_path / "bad.yaml") if a == "CONFIG" else str(tmp_path / "types.yaml") if a == "TYPES" else a
            for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        train_main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_train_refuses_an_unknown_architecture_before_loading_data(tmp_path, capsys):
    from lensnet.train import main as train_main

    assert train_main(["--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"),
                       "--architecture", "no-such-net"]) == 2
    err = capsys.readouterr().err
    assert "no model named 'no-such-net'" in err and "Traceback" not in err
    assert train_main(["--data", "{simulate: {profile: ground-gri, n: 4, seed: 1}}", "--out", str(tmp_path / "o"),
                       "--normalisation", "nope"]) == 2
    assert "unknown normalisation" in capsys.readouterr().err


def test_drop_faint_lenses_leaves_out_only_lenses_below_the_cut_and_keeps_stamps_aligned():
    from lensnet.data import StampSet
    from lensnet.train import drop_faint_lenses

    truth = pd.DataFrame({"is_lens": [True, True, True, False, True, False],
                          "arc_snr": [5.0, 10.0, np.nan, np.nan, 300.0, 2.0], "tag": list("abcdef")})
    stamps = np.arange(6, dtype=np.float32)[:, None, None, None] * np.ones((6, 3, 4, 4), np.float32)
    data = StampSet(stamps=stamps, truth=truth, bands=["g", "r", "i"], attrs={"profile": "ground-gri"})
    assert drop_faint_lenses(data, 0.0) is data
    kept = drop_faint_lenses(data, 10.0)
    # the S/N-5 lens and the lens without an S/N go; every non-lens stays, whatever its arc_snr
    assert kept.truth["tag"].tolist() == ["b", "d", "e", "f"]
    assert kept.stamps[:, 0, 0, 0].tolist() == [1.0, 3.0, 4.0, 5.0]
    assert kept.labels.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert kept.attrs == {"profile": "ground-gri", "faint_lenses_left_out": 2, "train_arc_snr_min": 10.0}
    with pytest.raises(ValueError, match="needs an arc_snr column"):
        drop_faint_lenses(StampSet(stamps=stamps, truth=truth.drop(columns="arc_snr"), bands=[], attrs={}), 1.0)


def test_training_with_an_arc_snr_cut_trains_on_the_visible_lenses_and_says_so(tmp_path):
    data = write_stamp_set(tmp_path / "data", n=64)
    truth = pd.read_parquet(data / "truth.parquet")
    truth.loc[truth.index[truth["is_lens"]][:8], "arc_snr"] = 3.0  # 8 of the 32 lenses too faint to see
    truth.to_parquet(data / "truth.parquet")
    out = train(TrainConfig(data=str(data), out=str(tmp_path / "model"), architecture="lensresnet-tiny", epochs=1,
                            batch_size=16, validation_fraction=0.25, threads=1, train_arc_snr_min=10.0))
    training = load_model(out).config.training
    assert training["data"]["n_train"] + training["data"]["n_val"] == 56
    assert training["data"]["faint_lenses_left_out"] == 8
    assert training["recipe"]["train_arc_snr_min"] == 10.0
    with pytest.raises(ValueError, match="train_arc_snr_min must be >= 0"):
        train(TrainConfig(data=str(data), out=str(tmp_path / "bad"), train_arc_snr_min=-1.0))


def test_fine_tuning_can_extend_a_trained_network_with_a_deflector_subtracted_view(tmp_path, capsys):
    data = write_stamp_set(tmp_path / "data")
    settings = {"data": str(data), "architecture": "lensresnet-tiny", "epochs": 1, "batch_size": 16,
                "learning_rate": 5e-3, "validation_fraction": 0.25, "threads": 1, "seed": 3,
                "normalisation": "asinh_stretch"}
    parent = train(TrainConfig(out=str(tmp_path / "parent"), **settings))
    child = load_model(train(TrainConfig(out=str(tmp_path / "child"), init_from=str(parent),
                                         arch_kwargs={"deflector_subtracted": True}, **settings)))
    out = capsys.readouterr().out
    assert "extending its architecture with deflector_subtracted=True" in out
    assert "new parameters deflector_stem.weight start at zero; scores unchanged" in out
    assert child.config.arch_kwargs["deflector_subtracted"] is True
    assert child.module.deflector_stem.weight.abs().sum() > 0  # the new stem trained
    from lensnet.card import render_card

    assert "- Architecture `lensresnet-tiny` with `deflector_subtracted: True` (" in render_card(tmp_path / "child")
    # an added keyword that reshapes or changes the parent's weights is refused before training
    with pytest.raises(ValueError, match="reshape weights of parent"):
        train(TrainConfig(out=str(tmp_path / "wider"), init_from=str(parent), arch_kwargs={"widths": [8, 16, 64]},
                          **settings))
    with pytest.raises(ValueError, match="inverts the asinh_stretch normalisation; this recipe normalises with zscale"):
        train(TrainConfig(out=str(tmp_path / "zscale"), arch_kwargs={"deflector_subtracted": True},
                          **{**settings, "normalisation": "zscale"}))
    with pytest.raises(ValueError, match="change parent's scores before any training"):
        train(TrainConfig(out=str(tmp_path / "strided"), init_from=str(parent), arch_kwargs={"stem_stride": 2},
                          **settings))
    # refused before any stamp is loaded: a keyword the architecture does not take, a fine-tune that
    # would change one its checkpoint sets, a frozen backbone that would keep the extension at zero
    nowhere = {**settings, "data": str(tmp_path / "no-such-stamps")}
    with pytest.raises(ValueError, match="lensresnet-tiny cannot be built with arch_kwargs .*bogus"):
        train(TrainConfig(out=str(tmp_path / "bogus"), init_from=str(parent), arch_kwargs={"bogus": 1}, **nowhere))
    with pytest.raises(ValueError, match="deflector_subtracted=False differ from .*deflector_subtracted=True"):
        train(TrainConfig(out=str(tmp_path / "undo"), init_from=str(tmp_path / "child"),
                          arch_kwargs={"deflector_subtracted": False}, **nowhere))
    with pytest.raises(ValueError, match="--freeze-backbone would keep the layers"):
        train(TrainConfig(out=str(tmp_path / "frozen"), init_from=str(parent), freeze_backbone=True,
                          arch_kwargs={"deflector_subtracted": True}, **nowhere))
