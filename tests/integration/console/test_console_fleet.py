"""In a PostgreSQL-coordinated fleet, one instance's console shows every camera of the fleet: its own with their
previews, each of the others with the instance that runs it (a link to that instance's console), or that no
instance has room for it; a zone drawn in one instance's editor is the fleet's, on every instance."""
from __future__ import annotations

import pytest
import yaml
from selenium.webdriver.common.action_chains import ActionChains
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


def test_a_zone_drawn_in_one_instances_editor_is_the_fleets_and_the_other_instance_runs_it(postgres_dsn, tmp_path,
                                                                                              browser):
    base = {"plugins": ["pipeline.testing"], "detector": {"model": "fake", "engine": "fake"}}
    fleet = Fleet(postgres_dsn, tmp_path, [{"id": cam, "url": f"fake://{cam}?fps=5&live=1"} for cam in CAMERAS[:2]], base)
    try:
        a = fleet.start("a", capacity=1, headroom=0.0)
        b = fleet.start("b", capacity=1, headroom=0.0)
        assert a.poll(lambda: sorted(fleet.holders().values()) == ["a", "b"], timeout=60), fleet.holders()
        (camera,) = [c for c, holder in fleet.holders().items() if holder == "a"]

        browser.set_window_size(1400, 1400)
        browser.get(f"http://127.0.0.1:{a.port}/#editor/{camera}")
        canvas = browser.find_element(By.ID, "editor-canvas")
        wait(browser, lambda d: canvas.get_attribute("data-seq"), message="the editor shows no picture")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
        shown = browser.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height]",
                                       canvas)
        for x, y in [(0.1, 0.1), (0.5, 0.1), (0.5, 0.9)]:  # fractions of the picture; offsets from its centre
            ActionChains(browser).move_to_element_with_offset(canvas, (x - 0.5) * shown[0], (y - 0.5) * shown[1]) \
                .click().perform()
        form = browser.find_element(By.ID, "editor-form")
        form.find_element(By.NAME, "name").send_keys("drawn")
        form.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()
        wait(browser, lambda d: "saved zone 'drawn'" in d.find_element(By.ID, "editor-status").text, 30,
             lambda d: d.find_element(By.ID, "editor-status").text)
        assert "the fleet's database" in browser.find_element(By.ID, "editor-status").text

        (zone,) = b.client.get("/api/zones").json()
        assert zone["name"] == "drawn" and zone["streams"] == [camera] and len(zone["polygon"]) == 3
        assert max(x for x, _ in zone["polygon"]) <= 64 and max(y for _, y in zone["polygon"]) <= 48  # source pixels
        assert b.poll(lambda: [z["name"] for z in b.client.get("/api/config").json()["zones"]] == ["drawn"], timeout=10)
        assert "zones" not in yaml.safe_load((tmp_path / "a.yaml").read_text())  # the fleet's, not a's file
    finally:
        fleet.close()
