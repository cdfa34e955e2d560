"""The Dagster UI in a real browser: headless Chromium (Debian's chromium + chromedriver, driven
by Selenium) against ``dagster-webserver`` on a small project.

A plate is ingested the way the demo launches runs; the browser then opens the asset graph, the
plate's frames with their figure (which must fit the metadata dialog), the ingest job's runs
(the demo's run must be listed) and the Overview timeline, and clicks Materialize on
``frame_catalog``; the run that click launches must succeed (checked through the instance).
Screenshots go to the test's tmp folder and, as ``browser_*.png``, to ``$CELLSCAPE_SCREENSHOTS``
(default ``/work/screens``) when that folder can be made.

The instance uses Dagster's ``DefaultRunCoordinator``: the webserver launches a run at once, so
no daemon is needed (and none of the project's sensors run during the test).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
from processes import stop_process_group

from assets_pkg.core.imaging.simulator import simulate_plates
from assets_pkg.core.plots.figures import METADATA_MAX_WIDTH_PX
from assets_pkg.pipeline import workspace_launcher

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
LOCATION = "assets_pkg.definitions"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1600,1000"]
WAIT_S = 60  # seconds the browser waits for an element

pytestmark = [
    pytest.mark.webserver,
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver; "
                              "scripts/setup installs them when CI=true)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _location_loaded(port: int) -> bool:
    query = "query { workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            entries = json.loads(r.read())["data"]["workspaceOrError"]["locationEntries"]
    except (OSError, KeyError, TypeError):
        return False
    return any(e["name"] == LOCATION and e["loadStatus"] == "LOADED" for e in entries)


class Screens:
    """Numbered screenshots in the test's folder, copied to the coordinator's folder when it can be made."""

    PREFIX = "browser_"

    def __init__(self, driver, folder: Path):
        self.driver, self.folder, self.n = driver, folder, 0
        self.folder.mkdir(parents=True, exist_ok=True)
        self.shared = Path(os.environ.get("CELLSCAPE_SCREENSHOTS", "/work/screens"))
        for old in self.shared.glob(f"{self.PREFIX}*.png"):  # this test's screenshots of an earlier run
            old.unlink(missing_ok=True)

    def shot(self, name: str) -> Path:
        print(f"[browser test] {time.strftime('%H:%M:%S')} {name}", flush=True)
        self.n += 1
        path = self.folder / f"{self.n:02d}_{name}.png"
        self.driver.save_screenshot(str(path))
        try:
            self.shared.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, self.shared / f"{self.PREFIX}{path.name}")
        except OSError:
            pass
        return path


def test_the_ui_shows_figures_lists_demo_runs_and_materializes_frame_catalog(tmp_path, monkeypatch):
    from selenium import webdriver
    from selenium.common.exceptions import (
        ElementClickInterceptedException,
        StaleElementReferenceException,
        TimeoutException,
    )
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    root = tmp_path / "project"
    simulate_plates(root / "data" / "plates", n_plates=1, seed=11, wells=2, fields_per_well=1, field_size=320)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster_home" / "dagster.yaml").read_text() + (
        "\nrun_coordinator:\n  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n"))
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the instance's storage follows $DAGSTER_HOME
    monkeypatch.setenv("CELLSCAPE_ROOT", str(root))
    # Create the instance's SQLite storage before the webserver and the code servers open it: processes
    # that create a fresh schema at once can each stamp it, leaving two alembic heads that no process loads.
    with dg.DagsterInstance.get() as instance:
        instance.get_runs(limit=1)
        instance.all_instigator_state()
        assert not instance.nux_enabled, "dagster.yaml must turn off the first-visit dialog (it covers the page)"
    port = _free_port()
    log_path = tmp_path / "webserver.log"
    log = open(log_path, "w")
    webserver = Path(sys.executable).parent / "dagster-webserver"
    proc = subprocess.Popen(
        [str(webserver), "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    driver = screens = None
    done = False
    try:
        with dg.DagsterInstance.get() as instance:
            assert Path(instance.root_directory) == home
            # while the webserver loads: a plate ingested the way the demo launches runs
            with workspace_launcher(instance, REPO / "workspace.yaml") as launcher:
                instance.add_dynamic_partitions("plates", ["plate01"])
                ingest = launcher.launch("ingest_plate_job", {"ops": {}}, partition_key="plate01")
                # the dataset: no DVC repository here, so dataset_version records the plates unpinned
                dataset = launcher.launch("dataset_job", {"ops": {
                    "dataset_version": {"config": {"pin": False, "push": False}},
                    "dataset_splits": {"config": {"train": 0.5, "valid": 0.5, "test": 0.0, "exclusive_by": "protein"}}}})
            assert ingest.success and dataset.success
            deadline = time.time() + 120
            while not _location_loaded(port):
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.time() < deadline, "the webserver did not load the code location in time"
                time.sleep(1)

            options = webdriver.ChromeOptions()
            options.binary_location = str(CHROMIUM)
            for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path, prefix='chromium-')}"]:
                options.add_argument(flag)
            driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
            wait = WebDriverWait(driver, WAIT_S)
            screens = Screens(driver, tmp_path / "screens")
            base = f"http://127.0.0.1:{port}"

            def text_present(text: str):
                return wait.until(ec.presence_of_element_located((By.XPATH, f"//*[normalize-space()='{text}']")))

            def click(xpath: str):
                """Click what ``xpath`` finds once it is clickable (React may re-render it meanwhile);
                on timeout, say what stood in the way last."""
                why = "no element matched"

                def attempt(d):
                    nonlocal why
                    try:
                        element = ec.element_to_be_clickable((By.XPATH, xpath))(d)
                        if not element:
                            n = len(d.find_elements(By.XPATH, xpath))
                            why = f"{n} element(s) matched, none displayed and enabled" if n else "no element matched"
                            return False
                        element.click()
                        return True
                    except (StaleElementReferenceException, ElementClickInterceptedException) as err:
                        why = f"{type(err).__name__}: {err.msg}"
                        return False
                try:
                    wait.until(attempt)
                except TimeoutException as err:
                    raise TimeoutException(f"nothing clickable at {xpath} within {WAIT_S} s; "
                                           f"last: {why}") from err

            def settled():
                """Give the page up to 20 s to finish its "Loading..." placeholders (for the screenshot)."""
                try:
                    WebDriverWait(driver, 20).until(
                        lambda d: not d.find_elements(By.XPATH, "//*[normalize-space()='Loading...']"))
                except TimeoutException:
                    pass

            # the asset graph of the plate group
            driver.get(f"{base}/locations/{LOCATION}/asset-groups/plates")
            text_present("plate_frames")
            settled()
            screens.shot("asset_graph")

            # the frames of the plate, with their figure in the metadata dialog
            driver.get(f"{base}/assets/plate_frames")
            wait.until(ec.element_to_be_clickable((By.XPATH, "//a[normalize-space()='[Show Markdown]']")))
            screens.shot("plate_frames")
            click("//a[normalize-space()='[Show Markdown]']")
            img = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".bp5-dialog img[alt=frames]")))
            wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img))
            fit = driver.execute_script("""
                const img = arguments[0], dialog = img.closest('.bp5-dialog');
                const body = img.closest('.bp5-dialog > div:nth-child(2)') || img.parentElement;
                return {natural: img.naturalWidth, shown: img.clientWidth, imgRight: img.getBoundingClientRect().right,
                        dialogRight: dialog.getBoundingClientRect().right};""", img)
            screens.shot("frames_figure_dialog")
            assert fit["natural"] <= METADATA_MAX_WIDTH_PX and fit["shown"] == fit["natural"], fit
            assert fit["imgRight"] <= fit["dialogRight"], f"the figure overflows the dialog: {fit}"
            assert "full size" in driver.find_element(By.CSS_SELECTOR, ".bp5-dialog").text
            # (the next page load closes the dialog)

            # the demo's run is listed on its job's page and on the Overview timeline
            driver.get(f"{base}/locations/{LOCATION}/jobs/ingest_plate_job/runs")
            text_present(ingest.run_id[:8])
            screens.shot("ingest_job_runs")
            driver.get(f"{base}/overview/activity/timeline")
            text_present("ingest_plate_job")
            screens.shot("overview_timeline")

            # Materialize frame_catalog from its page; its run must succeed
            before = {r.run_id for r in instance.get_runs()}
            driver.get(f"{base}/assets/frame_catalog")
            click("//button[normalize-space()='Materialize']")
            screens.shot("frame_catalog_launched")
            deadline = time.time() + 180
            run = None
            while time.time() < deadline:
                new = [r for r in instance.get_runs() if r.run_id not in before]
                if new and new[0].is_finished:
                    run = new[0]
                    break
                time.sleep(1)
            assert run is not None, "no frame_catalog run finished: " + log_path.read_text()[-3000:]
            assert run.asset_selection == {dg.AssetKey("frame_catalog")}
            assert run.status == dg.DagsterRunStatus.SUCCESS, log_path.read_text()[-3000:]
            driver.get(f"{base}/runs/{run.run_id}")
            text_present("Success")
            screens.shot("frame_catalog_run")
            record = instance.fetch_materializations(dg.AssetKey("frame_catalog"), limit=1).records[0]
            assert record.run_id == run.run_id
            assert record.asset_materialization.metadata["frames"].value > 0

            # its per-plate counts: a typed table in the metadata, not Markdown
            driver.get(f"{base}/assets/frame_catalog")
            cell = text_present("per_plate").find_element(By.XPATH, "./ancestor::tr[1]")
            wait.until(lambda d: cell.find_elements(By.XPATH, ".//*[normalize-space()='Show schema']"))
            header = [th.text for th in cell.find_elements(By.CSS_SELECTOR, "table th")]
            assert header == ["plate_id", "frames", "proteins"], header
            screens.shot("frame_catalog_table")
            done = True
    finally:
        if driver is not None:
            try:
                if screens is not None and not done:
                    screens.shot("failed_here")
            finally:
                driver.quit()
        stop_process_group(proc)
        log.close()
