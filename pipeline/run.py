"""Running a survey: ``run(settings)`` makes its own client, ``run_with_client`` uses yours.

The graph has two tasks per shard — ``cut-NNNNNN`` (tiles -> Zarr) and ``score-NNNNNN``
(Zarr -> logits) — whose part files are the resume markers; a final merge on the client
writes the ranked catalogue.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import dask
import pandas as pd
from distributed import Client

from catalogs.catalogue import CatalogueOptions
from catalogs.crossmatch import load_known_lenses
from catalogs.ensemble import Ensemble, EnsembleError
from catalogs.flags import documentation as flags_documentation
from lensnet.checkpoint import CONFIG_FILE, WEIGHTS_FILE, ModelConfig, load_model, sha256_of
from pipeline import store
from pipeline.catalog_input import read_catalog
from pipeline.cluster import Placement, make_client, placement
from pipeline.config import Settings, SettingsError
from pipeline.images import InputError, split_reference
from pipeline.inference import ModelPlugin
from pipeline.merge import merge
from pipeline.phases import Phases, compute
from pipeline.plan import Plan, make_plan
from pipeline.resume import RunDirectory, file_identity, fingerprint, locked_output
from pipeline.tasks import cut_shard, existing, score_shard, score_shards
from pipeline.tiles import Tile, attach_maps, discover_tiles, read_tile_headers
from pipeline.version import code_version

# Tiles and model may differ in pixel scale by this fraction before the run refuses.
PIXEL_SCALE_TOLERANCE = 0.05


@dataclass
class RunResult:
    """Where a finished run put its products, and its summary counts."""

    out: Path
    candidates: Path
    failures: Path
    store: Path
    report: Path
    summary: dict[str, Any]


@dataclass
class PreparedRun:
    """Everything decided before any worker starts: inputs read and checked, the plan made."""

    settings: Settings
    checkpoint: Path
    model_config: ModelConfig
    ensemble: Ensemble
    bands: list[str]
    catalog: pd.DataFrame
    tiles: list[Tile]
    plan: Plan
    known_lenses: pd.DataFrame | None = None


def run(settings: Settings, log: Callable[[str], None] = print) -> RunResult:
    """Check the inputs, start the cluster that ``settings`` describes, run, shut it down.

    Bad inputs fail before any cluster is started; the output directory is locked
    (``out/.lock``) for the run, so a second run on it is refused rather than mixed in.
    """
    prepared = prepare_run(settings, log)
    with locked_output(settings.out, log), make_client(settings) as client:
        return execute(prepared, client, log)


def run_with_client(settings: Settings, client: Client, log: Callable[[str], None] = print) -> RunResult:
    """Run the survey on an existing client; rerunning on the same ``out`` resumes."""
    prepared = prepare_run(settings, log)
    with locked_output(settings.out, log):
        return execute(prepared, client, log)


def prepare_run(settings: Settings, log: Callable[[str], None] = print) -> PreparedRun:
    """Read the model config, catalogue and tile headers; assign objects; cut the work into shards."""
    ensemble = load_ensemble(settings.model)
    for _, path, _ in ensemble:
        # Load each model once here, so that a truncated or mismatched checkpoint is a one-line
        # error before any worker starts or anything is written (workers would fail one by one).
        load_model(path, device="cpu")
    _, checkpoint, model_config = ensemble[0]
    bands = resolve_bands(settings.bands, list(model_config.bands), checkpoint, log)
    # Where the band names came from, for errors about files that lack a band.
    origin = ("" if settings.bands else
              f" (band names {','.join(bands)} from {checkpoint / CONFIG_FILE}; if the survey names its bands "
              "otherwise, give them with --bands in the model's order)")
    catalog = read_catalog(settings.catalog, log)
    try:
        tiles = discover_tiles(settings.images, bands)
    except InputError as error:
        raise InputError(f"{error}{origin}") from None
    attach_maps(tiles, settings.masks, "masks")
    attach_maps(tiles, settings.weights, "weights")
    tiles = read_tile_headers(tiles, model_config.pixel_scale_arcsec)
    if all(tile.error is not None for tile in tiles):
        more = f" (and {len(tiles) - 1} more tile(s) failed)" if len(tiles) > 1 else ""
        raise InputError(f"no tile could be read: {tiles[0].name}: {tiles[0].error}{more}{origin}")
    _check_pixel_scale(tiles, model_config.pixel_scale_arcsec)
    try:
        plan = make_plan(catalog, tiles, model_config.stamp_size_px, settings.shard_size, settings.where)
    except ValueError as error:
        raise SettingsError(str(error)) from None
    reasons = plan.failures["reason"].value_counts().sort_index()
    reasons_text = ", ".join(f"{reason} {count}" for reason, count in reasons.items()) or "none"
    if len(plan.objects) == 0:
        # Refused before any worker starts or anything is written: nothing would be scored.
        raise InputError(
            f"nothing to cut: none of the {len(catalog)} catalogue objects is both selected and on a tile "
            f"({reasons_text}); check --where, the catalogue's ra/dec (degrees) and --images")
    log(f"{len(catalog)} catalogue objects, {len(tiles)} tiles x {len(bands)} bands: "
        f"{len(plan.objects)} to cut in {len(plan.shards)} shards; not cut: {reasons_text}")
    known_lenses = None
    if settings.known_lenses:
        source = None if settings.known_lenses == "lenscat" else settings.known_lenses
        try:
            known_lenses = load_known_lenses(source)
        except (OSError, ImportError, ValueError) as error:
            raise SettingsError(f"--known-lenses {settings.known_lenses}: {error}") from None
    return PreparedRun(settings, checkpoint, model_config, ensemble, bands, catalog, tiles, plan, known_lenses)


def execute(prepared: PreparedRun, client: Client, log: Callable[[str], None] = print) -> RunResult:
    """Cut, store, score and merge the prepared run on ``client``."""
    started = time.perf_counter()
    settings, model_config, plan = prepared.settings, prepared.model_config, prepared.plan
    checkpoint, bands, tiles, catalog = prepared.checkpoint, prepared.bands, prepared.tiles, prepared.catalog
    size_px = model_config.stamp_size_px
    run_dir = RunDirectory(settings.out)
    inputs = {
        "catalog": file_identity(settings.catalog),
        "tiles": {tile.name: {band: file_identity(split_reference(reference)[0]) for band, reference in
                              {**tile.paths, **{f"mask:{b}": r for b, r in tile.masks.items()},
                               **{f"weight:{b}": r for b, r in tile.weights.items()}}.items()}
                  for tile in tiles},
        "bands": bands,
        "model_weights_sha256": [sha256_of(path / WEIGHTS_FILE) for _, path, _ in prepared.ensemble],
        "model_config": [config.to_json() for _, _, config in prepared.ensemble],
        "shard_size": settings.shard_size,
        "where": settings.where,
        "tta": settings.tta,
    }
    phases = Phases()
    resuming = run_dir.prepare(fingerprint(inputs), inputs, settings.force)
    settings.save(run_dir.settings)
    if not (resuming and (run_dir.store / "zarr.json").is_file()):
        with phases("create_store"):
            store.create_store(run_dir.store, plan.objects, bands, size_px, settings.shard_size,
                               attrs={"bands": bands, "stamp_size_px": size_px,
                                      "pixel_scale_arcsec": model_config.pixel_scale_arcsec,
                                      "code_version": code_version()},
                               compression=settings.stamp_compression)

    where = placement(client)
    if where.on_gpus:
        log(f"placement: score tasks on {where.gpu_workers} GPU worker(s), cut tasks "
            f"{'on CPU workers' if where.cut else 'on any worker'}")
    with phases("register_plugin"):
        client.register_plugin(ModelPlugin([str(path.resolve()) for _, path, _ in prepared.ensemble],
                                           settings.device, settings.resolved_threads(), tta=settings.tta))
    tasks, done = _build_graph(plan, run_dir, size_px, settings.batch_size, where)
    if done:
        log(f"resuming: {done} of {len(plan.shards)} shards were already scored")
    log(f"Dask dashboard: {client.dashboard_link}")
    report = run_dir.report
    compute(client, tasks, report, phases, settings.progress, log)

    provenance = _provenance(settings, checkpoint, model_config, bands, tiles)
    if prepared.ensemble.averaged:
        provenance["models"] = prepared.ensemble.provenance()
    options = CatalogueOptions.for_ensemble(prepared.ensemble, target_prevalence=settings.target_prevalence,
                                            hats_min_rows=settings.hats_min_rows,
                                            known_lenses=prepared.known_lenses)
    with phases("merge"):
        summary = merge(plan, catalog, [run_dir.part("cut", shard) for shard in range(len(plan.shards))],
                        [run_dir.part("score", shard) for shard in range(len(plan.shards))],
                        run_dir.root, provenance, options)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    summary["shards"] = len(plan.shards)
    summary["shards_resumed"] = done
    summary["phases_s"] = phases.rounded()
    run_dir.summary.write_text(json.dumps(summary, indent=2) + "\n")
    return RunResult(run_dir.root, run_dir.candidates, run_dir.failures, run_dir.store, report, summary)


def _build_graph(plan: Plan, run_dir: RunDirectory, size_px: int, batch_size: int | None,
                 where: Placement | None = None) -> tuple[list, int]:
    """Delayed cut and score tasks for the shards that are not done yet.

    ``where`` (from :func:`pipeline.cluster.placement`) annotates each stage with the
    workers it belongs on. With GPU workers, a score task covers a run of consecutive
    shards (``score-FIRST-LAST``, each shard still its own part file); without, there is
    one score task per shard (``score-NNNNNN``) and no annotation, as always.
    """
    where = where or Placement()
    tile_references = {name: {"images": tile.paths, "masks": tile.masks, "weights": tile.weights,
                              "reference_band": tile.reference_band, "resampled": tile.resampled_bands}
                       for name, tile in plan.tiles.items()}
    pending, done = [], 0  # (shard, start, stop, cut task) of shards to score
    for shard, (start, stop) in enumerate(plan.shards):
        cut_part, score_part = run_dir.part("cut", shard), run_dir.part("score", shard)
        if score_part.is_file():
            done += 1
            continue
        if cut_part.is_file():
            cut = dask.delayed(existing)(str(cut_part), dask_key_name=f"resumed-cut-{shard:06d}")
        else:
            shard_objects = plan.objects.iloc[start:stop][["tile", "x_px", "y_px", "crowded"]]
            needed = {name: tile_references[name] for name in shard_objects["tile"].unique()}
            with _annotated(where.cut):
                cut = dask.delayed(cut_shard, pure=False)(
                    str(run_dir.store), str(cut_part), start, shard_objects, needed, size_px,
                    dask_key_name=f"cut-{shard:06d}")
        pending.append((shard, start, stop, cut))
    return score_tasks(str(run_dir.store), pending, lambda shard: run_dir.part("score", shard), where,
                       batch_size), done


def score_tasks(store_path: str, pending: list[tuple[int, int, int, Any]], part_for: Callable[[int], Path],
                where: Placement | None = None, batch_size: int | None = None, prefetch: int | None = None) -> list:
    """Delayed score tasks for ``pending`` shards ``(shard, start, stop, cut part or its task)``.

    Without GPU workers (``where`` empty): one ``score_shard`` task per shard, as always.
    With them: ``score_shards`` tasks over runs of consecutive shards, annotated for the
    GPU workers. ``part_for(shard)`` is the shard's score part file. ``prefetch`` (GPU
    tasks only; default the scorer's) 0 stages every block serially, for comparisons.
    A rescore of a stored run can build its tasks here too, to get the same placement.
    """
    where = where or Placement()
    per_task = where.score_task_objects(sum(stop - start for _, start, stop, _ in pending))
    tasks = []
    for group in _score_groups(pending, per_task):
        with _annotated(where.score):
            if not where.on_gpus:
                shard, start, stop, cut = group[0]
                tasks.append(dask.delayed(score_shard, pure=False)(
                    store_path, cut, str(part_for(shard)), start, stop, batch_size,
                    dask_key_name=f"score-{shard:06d}"))
                continue
            first, last = group[0][0], group[-1][0]
            options = {} if prefetch is None else {"prefetch": prefetch}
            tasks.append(dask.delayed(score_shards, pure=False)(
                store_path, [cut for *_, cut in group], [str(part_for(shard)) for shard, *_ in group],
                [(start, stop) for _, start, stop, _ in group], batch_size, **options,
                dask_key_name=f"score-{first:06d}" if first == last else f"score-{first:06d}-{last:06d}"))
    return tasks


def _annotated(annotations: dict):
    """``dask.annotate(**annotations)``, or nothing at all when there are none (CPU-only graphs stay as they were)."""
    return dask.annotate(**annotations) if annotations else contextlib.nullcontext()


def _score_groups(pending: list[tuple], objects_per_task: int) -> list[list[tuple]]:
    """Consecutive pending shards in groups of about ``objects_per_task`` objects (0: one shard per group).

    A group never spans a gap left by shards that are already scored, and holds at least one shard.
    """
    groups: list[list[tuple]] = []
    for item in pending:
        shard, start, stop, _ = item
        if (objects_per_task <= 0 or not groups or groups[-1][-1][0] != shard - 1
                or sum(b - a for _, a, b, _ in groups[-1]) + (stop - start) > objects_per_task):
            groups.append([item])
        else:
            groups[-1].append(item)
    return groups


def resolve_bands(given: list[str] | None, model_bands: list[str], checkpoint: Path,
                  log: Callable[[str], None] = print) -> list[str]:
    """The survey's band names for the model's input channels, in the model's order.

    The model's config is the truth about channel order. Without ``--bands``, its band
    names are used. A ``--bands`` list of the model's own names in another order (e.g.
    ``i,r,g`` for a g,r,i model) is matched by name and put into the model's order. Other
    names map by position (a survey's own names, e.g. ``HSC-G,HSC-R,HSC-I``), but a model
    band name at another position than the model's is refused: that would swap channels.
    """
    source = f"{checkpoint / CONFIG_FILE}"
    if given is None:
        return list(model_bands)
    if len(given) != len(model_bands):
        raise SettingsError(
            f"--bands {','.join(given)} gives {len(given)} band(s) but the model takes {len(model_bands)} "
            f"({','.join(model_bands)}, in that order, from {source})")
    if given == model_bands:
        return list(given)
    if sorted(given) == sorted(model_bands):
        log(f"--bands {','.join(given)}: matched by name to the model's channels, which are "
            f"{','.join(model_bands)} in that order ({source})")
        return list(model_bands)
    for position, band in enumerate(given):
        if band in model_bands and model_bands.index(band) != position:
            raise SettingsError(
                f"--bands {','.join(given)} puts band {band} at position {position + 1}, but it is channel "
                f"{model_bands.index(band) + 1} of the model ({','.join(model_bands)}, from {source}); list the "
                "bands in the model's order (names the model does not use are matched by position)")
    log(f"--bands {','.join(given)}: the model's channels {','.join(model_bands)} read bands "
        f"{','.join(given)} in that order")
    return list(given)


def load_ensemble(models: str) -> Ensemble:
    """The models of a comma-separated list; they must share their inputs (a SettingsError says why not)."""
    try:
        return Ensemble.from_models(models)
    except EnsembleError as error:
        raise SettingsError(str(error)) from None


def _check_pixel_scale(tiles, model_scale_arcsec: float) -> None:
    for tile in tiles:
        if tile.error is None and abs(tile.pixel_scale_arcsec / model_scale_arcsec - 1) > PIXEL_SCALE_TOLERANCE:
            raise SettingsError(
                f"no band of tile {tile.name} is near the model's {model_scale_arcsec:.4g}\"/px (closest: band "
                f"{tile.reference_band} at {tile.pixel_scale_arcsec:.4g}\"/px); use a model trained at this pixel scale"
            )


def _provenance(settings: Settings, checkpoint: Path, config, bands, tiles) -> dict[str, Any]:
    return {
        "model": {
            "name": config.name or settings.model,
            "checkpoint": str(checkpoint),
            "architecture": config.architecture,
            "weights_sha256": sha256_of(checkpoint / WEIGHTS_FILE),
            "bands": list(config.bands),
            "stamp_size_px": config.stamp_size_px,
            "pixel_scale_arcsec": config.pixel_scale_arcsec,
            "threshold": config.threshold,
            "train_prevalence": config.train_prevalence,
        },
        "preprocessing": {"normalisation": config.normalisation, "params": config.normalisation_params},
        "bands": bands,
        "code_version": code_version(),
        "command_line": sys.argv,
        "inputs": {"images": settings.images, "catalog": str(settings.catalog),
                   "tiles": sorted(tile.name for tile in tiles),
                   "unreadable_tiles": sorted(tile.name for tile in tiles if tile.error)},
        "settings": settings.to_dict(),
        "flags": flags_documentation(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
