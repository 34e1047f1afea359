"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright),
against a running agent: the real detector on the sample clip, real SQLite, the
real config file. Screenshots of every page land in test-artifacts/.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import pytest
import yaml

from edge_agent.config import load_config
from edge_agent.counting import Crossing
from edge_agent.dashboard import queries
from edge_agent.runtime import Agent
from tests.dashboard_support import ADMIN, VIEWER, make_accounts

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PHONE = {"width": 390, "height": 844}
TABLET = {"width": 1024, "height": 1366}
TZ = "Asia/Shanghai"


def wait_until(predicate, timeout=20.0, interval=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@pytest.fixture(scope="module")
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


@pytest.fixture(scope="module")
def store(tmp_path_factory, clip, assets_dir):
    """A running agent: the clip as a camera through the real detector, a POS drop
    folder, a config file the Setup page writes, and some history seeded in SQLite."""
    folder = tmp_path_factory.mktemp("store")
    pos_dir = folder / "pos"
    pos_dir.mkdir()
    config_file = folder / "agent.yaml"
    config_file.write_text(yaml.safe_dump({
        "assets_dir": str(assets_dir),
        "timezone": TZ,
        "cameras": [{
            "id": "street", "source": str(clip), "loop": True, "fps_cap": 8,
            # People on the clip walk up and down the picture: they cross this line.
            "lines": [{"id": "door", "points": [[0.0, 0.6], [1.0, 0.6]]}],
        }, {
            # Switched off, so the zone figures below are exactly the seeded ones.
            "id": "shelf-cam", "source": str(clip), "enabled": False,
            "zones": [
                {"id": "shelf-tea", "name": "茶叶架", "kind": "shelf", "product": "Green tea 绿茶",
                 "polygon": [[0.05, 0.1], [0.3, 0.1], [0.3, 0.5], [0.05, 0.5]]},
                {"id": "shelf-snacks", "kind": "shelf", "product": "Snacks",
                 "polygon": [[0.7, 0.1], [0.95, 0.1], [0.95, 0.5], [0.7, 0.5]]},
                {"id": "aisle", "kind": "zone", "polygon": [[0.3, 0.55], [0.7, 0.55], [0.7, 0.95], [0.3, 0.95]]},
            ],
        }],
        "storage": {"path": str(folder / "agent.db")},
        "mqtt": {"enabled": False},
        "dashboard": {"port": 0, "snapshot_seconds": 2},
        "pos": {"enabled": True, "csv_dir": str(pos_dir), "poll_seconds": 3600},
    }, allow_unicode=True), encoding="utf-8")
    config = load_config(config_file)
    make_accounts(config)
    agent = Agent(config, config_path=config_file)
    _seed(agent, pos_dir)
    agent.start()
    assert agent.pos.scan_csv() == 2  # R2 sent twice counts once; the bad row is rejected
    # The switched-off camera's picture: a frame of the clip through the same privacy path.
    capture = cv2.VideoCapture(str(clip))
    for _ in range(120):
        ok, frame = capture.read()
    assert ok and agent.dashboard.app.state.snapshots.take("shelf-cam", frame, np.empty((0, 4)), time.time())
    thread = threading.Thread(target=agent.run, name="detection", daemon=True)
    thread.start()
    assert wait_until(lambda: agent.dashboard.app.state.snapshots.latest("street") is not None, timeout=60), \
        "the pipeline took no snapshot"
    yield agent
    agent.stop()
    thread.join(15)
    agent.shutdown()


def _seed(agent: Agent, pos_dir: Path) -> None:
    """History the pipeline cannot make in a few seconds: last week, shelf visits, receipts."""
    now = time.time()
    zone = ZoneInfo(TZ)
    local_now = datetime.fromtimestamp(now, zone)
    start_of_day = local_now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    earlier = max(start_of_day + 1, now - 3600)
    last_week = (local_now - timedelta(days=7)).timestamp() - min(60.0, (now - start_of_day) / 2)
    agent.store.record("door-cam", earlier, [Crossing("front", i, "in", earlier) for i in range(6)]
                       + [Crossing("front", 50 + i, "out", earlier) for i in range(2)])
    agent.store.record("door-cam", last_week, [Crossing("front", 100 + i, "in", last_week) for i in range(4)])
    visits = [("shelf-tea", 2.0), ("shelf-tea", 12.0), ("shelf-tea", 45.0), ("shelf-tea", 20.0),
              ("shelf-snacks", 3.0), ("shelf-snacks", 8.0), ("aisle", 1.0), ("aisle", 70.0)]
    with agent.store.transaction() as db:
        verdict = queries.has_column(db, "zone_visits", "interaction")  # the analytics' own, where kept
        for track, (zone_id, stay) in enumerate(visits):
            db.execute("INSERT INTO zone_visits (camera_id, zone_id, track_id, enter_ts, exit_ts) VALUES (?,?,?,?,?)",
                       ["shelf-cam", zone_id, 1000 + track, earlier, earlier + stay])
            if verdict:
                db.execute("UPDATE zone_visits SET interaction = ? WHERE track_id = ?", [int(stay >= 5), 1000 + track])
    # The analytics' hourly occupancy grid (issue 8's table, made here if this build lacks it).
    with agent.store.transaction() as db:
        db.execute("CREATE TABLE IF NOT EXISTS heatmap_hours (camera_id TEXT NOT NULL, hour TEXT NOT NULL, "
                   "cols INTEGER NOT NULL, rows INTEGER NOT NULL, frames INTEGER NOT NULL, cells TEXT NOT NULL, "
                   "PRIMARY KEY (camera_id, hour))")
        cells = [[0] * 32 for _ in range(18)]
        for row in range(3, 9):
            for col in range(2, 10):
                cells[row][col] = 40 - abs(row - 6) * 6 - abs(col - 6) * 4  # a hot spot at the tea shelf
        hour = datetime.fromtimestamp(earlier, ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:00Z")
        db.execute("INSERT OR REPLACE INTO heatmap_hours VALUES ('shelf-cam', ?, 32, 18, 500, ?)",
                   [hour, json.dumps(cells)])
    csv_file = pos_dir / "till-1.csv"
    csv_file.write_text("receipt_id,ts,total\nR1,{t},12.5\nR2,{t},8\nR2,{t},8\nbad-row,not-a-time,1\n".format(
        t=datetime.fromtimestamp(earlier, zone).isoformat()), encoding="utf-8")
    os.utime(csv_file, (now - 60, now - 60))


@pytest.fixture
def context_factory(browser, store):
    """New browser contexts that record every request, so nothing leaves the box."""
    made = []
    origin = urlsplit(store.dashboard.url).netloc

    def make(viewport=PHONE, locale="en-US"):
        context = browser.new_context(viewport=viewport, locale=locale)
        context.requests = []
        context.on("request", lambda request: context.requests.append(request.url))
        made.append(context)
        return context

    yield make
    for context in made:
        outside = [url for url in context.requests if urlsplit(url).scheme in ("http", "https")
                   and urlsplit(url).netloc != origin]
        assert not outside, f"the dashboard fetched from outside the box: {outside}"
        context.close()


def until(page, expression, timeout=15000):
    """Poll a JavaScript expression until it is truthy. (Playwright's
    wait_for_function evaluates strings with eval(), which the dashboard's
    Content-Security-Policy rightly forbids; evaluate() goes through DevTools.)"""
    deadline = time.time() + timeout / 1000
    error = None
    while True:
        try:
            if page.evaluate(expression):
                return
        except Exception as exc:  # a navigation in progress, an element not there yet
            error = exc
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {expression} (last error: {error})")
        time.sleep(0.1)


def log_in(page, url, account=ADMIN):
    page.goto(url)
    page.wait_for_url("**/login?next=/")
    page.fill("#username", account[0])
    page.fill("#password", account[1])
    page.click("#login-submit")
    page.wait_for_url(url)


def shot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(400)  # let charts finish their transition
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def visitors_in_today(agent) -> int:
    start = datetime.now(ZoneInfo(TZ)).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    since = datetime.fromtimestamp(start, ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    with sqlite3.connect(agent.config.storage.path) as conn:
        return conn.execute("SELECT COUNT(*) FROM events WHERE ts >= ? AND kind='visitor' AND direction='in'",
                            [since]).fetchone()[0]


def street_events(agent) -> int:
    with sqlite3.connect(agent.config.storage.path) as conn:
        return conn.execute("SELECT COUNT(*) FROM events WHERE camera_id = 'street'").fetchone()[0]


def test_login_then_today_shows_stored_counts_and_updates_live(store, context_factory):
    page = context_factory().new_page()
    page.goto(store.dashboard.url)
    page.wait_for_url("**/login?next=/")
    shot(page, "login-phone")
    page.fill("#username", ADMIN[0])
    page.fill("#password", "wrong password")
    page.click("#login-submit")
    until(page, "document.getElementById('login-error').textContent.length > 0")
    assert "Wrong user name or password" in page.text_content("[data-testid=login-error]")
    page.fill("#password", ADMIN[1])
    page.click("#login-submit")
    page.wait_for_url(store.dashboard.url)

    # The numbers on the page are the numbers in SQLite (the pipeline keeps adding).
    def shown_equals_stored():
        text = page.text_content("[data-testid=total-in]")
        return text not in ("–", None) and int(text.replace(",", "")) == visitors_in_today(store)

    assert wait_until(lambda: street_events(store) > 0, timeout=60), "the pipeline stored no crossing"
    # The pipeline's own line appears (pushed live once its first crossing is stored).
    until(page, "document.querySelector('[data-testid=lines]').textContent.includes('street')", timeout=20000)
    assert "door-cam" in page.text_content("[data-testid=lines]")
    assert wait_until(shown_equals_stored, timeout=20)
    until(page, "document.getElementById('live').textContent === 'live'")
    # Conversion: 2 receipts (R2 sent twice counts once) over today's visitors.
    assert "2 receipts" in page.text_content("[data-testid=conversion-detail]")
    assert page.text_content("[data-testid=conversion]").endswith("%")
    assert "at this time: 4" in page.text_content("[data-testid=lastweek]")

    # Live: a crossing committed now shows up without a reload.
    page.evaluate("window.sameDocument = true")
    now = time.time()
    store.store.record("door-cam", now, [Crossing("side", 900 + i, "in", now) for i in range(3)])
    until(page, "document.querySelector('[data-testid=lines]').textContent.includes('side')")
    assert page.evaluate("window.sameDocument === true"), "the page reloaded instead of updating live"
    assert wait_until(shown_equals_stored, timeout=10)
    assert page.evaluate("document.querySelectorAll('#hours-chart .bars .point').length > 0")
    shot(page, "today-phone")


def test_trends_zones_and_health_pages(store, context_factory):
    page = context_factory().new_page()
    log_in(page, store.dashboard.url)
    page.click("[data-testid=nav-trends]")
    until(page, "document.querySelectorAll('#total-chart .bars .point').length > 0")
    page.select_option("#granularity", "hour")
    page.click("#range button[type=submit]")
    until(page, "location.search.includes('granularity=hour')")
    until(page, "document.querySelectorAll('#doors-chart .scatterlayer .trace').length >= 1")
    shot(page, "trends-phone")

    tablet = context_factory(viewport=TABLET).new_page()
    log_in(tablet, store.dashboard.url)
    tablet.goto(store.dashboard.url + "zones")
    until(tablet, "document.querySelectorAll('#shelves tbody tr').length === 2")
    rows = tablet.locator("#shelves tbody tr").all_text_contents()
    assert "茶叶架" in rows[0] and "Green tea 绿茶" in rows[0]  # 3 of 4 tea visits stayed ≥ 5 s
    assert "75%" in rows[0]
    assert "Green tea 绿茶" in tablet.text_content("[data-testid=hot-products] li:first-child")
    tablet.select_option("#heat-camera", "shelf-cam")
    until(tablet, "document.querySelectorAll('#heatmap .scatterlayer .trace').length === 3")
    until(tablet, "document.querySelector('#heatmap .imagelayer image') !== null")  # the reference picture
    until(tablet, "document.querySelector('#heatmap .heatmaplayer image') !== null")  # the occupancy grid
    shot(tablet, "zones-tablet")

    page.click("[data-testid=nav-health]")
    until(page, "document.querySelector('#cameras tbody').textContent.includes('streaming')")
    assert "2" in page.text_content("[data-testid=pos]")  # receipts stored
    assert page.text_content("[data-testid=storage]")
    shot(page, "health-phone")


def test_setup_draw_a_line_changes_the_file_and_the_running_agent(store, context_factory):
    page = context_factory(viewport=TABLET).new_page()
    log_in(page, store.dashboard.url)
    page.click("[data-testid=nav-setup]")
    until(page, "document.getElementById('snapshot').naturalWidth > 0")
    until(page, "document.querySelectorAll('#overlay g.item').length === 1")
    tracker_before = store.cameras["street"].analytics.tracker

    page.click("[data-testid=add-line]")
    box = page.locator("#overlay").bounding_box()
    page.mouse.click(box["x"] + 0.2 * box["width"], box["y"] + 0.3 * box["height"])
    page.mouse.click(box["x"] + 0.2 * box["width"], box["y"] + 0.9 * box["height"])
    page.fill("[data-testid=f-id]", "side-door")
    page.fill("[data-testid=f-name]", "侧门")
    page.click("[data-testid=flip]")
    page.click("[data-testid=save]")
    until(page, "document.getElementById('status').textContent.includes('Saved')")
    shot(page, "setup-tablet")

    saved = yaml.safe_load(Path(store.config_path).read_text(encoding="utf-8"))
    lines = {line["id"]: line for line in saved["cameras"][0]["lines"]}
    assert set(lines) == {"door", "side-door"}
    new = lines["side-door"]
    assert new["name"] == "侧门" and new["in_side"] == "left"
    (x1, y1), (x2, y2) = new["points"]
    assert abs(x1 - 0.2) < 0.01 and abs(y1 - 0.3) < 0.01 and abs(x2 - 0.2) < 0.01 and abs(y2 - 0.9) < 0.01
    assert saved["cameras"][0].get("zones", []) == [] and len(saved["cameras"][1]["zones"]) == 3  # untouched
    # The running agent counts with it at once, and keeps its tracker (no restart).
    analytics = store.cameras["street"].analytics
    assert [c.line_id for c in analytics.counters] == ["door", "side-door"]
    assert analytics.tracker is tracker_before
    assert store.config.camera("street").lines[1].id == "side-door"

    # A bad edit is refused with the field named, and nothing changes.
    page.click("text=side-door")
    page.fill("[data-testid=f-id]", "side door!")
    page.click("[data-testid=save]")
    until(page, "document.getElementById('status').className.includes('error')")
    assert "lines[1]" in page.text_content("[data-testid=status]")
    assert "side-door" in Path(store.config_path).read_text(encoding="utf-8")


def test_language_follows_the_browser_and_the_switch(store, context_factory):
    page = context_factory(locale="zh-CN").new_page()
    page.goto(store.dashboard.url)
    page.wait_for_url("**/login?next=/")
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    assert page.text_content("#login-submit") == "登录"
    shot(page, "login-zh-phone")
    page.fill("#username", ADMIN[0])
    page.fill("#password", ADMIN[1])
    page.click("#login-submit")
    page.wait_for_url(store.dashboard.url)
    assert page.text_content("[data-testid=nav-today]") == "今日"
    until(page, "document.getElementById('total-in').textContent !== '–'")
    until(page, "document.getElementById('live').textContent === '实时'")
    assert "张小票" in page.text_content("[data-testid=conversion-detail]")
    shot(page, "today-zh-phone")
    page.goto(store.dashboard.url + "setup")
    until(page, "document.getElementById('snapshot').naturalWidth > 0")
    page.select_option("#camera", "shelf-cam")
    until(page, "document.querySelectorAll('#overlay g.item').length === 3")
    until(page, "document.getElementById('snapshot').src.includes('shelf-cam') && "
                "document.getElementById('snapshot').complete")
    assert "茶叶架" in page.text_content("#overlay")
    shot(page, "setup-zh-phone")

    # The switch wins over the browser's language and sticks.
    with page.expect_navigation():
        page.select_option("[data-testid=lang-switch]", "en")
    assert page.evaluate("document.documentElement.lang") == "en"
    assert page.text_content("[data-testid=nav-today]") == "Today"
    page.goto(store.dashboard.url + "health")
    assert page.text_content("[data-testid=nav-health]") == "Health"


def test_viewer_sees_setup_read_only(store, context_factory):
    page = context_factory().new_page()
    log_in(page, store.dashboard.url, VIEWER)
    page.goto(store.dashboard.url + "setup")
    until(page, "!document.getElementById('readonly').hidden")
    assert page.locator("#toolbar").is_hidden()
