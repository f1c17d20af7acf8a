"""The cameras view on a fake camera: nothing of it goes on once the operator has left it."""
from __future__ import annotations

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
