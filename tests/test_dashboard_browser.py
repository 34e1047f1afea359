"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright)."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from edge_agent.config import load_config
from edge_agent.counting import Crossing
from edge_agent.runtime import Agent

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is not installed (scripts/setup.sh --test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync"],
        )
        yield instance
        instance.close()


class NoDetector:
    backend = "none"

    def detect(self, frames, imgsz=None):
        raise AssertionError("no camera configured")


def test_dashboard_shows_the_counts_stored_in_sqlite(tmp_path, browser):
    config = load_config(storage={"path": str(tmp_path / "agent.db")}, mqtt={"enabled": False},
                         dashboard={"port": 0})
    agent = Agent(config, detector=NoDetector())
    now = time.time()
    agent.store.record("door-cam", now, [Crossing("entrance", i, "in", now) for i in range(7)]
                       + [Crossing("entrance", 100 + i, "out", now) for i in range(3)])
    agent.start()
    try:
        page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
        page.goto(agent.dashboard.url)
        page.wait_for_function("document.getElementById('total-in').textContent === '7'", timeout=15000)
        assert page.text_content("[data-testid=total-out]") == "3"
        assert page.text_content("[data-testid=occupancy]") == "4"
        assert "entrance" in page.text_content("[data-testid=lines]")
        assert page.text_content("[data-testid=uplink]") == "uplink offline"
        # Live: a new event committed to SQLite appears without a reload.
        later = time.time()
        agent.store.record("door-cam", later, [Crossing("entrance", 200, "in", later)])
        page.wait_for_function("document.getElementById('total-in').textContent === '8'", timeout=15000)
        assert page.evaluate("!!window.Plotly && document.querySelectorAll('#chart .bars .point').length > 0")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
        with sqlite3.connect(config.storage.path) as conn:
            assert conn.execute("SELECT COUNT(*) FROM events WHERE direction='in'").fetchone()[0] == 8
    finally:
        agent.shutdown()
