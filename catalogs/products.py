"""Writing a built :class:`catalogs.catalogue.Catalogue` into a run directory.

Products, named by :mod:`catalogs.layout`:

``candidates.parquet``
    every scored object, ranked, with the ``_healpix_29`` index and ``p_survey``; columns
    as :mod:`catalogs.schema` defines them; units, UCDs and provenance as :mod:`catalogs.io`
    writes them. Known-lens columns too when the options named known lenses.
``candidates_hats/``
    the same rows as a HEALPix-partitioned HATS collection (:mod:`catalogs.hats`: the
    catalogue in ``candidates/``, a 10-arcsec margin cache, a MOC), written only when the
    catalogue has more than ``hats_min_rows`` rows: one Parquet file of tens of millions of
    rows is slow to query by position, the partitioned one is not.
``failures.parquet``
    every catalogue object that was not scored, with the reason.

Each file is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from catalogs.catalogue import CANDIDATES_DESCRIPTION, FAILURES_DESCRIPTION, Catalogue, CatalogueOptions
from catalogs.hats import write_hats
from catalogs.io import atomic_write_parquet
from catalogs.layout import RunLayout


def write_products(catalogue: Catalogue, out_dir: str | Path, options: CatalogueOptions) -> dict[str, Any]:
    """Write the candidates, their HATS copy (large catalogues only) and the failures.

    Returns what the summary adds about the writing: ``hats_partitions`` when a HATS copy
    was written. A HATS copy left by an earlier, larger catalogue in ``out_dir`` is removed.
    """
    layout = RunLayout(out_dir)
    written: dict[str, Any] = {}
    atomic_write_parquet(catalogue.candidates, layout.candidates, catalogue.provenance, params=catalogue.params,
                         description=CANDIDATES_DESCRIPTION)
    if catalogue.candidates.num_rows > options.hats_min_rows:
        partitions = write_hats(catalogue.candidates, layout.hats, max_rows=options.hats_partition_rows,
                                catalog_name="candidates", provenance=catalogue.provenance, params=catalogue.params,
                                description=CANDIDATES_DESCRIPTION)
        written["hats_partitions"] = len(partitions)
    elif layout.hats.exists():
        # A previous merge of a larger catalogue into this directory: it no longer matches.
        shutil.rmtree(layout.hats)
    atomic_write_parquet(catalogue.failures, layout.failures, catalogue.provenance,
                         description=FAILURES_DESCRIPTION)
    return written
