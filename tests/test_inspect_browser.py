"""A grader's session in a real headless Chromium: name, three keyboard grades, reload.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package
(``deploy/ci/install-browser.sh`` installs them); skips with the reason when any is
missing and never installs anything itself. The run directory is made by the real
pipeline on the tiny mock survey of ``tests/conftest.py``.

A screenshot of the page after the reload is saved to ``$INSPECT_SCREENSHOT`` when set,
else to the test's temporary directory (its path is printed).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from catalogs.inspect.cache import MapSettings, build_cache
from catalogs.inspect.data import open_run
from catalogs.inspect.server import InspectionApp, make_server, serve_in_thread

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("INSPECT_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("INSPECT_CHROMEDRIVER", shutil.which("chromedriver") or "/usr/bin/chromedriver"))
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,1000",
)
TOP = 10
GRADER = "Test Grader"
WAIT_S = 30


def _missing_browser() -> str | None:
    """Why the browser test cannot run here, or None when it can."""
    install = "run deploy/ci/install-browser.sh"
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} ({install})"
    if not CHROMEDRIVER.is_file():
        return f"no chromedriver at {CHROMEDRIVER} (Debian package chromium-driver; {install})"
    if importlib.util.find_spec("selenium") is None:
        return f"the Python package selenium is not installed ({install})"
    return None


# Skip at collection, before the session fixtures start a Dask cluster for nothing.
if (_reason := _missing_browser()) is not None:
    pytest.skip(_reason, allow_module_level=True)


@pytest.fixture(scope="module")
def graded_run(tiny_survey, tiny_model, client, tmp_path_factory) -> Path:
    from pipeline.config import Settings
    from pipeline.run import run_with_client

    out = tmp_path_factory.mktemp("inspect_browser") / "run"
    settings = Settings(
        images=tiny_survey.image_pattern, catalog=str(tiny_survey.catalog_path), bands=list(tiny_survey.bands),
        out=str(out), model=str(tiny_model), progress=False, shard_size=16, batch_size=8, threads_per_worker=1,
    ).validate()
    return run_with_client(settings, client, log=lambda _: None).out


@pytest.fixture
def server(graded_run):
    run = open_run(graded_run, TOP)
    server = make_server(InspectionApp(run, build_cache(run, MapSettings(occlusion_stride_px=8))), "127.0.0.1", 0)
    serve_in_thread(server)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


def _wait(driver, condition, message: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(condition, message)


def _cards(driver):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "article.card")


def _saved(driver) -> dict[str, int]:
    return {card.get_attribute("data-object-id"): int(card.get_attribute("data-grade"))
            for card in _cards(driver) if card.get_attribute("data-status") == "saved"}


def _open(driver, url: str | None) -> None:
    """Load ``url`` (reload the page when None) and wait for the page's script to finish."""
    from selenium.webdriver.common.by import By

    if url is None:
        driver.refresh()
    else:
        driver.get(url)
    _wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true",
          "the page did not finish loading")


def test_a_grader_grades_three_candidates_from_the_keyboard_and_they_survive_a_reload(
    server, browser, graded_run, tmp_path
):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    _open(browser, server.url)
    assert len(_cards(browser)) == TOP
    name = browser.find_element(By.ID, "grader")
    name.clear()
    name.send_keys(GRADER, Keys.ENTER)
    _wait(browser, lambda d: d.find_element(By.ID, "grader-current").is_displayed(), "the name was not taken")

    for key in "320":
        ActionChains(browser).send_keys(key).perform()
    _wait(browser, lambda d: len(_saved(d)) == 3, "three grades were not saved")
    top = pd.read_parquet(graded_run / "candidates.parquet").sort_values("rank").head(4)
    expected = dict(zip(top["object_id"].astype(str).head(3), [3, 2, 0], strict=True))
    assert _saved(browser) == expected
    assert "current" in _cards(browser)[3].get_attribute("class")  # moved on after each grade

    _open(browser, None)
    # The name came back from localStorage and the grades from the server.
    assert browser.find_element(By.ID, "grader").get_attribute("value") == GRADER
    _wait(browser, lambda d: _saved(d) == expected, "the grades did not come back after a reload")
    assert "current" in _cards(browser)[3].get_attribute("class")  # first ungraded
    assert "3 / 10 graded" in browser.find_element(By.ID, "progress").text

    screenshot = Path(os.environ.get("INSPECT_SCREENSHOT") or tmp_path / "inspect_screenshot.png")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(screenshot))
    print(f"screenshot: {screenshot}")

    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors  # no script errors, failed requests or CSP violations

    table = pd.read_parquet(graded_run / "inspections.parquet")
    mine = table[table["grader"] == GRADER]
    assert dict(zip(mine["object_id"].astype(str), mine["grade"].astype(int), strict=True)) == expected
    assert len(mine) == 3 and str(mine["graded_utc"].dt.tz) == "UTC"
