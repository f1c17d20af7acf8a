"""The console stays live across what happens to the server while a tab is open: a restart, a lost session."""
from __future__ import annotations

from selenium.webdriver.common.by import By

from tests.integration.console.conftest import wait
from tests.support.service import TOKEN, Served, config


def marked(tmp_path):
    """One fake camera marked every 5th frame (an event a second), stored in SQLite."""
    return config(tmp_path, [{"id": "cam-1", "url": "fake://a?fps=5"}],
                  stages=[{"python": "pipeline.testing.sinks:MarkEveryNth", "options": {"every": 5}}],
                  sinks=[{"type": "sqlite", "path": str(tmp_path / "site.db"), "flush_interval_s": 0.2}])


def listed(driver) -> list[str]:
    return driver.execute_script("return [...document.querySelectorAll('#event-list li')].map(li => li.dataset.event)")


def log_in(driver) -> None:
    form = wait(driver, lambda d: (lambda f: f if f.is_displayed() else None)(d.find_element(By.ID, "login-form")),
                30, "no login form")
    form.find_element(By.ID, "token").send_keys(TOKEN)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver, lambda d: d.execute_script("return document.body.dataset.ready === '1'"), 30, "the login failed")


def test_after_a_restart_ends_the_session_each_view_asks_to_log_in_again(browser, tmp_path):
    served = Served(marked(tmp_path), token=TOKEN)
    try:
        for view in ("#cameras", "#events"):  # one polls the API, the other only listens to a live stream
            browser.get(f"{served.client.base_url}/{view}")
            log_in(browser)
            wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#grid canvas[data-seq]') or listed(d), 30,
                 f"{view} shows nothing")
            port = served.service.port
            served.stop()
            served = Served(marked(tmp_path), token=TOKEN, port=port)  # sessions are kept in memory: all end
            wait(browser, lambda d: d.find_element(By.ID, "login-form").is_displayed(), 30,
                 f"{view} did not ask to log in again after the server restarted")
        log_in(browser)
        wait(browser, lambda d: listed(d), 30, "after logging in again the events view shows no event")
    finally:
        served.stop()
