"""Score a finished run's cutout store again with another model, without reading the tiles.

``run_survey.py --rescore RUN --model MODEL [--out NEW]`` reads ``RUN/run.yaml`` (the run's
settings), ``RUN/cutouts.zarr`` (the stamps), the cut stage's part files (each object's
flags and cut status) and ``RUN/failures.parquet``, and the run's input catalogue (for its
extra columns), scores every usable stamp with ``MODEL`` (a model, an adapted checkpoint
or an ensemble ``a,b``) and writes a complete set of products into ``NEW`` (default
``RUN/rescore-<model name>``): the same ``candidates.parquet``, ``failures.parquet`` and
``summary.json`` a fresh run with that model would write. Nothing in ``RUN`` is changed.
The score stage resumes like a run's; its fingerprint is the run's plus the model's.
"""

from __future__ import annotations

import json
import time
import types
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml
from distributed import Client

from catalogs.catalogue import CatalogueOptions
from catalogs.ensemble import Ensemble
from catalogs.layout import COORDINATES, STAMPS, RunLayout
from lensnet.checkpoint import WEIGHTS_FILE, load_model, sha256_of
from pipeline.catalog_input import read_catalog
from pipeline.cluster import make_client, placement
from pipeline.config import Settings, SettingsError, resolve
from pipeline.images import InputError
from pipeline.inference import ModelPlugin
from pipeline.merge import merge
from pipeline.plan import Plan
from pipeline.resume import RunDirectory, fingerprint, locked_output
from pipeline.phases import Phases, compute
from pipeline.run import RunResult, _provenance, load_ensemble, score_tasks

#: A file the adaptation writes beside an adapted checkpoint; recorded in the provenance.
SELECTION_FUNCTION_FILE = "selection_function.json"
#: Settings a rescore takes from its own command line rather than from the run.
OWN_SETTINGS = ("model", "out", "workers", "threads_per_worker", "scheduler", "cluster", "device", "batch_size",
                "tta", "target_prevalence", "known_lenses", "force", "progress", "dashboard_address", "rescore")


@dataclass
class PreparedRescore:
    settings: Settings
    run: RunDirectory
    run_settings: Settings
    ensemble: Ensemble
    catalog: pd.DataFrame
    plan: Plan
    unreadable_tiles: list[str]


def default_out(run: Path, model: str) -> Path:
    """``RUN/rescore-<model name>`` (names joined by ``+`` for an ensemble): beside the run's
    products, never over them."""
    label = "+".join(Path(part.strip()).name for part in str(model).split(",") if part.strip())
    return Path(run) / f"rescore-{label}"


def rescore_settings(flags: dict[str, Any], config_file: str | None = None) -> Settings:
    """The run's settings with this command line's model, compute and output settings on top."""
    run = Path(flags["rescore"])
    recorded = RunLayout(run).settings
    if not recorded.is_file():
        raise SettingsError(f"--rescore {run}: no {recorded.name} there; give the --out of a finished run_survey.py "
                            "run")
    values = yaml.safe_load(recorded.read_text()) or {}
    if values.get("rescore"):  # a rescored run holds no store: score the one it scored
        flags = {**flags, "rescore": str(values["rescore"])}  # --out still defaults to beside this run
    # the run's inputs and compute layout carry over; what this command says wins; the
    # run's own output, force and demo settings do not carry over
    for key in ("out", "force", "demo", "rescore", "progress", "dashboard_address"):
        values.pop(key, None)
    values.update({key: flags[key] for key in OWN_SETTINGS if flags.get(key) is not None})
    if config_file is not None:
        raise SettingsError("--rescore takes the run's own settings; give changes as flags, not --config")
    if values.get("out") is None:
        values["out"] = str(default_out(run, str(values.get("model", "default"))))
    return resolve(None, **{key: value for key, value in values.items() if key in Settings.keys()})


def prepare_rescore(settings: Settings, log: Callable[[str], None] = print) -> PreparedRescore:
    """Check the run and the model; rebuild the run's plan from its store, parts and catalogue."""
    run = RunDirectory(settings.rescore)
    for needed in (run.store, run.candidates, run.failures):
        if not needed.exists():
            raise InputError(f"--rescore {run.root}: {needed.name} is missing; the run did not finish. Run "
                             "run_survey.py on it again to complete it first")
    run_settings = Settings(**{key: value for key, value in (yaml.safe_load(run.settings.read_text())
                                                              or {}).items() if key in Settings.keys()})
    if Path(settings.out).resolve() == run.root.resolve():
        raise SettingsError(f"--out {settings.out} is the run being rescored; give another directory (default: "
                            f"{default_out(run.root, settings.model)})")
    ensemble = load_ensemble(settings.model)
    for _, path, _ in ensemble:
        load_model(path, device="cpu")  # a broken checkpoint fails here, before any worker starts
    dataset = run.open_store()
    attrs = dataset.attrs
    _, checkpoint, config = ensemble[0]
    stored = (list(attrs.get("bands", [])), int(attrs.get("stamp_size_px", dataset[STAMPS].shape[-1])),
              float(attrs.get("pixel_scale_arcsec", config.pixel_scale_arcsec)))
    wanted = (list(config.bands), config.stamp_size_px, config.pixel_scale_arcsec)
    if stored[0] != wanted[0] or stored[1] != wanted[1] or abs(stored[2] / wanted[2] - 1) > 0.01:
        raise SettingsError(f"--model {settings.model} takes bands {','.join(wanted[0])} in {wanted[1]}-px stamps at "
                            f"{wanted[2]}\"/px; {run.store} holds {','.join(stored[0])} in {stored[1]}-px stamps at "
                            f"{stored[2]}\"/px: rescore it with a model made for this survey")
    catalog = read_catalog(run_settings.catalog, log)
    row_of = pd.Series(np.arange(len(catalog)), index=catalog["id"].to_numpy())
    coords = {name: dataset[name].to_numpy() for name in COORDINATES}
    objects = pd.DataFrame(coords)
    objects.index.name = "cutout_index"
    objects["row"] = row_of.reindex(objects["object_id"].to_numpy()).to_numpy()
    if objects["row"].isna().any():
        raise InputError(f"--rescore {run.root}: the catalogue {run_settings.catalog} no longer holds every object "
                         "of the store (it changed since the run); rescore needs the run's own catalogue")
    objects["row"] = objects["row"].astype(np.int64)
    shard_size = int(run_settings.shard_size)
    shards = [(start, min(start + shard_size, len(objects))) for start in range(0, len(objects), shard_size)]
    missing = [shard for shard in range(len(shards)) if not run.done("cut", shard)]
    if missing:
        raise InputError(f"--rescore {run.root}: the cut stage of {len(missing)} shard(s) did not finish (first: "
                         f"{run.part('cut', missing[0])}); run run_survey.py on it again to complete it")
    failures = pd.read_parquet(run.failures)
    stored_ids = set(objects["object_id"].tolist())
    before_cut = failures[~failures["object_id"].isin(stored_ids)].copy()
    before_cut["row"] = row_of.reindex(before_cut["object_id"].to_numpy()).to_numpy().astype(np.int64)
    provenance = _read_provenance(run.candidates)
    unreadable = list((provenance.get("inputs") or {}).get("unreadable_tiles", []))
    tiles = {name: types.SimpleNamespace(error="unreadable in the original run") for name in unreadable}
    plan = Plan(objects=objects, failures=before_cut[["row", "object_id", "ra", "dec", "reason", "detail"]],
                shards=shards, tiles=tiles)
    log(f"rescoring {len(objects)} stored stamps of {run.root} in {len(shards)} shards with {settings.model}")
    return PreparedRescore(settings, run, run_settings, ensemble, catalog, plan, unreadable)


def _read_provenance(path: Path) -> dict[str, Any]:
    from catalogs import read_provenance

    try:
        return read_provenance(path) or {}
    except (OSError, ValueError, KeyError):
        return {}


def rescore(settings: Settings, log: Callable[[str], None] = print) -> RunResult:
    """Prepare, start the cluster ``settings`` describe, score and merge."""
    prepared = prepare_rescore(settings, log)
    with locked_output(settings.out, log), make_client(settings) as client:
        return execute_rescore(prepared, client, log)


def execute_rescore(prepared: PreparedRescore, client: Client, log: Callable[[str], None] = print) -> RunResult:
    """Score the stored stamps on ``client`` and write the products into ``settings.out``."""
    started = time.perf_counter()
    settings, run, plan = prepared.settings, prepared.run, prepared.plan
    out = RunDirectory(settings.out)
    state = json.loads(run.state.read_text()) if run.state.is_file() else {}
    inputs = {"run": str(run.root.resolve()), "run_fingerprint": state.get("fingerprint"),
              "model_weights_sha256": [sha256_of(path / WEIGHTS_FILE) for _, path, _ in prepared.ensemble],
              "model_config": [config.to_json() for _, _, config in prepared.ensemble], "tta": settings.tta}
    phases = Phases()
    resuming = out.prepare(fingerprint(inputs), inputs, settings.force)
    settings.save(out.settings)
    with phases("register_plugin"):
        client.register_plugin(ModelPlugin([str(path.resolve()) for _, path, _ in prepared.ensemble],
                                           settings.device, settings.resolved_threads(), tta=settings.tta))
    pending, done = [], 0
    for shard, (start, stop) in enumerate(plan.shards):
        part = out.part("score", shard)
        if part.is_file():
            done += 1
            continue
        part.parent.mkdir(parents=True, exist_ok=True)
        pending.append((shard, start, stop, str(run.part("cut", shard))))
    # the same placement as a run's score stage (GPU workers when the cluster has them)
    tasks = score_tasks(str(run.store), pending, lambda shard: out.part("score", shard), placement(client),
                        settings.batch_size)
    if resuming and done:
        log(f"resuming: {done} of {len(plan.shards)} shards were already scored")
    log(f"Dask dashboard: {client.dashboard_link}")
    report = out.report
    compute(client, tasks, report, phases, settings.progress, log)
    _, checkpoint, model_config = prepared.ensemble[0]
    run_settings = replace(prepared.run_settings, model=settings.model, tta=settings.tta)
    tiles = [types.SimpleNamespace(name=name, error=None) for name in sorted(set(plan.objects["tile"].astype(str)))]
    tiles += [types.SimpleNamespace(name=name, error="unreadable") for name in prepared.unreadable_tiles]
    provenance = _provenance(run_settings, checkpoint, model_config, list(model_config.bands), tiles)
    provenance["rescored_from"] = {"run": str(run.root.resolve()), "run_fingerprint": state.get("fingerprint"),
                                   "store": str(run.store.resolve())}
    selection = checkpoint / SELECTION_FUNCTION_FILE
    crossfits = prepared.ensemble.crossfits
    if crossfits and crossfits[0].directory is not None and prepared.ensemble.first.name in crossfits[0].members:
        selection = crossfits[0].directory / SELECTION_FUNCTION_FILE  # pooled over the folds, in the score's scale
    if selection.is_file():
        provenance["selection_function"] = {"file": str(selection.resolve()), "sha256": sha256_of(selection)}
    if prepared.ensemble.averaged:
        provenance["models"] = prepared.ensemble.provenance()
    known_lenses = None
    if settings.known_lenses:
        from catalogs.crossmatch import load_known_lenses

        known_lenses = load_known_lenses(None if settings.known_lenses == "lenscat" else settings.known_lenses)
    options = CatalogueOptions.for_ensemble(prepared.ensemble, target_prevalence=settings.target_prevalence,
                                            hats_min_rows=prepared.run_settings.hats_min_rows,
                                            known_lenses=known_lenses)
    with phases("merge"):
        summary = merge(plan, prepared.catalog, [run.part("cut", shard) for shard in range(len(plan.shards))],
                        [out.part("score", shard) for shard in range(len(plan.shards))], out.root, provenance,
                        options)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    summary["shards"] = len(plan.shards)
    summary["shards_resumed"] = done
    summary["rescored_from"] = str(run.root)
    summary["phases_s"] = phases.rounded()
    out.summary.write_text(json.dumps(summary, indent=2) + "\n")
    return RunResult(out.root, out.candidates, out.failures, run.store, report, summary)
