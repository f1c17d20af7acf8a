"""The console in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`, installed by
`scripts/setup.sh --test`) driven by Selenium, against the demo (configs/demo.yaml) served with its API.

The demo's eight cameras run at 5 frames/s here (the world moves at the same pace; the browser needs the
other half of a 2-core machine), with SQLite and media under a temporary folder and no webhook or broker;
a test stage marks cam-1 (an H.264 camera) every 5 s with an event that has a clip.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.config import load_config
from tests.conftest import REPO
from tests.support.service import Served

CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run")
WAIT_S = 90


def demo_site(tmp: Path) -> Path:
    """configs/demo.yaml as a service config under `tmp`: every camera at 5 frames/s, SQLite and media in `tmp`."""
    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    for stream in data["streams"]:
        stream["url"] = stream["url"].replace("fps=10", "fps=5")
    data["detector"]["model"] = str(REPO / data["detector"]["model"])
    data["sinks"] = [{"type": "sqlite", "path": str(tmp / "site.db"), "flush_interval_s": 0.2},
                     {"type": "media", "directory": str(tmp / "media"), "clip_before_s": 1, "clip_after_s": 1}]
    data["runtime"] = {"outbox_path": str(tmp / "outbox.db")}
    data["stages"] = [{"python": "pipeline.testing.sinks:MarkEveryNth", "options": {"every": 25, "clip": True},
                       "streams": ["cam-1"]}]  # an H.264 camera: an event with a clip every 5 s
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo served on a free port; its config file is `demo.path` (the console's changes land there)."""
    path = demo_site(tmp_path_factory.mktemp("console-demo"))
    served = Served(load_config(path), path=path)
    served.path = path
    yield served
    served.stop()


def chromium_or_skip() -> tuple[str, str]:
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip("headless Chromium is not installed: `bash scripts/setup.sh --test` installs Debian's "
                    "chromium and chromium-driver (apt-get install chromium chromium-driver)")
    return binary, driver


@pytest.fixture
def browser(tmp_path):
    """A fresh headless Chromium (its own profile), 1400x1000."""
    from selenium import webdriver  # noqa: PLC0415
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    binary, driver_path = chromium_or_skip()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def wait(driver, condition, timeout: float = WAIT_S, message: str = ""):
    """Look again until `condition(driver)` is truthy (then return it); fail with `message` at the deadline."""
    from selenium.common.exceptions import StaleElementReferenceException  # noqa: PLC0415
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    # an element the page re-rendered since it was found is looked for again
    return WebDriverWait(driver, timeout, poll_frequency=0.2,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition, message)


def screenshot(driver, name: str) -> None:
    """Save the page as `<name>.png` in the folder $STREAMWEAVE_SCREENSHOTS names (docs/console makes the
    README's pictures); nothing without it."""
    folder = os.environ.get("STREAMWEAVE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))
