"""The inspection image cache: PNGs and a manifest, made once per run and top-N.

Layout inside the run directory::

    inspect_cache/
      top100-3f2a9c1d7e4b/        one directory per (catalogue, N, model, settings)
        manifest.json             what the page and the gallery show (see build_cache)
        img/<cutout_index>-rgb.png
        img/<cutout_index>-b<k>-<stretch>.png    band k of the stamp, each stretch
        img/<cutout_index>-occlusion.png, img/<cutout_index>-gradcam.png

The directory name carries a hash of the catalogue file, N, the model weights and the
settings below, so a rerun of the pipeline or another N gets a fresh cache and an
unchanged one is reused as is. A cache is built in a temporary directory and renamed
into place, so a half-written cache is never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from catalogs.flags import describe as describe_flags
from catalogs.inspect import images
from catalogs.inspect.data import (
    KNOWN_LENS_COLUMN,
    InspectionRun,
    RunModel,
    load_run_model,
    read_stamps,
)
from catalogs.layout import RunLayout
from lensnet.checkpoint import sha256_of

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
#: Bump when the images or the manifest change meaning, to invalidate old caches.
CACHE_VERSION = 1
#: PNGs are enlarged (nearest neighbour) to at least this width, for viewers that
#: do not scale images up themselves.
PNG_MIN_SIZE_PX = 128
#: Stamps per batch when computing maps and images (also the progress step).
CHUNK = 32


@dataclass(frozen=True)
class MapSettings:
    """How the interpretability maps are made.

    Attributes:
        enabled: compute occlusion and Grad-CAM maps with the run's model.
        occlusion_patch_px: side of the occluding patch.
        occlusion_stride_px: step between patch positions; the cost is one forward pass
            per position, ((S - patch) / stride + 1)**2 per stamp (225 for S = 64 and
            the defaults; stride 8 makes it 64).
        device: torch device (``cpu``, ``cuda``).
    """

    enabled: bool = True
    occlusion_patch_px: int = 8
    occlusion_stride_px: int = 4
    device: str = "cpu"


def cache_key(run: InspectionRun, maps: MapSettings) -> str:
    """Directory name of the cache for this run, N and settings."""
    parts = {
        "version": CACHE_VERSION,
        "catalogue": sha256_of(RunLayout(run.run_dir).candidates),
        "top": len(run.top),
        "weights": run.provenance.get("model", {}).get("weights_sha256", ""),
        "maps": maps.enabled,
        "occlusion": [maps.occlusion_patch_px, maps.occlusion_stride_px] if maps.enabled else None,
        "png_min_size_px": PNG_MIN_SIZE_PX,
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return f"top{len(run.top)}-{digest[:12]}"


def _json_value(value: Any) -> Any:
    """A JSON-safe Python value for one catalogue cell (NaN/NA -> None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def candidate_record(row: pd.Series, image_paths: dict[str, str]) -> dict[str, Any]:
    """The manifest entry of one candidate."""
    flags = int(row.get("flags", 0))
    record: dict[str, Any] = {
        "object_id": _json_value(row["object_id"]),
        "rank": int(row["rank"]),
        "score": _json_value(float(row["score"])),
        "logit": _json_value(row.get("logit")),
        "is_candidate": _json_value(row.get("is_candidate")),
        "flags": flags,
        "flag_names": describe_flags(flags),
        "ra": _json_value(row.get("ra")),
        "dec": _json_value(row.get("dec")),
        "tile": _json_value(row.get("tile")),
        "known_lens_name": _json_value(row.get(KNOWN_LENS_COLUMN)),
        "cutout_index": int(row["cutout_index"]),
        "images": image_paths,
    }
    return record


def _write_png(directory: Path, name: str, image: np.ndarray) -> str:
    (directory / "img" / name).write_bytes(images.png_bytes(image, PNG_MIN_SIZE_PX))
    return f"img/{name}"


def _render_chunk(
    run: InspectionRun, rows: pd.DataFrame, directory: Path, model: RunModel | None, maps: MapSettings
) -> list[dict[str, Any]]:
    """Images (and maps when ``model`` is given) for one chunk of candidates."""
    stamps = read_stamps(run, rows["cutout_index"].to_numpy())
    occlusion = cam = None
    if model is not None:
        from lensnet.interpret import grad_cam, occlusion_map

        inputs = model.normalise(stamps)
        module = model.loaded.module
        occlusion = occlusion_map(module, inputs, maps.occlusion_patch_px, maps.occlusion_stride_px, baseline=0.0)
        cam = grad_cam(module, inputs)
    records = []
    for k, (_, row) in enumerate(rows.iterrows()):
        stem = str(int(row["cutout_index"]))
        rgb = images.lupton_rgb(stamps[k], run.bands)
        paths = {"rgb": _write_png(directory, f"{stem}-rgb.png", rgb)}
        for b in range(len(run.bands)):
            for stretch in images.STRETCHES:
                view = images.band_image(stamps[k, b], stretch)  # type: ignore[arg-type]
                paths[f"b{b}-{stretch}"] = _write_png(directory, f"{stem}-b{b}-{stretch}.png", view)
        if occlusion is not None and cam is not None:
            paths["occlusion"] = _write_png(
                directory, f"{stem}-occlusion.png", images.heatmap_overlay(rgb, occlusion[k], signed=True)
            )
            paths["gradcam"] = _write_png(directory, f"{stem}-gradcam.png", images.heatmap_overlay(rgb, cam[k]))
        records.append(candidate_record(row, paths))
    return records


def build_cache(
    run: InspectionRun,
    maps: MapSettings = MapSettings(),
    rebuild: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Make (or reuse) the cache of the run's top candidates; returns its directory.

    Args:
        run: the opened run.
        maps: whether and how to compute occlusion and Grad-CAM maps.
        rebuild: discard an existing cache of the same key first.
        progress: called with one-line progress messages.

    The manifest holds ``run`` (directory name), ``bands``, ``rgb`` (band names per
    channel), ``stretches``, ``maps`` (the map kinds present), ``maps_note`` (why
    there are none, if so), ``model``, ``has_known_lens_column`` and ``candidates``
    (see :func:`candidate_record`; image paths are relative to the cache directory).
    """
    say = progress or (lambda message: log.info("%s", message))
    root = RunLayout(run.run_dir).inspect_cache
    target = root / cache_key(run, maps)
    if rebuild and target.exists():
        shutil.rmtree(target)
    if (target / MANIFEST).is_file():
        return target
    root.mkdir(exist_ok=True)
    model, maps_note = load_run_model(run, maps.device) if maps.enabled else (None, "maps were not requested")
    started = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        (staging / "img").mkdir()
        records: list[dict[str, Any]] = []
        for start in range(0, len(run.top), CHUNK):
            records += _render_chunk(run, run.top.iloc[start : start + CHUNK], staging, model, maps)
            elapsed = time.perf_counter() - started
            remaining = elapsed / len(records) * (len(run.top) - len(records))
            say(f"inspection images: {len(records)}/{len(run.top)} candidates, "
                f"{elapsed:.0f} s, ~{remaining:.0f} s left")
        red, green, blue = images.rgb_channels(run.bands)
        manifest = {
            "version": CACHE_VERSION,
            "run": run.run_dir.name,
            "bands": run.bands,
            "rgb": {name: [run.bands[k] for k in group] for name, group in zip("RGB", (red, green, blue), strict=True)},
            "stretches": list(images.STRETCHES),
            "maps": ["occlusion", "gradcam"] if model is not None else [],
            "maps_note": maps_note,
            "occlusion": {"patch_px": maps.occlusion_patch_px, "stride_px": maps.occlusion_stride_px, "baseline": 0.0},
            "model": {key: run.provenance.get("model", {}).get(key) for key in ("name", "architecture", "threshold")},
            "has_known_lens_column": run.has_known_lens_column,
            "candidates": records,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, allow_nan=False))
        os.chmod(staging, 0o755)
        try:
            os.rename(staging, target)
        except OSError:  # another process finished the same cache first: use theirs
            if not (target / MANIFEST).is_file():
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    say(f"inspection cache {target.name}: {len(records)} candidates in {time.perf_counter() - started:.1f} s")
    return target


def read_manifest(cache_dir: Path) -> dict[str, Any]:
    return json.loads((cache_dir / MANIFEST).read_text())
