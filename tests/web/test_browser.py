"""The admin panel in a real browser: Debian's Chromium driven by Selenium through
Debian's chromedriver (nothing downloads a browser or a driver)."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.helpers.cli import wb
from tests.helpers.factories import result
from tests.helpers.live import WorkerProcess
from worker.services.store import HighlightStore

pytestmark = [pytest.mark.broker, pytest.mark.postgres, pytest.mark.slow]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("Debian's chromium and chromium-driver are needed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-sync",
        "--disable-component-update",
        "--disable-quic",
        f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


async def test_log_in_lock_an_override_see_it_served_and_audited_then_log_out(
    worker: WorkerProcess,
    live_db_url: str,
    live_store: HighlightStore,
    browser: object,
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    driver: WebDriver = browser  # type: ignore[assignment]
    user = 2101
    now = datetime.now(UTC)
    await live_store.upsert_auto(
        result(user, generated_at=now - timedelta(hours=1), bio="Auto bio from the generator"),
        "snap",
    )
    created = await asyncio.to_thread(
        wb,
        "admin",
        "create-token",
        "--actor",
        "erin",
        "--role",
        "admin",
        env={"WB_DATABASE_URL": live_db_url},
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()

    def submit(button: object) -> None:
        """Click and wait for the next page (the old one's elements go stale)."""
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        button.click()  # type: ignore[attr-defined]
        WebDriverWait(driver, 15).until(ec.staleness_of(button))

    def run() -> None:
        driver.get(f"{worker.url}/admin/profiles/{user}/glaze")
        assert "/admin/login" in driver.current_url  # not logged in yet
        driver.find_element(By.NAME, "token").send_keys(token)
        submit(driver.find_element(By.CSS_SELECTOR, "form button[type=submit]"))
        assert driver.current_url.endswith(f"/admin/profiles/{user}/glaze")
        assert driver.find_element(By.ID, "status").text == "fresh"
        assert driver.find_element(By.ID, "served-text").text == "Auto bio from the generator"
        assert "erin" not in driver.find_element(By.CSS_SELECTOR, "table.audit, section").text
        driver.find_element(By.NAME, "text").send_keys("Hand-picked <b>bio</b>")
        submit(driver.find_element(By.CSS_SELECTOR, "button[value=override]"))
        assert driver.current_url.endswith(f"/admin/profiles/{user}/glaze")
        assert driver.find_element(By.ID, "status").text == "overridden"
        assert driver.find_element(By.ID, "served-text").text == "Hand-picked <b>bio</b>"
        audit = driver.find_element(By.CSS_SELECTOR, "table.audit").text
        assert "erin" in audit and "set_override" in audit and "Hand-picked" in audit
        driver.save_screenshot(str(tmp_path / "glaze.png"))
        submit(driver.find_element(By.XPATH, "//button[text()='Log out']"))
        assert "/admin/login" in driver.current_url
        driver.get(f"{worker.url}/admin/profiles/{user}/glaze")
        assert "/admin/login" in driver.current_url

    await asyncio.to_thread(run)
    if os.environ.get("WB_KEEP_SCREENSHOT"):
        shutil.copy(tmp_path / "glaze.png", os.environ["WB_KEEP_SCREENSHOT"])
    row = await live_store.get(user)
    assert row is not None
    assert row.override_text == "Hand-picked <b>bio</b>"
    assert row.override_actor == "erin"
