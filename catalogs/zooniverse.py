"""A Zooniverse subject set of a run's top candidates: images plus a manifest CSV.

``python -m catalogs.zooniverse RUN_DIR OUT_DIR --top 500`` (or ``lensfinder inspect RUN_DIR
--zooniverse OUT_DIR --top 500``) writes, with no network::

    OUT_DIR/
      manifest.csv          one row per subject: image columns, then metadata
      <key>_rgb.png         Lupton et al. (2004) colour composite (gri -> RGB as in catalogs.inspect)
      <key>_<band>.png      with --bands: each band alone, asinh stretch
      README.txt            how to upload

The manifest is the format of the Zooniverse Project Builder's subject uploader and of the
``panoptes`` command line (``panoptes subject-set upload-subjects SUBJECT_SET_ID
OUT_DIR/manifest.csv``): the image columns (``image_1``, ``image_2``, ...) hold file names
relative to the manifest, every other column becomes subject metadata. Columns starting with
``#`` are hidden from volunteers (Zooniverse's convention) and come back in the
classification exports: the run's ranking, scores and coordinates stay out of the volunteers'
view, so that they grade the images and nothing else, and the classifications can still be
joined to the catalogue by ``#object_id``. Rows are shuffled (seeded), so the upload order
carries no ranking either.

:func:`subjects` builds unsaved ``panoptes_client.Subject`` objects from an export (no
network); :func:`upload` saves them into a subject set (network and a Zooniverse login).
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from catalogs.flags import describe as describe_flags

MANIFEST = "manifest.csv"
#: Width the images are enlarged to at least (integer factor, nearest neighbour): the
#: classify page shows subjects a few hundred pixels wide and would otherwise blur them.
IMAGE_MIN_SIZE_PX = 400
#: Zooniverse refuses subject files above 1 MB (and advises well below).
MAX_FILE_BYTES = 1_000_000
#: Catalogue columns copied into the hidden metadata, when present.
HIDDEN_COLUMNS = ("object_id", "rank", "score", "p_survey", "is_candidate", "ra", "dec", "tile", "flags",
                  "known_lens_name", "cutout_index")


class ExportError(ValueError):
    """The export cannot be made as asked; the message says why."""


@dataclass
class ZooniverseExport:
    """Where an export is and what it holds."""

    directory: Path
    manifest: Path
    subjects: int
    image_columns: list[str]


def _key(object_id: Any) -> str:
    """A file-name-safe key for an object id (ids can be any string)."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", str(object_id)).strip("._") or "object"
    return text[:80]


def _cell(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    return value


def export_subjects(
    run_dir: str | Path,
    out_dir: str | Path,
    top: int = 100,
    *,
    bands: bool = False,
    candidates_only: bool = False,
    clean_only: bool = False,
    seed: int = 0,
) -> ZooniverseExport:
    """Write the images and manifest of the run's ``top`` best-ranked objects into ``out_dir``.

    Args:
        run_dir: a run's ``--out`` directory (``candidates.parquet`` and ``cutouts.zarr``).
        out_dir: created if needed; an existing ``manifest.csv`` in it is replaced, and so are
            the images of the same objects.
        top: how many objects, in rank order, after the filters below.
        bands: also one image per band (asinh stretch) after the colour composite.
        candidates_only: only objects at or above the model's threshold (``is_candidate``).
        clean_only: only objects without flags (no tile edge, bad pixels or crowding).
        seed: seed of the row shuffle.
    """
    from catalogs.inspect import images
    from catalogs.inspect.data import open_run, read_stamps
    from catalogs.layout import RunLayout

    run = open_run(run_dir, 1)
    catalogue = run.catalogue
    if candidates_only:
        if "is_candidate" not in catalogue:
            raise ExportError(f"{RunLayout(run.run_dir).candidates} has no is_candidate column")
        catalogue = catalogue[catalogue["is_candidate"].fillna(False).astype(bool)]
    if clean_only and "flags" in catalogue:
        catalogue = catalogue[catalogue["flags"] == 0]
    chosen = catalogue.head(top)
    if chosen.empty:
        raise ExportError(f"no object of {run.run_dir} passes the selection (top {top}"
                          + (", candidates only" if candidates_only else "")
                          + (", clean only" if clean_only else "") + ")")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keys = [_key(object_id) for object_id in chosen["object_id"]]
    if len(set(keys)) != len(keys):  # distinct ids that map to one file name: fall back to the rank
        keys = [f"{key}-r{int(rank)}" for key, rank in zip(keys, chosen["rank"])]
    stamps = read_stamps(run, chosen["cutout_index"].to_numpy())
    image_columns = ["image_1"] + ([f"image_{2 + b}" for b in range(len(run.bands))] if bands else [])
    model = run.provenance.get("model", {})
    rows = []
    for k, (_, row) in enumerate(chosen.iterrows()):
        files = [_write(out / f"{keys[k]}_rgb.png", images.lupton_rgb(stamps[k], run.bands), images)]
        if bands:
            files += [_write(out / f"{keys[k]}_{_key(band)}.png", images.band_image(stamps[k, b], "asinh"), images)
                      for b, band in enumerate(run.bands)]
        record: dict[str, Any] = dict(zip(image_columns, files))
        for column in HIDDEN_COLUMNS:
            if column in row.index:
                record[f"#{column}"] = _cell(row[column])
        if "flags" in row.index:
            record["#flag_names"] = describe_flags(int(row["flags"]))
        record["#run"] = run.run_dir.name
        record["#model"] = model.get("name", "")
        record["#weights_sha256"] = model.get("weights_sha256", "")
        record["#bands"] = ",".join(run.bands)
        rows.append(record)
    order = np.random.default_rng(seed).permutation(len(rows))
    manifest = out / MANIFEST
    temporary = out / f".{MANIFEST}.tmp"
    with temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[i] for i in order)
    temporary.replace(manifest)
    (out / "README.txt").write_text(_readme(len(rows), image_columns, run.bands), encoding="utf-8")
    return ZooniverseExport(out, manifest, len(rows), image_columns)


def _write(path: Path, image: np.ndarray, images_module) -> str:
    data = images_module.png_bytes(image, IMAGE_MIN_SIZE_PX)
    if len(data) > MAX_FILE_BYTES:
        raise ExportError(f"{path.name} would be {len(data)} bytes, above Zooniverse's {MAX_FILE_BYTES}")
    path.write_bytes(data)
    return path.name


def _readme(subjects: int, image_columns: list[str], bands: list[str]) -> str:
    shown = "the colour composite" + (f" and each band ({', '.join(bands)})" if len(image_columns) > 1 else "")
    return f"""Zooniverse subject set made by lensfinder: {subjects} subjects, each showing {shown}.

Upload with the Project Builder (Subject sets > New subject set > drop {MANIFEST} and the PNGs), or:

    pip install panoptes-client panoptescli
    panoptes configure
    panoptes subject-set upload-subjects SUBJECT_SET_ID {MANIFEST}

or from Python (catalogs.zooniverse.upload). Columns starting with '#' are hidden from volunteers
and returned in the classification exports; join those to candidates.parquet on #object_id.
"""


def read_manifest(export_dir: str | Path) -> pd.DataFrame:
    """The manifest of an export, ids and text as written (nothing parsed as numbers but scores)."""
    path = Path(export_dir) / MANIFEST
    if not path.is_file():
        raise ExportError(f"{path}: no such file; make an export first")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in ("#rank", "#score", "#p_survey", "#ra", "#dec", "#flags", "#cutout_index"):
        if column in frame:
            frame[column] = pd.to_numeric(frame[column].replace("", np.nan))
    return frame


def image_columns(manifest: pd.DataFrame) -> list[str]:
    return [column for column in manifest.columns if re.fullmatch(r"image_\d+", column)]


def subjects(export_dir: str | Path) -> list[Any]:
    """Unsaved ``panoptes_client.Subject`` objects of an export: images and metadata attached.

    Needs the ``panoptes-client`` package (``pip install -e '.[zooniverse]'``), no network.
    """
    try:
        from panoptes_client import Subject
    except ImportError as error:
        raise ExportError("building Zooniverse subjects needs panoptes-client: pip install panoptes-client") from error
    directory = Path(export_dir)
    manifest = pd.read_csv(directory / MANIFEST, dtype=str, keep_default_na=False)
    columns = image_columns(manifest)
    made = []
    for _, row in manifest.iterrows():
        subject = Subject()
        for column in columns:
            subject.add_location(str(directory / row[column]))
        subject.metadata.update({column: row[column] for column in manifest.columns if column not in columns})
        made.append(subject)
    return made


def upload(export_dir: str | Path, subject_set_id: int | str, batch: int = 100) -> int:  # pragma: no cover - network
    """Save the export's subjects to Zooniverse and add them to a subject set; returns the count.

    Log in first (``panoptes_client.Panoptes.connect(username=..., password=...)`` or
    ``panoptes configure``); the subject set must belong to a project you can edit.
    """
    from panoptes_client import SubjectSet

    subject_set = SubjectSet.find(subject_set_id)
    made = subjects(export_dir)
    for start in range(0, len(made), batch):
        part = made[start : start + batch]
        for subject in part:
            subject.links.project = subject_set.links.project
            subject.save()
        subject_set.add(part)
    return len(made)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m catalogs.zooniverse",
        description="Export a run's top candidates as a Zooniverse subject set: PNGs and a manifest CSV "
                    "(no network needed); upload it with the Project Builder or panoptes-client.")
    parser.add_argument("run_dir", help="the --out directory of a run")
    parser.add_argument("out_dir", help="directory for the images and manifest.csv")
    parser.add_argument("--top", type=int, default=100, help="objects in rank order (default 100)")
    parser.add_argument("--bands", action="store_true", help="also one asinh image per band")
    parser.add_argument("--candidates-only", action="store_true", help="only objects at or above the model's threshold")
    parser.add_argument("--clean-only", action="store_true", help="only objects without flags")
    parser.add_argument("--seed", type=int, default=0, help="seed of the row shuffle (default 0)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from catalogs.inspect.data import RunError

    try:
        export = export_subjects(args.run_dir, args.out_dir, args.top, bands=args.bands,
                                 candidates_only=args.candidates_only, clean_only=args.clean_only, seed=args.seed)
    except (ExportError, RunError, FileNotFoundError) as error:
        print(f"python -m catalogs.zooniverse: error: {error}", file=sys.stderr)
        return 2
    print(f"{export.subjects} subjects: {export.manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
