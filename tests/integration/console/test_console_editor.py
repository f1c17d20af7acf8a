"""The zone and line editor on fake cameras: what an operator draws and names is what the config gets."""
from __future__ import annotations

import pytest
import yaml
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select

from pipeline.config import load_config
from tests.integration.console.conftest import wait
from tests.support.service import Served, config_data


@pytest.fixture
def site(tmp_path):
    """Two fake 320x180 cameras and a zone both share (counting cars), served from a config file (`site.path`)."""
    data = config_data(tmp_path, [{"id": cam, "url": f"fake://{cam}?fps=5&size=320x180"} for cam in ("cam-1", "cam-2")],
                       zones=[{"name": "shared", "streams": ["cam-1", "cam-2"], "anchor": "center", "classes": ["car"],
                               "polygon": [[10, 10], [100, 10], [100, 100]]}])
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    served = Served(load_config(path), path=path)
    served.path = path
    yield served
    served.stop()


def open_editor(browser, site, stream_id: str):
    browser.get(f"{site.client.base_url}/#editor/{stream_id}")
    canvas = browser.find_element(By.ID, "editor-canvas")
    wait(browser, lambda d: canvas.get_attribute("data-seq"), 60, "the editor shows no picture")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    return canvas


def click_at(browser, canvas, fractions) -> None:
    """Click the picture at each (x, y) given as fractions of its width and height."""
    shown = browser.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height]", canvas)
    for x, y in fractions:  # Selenium's offsets are from the element's centre
        ActionChains(browser).move_to_element_with_offset(canvas, (x - 0.5) * shown[0], (y - 0.5) * shown[1]) \
            .click().perform()


def save_as(browser, name: str) -> None:
    form = browser.find_element(By.ID, "editor-form")
    form.find_element(By.NAME, "name").send_keys(name)
    form.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()


def status(driver) -> str:
    return driver.find_element(By.ID, "editor-status").text


def test_a_zone_may_be_named_in_any_language_with_spaces(browser, site):
    canvas = open_editor(browser, site, "cam-1")
    click_at(browser, canvas, [(0.1, 0.1), (0.5, 0.1), (0.5, 0.9)])
    save_as(browser, "Entrée nord 北")
    wait(browser, lambda d: "saved zone 'Entrée nord 北'" in status(d), 30, "the zone was not saved")
    (zone,) = [z for z in yaml.safe_load(site.path.read_text())["zones"] if z["name"] == "Entrée nord 北"]
    assert zone["streams"] == ["cam-1"]
    assert "zone Entrée nord 北" in browser.find_element(By.ID, "editor-existing").text


def test_redrawing_a_zone_other_cameras_share_keeps_it_on_them_and_keeps_its_settings(browser, site):
    canvas = open_editor(browser, site, "cam-1")
    assert "zone shared" in browser.find_element(By.ID, "editor-existing").text
    click_at(browser, canvas, [(0.1, 0.1), (0.5, 0.1), (0.5, 0.9)])
    save_as(browser, "shared")
    alert = wait(browser, expected_conditions.alert_is_present(), 10, "no question that the zone changes on cam-2 too")
    assert "cam-2" in alert.text
    alert.accept()
    wait(browser, lambda d: "saved zone 'shared'" in status(d), 30, "the zone was not saved")
    (zone,) = [z for z in yaml.safe_load(site.path.read_text())["zones"] if z["name"] == "shared"]
    assert zone["streams"] == ["cam-1", "cam-2"] and zone["anchor"] == "center", zone
    assert zone.get("classes") == ["car"], "redrawn without touching its classes, the zone lost its class filter"
    assert zone["polygon"] != [[10, 10], [100, 10], [100, 100]]


def test_a_camera_added_while_the_console_is_open_can_be_drawn_on(browser, site):
    browser.get(f"{site.client.base_url}/#events")
    wait(browser, lambda d: d.execute_script("return document.body.dataset.ready === '1'"), 30, "the page did not start")
    added = site.client.post("/api/streams", json={"id": "cam-3", "url": "fake://cam-3?fps=5&size=320x180"})
    assert added.status_code == 201, added.text
    browser.execute_script("location.hash = '#editor/cam-3'")
    wait(browser, lambda d: d.find_element(By.ID, "editor-stream").get_attribute("value") == "cam-3", 30,
         "the editor does not offer the camera added since the page opened")


HOLD_PREVIEWS = """
    // previews of cam-big come only once window.letThrough is set
    const Source = window.EventSource;
    window.EventSource = function (url) {
      if (!String(url).includes('cam-big') || window.letThrough) return new Source(url);
      return Object.assign(new EventTarget(), { close() {}, readyState: 0 });
    };
    window.EventSource.CLOSED = Source.CLOSED;"""


def test_after_switching_to_a_camera_of_another_size_clicks_wait_for_its_picture(browser, site):
    added = site.client.post("/api/streams", json={"id": "cam-big", "url": "fake://cam-big?fps=5&size=640x360"})
    assert added.status_code == 201, added.text
    canvas = open_editor(browser, site, "cam-1")  # 320x180
    browser.execute_script(HOLD_PREVIEWS)
    Select(browser.find_element(By.ID, "editor-stream")).select_by_value("cam-big")
    assert canvas.get_attribute("data-seq") is None, "cam-1's picture is still shown for cam-big"
    click_at(browser, canvas, [(0.5, 0.5)])
    assert "point" not in status(browser), "a click was placed with cam-1's size before cam-big's picture came"

    browser.execute_script("window.letThrough = true")
    Select(browser.find_element(By.ID, "editor-stream")).select_by_value("cam-1")
    Select(browser.find_element(By.ID, "editor-stream")).select_by_value("cam-big")
    wait(browser, lambda d: canvas.get_attribute("data-seq"), 60, "cam-big shows no picture")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    click_at(browser, canvas, [(0.5, 0.5)])
    x, y = (float(v) for v in status(browser).split("(")[1].rstrip(")").split(", "))
    assert abs(x - 320) <= 3 and abs(y - 180) <= 3, status(browser)
