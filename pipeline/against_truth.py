"""Measure a finished run against a truth table: ``python -m pipeline.against_truth RUN TRUTH``.

For mock surveys (``pipeline.mock`` writes ``truth.parquet``) and any survey with a list
of confirmed lenses and non-lenses: joins the run's ``candidates.parquet`` to the truth on
the object id and reports, with bootstrap 95% intervals, what :mod:`lensnet.crosssim`
reports for held-out stamp sets — AUROC, TPR0, TPR10, completeness for θE > 1.4″ and arc
S/N > 20 at exactly FPR ≤ 1% among this survey's non-lenses and at the model's threshold
— plus the share of each kind of object above the threshold. Objects the run could not
score are counted and left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from lensnet import crosssim


def measure(candidates: str | Path, truth: str | Path, n_bootstrap: int = 1000) -> dict[str, Any]:
    """The cross-simulator row of a run's catalogue against a truth table (columns id, is_lens, ...)."""
    scored = pd.read_parquet(candidates, columns=["object_id", "logit", "score"])
    known = pd.read_parquet(truth)
    if "id" not in known or "is_lens" not in known:
        raise ValueError(f"{truth} must have columns id and is_lens")
    joined = scored.merge(known, left_on="object_id", right_on="id", how="inner")
    from catalogs.io import read_provenance

    threshold = float((read_provenance(candidates).get("catalogue") or {}).get("threshold", 0.5))
    row = crosssim.headline(joined.reset_index(drop=True), joined["logit"].to_numpy(), threshold, n_bootstrap)
    row["unscored_truth_rows"] = int(len(known) - len(joined))
    row["threshold"] = threshold
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.against_truth", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished run directory (candidates.parquet)")
    parser.add_argument("truth", help="truth table: id, is_lens and optionally kind, theta_e_arcsec, arc_snr, ...")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    args = parser.parse_args(argv)
    try:
        row = measure(Path(args.run) / "candidates.parquet", args.truth, args.bootstrap)
    except (OSError, ValueError, KeyError) as error:
        print(f"python -m pipeline.against_truth: error: {error}", file=sys.stderr)
        return 2
    label = Path(args.run).name
    print(crosssim.render_tables({"threshold": row["threshold"], "target_fpr": 0.01, "sets": {label: row}}))
    if row["unscored_truth_rows"]:
        print(f"({row['unscored_truth_rows']} truth rows were not scored by the run and are left out)")
    if args.json:
        from lensnet.evaluate import _json_safe

        Path(args.json).write_text(json.dumps(_json_safe(row), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
