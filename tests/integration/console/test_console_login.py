"""With a token set, the console shows nothing before login; the token buys an HttpOnly session cookie."""
from __future__ import annotations

from selenium.webdriver.common.by import By

from tests.integration.console.conftest import screenshot, wait
from tests.support.service import TOKEN, Served, config


def test_with_a_token_the_page_shows_nothing_before_login(browser, tmp_path):
    served = Served(config(tmp_path, [{"id": "secret-cam", "url": "fake://a?fps=20"}]), token=TOKEN)
    try:
        browser.get(f"{served.client.base_url}/")
        login = wait(browser, lambda d: (lambda f: f if f.is_displayed() else None)(d.find_element(By.ID, "login-form")),
                     30, "no login form")
        assert "secret-cam" not in browser.page_source
        assert not browser.find_element(By.ID, "nav").is_displayed()
        assert browser.execute_script("return fetch('/api/streams').then(r => r.status)") == 401
        screenshot(browser, "login")

        login.find_element(By.ID, "token").send_keys("not-the-token-at-all")
        login.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait(browser, lambda d: d.find_element(By.ID, "login-error").text == "wrong token", 30)
        assert "secret-cam" not in browser.page_source

        login.find_element(By.ID, "token").clear()
        login.find_element(By.ID, "token").send_keys(TOKEN)
        login.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#grid [data-stream="secret-cam"] canvas[data-seq]'),
             60, "after login the camera and its preview do not show")
        assert browser.execute_script("return document.cookie") == ""  # HttpOnly: no script can read the session
        (cookie,) = browser.get_cookies()
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        pause = "return fetch('/api/streams/secret-cam/pause', {method: 'POST'}).then(r => r.status)"
        assert browser.execute_script(pause) in (200, 202)  # a change from its own page, by the cookie alone

        browser.find_element(By.ID, "logout").click()
        wait(browser, lambda d: d.find_element(By.ID, "login-form").is_displayed(), 30)
        assert browser.execute_script("return fetch('/api/streams').then(r => r.status)") == 401
    finally:
        served.stop()
