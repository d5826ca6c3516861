"""Installing: setup.cfg, environment.yml, the constraints files and the Makefile agree.

Nothing here installs anything or reaches the network: the files are parsed and compared,
and ``make -n`` prints what the rules would run.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from importlib import import_module
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
#: PyPI name -> conda-forge name(s), where they differ.
CONDA_NAMES = {"torch": ["pytorch"], "dask": ["dask-core", "distributed"]}
#: Packages environment.yml installs with pip because conda-forge does not carry them.
PIP_ONLY = {"caustics"}
#: The test suite's tools: never in a user's environment.
TEST_TOOLS = {"pytest", "hypothesis", "scikit-learn", "duckdb", "selenium"}


def setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser


def requirement_lines(text: str) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def install_requires() -> list[Requirement]:
    return [Requirement(line) for line in requirement_lines(setup_cfg()["options"]["install_requires"])]


def extras() -> dict[str, list[Requirement]]:
    section = setup_cfg()["options.extras_require"]
    return {name: [Requirement(line) for line in requirement_lines(section[name])] for name in section}


def conda_requirement(text: str) -> tuple[str, SpecifierSet]:
    """``numpy>=1.26,<3`` (conda MatchSpec in PEP 440 form) -> ("numpy", SpecifierSet)."""
    match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", text.strip())
    assert match, f"cannot read the conda requirement {text!r}"
    return canonicalize_name(match.group(1)), SpecifierSet(match.group(2).replace(" ", ""))


@pytest.fixture(scope="module")
def environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def test_environment_yml_lists_the_same_dependencies_as_setup_cfg(environment):
    assert environment["name"] == "lensfinder"
    assert "conda-forge" in environment["channels"] and "defaults" not in environment["channels"]
    conda = [item for item in environment["dependencies"] if isinstance(item, str)]
    pip_sections = [item["pip"] for item in environment["dependencies"] if isinstance(item, dict)]
    assert len(pip_sections) == 1
    conda_specs = dict(conda_requirement(item) for item in conda)
    pip_specs = {canonicalize_name(Requirement(item).name): Requirement(item).specifier
                 for item in pip_sections[0] if not item.startswith("-")}
    expected_conda: dict[str, SpecifierSet] = {}
    expected_pip: dict[str, SpecifierSet] = {}
    for requirement in install_requires():
        name = canonicalize_name(requirement.name)
        if name in PIP_ONLY:
            expected_pip[name] = requirement.specifier
        else:
            for conda_name in CONDA_NAMES.get(name, [name]):
                expected_conda[conda_name] = requirement.specifier
    python = conda_specs.pop("python")
    conda_specs.pop("pip")
    assert conda_specs == expected_conda
    assert pip_specs == expected_pip
    assert python == SpecifierSet(setup_cfg()["options"]["python_requires"])
    # lensfinder itself (and its console command) comes from the checkout.
    assert "-e ." in pip_sections[0]


def test_python_requires_is_what_zarr_3_needs():
    requires = SpecifierSet(setup_cfg()["options"]["python_requires"])
    assert Version("3.10") not in requires and Version("3.11") in requires and Version("3.13") in requires


def test_major_versions_that_would_break_us_are_bounded():
    bounded = {canonicalize_name(r.name): r.specifier for r in install_requires()}
    for name, next_major in {"numpy": "3", "pandas": "4", "astropy": "9", "zarr": "4", "torch": "3",
                             "timm": "2", "lenstronomy": "2", "galsim": "3", "caustics": "2", "pyyaml": "7"}.items():
        assert Version(next_major) not in bounded[name], name
    for requirement in install_requires():
        # Every lower bound admits what the tests run with.
        installed = Version(import_module("importlib.metadata").version(requirement.name))
        assert requirement.specifier.contains(installed, prereleases=True), (requirement, installed)


def test_test_tools_only_in_the_test_extra():
    names = {canonicalize_name(r.name) for r in install_requires()}
    assert not names & TEST_TOOLS
    for extra, requirements in extras().items():
        if extra != "test":
            assert not {canonicalize_name(r.name) for r in requirements} & TEST_TOOLS, extra
    assert TEST_TOOLS <= {canonicalize_name(r.name) for r in extras()["test"]}


def test_console_command_is_declared_and_importable():
    entry = setup_cfg()["options.entry_points"]["console_scripts"].strip()
    name, target = (part.strip() for part in entry.split("="))
    assert name == "lensfinder"
    module, function = target.split(":")
    assert callable(getattr(import_module(module), function))


def test_constraints_satisfy_setup_cfg():
    """CI's pinned versions must be installable under setup.cfg's bounds, extras included."""
    pins = {}
    for line in requirement_lines((ROOT / "requirements" / "constraints.txt").read_text()):
        requirement = Requirement(line)
        (specifier,) = list(requirement.specifier)
        assert specifier.operator == "==", line
        pins[canonicalize_name(requirement.name)] = Version(specifier.version)
    assert "torch" not in pins and "lensfinder" not in pins  # torch comes from requirements-torch.txt
    needed = [*install_requires(), *extras()["test"]]
    for requirement in needed:
        name = canonicalize_name(requirement.name)
        if name in ("torch", "torchvision"):
            continue
        assert name in pins, f"{name} is not pinned in requirements/constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (requirement, pins[name])


def test_gpu_constraints_name_the_dask_that_dask_cuda_brings():
    pins = {canonicalize_name(Requirement(line).name): Requirement(line).specifier
            for line in requirement_lines((ROOT / "requirements" / "constraints-gpu.txt").read_text())}
    assert {"dask-cuda", "dask", "distributed"} <= set(pins)
    dask_floor = next(r.specifier for r in install_requires() if canonicalize_name(r.name) == "dask")
    for name in ("dask", "distributed"):
        (pin,) = list(pins[name])
        assert dask_floor.contains(pin.version), f"the GPU install's {name} {pin.version} is below setup.cfg's bound"


def test_lenscat_bound_is_the_one_the_code_accepts():
    LENSCAT_VERSIONS = import_module("catalogs.crossmatch").LENSCAT_VERSIONS

    (line,) = requirement_lines((ROOT / "requirements" / "known-lenses.txt").read_text())
    requirement = Requirement(line)
    assert requirement.name == "lenscat" and requirement.specifier == SpecifierSet(LENSCAT_VERSIONS)
    assert Version("2.0") not in requirement.specifier


def test_license_citation_changelog():
    license_text = (ROOT / "LICENSE").read_text()
    assert "BSD 3-Clause License" in license_text and "Neither the name of the copyright holder" in license_text
    assert setup_cfg()["metadata"]["license"] == "BSD-3-Clause"
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "BSD-3-Clause"
    assert citation["version"] == setup_cfg()["metadata"]["version"]
    assert citation["title"] and citation["authors"] and citation["message"]
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{setup_cfg()['metadata']['version']}]" in changelog and "## [Unreleased]" in changelog


def make_dry_run(*targets: str, **variables: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # A venv path that does not exist, so that every rule would run.
    settings = [f"{key}={value}" for key, value in {"VENV": "/nonexistent/venv", **variables}.items()]
    result = subprocess.run(["make", "-n", *targets, *settings], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_env_installs_no_test_tools_and_make_test_does():
    env = make_dry_run("env")
    assert "-e ." in env and ".[test]" not in env
    assert "--no-deps" in env and "requirements/known-lenses.txt" in env
    assert "torch==" in env
    test = make_dry_run("test")
    assert '-e ".[test]"' in test and "pytest" in test


def test_ci_uses_the_constraints_and_a_user_does_not():
    assert "-c requirements/constraints.txt" in make_dry_run("env", CI="true")
    assert "constraints" not in make_dry_run("env")


def test_make_env_cpu_takes_pytorchs_cpu_wheels():
    output = make_dry_run("env-cpu")
    torch_line = next(line for line in output.splitlines() if "torch==" in line)
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch_line


@pytest.mark.skipif(import_module("importlib.util").find_spec("lenscat") is None, reason="lenscat is not installed")
def test_lenscat_outside_the_bound_is_refused_with_the_install_line(monkeypatch):
    crossmatch = import_module("catalogs.crossmatch")  # the package exports a function of that name

    assert crossmatch.lenscat_csv().name == "catalog.csv"  # the installed one is supported
    monkeypatch.setattr(crossmatch, "lenscat_version", lambda: "2.1.0")
    with pytest.raises(ImportError, match=r"lenscat 2\.1\.0 is installed.*lenscat>=1\.1,<2.*known-lenses\.txt"):
        crossmatch.lenscat_csv()
