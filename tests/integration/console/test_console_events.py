"""The events view on a fake camera: what the list shows while filters change and the tab stays open."""
from __future__ import annotations

from selenium.webdriver.common.by import By

from tests.integration.console.conftest import wait
from tests.integration.console.test_console_reconnects import listed, marked
from tests.support.service import Served

HOLD_UNFILTERED = """
    // hold the answer to the unfiltered list until released; window.staleDone once the page has had it
    const fetched = window.fetch;
    window.fetch = async (path, options) => {
      const reply = await fetched(path, options);
      if (!String(path).startsWith('/api/events?') || String(path).includes('kind=')) return reply;
      await new Promise((resolve) => (window.releaseStale = resolve));
      const json = reply.json.bind(reply);
      reply.json = () => json().then((value) => { setTimeout(() => (window.staleDone = true), 0); return value; });
      return reply;
    };"""


def test_a_list_asked_for_before_the_filter_changed_does_not_land_in_the_filtered_one(browser, tmp_path):
    served = Served(marked(tmp_path))
    try:
        wait(browser, lambda d: served.client.get("/api/events").json(), 30, "no event stored")
        browser.get(f"{served.client.base_url}/#cameras")
        wait(browser, lambda d: d.execute_script("return document.body.dataset.ready === '1'"), 30)
        browser.execute_script(HOLD_UNFILTERED)
        browser.execute_script("location.hash = '#events'")
        wait(browser, lambda d: d.execute_script("return Boolean(window.releaseStale)"), 30, "no list asked for")
        select = browser.find_element(By.CSS_SELECTOR, "#event-filters select[name=kind]")
        browser.execute_script("arguments[0].value = 'alert'; arguments[0].dispatchEvent(new Event('change', "
                               "{bubbles: true}))", select)
        wait(browser, lambda d: "kind=alert" in d.current_url, 10)
        browser.execute_script("window.releaseStale()")
        wait(browser, lambda d: d.execute_script("return window.staleDone === true"), 30, "the held list never came")
        assert listed(browser) == [], "events of every kind are listed under the filter kind=alert"
    finally:
        served.stop()
