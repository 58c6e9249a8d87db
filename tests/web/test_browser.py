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
from typing import Any

import pytest

from tests.helpers.cli import wb
from tests.helpers.factories import result
from tests.helpers.live import WorkerProcess
from worker.services.store import HighlightStore

pytestmark = [pytest.mark.broker, pytest.mark.postgres, pytest.mark.slow]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def click_through(driver: Any, element: Any) -> None:
    """Click and wait for the next page (the old one's elements go stale)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def gone(_driver: Any) -> bool:
        # A node of the old document is stale; Chromium sometimes says so with an
        # inspector error ("does not belong to the document") instead of the stale
        # element error that selenium's staleness_of catches.
        try:
            element.is_enabled()
        except WebDriverException:
            return True
        return False

    element.click()
    WebDriverWait(driver, 15).until(gone)


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
        click_through(driver, button)

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


SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
WIDTHS = (1280, 375)


async def _seed_overview(live_store: HighlightStore, sessions: object, now: datetime) -> None:
    """Profiles of two models (some stale), 24 h of history samples, transitions and dead
    letters: what the overview and the list have to show."""
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from worker.storage.models import DeadLetterCountRow, FreshnessSampleRow, FreshTransitionRow

    for user in range(2301, 2321):
        model = "browser-a" if user % 2 else "browser-b"
        await live_store.upsert_auto(
            result(user, generated_at=now - timedelta(hours=2), llm_model=model), f"s{user}"
        )
    for user in (2301, 2303, 2305, 2306):
        await live_store.mark_stale(user, "new_comment")
    factory: async_sessionmaker[AsyncSession] = sessions  # type: ignore[assignment]
    async with factory.begin() as session:
        for i in range(144):  # every 10 minutes over the last 24 hours
            at = now - timedelta(minutes=10 * i + 1)
            stale = 2 + i % 7
            session.add(
                FreshnessSampleRow(
                    sampled_at=at,
                    total=20,
                    fresh=20 - stale,
                    stale=stale,
                    expired=0,
                    overridden=0,
                    missing=0,
                    pending=stale,
                    oldest_stale_s=600.0,
                )
            )
        session.add_all(
            FreshTransitionRow(
                at=now - timedelta(minutes=5), user_id=2330 + i, stale_s=30.0 * i, wait_s=1.0
            )
            for i in range(1, 11)
        )
        session.add(DeadLetterCountRow(at=now, stream="comments", reason="not_json", count=3))


WIDEST = """return [...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > window.innerWidth)
  .map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))
  .slice(0, 5)"""


class Tour:
    """The overview pages in one browser, each checked for what it must show and saved."""

    def __init__(self, driver: Any, url: str) -> None:
        self.driver, self.url = driver, url

    def click(self, element: Any) -> None:
        click_through(self.driver, element)

    def shot(self, name: str, width: int) -> None:
        # No sideways scrolling of the page itself (tables scroll in their own box).
        self.driver.save_screenshot(str(SCREENSHOTS / f"{name}-{width}.png"))
        scroll = self.driver.execute_script("return document.documentElement.scrollWidth")
        inner = self.driver.execute_script("return window.innerWidth")
        wide = self.driver.execute_script(WIDEST)
        assert scroll <= inner, (name, width, scroll, inner, wide)

    def overview(self, width: int) -> None:
        """Figures, the charts' data points, dead letters, a visible keyboard focus."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        d = self.driver
        d.get(f"{self.url}/admin/")
        assert d.find_element(By.TAG_NAME, "h1").text == "Overview"
        assert int(d.find_element(By.ID, "count-stale").text) >= 4
        for chart in ("chart-stale-share", "chart-pending"):
            points = d.find_elements(By.CSS_SELECTOR, f"#{chart} circle.point")
            assert len(points) >= 90, (chart, len(points))  # 96 quarter-hours, gaps aside
        assert d.find_element(By.ID, "dlq-comments").text == "3"
        d.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
        outline = d.execute_script(
            "return getComputedStyle(arguments[0]).outlineStyle", d.switch_to.active_element
        )
        assert outline not in ("none", ""), outline
        self.shot("overview", width)

    def filtered_list_and_profile(self, width: int, expected: set[str]) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        d = self.driver
        d.get(f"{self.url}/admin/profiles")
        Select(d.find_element(By.NAME, "state")).select_by_value("stale")
        d.find_element(By.NAME, "model").send_keys("browser-a")
        self.click(d.find_element(By.XPATH, "//button[text()='Apply']"))
        assert "state=stale" in d.current_url
        cells = d.find_elements(By.CSS_SELECTOR, "#profile-list td:first-child a")
        assert {c.text for c in cells} == expected
        self.shot("profiles-filtered", width)
        self.click(cells[0])
        assert d.find_element(By.ID, "status").text == "stale"
        assert d.find_elements(By.CSS_SELECTOR, "time[title$=UTC]")
        self.shot("profile", width)

    def bulk_confirmation(self, width: int, count: int) -> None:
        from selenium.webdriver.common.by import By

        d = self.driver
        d.back()
        self.click(d.find_element(By.PARTIAL_LINK_TEXT, "Regenerate this selection"))
        assert d.find_element(By.ID, "bulk-count").text == str(count)
        labels = d.find_elements(By.CSS_SELECTOR, "form label")
        assert labels and all(lbl.find_elements(By.CSS_SELECTOR, "input") for lbl in labels)
        self.shot("bulk-confirm", width)


async def test_overview_list_profile_and_bulk_confirmation_at_desktop_and_phone_widths(
    worker: WorkerProcess,
    live_store: HighlightStore,
    live_sessions: Any,
    browser: object,
) -> None:
    from selenium.webdriver.common.by import By

    from worker.services.auth import TokenService

    now = datetime.now(UTC)
    await _seed_overview(live_store, live_sessions, now)
    token, _ = await TokenService(live_sessions).create("browser-admin", "admin")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tour = Tour(browser, worker.url)

    def run() -> None:
        d = tour.driver
        d.get(f"{worker.url}/admin/login")
        d.find_element(By.NAME, "token").send_keys(token)
        tour.click(d.find_element(By.CSS_SELECTOR, "form button[type=submit]"))
        for width in WIDTHS:
            d.set_window_size(width, 1000)
            tour.overview(width)
            tour.filtered_list_and_profile(width, {"2301", "2303", "2305"})
            tour.bulk_confirmation(width, 3)
        tour.click(d.find_element(By.XPATH, "//button[starts-with(text(), 'Regenerate 3')]"))
        assert d.find_element(By.ID, "bulk-jobs")

    await asyncio.to_thread(run)
    for width in WIDTHS:
        for name in ("overview", "profiles-filtered", "profile", "bulk-confirm"):
            assert (SCREENSHOTS / f"{name}-{width}.png").stat().st_size > 10_000
