"""The dashboard's JSON API over real HTTP (uvicorn in the agent) on real SQLite:
every endpoint, logins, sessions, CSRF, roles, and bad input with clear 4xx."""

from __future__ import annotations

import json
import threading
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml

from edge_agent.config import load_config
from edge_agent.counting import Crossing
from edge_agent.dashboard import queries
from edge_agent.dashboard.auth import set_password, users_file
from edge_agent.runtime import Agent
from tests.dashboard_support import ADMIN, FAST_HASH, VIEWER, NoDetector, login, make_accounts

TZ = "Asia/Shanghai"
ZONE = ZoneInfo(TZ)
GET_ENDPOINTS = [
    "/api/me", "/api/summary", "/api/trends", "/api/zones", "/api/health", "/api/setup",
    "/api/cameras/door/heatmap", "/api/cameras/door/snapshot.jpg", "/api/cameras/door/reference.jpg",
    "/api/openapi.json",
]
PAGES = ["/", "/trends", "/zones", "/health", "/setup", "/api/docs"]
CONFIG = """\
# A store with one door camera (this comment must survive a save from the dashboard).
timezone: Asia/Shanghai
cameras:
  - id: door
    source: {source}   # the door camera
    lines:
      - id: entrance
        points: [[0.5, 0.0], [0.5, 1.0]]
    zones:
      - id: shelf-a
        kind: shelf
        product: Tea
        polygon: [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]]
storage:
  path: agent.db
mqtt:
  enabled: false
dashboard:
  port: 0
  login_attempts: 3
  login_window_seconds: 2
"""


def start_agent(tmp_path: Path, config_text: str = CONFIG, accounts: bool = True, config_file: bool = True,
                **overrides) -> Agent:
    path = tmp_path / "agent.yaml"
    path.write_text(config_text.format(source=tmp_path / "no-such-camera.mp4"), encoding="utf-8")
    config = load_config(path, **overrides)
    if accounts:
        make_accounts(config)
    agent = Agent(config, detector=NoDetector(), config_path=path if config_file else None)
    agent.start()
    return agent


@pytest.fixture
def agent(tmp_path):
    agent = start_agent(tmp_path)
    yield agent
    agent.shutdown()


@pytest.fixture
def admin(agent):
    with login(agent.dashboard.url, ADMIN) as client:
        yield client


@pytest.fixture
def viewer(agent):
    with login(agent.dashboard.url, VIEWER) as client:
        yield client


def anonymous(agent) -> httpx.Client:
    return httpx.Client(base_url=agent.dashboard.url, timeout=15)


# -- access control -----------------------------------------------------------------------
def test_nothing_is_served_without_a_login(agent):
    with anonymous(agent) as client:
        for path in GET_ENDPOINTS + ["/api/stream"]:
            response = client.get(path)
            assert response.status_code == 401, path
            assert "log in" in response.json()["detail"]
        for path in PAGES:
            response = client.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/login?next=")
        assert client.put("/api/cameras/door/layout", json={"lines": [], "zones": []}).status_code == 401
        assert client.post("/api/logout").status_code == 401
        # What may be public: the login page and static files (no data in them).
        assert client.get("/login").status_code == 200
        assert client.get("/static/common.js").status_code == 200
        assert client.get("/vendor/plotly.min.js").status_code == 200
        # The liveness probe (doctor, monitoring) answers without a login and carries no counts.
        probe = client.get("/healthz").json()
        assert set(probe) == {"version", "uptime_s", "cameras", "uplink"}
        assert [set(camera) for camera in probe["cameras"]] == [
            {"id", "state", "fps", "last_frame_age_s", "reconnects"}] * len(probe["cameras"])


def test_login_failures_are_clear_and_rate_limited(agent):
    with anonymous(agent) as client:
        wrong = client.post("/api/login", json={"username": "admin", "password": "nope-nope"})
        assert wrong.status_code == 401 and wrong.json()["detail"] == "wrong user name or password"
        unknown = client.post("/api/login", json={"username": "nobody", "password": "nope-nope"})
        assert unknown.status_code == 401 and unknown.json()["detail"] == wrong.json()["detail"]
        assert client.post("/api/login", json={"username": "admin"}).status_code == 422
        assert client.post("/api/login", content=b"not json", headers={"Content-Type": "application/json"}).status_code == 422
        client.post("/api/login", json={"username": "admin", "password": "nope-nope"})
        # login_attempts: 3 → the 4th try is refused before the password is even checked.
        locked = client.post("/api/login", json={"username": "admin", "password": ADMIN[1]})
        assert locked.status_code == 429
        assert 1 <= int(locked.headers["Retry-After"]) <= 3
        assert "too many failed logins" in locked.json()["detail"]
        time.sleep(2.1)  # login_window_seconds: 2
        assert client.post("/api/login", json={"username": "admin", "password": ADMIN[1]}).status_code == 200


def test_cross_site_login_is_refused(agent):
    with anonymous(agent) as client:
        response = client.post("/api/login", json={"username": ADMIN[0], "password": ADMIN[1]},
                               headers={"Origin": "http://evil.example"})
        assert response.status_code == 403


def test_session_cookie_is_httponly_strict_and_ends_on_logout(agent):
    with anonymous(agent) as client:
        response = client.post("/api/login", json={"username": ADMIN[0], "password": ADMIN[1]})
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert 43190 <= int(cookie.split("max-age=")[1].split(";")[0]) <= 43200  # session_hours: 12
        csrf = response.json()["csrf_token"]
        assert client.get("/api/me").json()["role"] == "admin"
        assert client.post("/api/logout").status_code == 403  # CSRF token needed for every change
        assert client.post("/api/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
        client.cookies.clear()
        assert client.get("/api/me").status_code == 401


def test_sessions_expire(tmp_path):
    agent = start_agent(tmp_path, CONFIG + "  session_hours: 0.0003\n")  # about a second
    try:
        with login(agent.dashboard.url) as client:
            assert client.get("/api/me").status_code == 200
            time.sleep(1.3)
            assert client.get("/api/me").status_code == 401
    finally:
        agent.shutdown()


def test_a_new_password_ends_old_sessions(agent, admin):
    assert admin.get("/api/me").status_code == 200
    set_password(users_file(agent.config), ADMIN[0], "admin", "a-new-password", log2_n=FAST_HASH)
    assert admin.get("/api/me").status_code == 401


def test_without_accounts_nobody_gets_in(tmp_path):
    agent = start_agent(tmp_path, accounts=False)
    try:
        with anonymous(agent) as client:
            response = client.post("/api/login", json={"username": "admin", "password": "anything-at-all"})
            assert response.status_code == 401
            assert "edge-agent dashboard set-password" in response.json()["detail"]
            assert client.get("/api/summary").status_code == 401
    finally:
        agent.shutdown()


def test_changes_need_csrf_token_same_origin_and_admin(agent, admin, viewer):
    body = {"lines": [{"id": "entrance", "points": [[0.3, 0.0], [0.3, 1.0]]}], "zones": []}
    url = "/api/cameras/door/layout"
    no_token = admin.put(url, json=body, headers={"X-CSRF-Token": ""})
    assert no_token.status_code == 403 and "CSRF" in no_token.json()["detail"]
    assert admin.put(url, json=body, headers={"X-CSRF-Token": "forged"}).status_code == 403
    cross = admin.put(url, json=body, headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403 and "cross-site" in cross.json()["detail"]
    read_only = viewer.put(url, json=body)
    assert read_only.status_code == 403 and "admin" in read_only.json()["detail"]
    # The viewer reads everything.
    for path in GET_ENDPOINTS[:7]:
        assert viewer.get(path).status_code == 200, path
    assert viewer.get("/api/setup").json()["can_save"] is False
    assert admin.get("/api/setup").json()["can_save"] is True
    assert "entrance" in Path(agent.config_path).read_text()  # nothing was changed
    assert admin.put(url, json=body).status_code == 200


def test_security_headers_and_binding(agent, admin):
    response = admin.get("/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert agent.dashboard._socket.getsockname()[0] == "127.0.0.1"  # the configured address, not 0.0.0.0
    assert load_config().dashboard.host == "127.0.0.1"


# -- setup: lines and zones -------------------------------------------------------------------
@pytest.mark.parametrize("body, field, words", [
    ({"zones": [{"id": "z", "polygon": [[0.1, 0.1], [0.2, 0.2]]}]}, "zones[0] (id 'z').polygon", "at least 3 points"),
    ({"lines": [{"id": "l", "points": [[0.1, 0.1], [1.5, 0.2]]}]}, "lines[0] (id 'l').points[1][0]", "0 to 1"),
    ({"lines": [{"id": "l", "points": [[0.1, -0.1], [0.5, 0.2]]}]}, "lines[0] (id 'l').points[0][1]", "0 to 1"),
    ({"lines": [{"id": "l", "points": [[0.1, 0.1], [0.5, 0.2], [0.6, 0.6]]}]}, "lines[0] (id 'l').points", "exactly 2"),
    ({"lines": [{"id": "l", "points": [[0.1, 0.1], [0.1, 0.1]]}]}, "lines[0] (id 'l').points", "must differ"),
    ({"lines": [{"id": "l", "points": [[0, 0], [1, 1]], "in_side": "up"}]}, "lines[0] (id 'l').in_side", "left"),
    ({"lines": [{"id": "bad id!", "points": [[0, 0], [1, 1]]}]}, "lines[0] (id 'bad id!').id", "letters, digits"),
    ({"zones": [{"id": "z", "kind": "cashier", "polygon": [[0, 0], [1, 0], [1, 1]]}]}, "zones[0] (id 'z').kind", "shelf"),
    ({"zones": [{"id": "z", "polygon": [[0, 0], [1, 0], [1, 1]], "colour": "red"}]}, "zones[0] (id 'z').colour", "unknown"),
])
def test_bad_layouts_are_refused_with_the_field_named(agent, admin, body, field, words):
    before = Path(agent.config_path).read_text()
    response = admin.put("/api/cameras/door/layout", json=body)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert any(e["field"] == field and words in e["message"] for e in errors), errors
    assert field in response.json()["detail"]
    assert Path(agent.config_path).read_text() == before


def test_duplicate_ids_and_unknown_camera(agent, admin):
    line = {"id": "same", "points": [[0, 0], [1, 1]]}
    response = admin.put("/api/cameras/door/layout", json={"lines": [line, line]})
    assert response.status_code == 422 and "used twice" in response.json()["detail"]
    response = admin.put("/api/cameras/garage/layout", json={"lines": []})
    assert response.status_code == 404
    assert response.json()["detail"] == "unknown camera 'garage' (cameras: door)"
    for path in ("/api/cameras/garage/snapshot.jpg", "/api/cameras/garage/reference.jpg",
                 "/api/cameras/garage/heatmap"):
        assert admin.get(path).status_code == 404, path
    not_json = admin.put("/api/cameras/door/layout", content=b"{", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 422


def test_saved_layout_lands_in_the_file_and_the_running_agent(agent, admin):
    tracker = agent.cameras["door"].analytics.tracker
    body = {
        "lines": [{"id": "entrance", "name": "正门", "points": [[0.25, 0.0], [0.25, 1.0]], "in_side": "left"},
                  {"id": "side", "points": [[0.0, 0.5], [1.0, 0.5]]}],
        "zones": [{"id": "shelf-a", "name": "茶叶", "kind": "shelf", "product": "绿茶 Green tea",
                   "polygon": [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4], [0.1, 0.4]]}],
    }
    response = admin.put("/api/cameras/door/layout", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["applied"] is True and result["restart_needed"] == []
    text = Path(agent.config_path).read_text(encoding="utf-8")
    assert "this comment must survive" in text and "# the door camera" in text
    assert Path(str(agent.config_path) + ".bak").exists()
    saved = yaml.safe_load(text)["cameras"][0]
    assert [l["id"] for l in saved["lines"]] == ["entrance", "side"]
    assert saved["lines"][0] == {"id": "entrance", "name": "正门", "points": [[0.25, 0.0], [0.25, 1.0]],
                                 "in_side": "left"}
    assert saved["zones"][0]["product"] == "绿茶 Green tea"
    # The file is still a valid config, equal to what the agent now runs with.
    assert load_config(agent.config_path).cameras == agent.config.cameras
    analytics = agent.cameras["door"].analytics
    assert [(c.line_id, c.p1, c.in_side) for c in analytics.counters] == [
        ("entrance", (0.25, 0.0), "left"), ("side", (0.0, 0.5), "right")]
    assert analytics.tracker is tracker  # track ids carry on
    assert admin.get("/api/setup").json()["cameras"][0]["lines"][0]["name"] == "正门"


def test_apply_config_swaps_between_frames_while_the_loop_runs(tmp_path):
    """Frames keep being processed while the lines change many times; each frame
    is handled by one complete analytics object (old or new), never a mix."""
    import supervision as sv

    agent = start_agent(tmp_path)
    try:
        runtime = agent.cameras["door"]
        used, errors, stop = set(), [], threading.Event()

        def detection_loop():
            while not stop.is_set():
                analytics = runtime.analytics
                try:
                    result = analytics.process(sv.Detections.empty(), (360, 640, 3), time.time())
                    assert len(analytics.counters) == len(analytics.camera.lines)
                    assert result.camera_id == "door"
                    used.add(id(analytics))
                except Exception as exc:  # noqa: BLE001
                    errors.append(exc)

        thread = threading.Thread(target=detection_loop)
        thread.start()
        for n in range(1, 6):
            data = agent.config.model_dump()
            data["cameras"][0]["lines"] = [{"id": f"l{i}", "points": [[0.1 * (i + 1), 0], [0.1 * (i + 1), 1]]}
                                           for i in range(n)]
            result = agent.apply_config(type(agent.config)(**data))
            assert result["cameras"] == ["door"] and result["restart_needed"] == []
            time.sleep(0.05)
        stop.set()
        thread.join(5)
        assert not errors
        assert [c.line_id for c in runtime.analytics.counters] == ["l0", "l1", "l2", "l3", "l4"]
        assert len(used) >= 2
        # A change beyond lines and zones is reported, not applied.
        data = agent.config.model_dump()
        data["mqtt"]["host"] = "10.0.0.9"
        assert agent.apply_config(type(agent.config)(**data))["restart_needed"] == ["mqtt"]
    finally:
        agent.shutdown()


def test_setup_without_a_config_file_cannot_save(tmp_path):
    agent = start_agent(tmp_path, config_file=False)
    try:
        with login(agent.dashboard.url) as client:
            assert client.get("/api/setup").json()["can_save"] is False
            response = client.put("/api/cameras/door/layout", json={"lines": [], "zones": []})
            assert response.status_code == 409
            assert "without a config file" in response.json()["detail"]
    finally:
        agent.shutdown()


def test_snapshot_and_reference_are_served_only_once_taken(agent, admin):
    assert admin.get("/api/cameras/door/snapshot.jpg").status_code == 404
    assert "no snapshot yet" in admin.get("/api/cameras/door/snapshot.jpg").json()["detail"]
    import numpy as np

    snapshots = agent.dashboard.app.state.snapshots
    snapshots.detect = None  # no detector in this test; the tracks' boxes are blurred
    image = np.full((360, 640, 3), 120, np.uint8)
    snapshots.take("door", image, np.array([[10, 10, 100, 300]]), time.time())
    response = admin.get("/api/cameras/door/snapshot.jpg")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.content[:2] == b"\xff\xd8"
    assert admin.get("/api/cameras/door/reference.jpg").status_code == 200
    setup = admin.get("/api/setup").json()["cameras"][0]
    assert setup["snapshot"]["width"] == 640 and setup["snapshot"]["height"] == 360


# -- the numbers -----------------------------------------------------------------------------
def _at(day: date, hour: int, minute: int = 0) -> float:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZONE).timestamp()


def _events(agent, camera, line, direction, times):
    agent.store.record(camera, times[0], [Crossing(line, 1000 + i, direction, ts) for i, ts in enumerate(times)])


def test_today_summary_counts_busiest_hour_last_week_and_conversion(agent):
    """On fixed times, so every figure is known: today 9:10 ×2 in, 10:20 ×3 in and
    1 out, 11:30 ×1 in; last week's same weekday 9:00 ×2 in, 15:00 ×5 in; receipts."""
    today = date(2026, 3, 11)  # a Wednesday
    last_week = today - timedelta(days=7)
    now = _at(today, 12, 0)
    _events(agent, "door", "entrance", "in", [_at(today, 9, 10)] * 2 + [_at(today, 10, 20)] * 3 + [_at(today, 11, 30)])
    _events(agent, "door", "entrance", "out", [_at(today, 10, 25)])
    _events(agent, "door", "entrance", "in", [_at(last_week, 9, 0)] * 2 + [_at(last_week, 15, 0)] * 5)
    _events(agent, "door", "staff-door", "in", [_at(today, 9, 0)])
    with agent.store.transaction() as db:
        db.execute("UPDATE events SET kind = 'staff' WHERE line_id = 'staff-door'")  # staff never count
        for i, ts in enumerate([_at(today, 9, 30), _at(today, 10, 40), _at(last_week, 9, 30), _at(today - timedelta(days=1), 12)]):
            db.execute("INSERT INTO pos_receipts (receipt_id, ts, source, received_at) VALUES (?, ?, 'test', ?)",
                       [f"R{i}", ts, ts])
    _events(agent, "door", "inner-door", "in", [_at(today, 10, 0)] * 9 + [_at(last_week, 9, 0)] * 9)
    summary = queries.today_summary(agent.store.db, now, TZ, pos_configured=True,
                                    exclude={("door", "inner-door")})  # not a store entrance
    assert (summary["in"], summary["out"], summary["occupancy"]) == (6, 1, 5)
    assert {(l["line"], l["in"], l["entrance"]) for l in summary["lines"]} == {("entrance", 6, True),
                                                                             ("inner-door", 9, False)}
    assert summary["busiest_hour"] == {"hour": "2026-03-11T10:00:00+08:00", "in": 3}
    assert summary["hourly_in"][9:12] == [2, 3, 1] and sum(summary["hourly_in"]) == 6
    assert len(summary["hours"]) == 24
    assert summary["conversion"] == {"configured": True, "receipts": 2, "rate": round(2 / 6, 4)}
    last = summary["last_week"]
    assert (last["date"], last["in_same_time"], last["in_whole_day"]) == ("2026-03-04", 2, 7)
    assert last["change"] == 2.0  # 6 against 2 by noon: +200 %
    assert last["receipts_same_time"] == 1 and last["conversion_rate"] == 0.5
    assert queries.today_summary(agent.store.db, now, TZ, pos_configured=False)["conversion"]["rate"] is None


def test_summary_and_live_stream_over_http(agent, admin):
    now = time.time()
    _events(agent, "door", "entrance", "in", [now] * 4)
    summary = admin.get("/api/summary").json()
    assert summary["today"]["in"] == 4 and summary["today"]["lines"][0]["line"] == "entrance"
    assert summary["today"]["conversion"]["configured"] is False
    assert summary["uplink"]["connected"] is False and summary["cameras"][0]["id"] == "door"

    received = []
    with admin.stream("GET", "/api/stream", timeout=20) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "summary":
                body = json.loads(line[6:])
                received.append(body["today"]["in"])
                if len(received) == 1:
                    later = time.time()
                    _events(agent, "door", "entrance", "in", [later])  # committed → pushed
                if body["today"]["in"] == 5:
                    break
    assert received[0] == 4 and received[-1] == 5


def test_trends_by_hour_and_day_per_door_and_zone(agent, admin):
    day = date(2026, 3, 2)
    _events(agent, "door", "entrance", "in", [_at(day, 9, 5), _at(day, 9, 50), _at(day, 14, 0)])
    _events(agent, "door", "entrance", "out", [_at(day, 15, 0)])
    _events(agent, "door", "entrance", "in", [_at(day + timedelta(days=2), 10, 0)])
    _events(agent, "door", "side", "in", [_at(day, 23, 59)])
    with agent.store.transaction() as db:
        for i, ts in enumerate([_at(day, 9, 0), _at(day, 9, 30), _at(day + timedelta(days=1), 8, 0)]):
            db.execute("INSERT INTO zone_visits (camera_id, zone_id, track_id, enter_ts, exit_ts) VALUES (?,?,?,?,?)",
                       ["door", "shelf-a", i, ts, ts + 10])
    daily = admin.get("/api/trends", params={"start": "2026-03-01", "end": "2026-03-05"}).json()
    assert daily["buckets"] == ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05"]
    doors = {(d["camera"], d["line"]): d for d in daily["doors"]}
    assert doors[("door", "entrance")]["in"] == [0, 3, 0, 1, 0]
    assert doors[("door", "entrance")]["out"] == [0, 1, 0, 0, 0]
    assert doors[("door", "side")]["in"] == [0, 1, 0, 0, 0]  # 23:59 local is still the 2nd
    assert daily["total"]["in"] == [0, 4, 0, 1, 0]
    assert daily["zones"] == [{"camera": "door", "zone": "shelf-a", "kind": "shelf", "product": "Tea",
                               "entries": [0, 2, 1, 0, 0]}]
    hourly = admin.get("/api/trends", params={"start": "2026-03-02", "end": "2026-03-02", "granularity": "hour"}).json()
    assert len(hourly["buckets"]) == 24 and hourly["buckets"][9] == "2026-03-02T09:00:00+08:00"
    entrance = next(d for d in hourly["doors"] if d["line"] == "entrance")
    assert entrance["in"][9] == 2 and entrance["in"][14] == 1 and sum(entrance["in"]) == 3
    assert hourly["zones"][0]["entries"][9] == 2


@pytest.mark.parametrize("params, words", [
    ({"start": "2026-03-05", "end": "2026-03-01"}, "is after end"),
    ({"start": "2026-01-01", "end": "2026-03-01", "granularity": "hour"}, "at most 31 days"),
    ({"start": "2024-01-01", "end": "2026-03-01"}, "at most 366 days"),
    ({"start": "yesterday"}, "start"),
    ({"granularity": "week"}, "granularity"),
])
def test_trends_bad_ranges_are_refused(admin, params, words):
    response = admin.get("/api/trends", params=params)
    assert response.status_code == 422
    assert words in response.json()["detail"]


def test_zones_ranking_dwell_and_hot_products(agent, admin):
    day = date(2026, 3, 2)
    start = _at(day, 10)
    stays = {"shelf-a": [2, 6, 12, 40, 90], "shelf-b": [1, 3, 30], "aisle": [4, 200]}
    with agent.store.transaction() as db:
        # Where the analytics keep their own verdict, it says what they would: a stay of ≥ 5 s.
        verdict = queries.has_column(db, "zone_visits", "interaction")
        for zone_id, values in stays.items():
            for i, stay in enumerate(values):
                if verdict:
                    db.execute("INSERT INTO zone_visits (camera_id, zone_id, track_id, enter_ts, exit_ts, interaction) "
                               "VALUES (?,?,?,?,?,?)", ["door", zone_id, i, start + i, start + i + stay, int(stay >= 5)])
                else:
                    db.execute("INSERT INTO zone_visits (camera_id, zone_id, track_id, enter_ts, exit_ts) "
                               "VALUES (?,?,?,?,?)", ["door", zone_id, i, start + i, start + i + stay])
        db.execute("INSERT INTO zone_visits (camera_id, zone_id, track_id, enter_ts, exit_ts, kind) "
                   "VALUES ('door', 'shelf-a', 99, ?, ?, 'staff')", [start, start + 100])
    # shelf-b is a labelled shelf in the config too (saved through the API).
    admin.put("/api/cameras/door/layout", json={
        "lines": [{"id": "entrance", "points": [[0.5, 0], [0.5, 1]]}],
        "zones": [{"id": "shelf-a", "kind": "shelf", "product": "Tea", "polygon": [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]]},
                  {"id": "shelf-b", "kind": "shelf", "product": "Snacks", "polygon": [[0.5, 0.1], [0.9, 0.1], [0.9, 0.4]]},
                  {"id": "shelf-c", "kind": "shelf", "product": "Tea", "polygon": [[0.5, 0.5], [0.9, 0.5], [0.9, 0.9]]},
                  {"id": "aisle", "polygon": [[0, 0.5], [0.4, 0.5], [0.4, 0.9]]}]}).raise_for_status()
    data = admin.get("/api/zones", params={"start": "2026-03-02", "end": "2026-03-02"}).json()
    shelves = {s["zone"]: s for s in data["shelves"]}
    assert [s["zone"] for s in data["shelves"]] == ["shelf-a", "shelf-b", "shelf-c"]
    a = shelves["shelf-a"]  # passing < 5 s; engaged ≥ 30 s; staff excluded
    assert (a["entries"], a["interactions"], a["interaction_rate"]) == (5, 4, 0.8)
    assert (a["passing"], a["browsing"], a["engaged"]) == (1, 2, 2)
    assert a["median_dwell_s"] == 12 and a["p90_dwell_s"] == 90
    assert a["dwell_histogram"] == [1, 2, 0, 1, 1, 0, 0]  # 0-5, 5-15, 15-30, 30-60, 60-120, …
    assert (shelves["shelf-b"]["interactions"], shelves["shelf-b"]["interaction_rate"]) == (1, round(1 / 3, 4))
    assert shelves["shelf-c"]["entries"] == 0 and shelves["shelf-c"]["interaction_rate"] is None
    assert data["zones"][0]["zone"] == "aisle" and data["zones"][0]["dwell_histogram"][-1] == 0
    assert data["zones"][0]["dwell_histogram"][5] == 1  # 200 s: 120-300 bin
    hot = data["hot_products"]
    assert [(p["product"], p["interactions"], p["passers_by"]) for p in hot] == [("Tea", 4, 5), ("Snacks", 1, 3)]
    assert hot[0]["shelves"] == ["door/shelf-a", "door/shelf-c"]
    heat = admin.get("/api/cameras/door/heatmap", params={"start": "2026-03-02", "end": "2026-03-02"}).json()
    assert {z["id"]: z["entries"] for z in heat["zones"]} == {"shelf-a": 5, "shelf-b": 3, "shelf-c": 0, "aisle": 2}
    assert heat["grid"] is None  # no occupancy grid kept for these days


def test_analytics_verdicts_and_occupancy_grid_are_used_where_the_analytics_keep_them(agent, admin):
    """The store analytics (issue 8) add an ``interaction`` column (a long stay or a
    wrist reach) and hourly occupancy grids; the tables are made here as they define them."""
    day = date(2026, 3, 2)
    start = _at(day, 10)
    with agent.store.transaction() as db:
        if not queries.has_column(db, "zone_visits", "interaction"):
            db.execute("ALTER TABLE zone_visits ADD COLUMN interaction INTEGER NOT NULL DEFAULT 0")
        db.execute("CREATE TABLE IF NOT EXISTS heatmap_hours (camera_id TEXT NOT NULL, hour TEXT NOT NULL, "
                   "cols INTEGER NOT NULL, rows INTEGER NOT NULL, frames INTEGER NOT NULL, cells TEXT NOT NULL, "
                   "PRIMARY KEY (camera_id, hour))")
        # A 2 s visit with a reach is an interaction; a 60 s one the analytics did not call one is not.
        for track, (stay, verdict) in enumerate([(2, 1), (60, 0), (8, 1)]):
            db.execute("INSERT INTO zone_visits (camera_id, zone_id, track_id, enter_ts, exit_ts, interaction) "
                       "VALUES ('door', 'shelf-a', ?, ?, ?, ?)", [track, start, start + stay, verdict])
        for hour, cells in (("2026-03-02T02:00Z", [[1, 0, 0], [0, 2, 0]]), ("2026-03-02T03:00Z", [[0, 0, 0], [0, 3, 4]]),
                            ("2026-03-03T02:00Z", [[9, 9, 9], [9, 9, 9]])):
            db.execute("INSERT INTO heatmap_hours VALUES ('door', ?, 3, 2, 100, ?)", [hour, json.dumps(cells)])
    shelf = admin.get("/api/zones", params={"start": "2026-03-02", "end": "2026-03-02"}).json()["shelves"][0]
    assert (shelf["zone"], shelf["interactions"], shelf["entries"]) == ("shelf-a", 2, 3)
    heat = admin.get("/api/cameras/door/heatmap", params={"start": "2026-03-02", "end": "2026-03-02"}).json()
    assert heat["grid"] == {"cols": 3, "rows": 2, "frames": 200, "cells": [[1, 0, 0], [0, 5, 4]]}


def test_health_has_cameras_storage_uplink_and_jobs(agent, admin):
    _events(agent, "door", "entrance", "in", [time.time() - 3600])
    health = admin.get("/api/health").json()
    assert health["cameras"][0]["id"] == "door"
    storage = health["storage"]
    assert storage["database_bytes"] > 0 and 0 < storage["disk_used"] < 1
    assert storage["oldest_data"].endswith("Z")
    assert health["uplink"]["pending"] == 0 and health["pos"] is None
    assert "rollup" in health["jobs"]


def test_openapi_documents_every_endpoint_and_docs_work_offline(admin):
    spec = admin.get("/api/openapi.json").json()
    paths = set(spec["paths"])
    assert {"/api/login", "/api/logout", "/api/me", "/api/summary", "/api/stream", "/api/trends", "/api/zones",
            "/api/health", "/api/setup", "/api/cameras/{camera_id}/layout", "/api/cameras/{camera_id}/snapshot.jpg",
            "/api/cameras/{camera_id}/reference.jpg", "/api/cameras/{camera_id}/heatmap"} <= paths
    assert "LayoutRequest" in json.dumps(spec)
    docs = admin.get("/api/docs").text
    assert "/vendor/swagger/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert admin.get("/vendor/swagger/swagger-ui-bundle.js").status_code == 200


def test_language_from_accept_language_and_the_switch_cookie(agent, admin):
    zh = admin.get("/", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}).text
    assert '<html lang="zh-CN">' in zh and "今日" in zh
    en = admin.get("/", headers={"Accept-Language": "en-GB,en;q=0.9"}).text
    assert '<html lang="en">' in en and ">Today<" in en
    assert '<html lang="en">' in admin.get("/", headers={"Accept-Language": "fr, zh;q=0"}).text
    admin.cookies.set("lang", "en")
    assert '<html lang="en">' in admin.get("/", headers={"Accept-Language": "zh-CN"}).text


def test_every_page_and_script_is_served_from_the_box(admin):
    import re

    for path in PAGES[:-1]:
        html = admin.get(path).text
        assert 'charset="utf-8"' in html
        for url in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert url.startswith("/"), f"{path} loads {url} from outside the box"
            assert admin.get(url).status_code == 200, url


def test_a_read_only_config_file_keeps_drawn_layouts_beside_the_database(tmp_path):
    """A rollout owns /etc/edge-agent/agent.yaml and the hardened service cannot write
    it: Setup saves into layout.yaml beside the database, which load_config applies."""
    from edge_agent.config import LineConfig, ZoneConfig, layout_path
    from edge_agent.dashboard.layout import LayoutError, save_layout_overlay

    path = tmp_path / "etc" / "agent.yaml"
    path.parent.mkdir()
    text = CONFIG.replace("{source}", "rtsp://cam/stream").replace("path: agent.db",
                                                                  f"path: {tmp_path / 'data' / 'agent.db'}")
    path.write_text(text)
    base = load_config(path)
    camera = base.cameras[0].model_copy(update={"lines": [
        LineConfig(id="drawn", points=[(0.3, 0.0), (0.3, 1.0)], in_side="left")]})
    new = save_layout_overlay(path, camera)
    assert path.read_text() == text, "the config file is never touched"
    assert layout_path(new) == tmp_path / "data" / "layout.yaml" and layout_path(new).exists()
    reloaded = load_config(path).cameras[0]
    assert [(line.id, line.in_side) for line in reloaded.lines] == [("drawn", "left")]
    assert [zone.id for zone in reloaded.zones] == ["shelf-a"]
    # A layout the model refuses is not kept.
    bad = camera.model_copy(update={"zones": [ZoneConfig.model_construct(
        id="z", polygon=[(0.1, 0.1), (0.2, 0.2)], kind="zone", product=None)]})
    with pytest.raises(LayoutError):
        save_layout_overlay(path, bad)
    assert [line.id for line in load_config(path).cameras[0].lines] == ["drawn"]
    # Deleting the layout file goes back to the config file's lines.
    layout_path(new).unlink()
    assert [line.id for line in load_config(path).cameras[0].lines] == ["entrance"]
