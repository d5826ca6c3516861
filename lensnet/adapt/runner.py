"""Adapt a model to the survey a run scored: inject, fine-tune, measure the selection function.

Works on a :class:`Survey`: a finished run's scored stamps, its catalogue (with the parent
model's scores and the catalogue's columns) and its settings (the model, and the tiles, whose
headers may give the zero points and PSF). ``pipeline.adapt`` reads one from a run directory,
so that ``lensnet`` itself never depends on the run layout. Writes into ``OUT`` (default
``RUN/adapted``) a checkpoint usable as ``--model OUT``:

``data/train``, ``data/test``   stamp sets (injected hosts and survey negatives), split by object
``data/rehearsal``              with ``rehearse``: a seeded subset of simulated stamp sets (e.g. the
                                parent's own training data) trained on alongside, so that the
                                fine-tune keeps what the parent learned
``model.safetensors``, ``config.json``   the fine-tuned model; its ``training["adaptation"]``
                                records the parent model, the run, the host selection and the
                                injection recipe; its threshold gives ``target_fpr`` on the
                                survey's own held-out stamps
``selection_function.json``/``.md``/``.png``   injection-recovery completeness against θE,
                                arc S/N, source and host magnitude, for the parent and the
                                adapted model, with the threshold's bootstrap interval

Everything is resumable: rerunning the same command reuses the injected sets and resumes
training. Another recipe in the same ``OUT`` is refused without ``--force``.

Longer than the project's ~400-line guide: the adaptation's steps (read the run, build the sets,
fine-tune, measure, report) are one resumable sequence; the science is in hosts.py and inject.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from lensnet import metrics
from lensnet.adapt import hosts as host_tools
from lensnet.adapt import inject as injection
from lensnet.checkpoint import (CONFIG_FILE, CROSSFIT_FILE, WEIGHTS_FILE, load_config, load_model,
                                resolve_checkpoint, sha256_of)

RECIPE_FILE = "adaptation.json"
SELECTION_FILE = "selection_function"
#: Bins of the selection function (outer edges widen to the data).
BINS: dict[str, tuple[float, ...]] = {
    "theta_e_arcsec": (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0),
    "arc_snr": (2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 1000.0),
    "source_mag": (17.0, 21.0, 22.0, 23.0, 24.0, 25.0, 26.0, 29.0),
    "host_mag": (15.0, 18.0, 19.0, 20.0, 21.0, 22.0, 25.0),
    # a network that learned "large galaxies are lenses" finds the same arc more often on a large host
    "host_size_arcsec": (0.2, 0.5, 0.7, 0.9, 1.2, 1.6, 3.0),
}
PSF_KEYWORDS = ("PSF_FWHM", "PSFFWHM", "SEEING", "FWHM")
ZEROPOINT_KEYWORDS = ("MAGZERO", "MAGZP", "ZEROPT", "ZP", "PHOTZP")


class AdaptError(ValueError):
    """A problem with the run, the model or the options that the user can fix."""


@dataclass
class AdaptConfig:
    """Every option of an adaptation (``python -m pipeline.adapt --help`` names them alike)."""

    run: str
    out: str | None = None
    model: str | None = None
    max_objects: int = 20000
    injections_per_host: int = 1
    max_injections: int = 4000
    test_fraction: float = 0.3
    exclude_top_fraction: float = 0.005
    host_mag_max: float = 22.0
    colour_min: float = 0.8
    concentration_min: float = 0.15
    asymmetry_max: float = 0.05
    axis_ratio_min: float = 0.5
    theta_e: str = "matched"
    theta_e_range_arcsec: tuple[float, float] = (0.5, 4.0)
    arc_snr_range: tuple[float, float] = (2.0, 1000.0)
    train_arc_snr_min: float = 0.0
    psf_fwhm_arcsec: list[float] | None = None
    psf_moffat_beta: float = 3.0
    zeropoints: list[float] | None = None
    band_wavelengths_nm: list[float] | None = None
    gain: float = 0.0
    epochs: int = 8
    batch_size: int = 128
    learning_rate: float = 3e-4
    patience: int = 3
    freeze_backbone: bool = False
    rehearse: list[str] | None = None
    rehearse_max: int = 6000
    target_fpr: float = 0.01
    seed: int = 0
    threads: int | None = None
    folds: int = 1
    fold: int | None = None
    force: bool = False
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path(self.run) / "adapted"

    @property
    def held_out_fraction(self) -> float:
        """The share of objects held out: one fold of a cross-fit, else ``test_fraction``."""
        return 1.0 / self.folds if self.fold is not None else self.test_fraction


def fold_of_objects(n: int, folds: int, seed: int) -> np.ndarray:
    """Each of ``n`` objects' fold (0 .. folds-1): a seeded shuffle dealt round, so fold sizes
    differ by at most one. Every fold of a cross-fit computes the same assignment."""
    order = np.random.default_rng([seed, 3]).permutation(n)
    fold = np.empty(n, dtype=np.int64)
    fold[order] = np.arange(n) % folds
    return fold


@dataclass
class Survey:
    """What the adaptation takes from a run (``pipeline.adapt.read_run``)."""

    stamps: np.ndarray
    catalogue: pd.DataFrame
    bands: list[str]
    settings: dict[str, Any]
    parent: str


def _log(config: AdaptConfig, message: str) -> None:
    if config.progress:
        print(message, flush=True)


def _header_values(settings: dict[str, Any], bands: list[str], tiles: list[str], keywords: tuple[str, ...]
                   ) -> list[float] | None:
    """A per-band header value from the run's tiles (the first tile that has it), or None."""
    from astropy.io import fits

    pattern = settings.get("images")
    if not pattern:
        return None
    values = []
    for band in bands:
        found = None
        for tile in tiles[:5]:
            try:
                if "{band}" in pattern:
                    header = fits.getheader(pattern.format(tile=tile, band=band))
                else:
                    header = fits.getheader(pattern.format(tile=tile), extname=band)
            except (OSError, KeyError):
                continue
            found = next((float(header[key]) for key in keywords if key in header), None)
            if found is not None:
                break
        if found is None:
            return None
        values.append(found)
    return values


def injection_recipe(config: AdaptConfig, survey: Survey) -> injection.InjectionRecipe:
    """The recipe, with zero points and PSF from the options or the tiles' headers."""
    tiles = sorted(set(survey.catalogue.get("tile", pd.Series(dtype=str)).astype(str)))
    zeropoints = config.zeropoints or _header_values(survey.settings, survey.bands, tiles, ZEROPOINT_KEYWORDS)
    if zeropoints is None:
        raise AdaptError("no photometric zero points: give --zeropoints (one per band, AB magnitude of one count), "
                         f"or put one of {', '.join(ZEROPOINT_KEYWORDS)} in the tiles' headers")
    psf = config.psf_fwhm_arcsec or _header_values(survey.settings, survey.bands, tiles, PSF_KEYWORDS)
    if psf is None:
        raise AdaptError("no PSF width: give --psf-fwhm (arcsec, one per band, measured on the survey's stars), "
                         f"or put one of {', '.join(PSF_KEYWORDS)} in the tiles' headers")
    for name, values in (("--zeropoints", zeropoints), ("--psf-fwhm", psf)):
        if len(values) != len(survey.bands):
            raise AdaptError(f"{name} needs {len(survey.bands)} values (bands {','.join(survey.bands)}), "
                             f"got {len(values)}")
    if not all(0 < value < 10 for value in psf):
        raise AdaptError(f"--psf-fwhm {psf}: each FWHM must lie between 0 and 10 arcsec")
    return injection.InjectionRecipe(
        psf_fwhm_arcsec=tuple(float(v) for v in psf), zeropoints=tuple(float(v) for v in zeropoints),
        theta_e=config.theta_e, theta_e_range_arcsec=tuple(config.theta_e_range_arcsec),
        arc_snr_range=tuple(config.arc_snr_range), psf_moffat_beta=config.psf_moffat_beta, gain=config.gain)


def _write_set(directory: Path, stamps: np.ndarray, truth: pd.DataFrame, bands: list[str], attrs: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    xr.Dataset({"stamps": (("object", "band", "y", "x"), stamps)},
               coords={"band": np.array(bands, dtype=object)}, attrs=attrs).to_zarr(
        directory / "stamps.zarr", mode="w", consolidated=False)
    truth.assign(stamp_index=np.arange(len(truth))).to_parquet(directory / "truth.parquet", index=False)


def build_sets(config: AdaptConfig, survey: Survey, recipe: injection.InjectionRecipe, model_scale: float
               ) -> dict[str, Any]:
    """Measure, choose hosts, inject, split; write ``OUT/data/{train,test}``. Returns a summary."""
    rng = np.random.default_rng([config.seed, 1])
    bands = survey.bands
    reference = bands.index("r") if "r" in bands else len(bands) // 2
    measured = host_tools.measure(survey.stamps, model_scale, list(recipe.zeropoints), reference, blue=0)
    catalogue = survey.catalogue.reset_index(drop=True)
    flags = catalogue["flags"].to_numpy() if "flags" in catalogue else np.zeros(len(catalogue), int)
    selection = host_tools.HostSelection(config.host_mag_max, config.colour_min, config.concentration_min,
                                         config.asymmetry_max, config.axis_ratio_min)
    # lenses are ~1e-4 of galaxies, but the parent model's top-scored objects are the likeliest
    # real ones: keep them out of the training negatives and the hosts
    top = np.zeros(len(catalogue), dtype=bool)
    if config.exclude_top_fraction > 0 and "rank" in catalogue:
        top = catalogue["rank"].to_numpy() <= max(1, math.ceil(config.exclude_top_fraction * len(catalogue)))
    unflagged = (flags & ~selection.allowed_flags) == 0
    clean = unflagged & ~top
    is_host = host_tools.select_hosts(measured, flags, selection) & ~top
    n_hosts = int(is_host.sum())
    if n_hosts < 20:
        raise AdaptError(f"only {n_hosts} objects look like lens galaxies (aperture mag < {config.host_mag_max}, "
                         f"colour > {config.colour_min}, concentration > {config.concentration_min}, "
                         f"asymmetry < {config.asymmetry_max}, axis ratio > {config.axis_ratio_min}); loosen "
                         "--host-mag-max, --colour-min, "
                         "--concentration-min, --asymmetry-max or --axis-ratio-min")
    if config.fold is None:
        in_test = rng.random(len(catalogue)) < config.test_fraction
    else:  # one fold of a cross-fit: the objects of this fold are held out
        in_test = fold_of_objects(len(catalogue), config.folds, config.seed) == config.fold
    summary: dict[str, Any] = {"objects": len(catalogue), "hosts": n_hosts, "excluded_top": int(top.sum()),
                               "negatives": int(clean.sum())}
    sky = np.median(measured[[f"sky_sigma_{b}" for b in range(len(bands))]].to_numpy(), axis=0)
    profile = injection.survey_profile(bands, model_scale, survey.stamps.shape[-1], recipe, sky,
                                       config.band_wavelengths_nm)
    for name, members in (("train", ~in_test), ("test", in_test)):
        host_index = np.flatnonzero(is_host & members)
        host_index = np.repeat(host_index, config.injections_per_host)
        held_out = config.held_out_fraction
        share = int(round(config.max_injections * (held_out if name == "test" else 1 - held_out)))
        if len(host_index) > share:
            host_index = np.sort(rng.choice(host_index, share, replace=False))
        if not len(host_index):
            where = f"the {name} split" + (f" of fold {config.fold + 1} of {config.folds}" if config.fold is not None
                                            else "")
            raise AdaptError(f"no host in {where} ({n_hosts} hosts in all): give fewer --folds, a larger "
                             "--test-fraction, or loosen the host cuts")
        theta_e = injection.draw_theta_e(rng, recipe, measured.iloc[host_index])
        drawn = recipe
        if name == "train" and config.train_arc_snr_min > recipe.arc_snr_range[0]:
            # arcs too faint to see are label noise for training; the held-out injections keep
            # the whole range, so that the selection function covers it
            drawn = dataclasses.replace(recipe, arc_snr_range=(min(config.train_arc_snr_min, recipe.arc_snr_range[1]),
                                                               recipe.arc_snr_range[1]))
        target = injection.draw_target_snr(rng, drawn, len(host_index))
        _log(config, f"injecting {len(host_index)} arcs into {name} hosts ...")
        injected, _, truth = injection.inject(rng, survey.stamps[host_index], measured.iloc[host_index].reset_index(
            drop=True), profile, recipe, theta_e, target)
        # the held-out survey stamps set the threshold, so they keep the parent's top-ranked
        # objects: at a survey's lens fraction those are look-alikes, and leaving the hardest
        # non-lenses out would put the threshold too low for the target false-positive rate
        negatives = np.flatnonzero((clean if name == "train" else unflagged) & members)
        positives_truth = pd.concat([truth, _host_columns(catalogue, measured, host_index)], axis=1)
        positives_truth["is_lens"], positives_truth["kind"] = True, "injection"
        negatives_truth = _host_columns(catalogue, measured, negatives)
        negatives_truth["is_lens"], negatives_truth["kind"] = False, "survey"
        stamps = np.concatenate([injected, survey.stamps[negatives]])
        truth_all = pd.concat([positives_truth, negatives_truth], ignore_index=True)
        _write_set(config.out_dir / "data" / name, stamps, truth_all, bands,
                   {"pixel_scale_arcsec": model_scale, "adaptation_split": name})
        summary[f"{name}_injections"], summary[f"{name}_negatives"] = len(host_index), len(negatives)
    summary["profile"] = {"zeropoints": list(recipe.zeropoints), "sky_sigma_median": [float(s) for s in sky],
                          "band_wavelengths_nm": list(profile.band_wavelength_nm)}
    return summary


def rehearsal_sources(config: AdaptConfig, bands: list[str], stamp_size_px: int,
                      pixel_scale_arcsec: float | None = None) -> list[tuple[Path, int]]:
    """The ``rehearse`` stamp sets with their sizes, checked against the survey's bands, stamp
    size and (where the set records one) pixel scale."""
    if config.rehearse and config.rehearse_max < 1:
        raise AdaptError(f"--rehearse-max {config.rehearse_max}: take at least one simulated stamp")
    sources = []
    for source in map(Path, config.rehearse or []):
        if not (source / "stamps.zarr").exists() or not (source / "truth.parquet").is_file():
            raise AdaptError(f"--rehearse {source}: not a stamp set (stamps.zarr and truth.parquet); make one with "
                             "python -m lensnet.simulate, or give the parent's training data")
        dataset = xr.open_zarr(source / "stamps.zarr", consolidated=False)
        source_bands = [str(band) for band in dataset["band"].to_numpy()] if "band" in dataset.coords else []
        n, size = int(dataset["stamps"].shape[0]), int(dataset["stamps"].shape[-1])
        if source_bands != list(bands) or size != stamp_size_px:
            raise AdaptError(f"--rehearse {source}: holds bands {','.join(source_bands)} in {size}-px stamps; the "
                             f"survey and the model take {','.join(bands)} in {stamp_size_px}-px stamps")
        scale = dataset.attrs.get("pixel_scale_arcsec")
        if pixel_scale_arcsec and scale and abs(float(scale) / pixel_scale_arcsec - 1) > 0.01:
            raise AdaptError(f"--rehearse {source}: simulated at {float(scale):g}\"/px; the model takes "
                             f"{pixel_scale_arcsec:g}\"/px")
        sources.append((source, n))
    return sources


def build_rehearsal(config: AdaptConfig, sources: list[tuple[Path, int]], bands: list[str], directory: Path
                    ) -> dict[str, Any]:
    """A seeded random subset (``rehearse_max`` stamps, shared evenly) of the checked
    :func:`rehearsal_sources`, written to ``directory``; their lenses and contaminants keep the
    labels they came with."""
    rng = np.random.default_rng([config.seed, 2])
    shares = [config.rehearse_max // len(sources) + (index < config.rehearse_max % len(sources))
              for index in range(len(sources))]
    stamps, truths, summary = [], [], []
    for (source, size), share in zip(sources, shares, strict=True):
        truth = pd.read_parquet(source / "truth.parquet")
        if "stamp_index" in truth:
            truth = truth.sort_values("stamp_index").reset_index(drop=True)
        chosen = np.sort(rng.choice(size, min(share, size), replace=False))
        dataset = xr.open_zarr(source / "stamps.zarr", consolidated=False)
        stamps.append(dataset["stamps"].isel(object=chosen).to_numpy().astype(np.float32, copy=False))
        part = truth.iloc[chosen].reset_index(drop=True)
        truths.append(pd.DataFrame({"is_lens": part["is_lens"].to_numpy().astype(bool),
                                    "kind": part["kind"].astype(str).to_numpy() if "kind" in part else "simulated",
                                    "rehearsal_source": str(source), "source_index": chosen}))
        summary.append({"path": str(source), "stamps": len(chosen), "lenses": int(truths[-1]["is_lens"].sum())})
    _log(config, f"rehearsing on {sum(len(t) for t in truths)} simulated stamps from {len(sources)} set(s)")
    _write_set(directory, np.concatenate(stamps), pd.concat(truths, ignore_index=True), bands,
               {"adaptation_split": "rehearsal"})
    return {"sets": summary}


def _host_columns(catalogue: pd.DataFrame, measured: pd.DataFrame, index: np.ndarray) -> pd.DataFrame:
    columns = {"object_id": catalogue["object_id"].to_numpy()[index],
               "cutout_index": catalogue["cutout_index"].to_numpy()[index],
               "parent_score": catalogue["score"].to_numpy()[index] if "score" in catalogue else np.nan}
    for name in ("host_mag", "host_mag_total", "host_size_arcsec", "host_colour", "concentration", "asymmetry",
                 "axis_ratio"):
        columns[name] = measured[name].to_numpy()[index]
    return pd.DataFrame(columns)


def _recipe_record(config: AdaptConfig, survey: Survey, recipe: injection.InjectionRecipe) -> dict[str, Any]:
    options = {key: value for key, value in dataclasses.asdict(config).items()
               if key not in ("out", "force", "progress", "threads", "extra")
               and not (key == "fold" and value is None) and not (key == "folds" and value == 1)}
    return {"options": options, "injection": dataclasses.asdict(recipe), "parent_model": survey.parent,
            "parent_weights_sha256": sha256_of(resolve_checkpoint(survey.parent) / WEIGHTS_FILE),
            "run": str(Path(config.run).resolve())}


def adapt(config: AdaptConfig, survey: Survey, command: str = "", rehearsal_dir: Path | None = None
          ) -> dict[str, Any]:
    """Run an adaptation end to end on a run's stamps (``pipeline.adapt.read_run`` reads them from a
    run directory); returns the selection function report.

    ``rehearsal_dir``: a rehearsal set already built (the folds of a cross-fit share one);
    default ``OUT/data/rehearsal``, built here."""
    from lensnet.train import TrainConfig, train

    started = time.perf_counter()
    recipe = injection_recipe(config, survey)
    model_config = load_config(survey.parent)
    # bad rehearsal sets fail here, before any work
    rehearsal = [] if rehearsal_dir is not None else rehearsal_sources(  # a given set was checked by its maker
        config, survey.bands, model_config.stamp_size_px, model_config.pixel_scale_arcsec)
    if not config.rehearse:
        _log(config, "no --rehearse: the fine-tune sees only injections and survey stamps; give it the parent's "
                     "training data (or a python -m lensnet.simulate set) to keep what the parent knew")
    out = config.out_dir
    if config.fold is None and (out / CROSSFIT_FILE).is_file():
        raise AdaptError(f"{out} holds a cross-fit (--folds); give the single adaptation another --out")
    recorded = out / RECIPE_FILE
    record = _recipe_record(config, survey, recipe)
    state = open_state(recorded, record, config.force, "an adaptation")
    if "sets" not in state:
        _log(config, f"adapting {survey.parent} to {config.run}: {len(survey.catalogue)} survey stamps")
        state["sets"] = build_sets(config, survey, recipe, model_config.pixel_scale_arcsec)
        recorded.write_text(json.dumps(state, indent=2) + "\n")
    else:
        _log(config, f"reusing the injected sets in {out / 'data'}")
    if config.rehearse and rehearsal_dir is None and "rehearsal" not in state:
        state["rehearsal"] = build_rehearsal(config, rehearsal, survey.bands, out / "data" / "rehearsal")
        recorded.write_text(json.dumps(state, indent=2) + "\n")
    data: str | list[str] = str(out / "data" / "train")
    if config.rehearse:
        data = [data, str(rehearsal_dir or out / "data" / "rehearsal")]
    train_config = TrainConfig(
        data=data, freeze_backbone=config.freeze_backbone, out=str(out), init_from=survey.parent, epochs=config.epochs,
        batch_size=config.batch_size, learning_rate=config.learning_rate, patience=config.patience,
        validation_fraction=0.2, target_fpr=config.target_fpr, seed=config.seed, threads=config.threads,
        resume=True, name=f"{model_config.name or 'model'}-adapted"
                          + (f"-fold{config.fold + 1}" if config.fold is not None else ""))
    train(train_config, command)
    report = measure_selection(config, survey.parent, out)
    adapted = load_config(out)
    adapted.threshold = report["threshold"]["value"]
    adapted.training["adaptation"] = {**record, "sets": state["sets"], "rehearsal": state.get("rehearsal"),
                                      "selection_function": f"{SELECTION_FILE}.json"}
    adapted.metrics = {"survey_injections": {key: report["adapted"][key] for key in ("auroc", "completeness")}}
    (out / CONFIG_FILE).write_text(adapted.to_json() + "\n")
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_report(out, report)
    return report


def open_state(recorded: Path, record: dict[str, Any], force: bool, what: str) -> dict[str, Any]:
    """The state recorded in ``recorded`` (a JSON file in the output directory) for this recipe,
    or a new one; another recipe there is refused, or with ``force`` its directory discarded."""
    out = recorded.parent
    if recorded.is_file() and json.loads(recorded.read_text())["recipe"] != json.loads(json.dumps(record)):
        if not force:
            raise AdaptError(f"{out} holds {what} with another recipe; use another --out, or --force to discard it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return json.loads(recorded.read_text()) if recorded.is_file() else {"recipe": record}


def _scores(model: str | Path, stamps: np.ndarray) -> np.ndarray:
    from lensnet.evaluate import score_stamps

    import torch

    return score_stamps(load_model(model), stamps, torch.device("cpu"))


def threshold_with_interval(negative_logits: np.ndarray, fpr: float, n_bootstrap: int = 1000, seed: int = 0
                            ) -> dict[str, Any]:
    """The lowest logit threshold with FPR ≤ ``fpr`` on these negatives, with a bootstrap 95% interval."""
    negatives = np.asarray(negative_logits, dtype=np.float64)
    value = metrics.threshold_at_fpr(np.zeros(negatives.size), negatives, fpr)
    rng = np.random.default_rng(seed)
    draws = [metrics.threshold_at_fpr(np.zeros(negatives.size), rng.choice(negatives, negatives.size), fpr)
             for _ in range(n_bootstrap)]
    low, high = np.quantile(draws, [0.025, 0.975])
    sigmoid = lambda v: float(1.0 / (1.0 + math.exp(-float(np.clip(v, -700, 700)))))  # noqa: E731
    return {"value": sigmoid(value), "logit": float(value), "interval_95": [sigmoid(low), sigmoid(high)],
            "target_fpr": fpr, "n_negatives": int(negatives.size)}


def selection_table(truth: pd.DataFrame, logits: np.ndarray, logit_threshold: float) -> dict[str, Any]:
    """Completeness of the injections in bins of θE, arc S/N, source and host magnitude and host
    size (Wilson 68%); a column the injections lack (sets written by an earlier version) is left out."""
    is_lens = truth["is_lens"].to_numpy().astype(bool)
    table = {}
    for column, edges in BINS.items():
        if column not in truth:
            continue
        values = truth[column].to_numpy(np.float64)
        finite = values[is_lens & np.isfinite(values)]
        bins = np.asarray(edges, dtype=np.float64).copy()
        if finite.size:
            bins[0], bins[-1] = min(bins[0], finite.min()), max(bins[-1], finite.max() + 1e-9)
        rows = metrics.completeness_by_bin(is_lens, logits, logit_threshold, values, bins, confidence=0.6827,
                                           interval="wilson")
        table[column] = rows.to_dict(orient="records")
    return table


def measure_selection(config: AdaptConfig, parent: str, out: Path) -> dict[str, Any]:
    """Scores of the held-out injections and survey stamps under the parent and adapted models."""
    from lensnet.data import load_stamp_set

    test = load_stamp_set(out / "data" / "test")
    truth = test.truth
    models = {"parent": parent, "adapted": str(out)}
    for role, model in models.items():
        truth[f"logit_{role}"] = _scores(model, test.stamps).astype(np.float64)
    truth.to_parquet(out / f"{SELECTION_FILE}_scores.parquet", index=False)
    return selection_report(truth, models, config.target_fpr, config.seed)


def selection_report(truth: pd.DataFrame, models: dict[str, str], target_fpr: float, seed: int = 0
                     ) -> dict[str, Any]:
    """The selection function of held-out injections and survey stamps (``truth`` with
    ``is_lens``, the binned columns and ``logit_<role>`` for each role in ``models``)."""
    from lensnet.crosssim import bright_lenses, completeness_at_fpr

    y = truth["is_lens"].to_numpy().astype(bool)
    report: dict[str, Any] = {"n_injections": int(y.sum()), "n_negatives": int((~y).sum()),
                              "target_fpr": target_fpr, "bins": {k: list(v) for k, v in BINS.items()}}
    bright = bright_lenses(truth)
    for role, model in models.items():
        logits = truth[f"logit_{role}"].to_numpy(np.float64)
        threshold = threshold_with_interval(logits[~y], target_fpr, seed=seed)
        report[role] = {
            "model": model,
            "auroc": {"value": metrics.auroc(y, logits), "interval_95": list(metrics.bootstrap_interval(
                metrics.auroc, y, logits, n_resamples=500, seed=seed))},
            "threshold": threshold,
            "completeness": {"value": float(np.mean(logits[y] >= threshold["logit"]))},
            "completeness_bright_at_fpr": completeness_at_fpr(y, logits, bright, target_fpr, 500, seed),
            "by_bin": selection_table(truth, logits, threshold["logit"]),
        }
    report["threshold"] = report["adapted"]["threshold"]
    return report


def write_report(out: Path, report: dict[str, Any]) -> None:
    from lensnet.evaluate import json_safe

    safe = json_safe(report)
    (out / f"{SELECTION_FILE}.json").write_text(json.dumps(safe, indent=2, allow_nan=False) + "\n")
    (out / f"{SELECTION_FILE}.md").write_text(render_report(safe) + "\n")
    plot_selection(safe, out / f"{SELECTION_FILE}.png")


def render_report(report: dict[str, Any]) -> str:
    """The selection function as Markdown tables."""
    threshold = report["adapted"]["threshold"]
    lines = ["# Survey selection function (injection-recovery)", "",
             f"{report['n_injections']:,} held-out injected lenses and {report['n_negatives']:,} held-out survey "
             f"stamps. Threshold of the adapted model at FPR {report['target_fpr']:.2%} on the survey's own stamps: "
             f"p ≥ {threshold['value']:.4f} (95% interval {threshold['interval_95'][0]:.4f}–"
             f"{threshold['interval_95'][1]:.4f}).", "",
             "| model | AUROC (injections vs survey) [95%] | completeness at its FPR threshold |", "|---|---|---|"]
    for role in ("parent", "adapted"):
        entry = report[role]
        low, high = entry["auroc"]["interval_95"]
        lines.append(f"| {role} (`{entry['model']}`) | {entry['auroc']['value']:.4f} [{low:.4f}, {high:.4f}] | "
                     f"{entry['completeness']['value']:.4f} |")
    for column in report["adapted"]["by_bin"]:
        lines += ["", f"## Completeness against {column}", "",
                  "| bin | injections | parent | adapted [68%] |", "|---|---:|---:|---|"]
        for parent_row, row in zip(report["parent"]["by_bin"][column], report["adapted"]["by_bin"][column],
                                   strict=True):
            if not row["n_lenses"]:
                continue
            lines.append(f"| {row['bin_lo']:.3g}–{row['bin_hi']:.3g} | {row['n_lenses']} | "
                         f"{parent_row['completeness']:.3f} | {row['completeness']:.3f} "
                         f"[{row['ci_lower']:.3f}, {row['ci_upper']:.3f}] |")
    return "\n".join(lines)


def plot_selection(report: dict[str, Any], path: Path) -> None:
    """Completeness against each binned quantity, parent and adapted, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = list(report["adapted"]["by_bin"])
    figure, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 3.4))
    for axis, column in zip(axes, columns, strict=True):
        for role, colour in (("parent", "0.5"), ("adapted", "C0")):
            rows = [r for r in report[role]["by_bin"][column] if r["n_lenses"]]
            centre = [0.5 * (r["bin_lo"] + r["bin_hi"]) for r in rows]
            value = [r["completeness"] for r in rows]
            error = [[max(r["completeness"] - r["ci_lower"], 0.0) for r in rows],
                     [max(r["ci_upper"] - r["completeness"], 0.0) for r in rows]]
            axis.errorbar(centre, value, yerr=error, marker="o", color=colour, label=role, capsize=2)
        axis.set_xlabel(column)
        axis.set_ylim(-0.02, 1.02)
        if column == "arc_snr":
            axis.set_xscale("log")
    axes[0].set_ylabel("completeness")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
