"""Debian's Chromium in headless mode, driven by Selenium (no browser is downloaded): the web
page's tests open app.py's page in it, with a fake microphone playing a WAV file."""
import os
import shutil

import pytest

CHROMIUM = ("chromium", "chromedriver")
REQUIRED = "BROWSER_TESTS"   # =required (.ci/run sets it): a missing browser fails, never skips
WINDOW = "1280,1440"


def chromium(fake_microphone=None):
    """A headless Chromium (its WebDriver); with `fake_microphone`, a WAV file that its
    microphone plays in a loop, access granted without asking. Skips without Debian's chromium
    and chromium-driver, unless BROWSER_TESTS=required."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = [shutil.which(name) for name in CHROMIUM]
    if not all(paths):
        message = ("Debian's chromium and chromium-driver are not installed "
                   "(apt-get install chromium chromium-driver)")
        if os.environ.get(REQUIRED) == "required":
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={WINDOW}"):
        options.add_argument(arg)
    if fake_microphone:
        for arg in ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                    f"--use-file-for-fake-audio-capture={fake_microphone}",
                    "--autoplay-policy=no-user-gesture-required"):
            options.add_argument(arg)
    return webdriver.Chrome(service=Service(paths[1]), options=options)


def elements(driver, selector):
    """The page's elements that the CSS `selector` picks."""
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def close_messages(driver):
    """Close the page's messages (Gradio's toasts) and wait until they are gone."""
    for close in elements(driver, "[data-testid='toast-close']"):
        close.click()
    wait_for(driver, lambda d: not elements(d, "[data-testid='toast-body']"))


def wait_for(driver, condition, seconds=120):
    """condition(driver)'s first true value within `seconds`."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.25).until(condition)


def table_rows(driver, selector):
    """The rows of the page's table at `selector` (a Gradio Dataframe, whose rows are grid rows
    drawn as they scroll into view) as lists of cell texts, leaving out the blank row of an
    empty table."""
    from selenium.webdriver.common.by import By

    rows = elements(driver, f"{selector} [role=row][data-index]")
    cells = [[cell.text for cell in row.find_elements(By.CSS_SELECTOR, "[role=gridcell]")] for row in rows]
    return [row for row in cells if any(row)]
