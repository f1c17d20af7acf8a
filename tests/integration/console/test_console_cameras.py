"""The cameras view on a fake camera: nothing of it goes on once the operator has left it."""
from __future__ import annotations

from selenium.webdriver.common.by import By

from tests.integration.console.conftest import wait
from tests.support.service import Served, config

HOLD_STREAMS = """
    // count the live streams the page opens; hold the next answer to /api/streams until released
    window.opened = [];
    const Source = window.EventSource;
    window.EventSource = function (url) { const s = new Source(url); window.opened.push(s); return s; };
    window.EventSource.CLOSED = Source.CLOSED;
    const fetched = window.fetch;
    let held = false;
    window.fetch = async (path, options) => {
      const reply = await fetched(path, options);
      if (held || path !== '/api/streams') return reply;
      held = true;
      await new Promise((resolve) => (window.release = resolve));
      const json = reply.json.bind(reply);
      reply.json = () => json().then((value) => { setTimeout(() => (window.answered = true), 0); return value; });
      return reply;
    };"""


def test_leaving_the_cameras_while_they_refresh_leaves_no_previews_streaming(browser, tmp_path):
    served = Served(config(tmp_path, [{"id": "cam-1", "url": "fake://a?fps=5"}]))
    try:
        browser.get(f"{served.client.base_url}/#cameras")
        wait(browser, lambda d: d.execute_script("return document.body.dataset.ready === '1'"), 30)
        browser.execute_script(HOLD_STREAMS)
        wait(browser, lambda d: d.execute_script("return Boolean(window.release)"), 30, "the grid did not refresh")
        browser.execute_script("location.hash = '#counts'")
        wait(browser, lambda d: d.execute_script("return !document.getElementById('view-counts').hidden"), 10)
        browser.execute_script("window.release()")
        wait(browser, lambda d: d.execute_script("return window.answered === true"), 30, "the held answer never came")
        streaming = browser.execute_script("return window.opened.filter(s => s.readyState !== EventSource.CLOSED)"
                                           ".map(s => s.url)")
        assert streaming == [], "previews stream on while the counts are shown"
    finally:
        served.stop()


HOLD_PREVIEWS = """
    // previews of cam-2 never come
    const Source = window.EventSource;
    window.EventSource = function (url) {
      if (!String(url).includes('cam-2')) return new Source(url);
      return Object.assign(new EventTarget(), { close() {}, readyState: 0 });
    };
    window.EventSource.CLOSED = Source.CLOSED;"""


def two_cameras(tmp_path) -> Served:
    return Served(config(tmp_path, [{"id": "cam-1", "url": "fake://a?fps=5"}, {"id": "cam-2", "url": "fake://b?fps=5"}]))


def test_the_large_view_shows_no_picture_of_a_removed_camera_nor_of_the_camera_shown_before(browser, tmp_path):
    served = two_cameras(tmp_path)
    try:
        browser.get(f"{served.client.base_url}/#cameras/cam-1")
        canvas = browser.find_element(By.ID, "large-canvas")
        wait(browser, lambda d: canvas.get_attribute("data-seq"), 30, "no large view")
        browser.execute_script(HOLD_PREVIEWS)
        browser.execute_script("location.hash = '#cameras/cam-2'")
        wait(browser, lambda d: d.find_element(By.ID, "large-title").text == "cam-2", 10)
        assert canvas.get_attribute("data-seq") is None, "cam-2's large view shows cam-1's picture"

        browser.execute_script("location.hash = '#cameras/cam-1'")
        wait(browser, lambda d: canvas.get_attribute("data-seq"), 30, "no large view of cam-1")
        assert served.client.delete("/api/streams/cam-1").status_code in (200, 204)
        wait(browser, lambda d: d.find_element(By.ID, "large-state").text == "no such camera", 30)
        assert canvas.get_attribute("data-seq") is None, "the removed camera's last picture is still shown"
    finally:
        served.stop()
