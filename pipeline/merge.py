"""Merging per-shard parts into the ranked candidate catalogue and the failure list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from catalogs.io import atomic_write_parquet
from catalogs.schema import CORE_NAMES, candidate_schema, failure_schema
from pipeline.plan import Plan


def _read_parts(paths: list[str]) -> pd.DataFrame:
    return pa.concat_tables([pq.read_table(path) for path in paths]).to_pandas() if paths else pd.DataFrame()


def merge_outputs(
    plan: Plan,
    catalog: pd.DataFrame,
    cut_parts: list[str],
    score_parts: list[str],
    threshold: float,
    out_dir: Path,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """Write ``candidates.parquet`` (sorted, ranked) and ``failures.parquet``; return the counts."""
    status = _read_parts(cut_parts).set_index("cutout_index").sort_index()
    scores = _read_parts(score_parts).set_index("cutout_index")
    objects = plan.objects.join(status[["flags"]]).join(scores["logit"], how="inner")
    extra_columns = [name for name in catalog.columns if name not in ("id", "ra", "dec")]
    extras = catalog.iloc[objects["row"].to_numpy()][extra_columns].reset_index(drop=True)
    # An input column named like a core column is kept under another name, not overwritten.
    extras = extras.rename(columns={name: f"input_{name}" for name in extras.columns if name in CORE_NAMES})
    logit = objects["logit"].to_numpy(np.float32)
    candidates = pd.DataFrame(
        {
            "object_id": objects["object_id"].to_numpy(),
            "ra": objects["ra"].to_numpy(np.float64),
            "dec": objects["dec"].to_numpy(np.float64),
            "tile": objects["tile"].astype(str).to_numpy(),
            "x_px": objects["x_px"].to_numpy(np.float64),
            "y_px": objects["y_px"].to_numpy(np.float64),
            "score": (1.0 / (1.0 + np.exp(-logit.astype(np.float64)))).astype(np.float32),
            "logit": logit,
            "flags": objects["flags"].to_numpy(np.int32),
            "cutout_index": objects.index.to_numpy(np.int64),
        }
    )
    candidates = pd.concat([candidates, extras], axis=1)
    # Rank by the logit: float32 scores saturate at 1.0 for confident objects, logits do not.
    candidates = candidates.sort_values(["logit", "object_id"], ascending=[False, True], kind="stable")
    candidates.insert(7, "rank", np.arange(1, len(candidates) + 1, dtype=np.int64))
    candidates.insert(8, "is_candidate", candidates["score"].to_numpy() >= threshold)
    id_type = pa.array(catalog["id"].iloc[:1]).type
    extra_schema = pa.Schema.from_pandas(extras, preserve_index=False)
    schema = candidate_schema(id_type, extra_schema)
    atomic_write_parquet(pa.Table.from_pandas(candidates, schema=schema, preserve_index=False),
                         out_dir / "candidates.parquet", provenance)

    cut_failed = status[status["reason"].notna()]
    failed_objects = plan.objects.loc[cut_failed.index, ["row", "object_id", "ra", "dec"]].assign(
        reason=cut_failed["reason"], detail=cut_failed["detail"])
    failures = pd.concat([plan.failures[["row", "object_id", "ra", "dec", "reason", "detail"]], failed_objects])
    failures = failures.sort_values("row").drop(columns="row").reset_index(drop=True)
    atomic_write_parquet(pa.Table.from_pandas(failures, schema=failure_schema(id_type), preserve_index=False),
                         out_dir / "failures.parquet", provenance)
    return {
        "catalogue_objects": int(len(catalog)),
        "scored": int(len(candidates)),
        "failed": int(len(failures)),
        "failures_by_reason": {str(k): int(v) for k, v in failures["reason"].value_counts().sort_index().items()},
        "candidates_above_threshold": int(candidates["is_candidate"].sum()),
        "flagged": int((candidates["flags"] != 0).sum()),
    }
