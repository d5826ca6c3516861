"""Hostile and broken inputs: each is refused with one line naming what to fix, or handled.

One test (or one parametrised table) per defect of the fault-injection report, most
severe first. Most cases are refused before any cluster starts, so they run in well
under a second each; the few that need a run use the small session fixtures.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from astropy.io import fits

from pipeline import store
from pipeline.config import Settings, SettingsError, resolve
from pipeline.images import clear_cache, read_image
from pipeline.plan import select
from pipeline.run import run_with_client
from pipeline.where import WhereError
from run_survey import EXIT_INCOMPLETE, incomplete, main
from tests.test_faults import settings_for


def cli_error(capsys, *argv: str) -> str:
    """Run the command line, expect exit status 2 and one line on stderr; return that line."""
    code = main(list(argv))
    captured = capsys.readouterr()
    assert code == 2, captured
    error = captured.err.strip()
    assert error.count("\n") == 0, error
    assert "Traceback" not in captured.err
    return error


def copy_survey(survey, root: Path, change=None) -> str:
    """The survey's tiles copied under ``root``, each passed through ``change(tile, band, hdu)``.

    Returns the new image pattern; the catalogue stays where it is.
    """
    root.mkdir(parents=True, exist_ok=True)
    for tile in survey.tiles:
        for band in survey.bands:
            with fits.open(survey.image_pattern.format(tile=tile, band=band)) as hdul:
                hdu = fits.PrimaryHDU(hdul[0].data.copy(), hdul[0].header.copy())
            hdu = change(tile, band, hdu) if change else hdu
            hdu.writeto(root / f"{tile}_{band}.fits")
    return str(root / "{tile}_{band}.fits")


def quiet(_: str) -> None:
    pass


def base_args(tmp_path, **extra: str) -> list[str]:
    args = {"--images": str(tmp_path / "{tile}_{band}.fits"), "--catalog": str(tmp_path / "cat.csv"),
            "--out": str(tmp_path / "out"), **extra}
    return [item for pair in args.items() for item in pair] + ["--no-progress"]


# -- 1. --where never executes code ---------------------------------------------------------

INJECTIONS = [
    "mag_r > @pd.io.common.os.system('touch {sentinel}')",
    "mag_r.to_csv('{sentinel}')",
    "mag_r > __import__('os').system('touch {sentinel}')",
    "open('{sentinel}', 'w')",
    "mag_r > (lambda: __import__('os').system('touch {sentinel}'))()",
    "mag_r.__class__.__mro__[-1] is None",
    "[x for x in ().__class__.__base__.__subclasses__()]",
    "mag_r > ''.join('touch {sentinel}')",
    "print('{sentinel}')",
]


@pytest.mark.parametrize("template", INJECTIONS)
def test_where_that_would_run_code_is_refused_on_the_command_line(template, tmp_path, capsys):
    sentinel = tmp_path / "pwned"
    error = cli_error(capsys, *base_args(tmp_path, **{"--where": template.format(sentinel=sentinel)}))
    assert error.startswith("run_survey.py: error: --where")
    assert "allowed:" in error or "unsupported" in error or "syntax" in error
    assert not sentinel.exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("template", INJECTIONS[:3])
def test_where_that_would_run_code_is_refused_in_yaml(template, tmp_path, capsys):
    sentinel = tmp_path / "pwned"
    config = tmp_path / "survey.yaml"
    config.write_text(yaml.safe_dump({"where": template.format(sentinel=sentinel)}))
    cli_error(capsys, *base_args(tmp_path, **{"--config": str(config)}))
    assert not sentinel.exists()


@pytest.mark.parametrize("template", INJECTIONS)
def test_where_evaluation_itself_refuses_code(template, tmp_path):
    """The planner's own entry point refuses too, whoever calls it (not only the settings check)."""
    sentinel = tmp_path / "pwned"
    catalog = pd.DataFrame({"id": [1, 2], "ra": [1.0, 2.0], "dec": [0.0, 0.0], "mag_r": [20.0, 23.0]})
    with pytest.raises(WhereError):
        select(catalog, template.format(sentinel=sentinel))
    assert not sentinel.exists()


CATALOG = pd.DataFrame({
    "id": [1, 2, 3, 4, 5],
    "mag_r": [20.0, 23.0, np.nan, 21.5, 22.0],
    "flag": [0, 1, 0, 0, 2],
    "band": ["g", "r", "g", "i", "z"],
})


@pytest.mark.parametrize("expression", [
    "mag_r < 22 and flag == 0",
    "(mag_r < 22) & (flag == 0)",
    "mag_r < 21 or flag == 1",
    "(mag_r < 21) | (flag > 1)",
    "not (mag_r < 22)",
    "~(mag_r < 22)",
    "20.5 < mag_r <= 22",
    "band in ['g', 'i']",
    "band not in ('g',)",
    "mag_r * 2 - 1 > 42",
    "flag % 2 == 0",
    "flag != 0",
    "band == 'r'",
    "-mag_r < -21",
])
def test_allowed_where_expressions_select_what_pandas_query_selects(expression):
    expected = CATALOG.eval(expression).to_numpy()
    np.testing.assert_array_equal(select(CATALOG, expression), expected)


def test_where_functions_and_backtick_names():
    frame = CATALOG.assign(**{"mag r": CATALOG["mag_r"]})
    np.testing.assert_array_equal(select(frame, "isnan(mag_r)"), [False, False, True, False, False])
    np.testing.assert_array_equal(select(frame, "abs(`mag r` - 22) < 0.6"), [False, False, False, True, True])
    np.testing.assert_array_equal(select(frame, "isfinite(mag_r) and log10(mag_r) > 1.34"),
                                  np.log10(frame["mag_r"].fillna(1)) > 1.34)


def test_where_on_nullable_columns_counts_missing_as_false():
    frame = pd.DataFrame({"n": pd.array([1, None, 3], dtype="Int64"),
                          "ok": pd.array([True, None, False], dtype="boolean")})
    np.testing.assert_array_equal(select(frame, "n > 1"), [False, False, True])
    np.testing.assert_array_equal(select(frame, "ok and n >= 1"), [True, False, False])
    np.testing.assert_array_equal(select(frame, "n in [1, 3]"), [True, False, True])


@pytest.mark.parametrize("expression, message", [
    ("mag_r << 2", "unsupported syntax: the operator LShift"),
    ("mag_r <", "syntax error"),
    ("mag_r is None", "unsupported syntax: the comparison 'is'"),
    ("mag_r", "must be a condition"),
    ("magnitude < 3", "no column named 'magnitude'"),
    ("band * 1000000000 == 'a'", "arithmetic needs numeric columns"),
    ("mag_r and flag", "'and' needs conditions"),
    ("sqrt(mag_r, 2) > 1", "takes exactly one argument"),
    ("system(mag_r) > 1", "a call of system()"),
    ("band in mag_r", "'in' needs a list of constants"),
    ("mag_r" + " + mag_r" * 3000 + " > 1", "at most 4096"),
])
def test_bad_where_expressions_say_what_is_allowed(expression, message):
    with pytest.raises(WhereError, match=None) as raised:
        select(CATALOG, expression)
    text = str(raised.value)
    assert message in text
    assert text.startswith("--where")
    assert "PandasExprVisitor" not in text and "\n" not in text


def test_where_syntax_error_reports_the_allowed_language_on_the_command_line(tmp_path, capsys):
    error = cli_error(capsys, *base_args(tmp_path, **{"--where": "mag_r << 2"}))
    assert "--where 'mag_r << 2': unsupported syntax" in error
    assert "allowed: column names" in error


# -- 3. YAML values are type-checked -------------------------------------------------------

@pytest.mark.parametrize("yaml_text, message", [
    ("force: 'no'\n", "setting force (--force, or 'force:' in a --config file) must be true or false, not 'no'"),
    ("force: 'yes'\n", "write true or false without quotes"),
    ("tta: 1\n", "setting tta"),
    ("workers: two\n", "setting workers (--workers, or 'workers:' in a --config file) must be an integer"),
    ("shard_size: '64'\n", "write the number without quotes"),
    ("shard_size: 64.5\n", "setting shard_size"),
    ("bands: 5\n", "setting bands must be a comma-separated string"),
    ("bands: [g, 2, i]\n", "setting bands must be a comma-separated string"),
    ("target_prevalence: abc\n", "setting target_prevalence"),
    ("target_prevalence: true\n", "setting target_prevalence"),
    ("model: [a, b]\n", "setting model"),
    ("hats_min_rows: 1e6\n", "setting hats_min_rows"),
    ("demo: 'false'\n", "setting demo"),
    ("seed: null\n", "setting seed"),
])
def test_yaml_values_of_the_wrong_type_are_one_line_errors(yaml_text, message, tmp_path, capsys):
    config = tmp_path / "survey.yaml"
    config.write_text(yaml_text)
    (tmp_path / "out").mkdir()
    marker = tmp_path / "out" / "keep.txt"
    marker.write_text("an earlier run")
    error = cli_error(capsys, *base_args(tmp_path, **{"--config": str(config)}))
    assert message in error
    assert marker.read_text() == "an earlier run"  # force: 'no' must not discard anything


def test_yaml_types_that_are_right_are_accepted(tmp_path):
    config = tmp_path / "survey.yaml"
    config.write_text("images: t/{tile}_{band}.fits\ncatalog: c.csv\nout: o\nforce: no\ntta: yes\n"
                      "target_prevalence: 1e-3\ndemo_lens_fraction: 0\nworkers: null\nbands: [g, r, i]\n"
                      "where: mag_r < 22\n")
    settings = resolve(config)
    assert settings.force is False and settings.tta is True
    assert settings.target_prevalence == pytest.approx(1e-3)
    assert settings.workers is None and settings.bands == ["g", "r", "i"]


def test_settings_made_in_code_are_type_checked_too():
    with pytest.raises(SettingsError, match="setting shard_size"):
        Settings(images="t/{tile}.fits", catalog="c.csv", out="o", shard_size="64").validate()
    with pytest.raises(SettingsError, match="setting force"):
        Settings(images="t/{tile}.fits", catalog="c.csv", out="o", force="no").validate()


# -- 2. scaled integer tiles; a run that lost a tile or every object exits non-zero ------------

def _scaled_int16(tile, band, hdu):
    hdu.scale("int16", option="minmax")
    return hdu


def _uint16(tile, band, hdu):
    data = hdu.data
    counts = np.clip(np.round((data - np.nanmin(data)) * 100), 0, 65535).astype(np.uint16)
    return fits.PrimaryHDU(counts, hdu.header)  # astropy writes uint16 as int16 with BZERO = 32768


@pytest.mark.parametrize("bitpix, convert", [("int16 BSCALE/BZERO", _scaled_int16), ("uint16", _uint16)])
def test_scaled_integer_images_are_read_as_physical_values(tiny_survey, tmp_path, bitpix, convert):
    pattern = copy_survey(tiny_survey, tmp_path, convert)
    path = pattern.format(tile=tiny_survey.tiles[0], band="g")
    with fits.open(path, do_not_scale_image_data=True) as hdul:
        header, raw = hdul[0].header, hdul[0].data
        assert raw.dtype.kind == "i" and "BZERO" in header
        expected = raw * float(header.get("BSCALE", 1)) + float(header["BZERO"])
    clear_cache()
    image = read_image(path)
    assert image.dtype == np.float32
    np.testing.assert_allclose(image, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def test_blank_pixels_of_integer_images_become_nan(tmp_path):
    data = np.arange(64, dtype=np.int16).reshape(8, 8)
    hdu = fits.PrimaryHDU(data)
    hdu.header["BLANK"] = 5
    hdu.writeto(tmp_path / "blank.fits")
    image = read_image(tmp_path / "blank.fits")
    assert np.isnan(image[0, 5]) and np.isfinite(image).sum() == 63
    assert image[1, 0] == 8.0


def test_a_survey_of_scaled_int16_tiles_is_cut_and_scored(tiny_survey, tiny_model, client, tmp_path):
    pattern = copy_survey(tiny_survey, tmp_path / "tiles", _scaled_int16)
    result = run_with_client(settings_for(tiny_survey, tiny_model, tmp_path / "out", images=pattern), client,
                             log=quiet)
    assert result.summary["failures_by_reason"] == {"off_footprint": 3}
    assert result.summary["unreadable_tiles"] == []
    stamps = store.read_stamps(result.store, 0, 4)
    assert np.isfinite(stamps).any() and np.nanstd(stamps) > 0


@pytest.mark.parametrize("summary, expected", [
    ({"catalogue_objects": 10, "scored": 10, "failed": 0, "failures_by_reason": {}, "unreadable_tiles": []}, None),
    ({"catalogue_objects": 10, "scored": 7, "failed": 3, "failures_by_reason": {"off_footprint": 3},
      "unreadable_tiles": []}, None),
    ({"catalogue_objects": 10, "scored": 6, "failed": 4, "failures_by_reason": {"unreadable_tile": 4},
      "unreadable_tiles": ["t01"]}, "1 tile(s) could not be read (t01)"),
    ({"catalogue_objects": 10, "scored": 0, "failed": 10, "failures_by_reason": {"empty_stamp": 10},
      "unreadable_tiles": []}, "no object was scored: all 10 failed (empty_stamp 10)"),
])
def test_incomplete_runs_are_summarised_in_one_line(summary, expected):
    problem = incomplete(summary, "out/failures.parquet")
    if expected is None:
        assert problem is None
    else:
        assert expected in problem and "\n" not in problem


@pytest.mark.filterwarnings("ignore:File may have been truncated")
def test_a_run_that_lost_a_tile_exits_non_zero_naming_it(tiny_survey, tiny_model, client, tmp_path, capsys):
    pattern = copy_survey(tiny_survey, tmp_path / "tiles")
    broken = Path(pattern.format(tile=tiny_survey.tiles[1], band="r"))
    raw = broken.read_bytes()
    broken.write_bytes(raw[: len(raw) // 2])  # the header survives, the data do not
    code = main(["--images", pattern, "--catalog", str(tiny_survey.catalog_path), "--model", str(tiny_model),
                 "--out", str(tmp_path / "out"), "--scheduler", client.scheduler.address, "--no-progress",
                 "--shard-size", "16", "--batch-size", "16", "--threads-per-worker", "1"])
    captured = capsys.readouterr()
    assert code == EXIT_INCOMPLETE
    error = captured.err.strip().splitlines()
    assert len([line for line in error if "error:" in line]) == 1
    line = next(line for line in error if "error:" in line)
    assert f"tile(s) could not be read ({tiny_survey.tiles[1]})" in line
    assert (tmp_path / "out" / "candidates.parquet").is_file()


# -- 4, 5, 14. catalogues with nothing to cut, missing ids, odd coordinates -------------------

def _catalog_variant(tiny_survey, tmp_path, change) -> Path:
    frame = pd.read_parquet(tiny_survey.catalog_path)
    path = tmp_path / "catalog.csv"
    changed = change(frame)
    if isinstance(changed, str):
        path.write_text(changed)
    else:
        changed.to_csv(path, index=False)
    return path


def _with_nan_id(frame):
    frame = frame.astype({"id": "float64"})
    frame.loc[7, "id"] = np.nan
    return frame


def _all_off_footprint(frame):
    return frame.assign(dec=frame["dec"] - 30)


@pytest.mark.parametrize("change, extra, message", [
    (lambda frame: "", [], "could not be read"),
    (lambda frame: "id,ra,dec,mag_r\n", [], "has no rows"),
    (lambda frame: frame, ["--where", "mag_r > 99"], "nothing to cut: none of the 63 catalogue objects"),
    (_all_off_footprint, [], "nothing to cut"),
    (lambda frame: frame.assign(ra=frame["ra"].map(lambda ra: f"{ra}deg")), [], "column ra holds 63 value(s) that are not numbers"),
    (_with_nan_id, [], "1 row(s) have no id (data rows 8)"),
    (lambda frame: frame.assign(id=frame["id"].where(frame.index != 3, frame["id"][2])), [], "duplicate id"),
])
def test_catalogues_with_nothing_to_cut_or_bad_ids_are_refused_before_anything_starts(
        tiny_survey, tiny_model, tmp_path, capsys, change, extra, message):
    catalog = _catalog_variant(tiny_survey, tmp_path, change)
    error = cli_error(capsys, "--images", tiny_survey.image_pattern, "--catalog", str(catalog),
                      "--model", str(tiny_model), "--out", str(tmp_path / "out"), "--no-progress", *extra)
    assert message in error
    assert str(catalog) in error or "nothing to cut" in error
    assert not (tmp_path / "out").exists()  # nothing written, so no --force needed afterwards


def test_ra_is_wrapped_into_0_360_and_objects_land_on_the_same_tiles(tiny_survey, tiny_model, tmp_path):
    from pipeline.run import prepare_run

    def shifted(frame):
        frame = frame.copy()
        frame.loc[::2, "ra"] -= 360.0
        frame.loc[1::4, "ra"] += 720.0
        frame.loc[5, "dec"] = 91.0
        return frame

    original = prepare_run(settings_for(tiny_survey, tiny_model, tmp_path / "a"), quiet)
    messages: list[str] = []
    catalog = _catalog_variant(tiny_survey, tmp_path, shifted)
    wrapped = prepare_run(settings_for(tiny_survey, tiny_model, tmp_path / "b", catalog=str(catalog)),
                          messages.append)
    assert wrapped.catalog["ra"].between(0, 360, inclusive="left").all()
    np.testing.assert_allclose(wrapped.catalog["ra"], original.catalog["ra"], atol=1e-9)
    assert any("wrapped" in message and "ra value(s) outside [0, 360)" in message for message in messages)
    kept = original.plan.objects[original.plan.objects["row"] != 5].reset_index(drop=True)
    pd.testing.assert_frame_equal(wrapped.plan.objects[["row", "tile", "x_px", "y_px"]].reset_index(drop=True),
                                  kept[["row", "tile", "x_px", "y_px"]], atol=1e-6)
    bad = wrapped.plan.failures[wrapped.plan.failures["row"] == 5]
    assert list(bad["reason"]) == ["invalid_coordinates"] and "|dec| > 90" in bad["detail"].iloc[0]


# -- 6. the Dask dashboard listens on loopback unless told otherwise ---------------------------

@pytest.mark.parametrize("flags, expected", [([], "127.0.0.1:8787"), (["--dashboard-address", ":8790"], ":8790")])
def test_dashboard_binds_to_loopback_by_default(monkeypatch, tmp_path, flags, expected):
    import pipeline.cluster as cluster
    from run_survey import build_parser

    seen = {}

    class FakeCluster:
        def __init__(self, **kwargs):
            seen.update(kwargs)

    monkeypatch.setattr(cluster, "LocalCluster", FakeCluster)
    args = vars(build_parser().parse_args(base_args(tmp_path) + flags))
    for command_only in ("config", "dry_run", "print_config", "log_level"):  # not settings
        args.pop(command_only, None)
    args["device"] = "cpu"  # the CPU layout also on a machine with GPUs
    cluster._start_cluster(resolve(None, **args))
    assert seen["dashboard_address"] == expected


# -- 8. corrupt checkpoints are refused before any worker starts ------------------------------

def _truncate(directory: Path) -> None:
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _config_edit(**changes):
    def edit(directory: Path) -> None:
        import json

        config = json.loads((directory / "config.json").read_text())
        config.update(changes)
        (directory / "config.json").write_text(json.dumps(config))
    return edit


@pytest.mark.parametrize("damage, message", [
    (_truncate, "model.safetensors cannot be read"),
    (lambda d: (d / "model.safetensors").write_bytes(b""), "model.safetensors cannot be read"),
    (lambda d: (d / "config.json").write_text("{not json"), "config.json is not valid JSON"),
    (lambda d: (d / "config.json").write_text(""), "config.json is not valid JSON"),
    (lambda d: (d / "config.json").write_text("[1, 2]"), "config.json must hold a JSON object"),
    (_config_edit(architecture="lensresnet-small"), "does not fit architecture 'lensresnet-small'"),
    (_config_edit(architecture="no-such-net"), "names architecture 'no-such-net', which is not registered"),
    (_config_edit(bands="gri"), "bands must be a list"),
    (_config_edit(bands=["g", "r", "i", "z"]), "does not fit architecture 'lensresnet-tiny' with 4 band(s)"),
    (_config_edit(stamp_size_px="32"), "stamp_size_px must be a positive integer"),
    (_config_edit(normalisation="rot13"), "normalisation 'rot13' is not one of"),
    (lambda d: (d / "model.safetensors").unlink(), "lacks model.safetensors"),
])
def test_corrupt_checkpoints_are_one_line_errors_before_anything_is_written(
        tiny_survey, tiny_model, tmp_path, capsys, damage, message):
    checkpoint = tmp_path / "model"
    shutil.copytree(tiny_model, checkpoint)
    damage(checkpoint)
    error = cli_error(capsys, "--images", tiny_survey.image_pattern, "--catalog", str(tiny_survey.catalog_path),
                      "--model", str(checkpoint), "--out", str(tmp_path / "out"), "--no-progress")
    assert message in error
    assert str(checkpoint) in error
    assert not (tmp_path / "out").exists()


# -- 9, 13. unusable output directories; one run per directory --------------------------------

def _run_args(tiny_survey, tiny_model, out) -> list[str]:
    return ["--images", tiny_survey.image_pattern, "--catalog", str(tiny_survey.catalog_path),
            "--model", str(tiny_model), "--out", str(out), "--no-progress"]


@pytest.mark.parametrize("layout, message", [
    ("file", "is a file, not a directory"),
    ("under_file", "a part of the path is a file"),
])
def test_unusable_out_is_a_one_line_error(tiny_survey, tiny_model, tmp_path, capsys, layout, message):
    blocker = tmp_path / "taken"
    blocker.write_text("not a directory")
    out = blocker if layout == "file" else blocker / "run"
    error = cli_error(capsys, *_run_args(tiny_survey, tiny_model, out))
    assert message in error and str(out) in error
    assert blocker.read_text() == "not a directory"


@pytest.mark.skipif(hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0,
                    reason="root may write into read-only directories")
def test_read_only_out_is_a_one_line_error(tiny_survey, tiny_model, tmp_path, capsys):
    out = tmp_path / "readonly"
    out.mkdir()
    out.chmod(0o500)
    try:
        error = cli_error(capsys, *_run_args(tiny_survey, tiny_model, out))
    finally:
        out.chmod(0o700)
    assert "is not writable" in error and str(out) in error


def test_write_failures_inside_out_are_one_line_errors(tiny_survey, tiny_model, tmp_path, capsys, monkeypatch):
    """A refusal from the file system mid-run (here: a full disk) names the file, no traceback."""
    import pipeline.run as run_module

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "out" / "run.yaml"))

    monkeypatch.setattr(run_module.Settings, "save", full_disk)
    monkeypatch.setattr(run_module, "make_client", lambda settings: __import__("contextlib").nullcontext(None))
    error = cli_error(capsys, *_run_args(tiny_survey, tiny_model, tmp_path / "out"))
    assert "run.yaml: No space left on device" in error


def test_a_second_run_on_a_locked_out_says_who_holds_it(tiny_survey, tiny_model, tmp_path, capsys):
    import subprocess
    import sys

    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pipeline.resume import locked_output\n"
         f"with locked_output({str(out)!r}):\n    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    try:
        assert holder.stdout.readline().strip() == "locked"
        error = cli_error(capsys, *_run_args(tiny_survey, tiny_model, out))
        assert f"--out {out} is in use by another run (pid {holder.pid} on host" in error
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing of the second run was written
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_released_and_reentrant(tmp_path):
    from pipeline.resume import locked_output

    with locked_output(tmp_path / "out") as root:
        with locked_output(tmp_path / "out"):
            assert "pid" in (root / ".lock").read_text()
        assert "pid" in (root / ".lock").read_text()
    with locked_output(tmp_path / "out"):  # taken again after release
        pass
    assert (tmp_path / "out" / ".lock").read_text() == ""


# -- 10. band order: the model's config is the truth -------------------------------------------

def test_bands_in_another_order_are_matched_by_name(tiny_survey, tiny_model, tmp_path):
    from pipeline.run import prepare_run

    messages: list[str] = []
    prepared = prepare_run(settings_for(tiny_survey, tiny_model, tmp_path / "out", bands=["i", "r", "g"]),
                           messages.append)
    assert prepared.bands == ["g", "r", "i"]
    for tile in prepared.tiles:
        assert list(tile.paths) == ["g", "r", "i"]
        assert all(path.endswith(f"_{band}.fits") for band, path in tile.paths.items())
    assert any("matched by name" in message for message in messages)


@pytest.mark.parametrize("bands, outcome", [
    (["g", "r", "i"], ["g", "r", "i"]),
    (["r", "i", "g"], ["g", "r", "i"]),
    (["HSC-G", "HSC-R", "HSC-I"], ["HSC-G", "HSC-R", "HSC-I"]),  # the survey's own names, by position
    (["g", "HSC-R", "i"], ["g", "HSC-R", "i"]),
    (["r", "g", "z"], "puts band r at position 1, but it is channel 2"),
    (["g", "r"], "gives 2 band(s) but the model takes 3"),
])
def test_band_lists_map_by_name_or_position_never_by_accident(bands, outcome, tmp_path):
    from pipeline.run import resolve_bands

    if isinstance(outcome, list):
        assert resolve_bands(bands, ["g", "r", "i"], tmp_path, quiet) == outcome
    else:
        with pytest.raises(SettingsError, match="config.json") as raised:
            resolve_bands(bands, ["g", "r", "i"], tmp_path, quiet)
        assert outcome in str(raised.value)


# -- 11. a tile without a celestial WCS fails its objects as unreadable_tile -------------------

def _without_wcs(survey, bands):
    first = survey.tiles[0]

    def change(tile, band, hdu):
        if tile == first and band in bands:
            return fits.PrimaryHDU(hdu.data)  # pixels only: no WCS keywords at all
        return hdu
    return change


@pytest.mark.parametrize("stripped", [("r",), ("g", "r", "i")])
def test_a_tile_without_wcs_fails_its_objects_as_unreadable_tile(tiny_survey, tiny_model, tmp_path, stripped):
    from pipeline.run import prepare_run

    pattern = copy_survey(tiny_survey, tmp_path / "tiles", _without_wcs(tiny_survey, stripped))
    reference = prepare_run(settings_for(tiny_survey, tiny_model, tmp_path / "a"), quiet)
    prepared = prepare_run(settings_for(tiny_survey, tiny_model, tmp_path / "b", images=pattern), quiet)
    first = tiny_survey.tiles[0]
    failures = prepared.plan.failures.set_index("row")
    only_on_first = set(reference.plan.objects["row"]) - set(prepared.plan.objects["row"])
    assert only_on_first and set(failures.loc[sorted(only_on_first), "reason"]) == {"unreadable_tile"}
    assert failures.loc[sorted(only_on_first), "detail"].str.contains(first).all()
    assert failures.loc[sorted(only_on_first), "detail"].str.contains("celestial WCS").all()
    off = reference.plan.failures["row"]
    if len(stripped) < 3:  # another band's WCS gives the footprint: off-footprint objects stay so
        assert set(failures.loc[off, "reason"]) == {"off_footprint"}
    else:  # no footprint: the planner cannot tell, and says so
        assert set(failures.loc[off, "reason"]) == {"unreadable_tile"}
        assert failures.loc[off, "detail"].str.contains("footprint is unknown").all()


def test_no_readable_tile_at_all_is_refused(tiny_survey, tiny_model, tmp_path, capsys):
    pattern = copy_survey(tiny_survey, tmp_path / "tiles", lambda tile, band, hdu: fits.PrimaryHDU(hdu.data))
    error = cli_error(capsys, "--images", pattern, "--catalog", str(tiny_survey.catalog_path),
                      "--model", str(tiny_model), "--out", str(tmp_path / "out"), "--no-progress")
    assert "no tile could be read" in error and "has no celestial WCS" in error


# -- 15. a missing band says where the band names came from -------------------------------------

def test_a_missing_band_names_the_model_config_as_the_source_of_band_names(tiny_survey, tiny_model, tmp_path,
                                                                           capsys):
    pattern = copy_survey(tiny_survey, tmp_path / "tiles")
    for tile in tiny_survey.tiles:
        Path(pattern.format(tile=tile, band="i")).rename(tmp_path / "tiles" / f"{tile}_I.fits")
    error = cli_error(capsys, "--images", pattern, "--catalog", str(tiny_survey.catalog_path),
                      "--model", str(tiny_model), "--out", str(tmp_path / "out"), "--no-progress")
    assert "lack bands" in error
    assert f"band names g,r,i from {tiny_model / 'config.json'}" in error and "--bands" in error


# -- 12. deeply nested JSON in a grade POST is a 400, not an uncaught RecursionError ----------

@pytest.mark.parametrize("body", [
    "[" * 2000 + "]" * 2000,
    '{"grader": "alice", "object_id": ' + "[" * 1900 + "]" * 1900 + ', "grade": 2}',
])
def test_deeply_nested_grade_posts_are_refused_with_400(tiny_model, tmp_path, body):
    from catalogs.inspect.cache import MapSettings, build_cache
    from catalogs.inspect.data import open_run
    from catalogs.inspect.server import InspectionApp, make_server, serve_in_thread
    from tests.test_inspect_server import post_grade, request, write_run

    run = open_run(write_run(tmp_path / "run", tiny_model, n=3), 3)
    server = make_server(InspectionApp(run, build_cache(run, MapSettings(enabled=False))), "127.0.0.1", 0)
    serve_in_thread(server)
    try:
        assert len(body) <= 4096
        status, _, answer = request(server, "POST", "/api/grades", body, {"Content-Type": "application/json"})
        assert status == 400
        assert json.loads(answer) == {"error": "the body is nested too deeply"}
        # The server is still answering.
        object_id = json.loads(request(server, "GET", "/api/candidates")[2])["candidates"][0]["object_id"]
        assert post_grade(server, {"grader": "alice", "object_id": object_id, "grade": 2})[0] == 201
    finally:
        server.shutdown()
        server.server_close()
