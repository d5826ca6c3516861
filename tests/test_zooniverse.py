"""The Zooniverse export: images and a manifest that the Project Builder and panoptes-client read."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from catalogs.inspect.__main__ import main as inspect_main
from catalogs.zooniverse import (
    MANIFEST,
    MAX_FILE_BYTES,
    ExportError,
    export_subjects,
    image_columns,
    read_manifest,
    subjects,
)
from pipeline import store

ROOT = Path(__file__).resolve().parent.parent
BANDS = ["g", "r", "i"]


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A run directory as the pipeline leaves it: a ranked catalogue and its cutout store."""
    run = tmp_path / "run1"
    run.mkdir()
    n = 12
    rng = np.random.default_rng(1)
    ids = [f"obj/{k}" if k % 5 == 0 else f"obj-{k}" for k in range(n)]  # one id with a character files cannot hold
    objects = pd.DataFrame({"object_id": ids, "ra": np.linspace(150, 150.1, n), "dec": np.linspace(2, 2.1, n),
                            "tile": ["t00"] * n, "x_px": np.arange(n, dtype=float), "y_px": np.zeros(n)})
    store.create_store(run / "cutouts.zarr", objects, BANDS, 32, 4)
    for start in range(0, n, 4):
        stamps = rng.normal(0, 1, (4, 3, 32, 32)).astype(np.float32)
        stamps[:, :, 14:18, 14:18] += 20 * (start + 1)
        store.write_shard(run / "cutouts.zarr", start, stamps, np.zeros(4, dtype=np.int32))
    scores = np.sort(rng.uniform(0, 1, n))[::-1]
    catalogue = objects.assign(score=scores, rank=np.arange(1, n + 1), cutout_index=np.arange(n)[::-1].copy(),
                               is_candidate=scores >= 0.5, flags=np.where(np.arange(n) % 3 == 1, 1, 0),
                               p_survey=scores / 100, known_lens_name=[None] * (n - 1) + ["SL2S J0000"])
    catalogue.to_parquet(run / "candidates.parquet")
    return run


def test_export_reads_back(run_dir, tmp_path):
    out = tmp_path / "zoo"
    export = export_subjects(run_dir, out, top=8)
    assert export.subjects == 8 and export.manifest == out / MANIFEST and export.image_columns == ["image_1"]
    manifest = read_manifest(out)
    catalogue = pd.read_parquet(run_dir / "candidates.parquet")
    top = catalogue.sort_values("rank").head(8)
    # Every top object exactly once, shuffled, with its catalogue values in hidden columns.
    assert sorted(manifest["#rank"].astype(int)) == list(range(1, 9))
    assert manifest["#rank"].tolist() != sorted(manifest["#rank"].tolist())
    joined = manifest.merge(top.astype({"object_id": str}), left_on="#object_id", right_on="object_id")
    assert len(joined) == 8
    np.testing.assert_allclose(joined["#score"], joined["score"])
    np.testing.assert_allclose(joined["#ra"], joined["ra"])
    assert (joined["#cutout_index"] == joined["cutout_index"]).all()
    assert (joined["#flags"] == joined["flags"]).all()
    assert set(manifest.loc[manifest["#flags"] == 1, "#flag_names"]) == {"EDGE"}
    assert (manifest["#bands"] == "g,r,i").all() and (manifest["#run"] == "run1").all()
    # Volunteers see only the images: every metadata column is hidden.
    assert [c for c in manifest.columns if not c.startswith("#")] == ["image_1"]
    for name in manifest["image_1"]:
        path = out / name
        assert path.parent == out and path.stat().st_size < MAX_FILE_BYTES
        image = Image.open(path)
        assert image.format == "PNG" and image.mode == "RGB" and image.size[0] >= 400
    assert "obj_0_rgb.png" in set(manifest["image_1"])  # 'obj/0' made file-safe
    assert "upload-subjects" in (out / "README.txt").read_text()


def test_images_are_the_stamps(run_dir, tmp_path):
    """The brightest stamp (largest injected source) gives the brightest centre."""
    out = tmp_path / "zoo"
    export_subjects(run_dir, out, top=12)
    manifest = read_manifest(out).set_index("#cutout_index")
    centre = {}
    for index, name in manifest["image_1"].items():
        pixels = np.asarray(Image.open(out / name).convert("L"), dtype=float)
        h, w = pixels.shape
        centre[index] = pixels[h // 2 - 4 : h // 2 + 4, w // 2 - 4 : w // 2 + 4].mean()
        assert centre[index] > np.median(pixels)  # the source is in the middle, over the sky
    assert len(centre) == 12


def test_bands_and_filters(run_dir, tmp_path):
    out = tmp_path / "zoo"
    export = export_subjects(run_dir, out, top=50, bands=True, candidates_only=True, clean_only=True)
    manifest = read_manifest(out)
    catalogue = pd.read_parquet(run_dir / "candidates.parquet")
    expected = catalogue[catalogue["is_candidate"] & (catalogue["flags"] == 0)]
    assert export.subjects == len(expected) == len(manifest)
    assert image_columns(manifest) == ["image_1", "image_2", "image_3", "image_4"]
    for _, row in manifest.iterrows():
        assert row["image_2"].endswith("_g.png") and row["image_4"].endswith("_i.png")
        assert Image.open(out / row["image_3"]).mode == "L"


def test_nothing_selected_is_an_error(run_dir, tmp_path):
    catalogue = pd.read_parquet(run_dir / "candidates.parquet")
    catalogue.assign(is_candidate=False).to_parquet(run_dir / "candidates.parquet")
    with pytest.raises(ExportError, match="no object"):
        export_subjects(run_dir, tmp_path / "zoo", candidates_only=True)


@pytest.mark.skipif(importlib.util.find_spec("panoptes_client") is None, reason="panoptes-client is not installed")
def test_panoptes_client_builds_the_subjects_offline(run_dir, tmp_path):
    out = tmp_path / "zoo"
    export_subjects(run_dir, out, top=5, bands=True)
    made = subjects(out)
    manifest = read_manifest(out)
    assert len(made) == 5
    for subject, (_, row) in zip(made, manifest.iterrows()):
        assert subject.locations == ["image/png"] * 4
        assert subject._media_files[0] == (out / row["image_1"]).read_bytes()
        assert subject.metadata["#object_id"] == row["#object_id"]
        assert "image_1" not in subject.metadata and "#score" in subject.metadata


def test_the_manifest_is_plain_csv_for_the_project_builder(run_dir, tmp_path):
    out = tmp_path / "zoo"
    export_subjects(run_dir, out, top=3)
    with (out / MANIFEST).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and all((out / row["image_1"]).is_file() for row in rows)
    assert rows[0]["#known_lens_name"] == "" or rows[0]["#known_lens_name"].startswith("SL2S")


def test_command_lines(run_dir, tmp_path, capsys):
    assert inspect_main([str(run_dir), "--zooniverse", str(tmp_path / "a"), "--top", "4"]) == 0
    assert "4 Zooniverse subjects" in capsys.readouterr().out
    assert len(read_manifest(tmp_path / "a")) == 4
    result = subprocess.run([sys.executable, "-m", "catalogs.zooniverse", str(run_dir), str(tmp_path / "b"),
                             "--top", "2", "--bands"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert len(read_manifest(tmp_path / "b")) == 2
    missing = subprocess.run([sys.executable, "-m", "catalogs.zooniverse", str(tmp_path / "nope"),
                              str(tmp_path / "c")], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "candidates.parquet" in missing.stderr
