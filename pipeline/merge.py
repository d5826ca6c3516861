"""Merging a run's per-shard part files into its catalogue products.

The part files are the pipeline's own: each shard's cut part (``cutout_index``, ``flags``,
``reason``, ``detail``) and score part (``cutout_index``, ``logit``, and for an ensemble
``logit:<model>`` per member). :func:`join_parts` joins them with the plan into the
scored objects and the failures; the catalogue is then built by
:func:`catalogs.catalogue.build_catalogue` (pure, testable without Dask) and written by
:func:`catalogs.products.write_products` (``candidates.parquet``, ``candidates_hats/``
for large runs, ``failures.parquet``). :class:`catalogs.catalogue.CatalogueOptions`
carries every setting of the products.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from catalogs.catalogue import (DEFAULT_HATS_MIN_ROWS, DEFAULT_HATS_PARTITION_ROWS, FAILURE_COLUMNS,
                                CatalogueOptions, build_catalogue)
from catalogs.crossmatch import DEFAULT_RADIUS_ARCSEC
from catalogs.layout import HATS_DIR  # noqa: F401 (importable from here as before)
from catalogs.products import write_products
from catalogs.schema import DEFAULT_TARGET_PREVALENCE
from pipeline.plan import Plan


def _read_parts(paths: Sequence[str | Path]) -> pd.DataFrame:
    return pa.concat_tables([pq.read_table(path) for path in paths]).to_pandas() if paths else pd.DataFrame()


def join_parts(plan: Plan, cut_parts: Sequence[str | Path], score_parts: Sequence[str | Path],
               member_logit_columns: Sequence[str] = ()) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The scored objects, the failures and the unreadable tiles of a run, from its part files and plan.

    Returns:
        scored: the plan's objects that were scored (indexed by ``cutout_index``) with their
            cut ``flags``, ``logit`` and the ``member_logit_columns``.
        failed: the plan's failures (never cut) and the objects the cut stage failed, with
            ``row``, ``object_id``, ``ra``, ``dec``, ``reason``, ``detail``.
        unreadable_tiles: tiles that could not be read, by the plan or by a cut task.
    """
    status = _read_parts(cut_parts).set_index("cutout_index").sort_index()
    scores = _read_parts(score_parts).set_index("cutout_index")
    scored = plan.objects.join(status[["flags"]]).join(scores[["logit", *member_logit_columns]], how="inner")
    cut_failed = status[status["reason"].notna()]
    failed_objects = plan.objects.loc[cut_failed.index, ["row", "object_id", "ra", "dec"]].assign(
        reason=cut_failed["reason"], detail=cut_failed["detail"])
    failed = pd.concat([plan.failures[list(FAILURE_COLUMNS)], failed_objects])
    unreadable = cut_failed.index[cut_failed["reason"] == "unreadable_tile"]
    unreadable_tiles = set(plan.objects.loc[unreadable, "tile"].astype(str)) | {
        name for name, tile in plan.tiles.items() if tile.error is not None}
    return scored, failed, sorted(unreadable_tiles)


def merge(plan: Plan, catalog: pd.DataFrame, cut_parts: Sequence[str | Path], score_parts: Sequence[str | Path],
          out_dir: str | Path, provenance: dict[str, Any], options: CatalogueOptions) -> dict[str, Any]:
    """Join the part files with the plan, build the catalogue, write the products; return the summary counts."""
    scored, failed, unreadable_tiles = join_parts(plan, cut_parts, score_parts, options.member_logit_columns())
    catalogue = build_catalogue(scored, failed, catalog, provenance, options)
    written = write_products(catalogue, out_dir, options)
    summary = {**catalogue.counts, "unreadable_tiles": unreadable_tiles, **catalogue.calibration}
    if catalogue.known_lenses is not None:
        summary["known_lenses"] = catalogue.known_lenses
    return {**summary, **written}


def merge_outputs(
    plan: Plan,
    catalog: pd.DataFrame,
    cut_parts: list[str],
    score_parts: list[str],
    threshold: float,
    out_dir: Path,
    provenance: dict[str, Any],
    *,
    train_prevalence: float | None = None,
    target_prevalence: float = DEFAULT_TARGET_PREVALENCE,
    hats_min_rows: int = DEFAULT_HATS_MIN_ROWS,
    hats_partition_rows: int = DEFAULT_HATS_PARTITION_ROWS,
    known_lenses: pd.DataFrame | None = None,
    crossmatch_radius_arcsec: float = DEFAULT_RADIUS_ARCSEC,
    model_names: Sequence[str] = (),
) -> dict[str, Any]:
    """:func:`merge` with the options as keywords (see :class:`catalogs.catalogue.CatalogueOptions`).

    Kept for callers written before the options had their own class.
    """
    options = CatalogueOptions(threshold=threshold, train_prevalence=train_prevalence,
                               target_prevalence=target_prevalence, model_names=tuple(model_names),
                               known_lenses=known_lenses, crossmatch_radius_arcsec=crossmatch_radius_arcsec,
                               hats_min_rows=hats_min_rows, hats_partition_rows=hats_partition_rows)
    return merge(plan, catalog, cut_parts, score_parts, out_dir, provenance, options)
