"""The web console as an operator uses it: headless Chromium on the demo served with its API."""
from __future__ import annotations

import time

import yaml
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

from tests.integration.console.conftest import screenshot, wait

STREET = "cam-2"  # 640x360; cars drive along the road through the middle of the picture


def open_page(browser, demo, hash_: str = "") -> None:
    browser.get(f"{demo.client.base_url}/{hash_}")
    wait(browser, lambda d: d.execute_script("return document.body.dataset.ready === '1'"), 30, "the page did not start")


def states(browser) -> dict[str, str]:
    return browser.execute_script("return Object.fromEntries([...document.querySelectorAll('#grid .camera')]"
                                  ".map(card => [card.dataset.stream, card.dataset.state]))")


def press(browser, stream_id: str, button: str) -> None:
    browser.find_element(By.CSS_SELECTOR, f'#grid [data-stream="{stream_id}"] button.{button}').click()


def seqs(browser) -> dict[str, int]:
    """The frame number of the preview each card has drawn (none yet: absent)."""
    return browser.execute_script("""
        const seen = {};
        for (const card of document.querySelectorAll('#grid .camera')) {
          const seq = card.querySelector('canvas').dataset.seq;
          if (seq !== undefined) seen[card.dataset.stream] = Number(seq);
        }
        return seen;""")


def test_the_page_lists_the_demo_cameras_and_their_previews_move(browser, demo):
    open_page(browser, demo)
    ids = [config.id for config in demo.runner.streams()]
    wait(browser, lambda d: sorted(states(d)) == sorted(ids), 30, "the grid does not list the demo's cameras")
    first = wait(browser, lambda d: (lambda s: s if sorted(s) == sorted(ids) else None)(seqs(d)),
                 message="not every camera got a preview")
    picture = browser.execute_script("return document.querySelector('#grid canvas').toDataURL()")
    wait(browser, lambda d: all(seq > first[sid] for sid, seq in seqs(d).items()), message="previews did not move on")
    assert browser.execute_script("return document.querySelector('#grid canvas').toDataURL()") != picture
    assert set(states(browser).values()) == {"running"}, states(browser)
    size = browser.execute_script("const c = document.querySelector('#grid canvas'); "
                                  "return [c.width, c.height, Number(c.dataset.sourceWidth)]")
    assert size == [320, 180, 640]  # downscaled: the server encodes what the grid asks for, not the source
    screenshot(browser, "cameras")

    browser.find_element(By.CSS_SELECTOR, f'#grid [data-stream="{STREET}"] canvas').click()
    wait(browser, lambda d: d.find_element(By.ID, "large-canvas").get_attribute("data-seq"), message="no large view")
    assert browser.execute_script("return document.getElementById('large-canvas').width") == 640
    assert "running" in browser.find_element(By.ID, "large-state").text
    screenshot(browser, "camera")


def test_a_new_event_appears_with_its_snapshot_and_its_link_survives_a_reload(browser, demo):
    open_page(browser, demo, "#events")
    listed = set(browser.execute_script("return [...document.querySelectorAll('#event-list li')]"
                                        ".map(li => li.dataset.event)"))

    def new_with_snapshot(d):
        return d.execute_script("""
            const known = new Set(arguments[0]);
            for (const li of document.querySelectorAll('#event-list li')) {
              const img = li.querySelector('img.snapshot');
              if (!known.has(li.dataset.event) && img && img.complete && img.naturalWidth > 0) return li.dataset.event;
            }
            return null;""", list(listed))

    event_id = wait(browser, new_with_snapshot, message="no new event with a loaded snapshot reached the list")
    # as an operator does: point at the list (its rows then hold still as events come), then click the event
    ActionChains(browser).move_to_element(browser.find_element(By.ID, "event-list")).perform()
    wait(browser, lambda d: d.execute_script("return document.getElementById('event-list').matches(':hover')"), 10,
         "the pointer is not on the list")
    browser.find_element(By.CSS_SELECTOR, f'#event-list li[data-event="{event_id}"]').click()
    assert f"event={event_id}" in browser.current_url
    snapshot = browser.find_element(By.CSS_SELECTOR, "#event-detail img")
    wait(browser, lambda d: snapshot.get_property("naturalWidth") == 640, 30, "the large snapshot did not load")
    screenshot(browser, "events")

    browser.refresh()
    wait(browser, lambda d: event_id in d.find_element(By.ID, "event-detail").text, 30,
         "the event's link did not open it again after a reload")
    assert browser.find_element(By.CSS_SELECTOR, "#event-list li.selected").get_attribute("data-event") == event_id


def test_events_filtered_by_kind_and_an_event_clip_plays(browser, demo):
    open_page(browser, demo, "#events?kind=mark&stream=cam-1")
    assert browser.find_element(By.CSS_SELECTOR, "#event-filters select[name=kind]").get_attribute("value") == "mark"
    first = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#event-list li"), message="no mark event listed")[0]
    assert {li.get_attribute("data-kind") for li in browser.find_elements(By.CSS_SELECTOR, "#event-list li")} == {"mark"}
    first.click()
    video = browser.find_element(By.CSS_SELECTOR, "#event-detail video")
    wait(browser, lambda d: d.execute_script("const v = arguments[0]; return v.readyState >= 2 && v.videoWidth === 640 "
                                             "&& v.duration > 0", video), message="the event's clip does not play")
    browser.execute_script("arguments[0].play()", video)
    wait(browser, lambda d: d.execute_script("return arguments[0].currentTime > 0", video), 30, "the clip does not advance")


def test_a_zone_drawn_on_a_downscaled_preview_is_saved_in_source_pixels_and_counts(browser, demo):
    browser.set_window_size(560, 1000)  # the 640-pixel camera is drawn narrower than its source
    open_page(browser, demo, f"#editor/{STREET}")
    canvas = browser.find_element(By.ID, "editor-canvas")
    wait(browser, lambda d: canvas.get_attribute("data-seq"), message="the editor shows no picture")
    shown = browser.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height]", canvas)
    assert shown[0] < 640
    corners = [(300, 140), (470, 140), (470, 300), (300, 300)]  # source pixels around the road
    clicks = [(round(x * shown[0] / 640), round(y * shown[1] / 360)) for x, y in corners]
    for x, y in clicks:  # Selenium's offsets are from the element's centre
        ActionChains(browser).move_to_element_with_offset(canvas, x - shown[0] / 2, y - shown[1] / 2).click().perform()
    form = browser.find_element(By.ID, "editor-form")
    form.find_element(By.NAME, "name").send_keys("console-box")
    form.find_element(By.CSS_SELECTOR, 'input[name="classes"][value="car"]').click()
    started_ns = time.time_ns()
    form.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()
    wait(browser, lambda d: "saved zone 'console-box'" in d.find_element(By.ID, "editor-status").text, 30,
         lambda d: d.find_element(By.ID, "editor-status").text)
    browser.set_window_size(1400, 1000)
    screenshot(browser, "editor")

    (zone,) = [z for z in yaml.safe_load(demo.path.read_text())["zones"] if z["name"] == "console-box"]
    assert zone["streams"] == [STREET] and zone["classes"] == ["car"]
    expected = [(x * 640 / shown[0], y * 360 / shown[1]) for x, y in clicks]
    assert len(zone["polygon"]) == 4
    pixel = 640 / shown[0]  # one screen pixel in source pixels: how exactly a click lands
    for (x, y), (ex, ey) in zip(zone["polygon"], expected):
        assert abs(x - ex) <= pixel and abs(y - ey) <= pixel, (zone["polygon"], expected)

    def zone_events(_):
        events = demo.client.get("/api/events", params={"stream": STREET, "kind": "zone_enter", "since": started_ns / 1e9})
        return [e for e in events.json() if e["payload"].get("zone") == "console-box"]

    (entered, *_) = wait(browser, zone_events, message="the drawn zone produced no zone_enter event")
    assert entered["class_name"] == "car"


def test_a_directed_line_is_saved_from_its_first_click_to_its_second(browser, demo):
    open_page(browser, demo, "#editor/cam-3")
    canvas = browser.find_element(By.ID, "editor-canvas")
    wait(browser, lambda d: canvas.get_attribute("data-seq"), message="the editor shows no picture")
    browser.find_element(By.CSS_SELECTOR, 'input[name="shape"][value="line"]').click()
    shown = browser.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height]", canvas)
    ends = [(100, 300), (100, 100)]  # source pixels: upwards, so "in" is to the right
    clicks = [(round(x * shown[0] / 640), round(y * shown[1] / 360)) for x, y in ends]
    for x, y in clicks:
        ActionChains(browser).move_to_element_with_offset(canvas, x - shown[0] / 2, y - shown[1] / 2).click().perform()
    form = browser.find_element(By.ID, "editor-form")
    form.find_element(By.NAME, "name").send_keys("console-line")
    form.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()
    wait(browser, lambda d: "saved line 'console-line'" in d.find_element(By.ID, "editor-status").text, 30,
         lambda d: d.find_element(By.ID, "editor-status").text)
    (line,) = [entry for entry in yaml.safe_load(demo.path.read_text())["lines"] if entry["name"] == "console-line"]
    pixel = 640 / shown[0]
    for saved, (x, y) in ((line["start"], clicks[0]), (line["end"], clicks[1])):
        assert abs(saved[0] - x * 640 / shown[0]) <= pixel and abs(saved[1] - y * 360 / shown[1]) <= pixel, line
    assert line["streams"] == ["cam-3"] and "classes" not in line  # no class ticked: every class
    assert "line console-line" in browser.find_element(By.ID, "editor-existing").text


def test_cameras_are_added_paused_and_removed_from_the_page(browser, demo):
    open_page(browser, demo)
    wait(browser, lambda d: "cam-8" in states(d), 30)
    browser.find_element(By.CSS_SELECTOR, "#add-camera summary").click()
    form = browser.find_element(By.ID, "add-form")
    form.find_element(By.NAME, "id").send_keys("cam-9")
    form.find_element(By.NAME, "url").send_keys("synthetic://junction?seed=1009&fps=5&size=640x360")
    form.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()
    wait(browser, lambda d: states(d).get("cam-9") == "running", message="the added camera does not run")
    wait(browser, lambda d: "cam-9" in seqs(d), message="the added camera shows no preview")
    assert any(s["id"] == "cam-9" for s in yaml.safe_load(demo.path.read_text())["streams"])

    press(browser, "cam-9", "pause")
    wait(browser, lambda d: states(d)["cam-9"] == "paused", 30, "the camera did not pause")
    press(browser, "cam-9", "pause")
    wait(browser, lambda d: states(d)["cam-9"] == "running", 30, "the camera did not resume")

    press(browser, "cam-8", "remove")  # its zone and lines name it
    browser.switch_to.alert.accept()
    wait(browser, lambda d: "stream 'cam-8' is in the streams of zone" in
         d.find_element(By.CSS_SELECTOR, '[data-stream="cam-8"] .why').text,
         30, "the refusal to remove a camera that zones name is not shown")
    assert states(browser)["cam-8"] == "running"

    press(browser, "cam-9", "remove")
    browser.switch_to.alert.accept()
    wait(browser, lambda d: "cam-9" not in states(d), 30, "the removed camera is still listed")
    wait(browser, lambda d: "cam-9" not in demo.runner.parts.stages.frames(), 30, "the removed camera did not stop")
    assert "cam-9" not in [config.id for config in demo.runner.streams()]
    assert "cam-9" not in [s["id"] for s in yaml.safe_load(demo.path.read_text())["streams"]]


def test_todays_counts_are_listed_per_camera(browser, demo):
    open_page(browser, demo, "#counts")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'#counts [data-stream="{STREET}"] td'),
         message="no counts for the street camera")
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert f"Today, {day} (UTC)" == browser.find_element(By.ID, "counts-title").text
    answer = demo.client.get("/api/counts").json()["cameras"][STREET]
    shown = browser.find_element(By.CSS_SELECTOR, f'#counts [data-stream="{STREET}"]').text
    for row in answer["zones"]:
        assert row["zone"] in shown
    screenshot(browser, "counts")
