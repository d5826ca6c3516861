"""The ``lensfinder`` command and run_survey.py's --version, --print-config, --dry-run, --log-level."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import run_survey
from lensfinder import cli
from lensfinder.example_config import descriptions, example_yaml
from pipeline.config import Settings, load_yaml, resolve

ROOT = Path(__file__).resolve().parent.parent


def lensfinder(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lensfinder", *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


def test_version_everywhere():
    from pipeline.version import code_version

    for result in (lensfinder("--version"),
                   subprocess.run([sys.executable, "run_survey.py", "--version"], capture_output=True, text=True,
                                  timeout=60, cwd=ROOT)):
        assert result.returncode == 0
        assert code_version() in result.stdout and "lensfinder" in result.stdout
    report = lensfinder("version")
    assert report.returncode == 0
    names = {line.split()[0] for line in report.stdout.splitlines()}
    assert {"lensfinder", "python", "torch", "dask", "zarr", "cuda"} <= names


def test_help_lists_every_subcommand():
    result = lensfinder("--help")
    assert result.returncode == 0
    for name in ("run", "rescore", "train", "evaluate", "compare", "build", "adapt", "inspect", "card", "version"):
        assert f"\n  {name} " in result.stdout


@pytest.mark.parametrize(("argv", "module", "expected"), [
    (["run", "--images", "t/{tile}.fits"], "run_survey", ["--images", "t/{tile}.fits"]),
    (["run", "--rescore", "run1", "--model", "m"], "run_survey", ["--rescore", "run1", "--model", "m"]),
    (["rescore", "run1", "--model", "run1/adapted"], "run_survey", ["--rescore", "run1", "--model", "run1/adapted"]),
    (["rescore", "--help"], "run_survey", ["--help"]),
    (["adapt", "run1/", "--seed", "3"], "pipeline.adapt", ["run1/", "--seed", "3"]),
    (["train", "--config", "t.yaml"], "lensnet.train", ["--config", "t.yaml"]),
    (["evaluate", "--model", "default"], "lensnet.evaluate", ["--model", "default"]),
    (["compare", "--architectures", "a,b"], "lensnet.compare", ["--architectures", "a,b"]),
    (["build", "--config", "r.yaml", "--out", "m"], "lensnet.build", ["--config", "r.yaml", "--out", "m"]),
    (["inspect", "run1", "--top", "5"], "catalogs.inspect.__main__", ["run1", "--top", "5"]),
    (["card", "default"], "lensnet.card", ["default"]),
    (["simulate", "--out", "d"], "lensnet.simulate.__main__", ["--out", "d"]),
    (["--log-level", "warning", "run", "--demo"], "run_survey", ["--log-level", "WARNING", "--demo"]),
])
def test_subcommands_call_the_modules_own_main(monkeypatch, argv, module, expected):
    calls = []
    monkeypatch.setattr(importlib.import_module(module), "main", lambda forwarded: calls.append(forwarded) or 0)
    assert cli.main(argv) == 0
    assert calls == [expected]


def test_subcommand_exit_status_is_passed_on(monkeypatch):
    monkeypatch.setattr(importlib.import_module("lensnet.card"), "main", lambda forwarded: 3)
    assert cli.main(["card", "x"]) == 3


def test_user_errors_of_a_subcommand_are_one_line(tmp_path):
    result = lensfinder("card", str(tmp_path / "no-such-model"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "card: error:" in result.stderr and "no-such-model" in result.stderr


def test_unknown_subcommand_is_refused():
    result = lensfinder("fly")
    assert result.returncode == 2 and "invalid choice: 'fly'" in result.stderr


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "lensfinder"
    if not script.exists() and shutil.which("lensfinder") is None:
        pytest.skip("lensfinder is not installed in this environment (pip install -e .)")
    result = subprocess.run([str(script if script.exists() else shutil.which("lensfinder")), "--version"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("lensfinder ")


# --print-config


def test_every_setting_is_documented_in_the_example():
    assert set(descriptions()) == set(Settings.keys())
    text = example_yaml()
    for key in Settings.keys():
        assert f"\n{key}:" in text or f"\n# {key}:" in text, key


def test_printed_config_reads_back_as_the_defaults(tmp_path, capsys):
    assert run_survey.main(["--print-config"]) == 0
    path = tmp_path / "survey.yaml"
    path.write_text(capsys.readouterr().out)
    loaded = load_yaml(path)
    assert set(loaded) == {key for key in Settings.keys() if f"\n{key}:" in path.read_text()}
    settings = resolve(path)
    defaults = Settings(images="tiles/{tile}_{band}.fits", catalog="sources.parquet", out="run1")
    assert settings.to_dict() == defaults.to_dict()


def test_printed_config_carries_the_given_values(tmp_path, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text("catalog: cat.fits\nworkers: 3\n")
    assert run_survey.main(["--config", str(config), "--images", "x/{tile}_{band}.fits", "--bands", "g,r",
                            "--tta", "--print-config"]) == 0
    printed = tmp_path / "printed.yaml"
    printed.write_text(capsys.readouterr().out)
    settings = resolve(printed)
    assert (settings.catalog, settings.workers, settings.images, settings.bands, settings.tta) == (
        "cat.fits", 3, "x/{tile}_{band}.fits", ["g", "r"], True)


def test_print_config_with_a_broken_config_is_one_line(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("wrokers: 3\n")
    assert run_survey.main(["--config", str(config), "--print-config"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "unknown key(s) wrokers" in error


def test_shipped_example_config_is_the_printed_one():
    assert (ROOT / "examples" / "survey.yaml").read_text() == example_yaml(), (
        "regenerate it: python run_survey.py --print-config > examples/survey.yaml")


# --dry-run and --log-level


def dry_run_args(survey, model, out) -> list[str]:
    return ["--images", survey.image_pattern, "--catalog", str(survey.catalog_path), "--model", str(model),
            "--out", str(out), "--shard-size", "16", "--workers", "1", "--threads-per-worker", "1", "--dry-run"]


def test_dry_run_prints_the_plan_and_writes_nothing(tiny_survey, tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_survey.main(dry_run_args(tiny_survey, tiny_model, out)) == 0
    printed = capsys.readouterr().out
    assert not out.exists()
    from lensfinder.dryrun import plan_run

    report = plan_run(resolve(None, **{"images": tiny_survey.image_pattern, "catalog": str(tiny_survey.catalog_path),
                                       "model": str(tiny_model), "out": str(out), "shard_size": 16}),
                      log=lambda _: None, measure=False)
    assert report.catalogue_objects == 63 and report.not_cut == {"off_footprint": 3}
    assert sum(report.objects_per_tile.values()) == report.to_cut == 60
    assert set(report.objects_per_tile) == set(tiny_survey.tiles)
    assert report.shards == -(-60 // 16)
    assert f"to cut and score: {report.to_cut}" in printed and "off_footprint 3" in printed
    assert f"shards: {report.shards} of up to 16 objects" in printed
    for tile, count in report.objects_per_tile.items():
        assert f"  {tile}  {count}" in printed
    assert "estimated time on this machine: about" in printed and "stamps/s measured on cpu" in printed


def test_dry_run_refuses_rescore_and_demo(tmp_path, capsys):
    assert run_survey.main(["--demo", "--out", str(tmp_path / "d"), "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--dry-run" in error
    assert not (tmp_path / "d").exists()


def test_dry_run_with_bad_inputs_is_the_runs_one_line_error(tmp_path, capsys):
    assert run_survey.main(["--images", str(tmp_path / "{tile}_{band}.fits"), "--catalog", str(tmp_path / "no.csv"),
                            "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    assert "no.csv" in capsys.readouterr().err


def test_log_level_warning_silences_progress_lines(tiny_survey, tiny_model, tmp_path, capsys):
    args = dry_run_args(tiny_survey, tiny_model, tmp_path / "out")
    assert run_survey.main(args) == 0
    assert "to cut in" in capsys.readouterr().out  # the run's INFO progress line
    assert run_survey.main([*args, "--log-level", "warning"]) == 0
    quiet = capsys.readouterr().out
    assert "to cut in" not in quiet and "to cut and score" in quiet  # the plan itself is the answer


def test_bad_log_level_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_survey.main(["--log-level", "loud", "--print-config"])
    assert exit_info.value.code == 2 and "--log-level" in capsys.readouterr().err


def test_log_level_sets_dask_workers_level(monkeypatch):
    from lensfinder.logs import configure

    monkeypatch.delenv("DASK_LOGGING__DISTRIBUTED", raising=False)
    import logging

    levels = {name: logging.getLogger(name).level for name in ("", "distributed", "lensfinder")}
    try:
        say = configure("error")
        import os

        assert os.environ["DASK_LOGGING__DISTRIBUTED"] == "error"
        assert logging.getLogger("distributed").level == logging.ERROR
        assert say is not print
        assert configure("debug") is print and os.environ["DASK_LOGGING__DISTRIBUTED"] == "debug"
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    with pytest.raises(ValueError, match="--log-level must be one of"):
        configure("loud")


def test_example_yaml_is_valid_yaml_with_comments():
    text = example_yaml()
    assert text.startswith("# lensfinder run settings")
    assert isinstance(yaml.safe_load(text), dict)
