"""In a PostgreSQL-coordinated fleet, one instance's console shows every camera of the fleet: its own with their
previews, each of the others with the instance that runs it (a link to that instance's console), or that no
instance has room for it."""
from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from tests.integration.console.conftest import wait
from tests.support.fleet import Fleet
from tests.support.postgres import postgres_dsn, postgres_server  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow

CAMERAS = [f"cam-{i}" for i in range(5)]


def cards(driver) -> dict[str, object]:
    return {card.get_attribute("data-stream"): card for card in driver.find_elements(By.CSS_SELECTOR, "#grid .camera")}


def test_an_instances_grid_shows_the_whole_fleet_and_where_each_camera_runs(postgres_dsn, tmp_path, browser):
    base = {"plugins": ["pipeline.testing"], "detector": {"model": "fake", "engine": "fake"}}
    fleet = Fleet(postgres_dsn, tmp_path, [{"id": cam, "url": f"fake://{cam}?fps=5&live=1"} for cam in CAMERAS], base)
    try:
        a = fleet.start("a", capacity=2, headroom=0.0)
        fleet.start("b", capacity=2, headroom=0.0)
        assert a.poll(lambda: sorted(fleet.holders().values()) == ["a", "a", "b", "b"], timeout=60), fleet.holders()
        holders = fleet.holders()
        (unheld,) = set(CAMERAS) - set(holders)

        browser.get(f"http://127.0.0.1:{a.port}/#cameras")
        wait(browser, lambda d: sorted(cards(d)) == CAMERAS, message=f"the grid shows {sorted(cards(browser))}")
        shown = cards(browser)
        for camera, holder in holders.items():
            card = shown[camera]
            if holder == "a":  # its own: a preview and the camera's controls
                assert "elsewhere" not in card.get_attribute("class") and card.find_elements(By.TAG_NAME, "canvas")
                continue
            link = card.find_element(By.CSS_SELECTOR, ".where a")
            assert link.text == "runs on b"
            assert link.get_attribute("href") == f"http://127.0.0.1:{fleet.instances['b'].port}/#cameras/{camera}"
            assert not card.find_elements(By.TAG_NAME, "canvas")
        assert "no instance has room" in shown[unheld].find_element(By.CSS_SELECTOR, ".where").text
    finally:
        fleet.close()
