"""The events view on a fake camera: what the list shows while filters change and the tab stays open."""
from __future__ import annotations

import socket
import threading
import time

from selenium.webdriver.common.action_chains import ActionChains
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


COUNT_LIVE = """
    // window.arrived: the live events the page has had (counted once the page has handled each)
    window.arrived = 0;
    const Source = window.EventSource;
    window.EventSource = function (url) {
      const source = new Source(url);
      source.addEventListener('event', () => setTimeout(() => window.arrived++, 0));
      return source;
    };
    window.EventSource.CLOSED = Source.CLOSED;"""


def row_under_pointer(driver, x: float, y: float) -> str | None:
    return driver.execute_script("const li = document.elementFromPoint(arguments[0], arguments[1])?.closest('li');"
                                 "return li ? li.dataset.event : null", x, y)


def test_a_new_event_does_not_move_the_rows_under_the_pointer_and_a_click_opens_the_row_pointed_at(browser, tmp_path):
    served = Served(marked(tmp_path))  # an event a second
    try:
        browser.get(f"{served.client.base_url}/#cameras")
        wait(browser, lambda d: d.execute_script("return document.body.dataset.ready === '1'"), 30)
        browser.execute_script(COUNT_LIVE)
        browser.execute_script("location.hash = '#events'")
        wait(browser, lambda d: len(listed(d)) >= 2, 30, "no events listed")
        row = browser.find_elements(By.CSS_SELECTOR, "#event-list li")[1]
        pointed = row.get_attribute("data-event")
        ActionChains(browser).move_to_element(row).perform()
        x, y = browser.execute_script("const r = arguments[0].getBoundingClientRect();"
                                      "return [r.left + r.width / 2, r.top + r.height / 2]", row)
        assert row_under_pointer(browser, x, y) == pointed
        seen = browser.execute_script("return window.arrived")
        wait(browser, lambda d: d.execute_script("return window.arrived") > seen, 30, "no new event arrived")
        assert row_under_pointer(browser, x, y) == pointed, "a new event moved the rows under the pointer"
        assert "new event" in browser.find_element(By.ID, "event-held").text
        ActionChains(browser).click().perform()
        assert f"event={pointed}" in browser.current_url, "the click opened another event than the one pointed at"

        newest = served.client.get("/api/events", params={"limit": 1}).json()[0]["event_id"]
        ActionChains(browser).move_to_element(browser.find_element(By.ID, "event-detail")).perform()
        wait(browser, lambda d: newest in listed(d), 30, "the new events are not shown once the pointer left the list")
        assert browser.find_element(By.ID, "event-held").text == ""
    finally:
        served.stop()



class Link:
    """A TCP proxy between the browser and the server whose connections can be cut (the server keeps running):
    `cut()` drops the open ones and turns new ones away until `restore()`. `url`: the server through it."""

    def __init__(self, port: int):
        self.port, self.up, self.open = port, True, []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            server = socket.create_connection(("127.0.0.1", self.port))
            self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, sink) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            end.close()

    def cut(self) -> None:
        self.up = False
        for end in self.open:
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.open = []

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_events_published_while_the_live_stream_was_cut_reach_the_open_list_when_it_reconnects(browser, tmp_path):
    served = Served(marked(tmp_path))  # an event a second
    link = Link(served.service.port)
    try:
        browser.get(f"{link.url}/#events")
        wait(browser, lambda d: listed(d), 30, "no events listed")
        link.cut()
        cut_ns = time.time_ns()
        missed = wait(browser, lambda d: [e["event_id"] for e in served.client.get("/api/events").json()
                                          if e["wall_ns"] > cut_ns][:2] or None, 30, "no event meanwhile")
        assert not set(missed) & set(listed(browser)), "the live stream was not cut"
        link.restore()
        wait(browser, lambda d: set(missed) <= set(listed(d)), 30, "the events of the gap never reached the list")
    finally:
        link.close()
        served.stop()


FAKE_LIVE = """
    // live streams the test feeds: window.feed(n) sends n new events on each open one
    const sources = [];
    const Source = window.EventSource;
    window.EventSource = function (url) {
      const source = new Source(url);
      sources.push(source);
      return source;
    };
    window.EventSource.CLOSED = Source.CLOSED;
    window.feed = (n) => {
      for (let i = 0; i < n; i++) {
        const event = {event_id: `fed-${i}`, stream_id: 'cam-1', kind: 'mark', rule: 'fed', track_id: -1,
                       class_name: null, wall_time: new Date().toISOString(), payload: {}, snapshot: null};
        for (const source of sources) {
          source.dispatchEvent(new MessageEvent('event', {data: JSON.stringify(event), lastEventId: event.event_id}));
        }
      }
    };"""


def test_new_events_held_under_a_pointer_left_on_the_list_are_bounded_as_the_list_is(browser, tmp_path):
    """A pointer left on the list held every new event (a row, its snapshot) for as long as it stayed there."""
    served = Served(marked(tmp_path))
    try:
        browser.get(f"{served.client.base_url}/#cameras")
        wait(browser, lambda d: d.execute_script("return document.body.dataset.ready === '1'"), 30)
        browser.execute_script(FAKE_LIVE)
        browser.execute_script("location.hash = '#events'")
        wait(browser, lambda d: len(listed(d)) >= 1, 30, "no events listed")
        ActionChains(browser).move_to_element(browser.find_element(By.CSS_SELECTOR, "#event-list li")).perform()
        browser.execute_script("window.feed(300)")
        assert browser.find_element(By.ID, "event-held").text.startswith("200 new events")
        ActionChains(browser).move_to_element(browser.find_element(By.ID, "event-detail")).perform()
        wait(browser, lambda d: "fed-299" in listed(d), 30, "the held events are not shown once the pointer left")
        assert len(listed(browser)) == 200 and "fed-99" not in listed(browser)
    finally:
        served.stop()
