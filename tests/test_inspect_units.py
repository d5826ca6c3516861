"""catalogs.inspect without a server: consensus, images, validation, the grade store."""

from __future__ import annotations

import io
import threading
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image

from catalogs.inspect import images
from catalogs.inspect.consensus import classify, combined_ranking, consensus, latest_grades
from catalogs.inspect.grades import (
    GradeStore,
    ValidationError,
    validate_grade,
    validate_grader,
    validate_object_id,
)


def grades_table(rows: list[tuple[str, object, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["grader", "object_id", "grade"])


# --- consensus -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mean", "expected"),
    [(3.0, "A"), (2.5, "A"), (2.49, "B"), (1.5, "B"), (1.0, "C"), (0.5, "C"), (0.49, None), (0.0, None),
     (float("nan"), None)],
)
def test_classes_follow_the_sugohi_thresholds(mean, expected):
    assert classify(mean) == expected


def test_consensus_uses_each_graders_latest_grade():
    table = grades_table([
        ("alice", 1, 0), ("bob", 1, 3), ("alice", 1, 3),  # alice revises 0 -> 3
        ("alice", 2, 2), ("bob", 2, 1), ("carol", 2, 0),
        ("carol", 3, 1),
    ])
    assert len(latest_grades(table)) == 6
    result = consensus(table)
    assert list(result.index) == [1, 2, 3]
    assert result.loc[1, "mean_grade"] == 3.0 and result.loc[1, "n_graders"] == 2
    assert result.loc[1, "grade_std"] == 0.0 and result.loc[1, "final_class"] == "A"
    assert result.loc[1, "grades"] == "alice=3;bob=3"
    assert result.loc[2, "mean_grade"] == 1.0 and result.loc[2, "final_class"] == "C"
    np.testing.assert_allclose(result.loc[2, "grade_std"], np.std([2, 1, 0]))
    assert result.loc[3, "n_graders"] == 1 and result.loc[3, "grade_std"] == 0.0
    assert result.loc[3, "final_class"] == "C"


def test_consensus_of_no_grades_is_an_empty_table():
    result = consensus(grades_table([]))
    assert result.empty and "final_class" in result.columns


def test_combined_rank_orders_by_mean_grade_then_score():
    candidates = pd.DataFrame({
        "object_id": [10, 11, 12, 13, 14],
        "score": [0.99, 0.98, 0.97, 0.96, 0.95],
        "rank": [1, 2, 3, 4, 5],
    })
    table = grades_table([("a", 10, 1), ("a", 11, 3), ("a", 12, 3), ("a", 14, 0)])
    ranked = combined_ranking(candidates, consensus(table))
    # 11 and 12 tie on grade 3: the higher score first; ungraded 13 last.
    assert list(ranked["object_id"]) == [11, 12, 10, 14, 13]
    assert list(ranked["combined_rank"]) == [1, 2, 3, 4, 5]
    assert ranked.loc[ranked["object_id"] == 13, "n_graders"].item() == 0
    graded = combined_ranking(candidates, consensus(table), graded_only=True)
    assert list(graded["object_id"]) == [11, 12, 10, 14]


# --- images ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bands", "expected"),
    [
        (["g", "r", "i"], ([2], [1], [0])),
        (["i", "g", "r"], ([0], [2], [1])),
        (["HSC-G", "HSC-R", "HSC-I", "HSC-Z"], ([2], [1], [0])),  # g, r, i win; z ignored
        (["g", "r", "z"], ([2], [1], [0])),
        (["r", "i", "z", "y"], ([3], [2], [0, 1])),
        (["z", "r"], ([0], [1, 0], [1])),
        (["VIS"], ([0], [0], [0])),
        (["a", "b", "c"], ([2], [1], [0])),  # unknown names: the given order is blue to red
    ],
)
def test_band_to_channel_mapping(bands, expected):
    assert images.rgb_channels(bands) == expected


def stamp_with_arc(bands: int = 3, size: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - size / 2
    galaxy = 200 * np.exp(-(x**2 + y**2) / 8)
    arc = 30 * np.exp(-((np.hypot(x, y) - 9) ** 2) / 2) * (y > 0)
    stamp = np.stack([galaxy * (0.5 + k / 2) + arc * (1.5 - k / 2) for k in range(bands)])
    return (stamp + rng.normal(0, 1, stamp.shape)).astype(np.float32)


def test_lupton_composite_is_colour_uint8_and_survives_nans():
    stamp = stamp_with_arc()
    stamp[:, :3, :3] = np.nan
    rgb = images.lupton_rgb(stamp, ["g", "r", "i"])
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    centre, corner = rgb[16, 16].astype(int), rgb[30, 1].astype(int)
    assert centre.sum() > corner.sum()
    assert centre[0] > centre[2]  # the galaxy is red (brighter in i than g)


def test_composites_of_degenerate_stamps_do_not_fail():
    assert images.lupton_rgb(np.zeros((1, 8, 8)), ["r"]).shape == (8, 8, 3)
    assert images.lupton_rgb(np.full((2, 8, 8), np.nan), ["g", "i"]).shape == (8, 8, 3)


@pytest.mark.parametrize("stretch", images.STRETCHES)
def test_band_views(stretch):
    view = images.band_image(stamp_with_arc()[0], stretch)
    assert view.shape == (32, 32) and view.dtype == np.uint8
    assert view[16, 16] == view.max() and view.max() > view.min()
    assert (images.band_image(np.ones((8, 8)), stretch) == 0).all()


def test_unknown_stretch_is_refused():
    with pytest.raises(ValueError, match="stretch"):
        images.band_image(np.ones((8, 8)), "log")  # type: ignore[arg-type]


def test_heatmap_overlays():
    base = np.full((16, 16, 3), 100, dtype=np.uint8)
    signed = np.zeros((16, 16))
    signed[2, 2], signed[10, 10] = 1.0, -1.0
    out = images.heatmap_overlay(base, signed, signed=True)
    assert out.dtype == np.uint8 and out[2, 2, 0] > out[2, 2, 2] and out[10, 10, 2] > out[10, 10, 0]
    flat = images.heatmap_overlay(base, np.zeros((16, 16)))
    assert (flat == flat[0, 0]).all()
    with pytest.raises(ValueError):
        images.heatmap_overlay(base, np.zeros((8, 8)))


def test_png_bytes_round_trip_and_enlarge():
    image = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    data = images.png_bytes(image, min_size_px=20)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    decoded = np.asarray(Image.open(io.BytesIO(data)))
    assert decoded.shape == (24, 24)
    np.testing.assert_array_equal(decoded[::3, ::3], image)
    with pytest.raises(ValueError):
        images.png_bytes(image.astype(float))


# --- validation ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alice", " Bob Smith ", "a.b_c-d", "x" * 40, "7"])
def test_valid_grader_names(name):
    assert validate_grader(name) == name.strip()


@pytest.mark.parametrize("name", ["", "   ", "x" * 41, "<script>", "a/b", "../x", "é", "_lead", None, 3, "a\nb"])
def test_invalid_grader_names(name):
    with pytest.raises(ValidationError):
        validate_grader(name)


@pytest.mark.parametrize("grade", [0, 1, 2, 3])
def test_valid_grades(grade):
    assert validate_grade(grade) == grade


@pytest.mark.parametrize("grade", [-1, 4, 2.0, 2.5, "2", True, None, [2]])
def test_invalid_grades(grade):
    with pytest.raises(ValidationError):
        validate_grade(grade)


def test_object_ids_must_exist_and_have_the_catalogues_type():
    integers = pd.Index(np.array([5, 7, 9], dtype=np.int64))
    assert validate_object_id(7, integers) == 7
    assert validate_object_id("9", integers) == 9
    for bad in (8, "8", "x", 7.0, True, None, "1" * 30):
        with pytest.raises(ValidationError):
            validate_object_id(bad, integers)
    strings = pd.Index(["J0101+0101", "J0202-0202"], dtype=object)
    assert validate_object_id("J0101+0101", strings) == "J0101+0101"
    for bad in ("J9999", 1, "", None):
        with pytest.raises(ValidationError):
            validate_object_id(bad, strings)


# --- the store -------------------------------------------------------------------------


def test_store_appends_revisions_and_reads_the_latest(tmp_path):
    store = GradeStore(tmp_path)
    assert store.read().empty and store.latest_for("alice").empty
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    store.append("alice", 5, 1, when=t0)
    store.append("bob", 5, 3, when=t0 + timedelta(seconds=1))
    store.append("alice", 5, 2, when=t0 + timedelta(seconds=2))
    history = pd.read_parquet(tmp_path / "inspections.parquet")
    assert list(history.columns) == ["grader", "object_id", "grade", "graded_utc"]
    assert len(history) == 3 and str(history["graded_utc"].dt.tz) == "UTC"
    latest = GradeStore(tmp_path).latest_for("alice")  # a new store, as after a restart
    assert latest[["object_id", "grade"]].values.tolist() == [[5, 2]]


def test_concurrent_appends_lose_no_grade(tmp_path):
    store = GradeStore(tmp_path)
    other = GradeStore(tmp_path)  # a second server on the same run directory
    errors: list[BaseException] = []

    def grade_many(target: GradeStore, grader: str) -> None:
        try:
            for k in range(15):
                target.append(grader, k, k % 4)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=grade_many, args=(s, f"g{k}")) for k, s in enumerate([store, other] * 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    table = store.read()
    assert len(table) == 60
    assert table.groupby("grader").size().to_dict() == {f"g{k}": 15 for k in range(4)}


def test_string_object_ids_are_stored_as_strings(tmp_path):
    store = GradeStore(tmp_path, pa.string())
    store.append("alice", "J0101+0101", 3)
    assert store.read()["object_id"].tolist() == ["J0101+0101"]
