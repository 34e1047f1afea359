"""The dashboard's web app: pages, the JSON API behind them, login and live updates.

Every page is a thin HTML shell that fetches the JSON API (documented at
``/api/docs``, OpenAPI at ``/api/openapi.json``); the API is the only way data
reaches a page. Everything except the login page and static files needs a
session; every change needs the admin role and the session's CSRF token.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import fastapi_offline
import plotly
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.middleware.gzip import GZipMiddleware

from .. import __version__
from ..config import _FIXES, LineConfig, ZoneConfig, _location
from ..storage import open_readonly
from . import queries
from .auth import Accounts, LoginLimiter, Session, Sessions, users_file
from .i18n import LANGUAGES, negotiate, texts
from .layout import LayoutError, save_layout, validate_camera
from .snapshots import Snapshots

if TYPE_CHECKING:
    from ..runtime import Agent

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
SWAGGER_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
COOKIE = "edge_session"
PAGES = ("today", "trends", "zones", "health", "setup")
DEFAULT_PASSING_SECONDS = 5.0  # a shorter stay is passing by (and no shelf interaction)
DEFAULT_ENGAGED_SECONDS = 30.0  # a longer one is engaged; between the two: browsing
MAX_HOURLY_DAYS = 31
MAX_DAILY_DAYS = 366

CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
       "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


# -- request / response models (they are the OpenAPI documentation) ----------------------
class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class Me(BaseModel):
    user: str
    role: Literal["admin", "viewer"]
    csrf_token: str = Field(description="send it back as the X-CSRF-Token header on every change")
    expires_at: float
    lang: str


class LayoutRequest(BaseModel):
    """A camera's complete set of counting lines and zones (replaces the current one)."""

    lines: list[LineConfig] = []
    zones: list[ZoneConfig] = []


class LayoutResult(BaseModel):
    camera: str
    lines: list[LineConfig]
    zones: list[ZoneConfig]
    config_file: str
    applied: bool = Field(description="the running agent counts with the new lines and zones")
    restart_needed: list[str] = Field(description="other config sections that differ and need a restart")


def _clear_errors(errors: list[dict], data) -> list[dict]:
    """pydantic errors → ``{"field": "zones[0] (id 'a').polygon", "message": "…"}``."""
    clear = []
    for error in errors:
        loc = tuple(error["loc"])
        if loc and loc[0] in ("body", "query", "path"):
            loc = loc[1:]
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
        if error["type"] in ("greater_than_equal", "less_than_equal") and loc and isinstance(loc[-1], int):
            message += " (coordinates are fractions of the picture, 0 to 1)"
        elif error["type"] in _FIXES:
            message += f" ({_FIXES[error['type']]})"
        clear.append({"field": _location(loc, data) if loc else "(body)", "message": message})
    return clear


class _SecurityHeaders:
    """Pure ASGI (streams pass straight through): CSP, no framing, no sniffing."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                extra = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                         (b"referrer-policy", b"no-referrer")]
                if b"content-security-policy" not in names:
                    extra.append((b"content-security-policy", CSP.encode()))
                message["headers"] = headers + [h for h in extra if h[0] not in names]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(agent: Agent) -> FastAPI:
    app = FastAPI(
        title="edge-agent dashboard API",
        version=__version__,
        description="The JSON API behind the store dashboard. Log in with POST /api/login (a session "
                    "cookie); send the session's CSRF token as X-CSRF-Token on every change.",
        docs_url=None, redoc_url=None, openapi_url=None,
    )
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    app.add_middleware(_SecurityHeaders)
    app.state.stopping = threading.Event()
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    local = threading.local()

    def db():
        if getattr(local, "db", None) is None:
            local.db = open_readonly(agent.config.storage.path)
        return local.db

    dashboard = agent.config.dashboard
    accounts = Accounts(users_file(agent.config))
    sessions = Sessions(agent.store, db, accounts, dashboard.session_hours)
    limiter = LoginLimiter(dashboard.login_attempts, dashboard.login_window_seconds)

    def detect_people(camera_id: str, image):
        camera = agent.config.camera(camera_id)
        return agent.detector.detect([image], imgsz=camera.imgsz)[0].xyxy

    snapshots = Snapshots(Path(agent.config.storage.path).expanduser().parent / "snapshots",
                          dashboard.snapshot_seconds, detect=detect_people)
    agent.frame_observers.append(snapshots.observe)
    app.state.snapshots, app.state.accounts, app.state.limiter = snapshots, accounts, limiter
    if not accounts.all():
        log.warning("no dashboard account yet: run `edge-agent dashboard set-password --role admin` (file %s)",
                    accounts.path)

    # -- helpers -----------------------------------------------------------------------
    def tz() -> str:
        return agent.config.timezone

    def lang_of(request: Request) -> str:
        return negotiate(request.headers.get("accept-language"), request.cookies.get("lang"))

    def zone_info() -> dict[tuple[str, str], dict]:
        return {(camera.id, zone.id): {"kind": zone.kind, "product": zone.product, "name": zone.name}
                for camera in agent.config.cameras for zone in camera.zones}

    def camera_or_404(camera_id: str):
        try:
            return agent.config.camera(camera_id)
        except KeyError:
            known = ", ".join(c.id for c in agent.config.cameras) or "none configured"
            raise HTTPException(404, f"unknown camera {camera_id!r} (cameras: {known})") from None

    def not_entrances() -> frozenset[tuple[str, str]]:
        """Lines configured as not being a store entrance (``entrance: false``, when
        the line model has that flag): shown per line, left out of store totals."""
        return frozenset((camera.id, line.id) for camera in agent.config.cameras for line in camera.lines
                         if getattr(line, "entrance", True) is False)

    def zone_thresholds() -> tuple[float, float, float]:
        """(passing, engaged, interaction) seconds: the analytics settings where the
        agent has them, else the same defaults."""
        analytics = getattr(agent.config, "analytics", None)
        if analytics is not None:
            return (analytics.passing_max_seconds, analytics.engaged_min_seconds,
                    analytics.interaction_min_seconds)
        return DEFAULT_PASSING_SECONDS, DEFAULT_ENGAGED_SECONDS, DEFAULT_PASSING_SECONDS

    def pos_configured() -> bool:
        return agent.config.pos.enabled

    def day_range(start: date | None, end: date | None, default_days: int, limit: int) -> tuple[date, date]:
        today = datetime.now(ZoneInfo(tz())).date()
        end = end or today
        start = start or end - timedelta(days=default_days - 1)
        if start > end:
            raise HTTPException(422, f"start ({start}) is after end ({end})")
        if (end - start).days + 1 > limit:
            raise HTTPException(422, f"at most {limit} days at this granularity; got {(end - start).days + 1}")
        return start, end

    # -- auth dependencies -------------------------------------------------------------------
    def current_session(request: Request) -> Session | None:
        return sessions.get(request.cookies.get(COOKIE))

    def viewer(request: Request) -> Session:
        session = current_session(request)
        if session is None:
            raise HTTPException(401, "log in first (POST /api/login)")
        return session

    def same_origin(request: Request) -> None:
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc != request.headers.get("host"):
            raise HTTPException(403, "cross-site request refused")

    def change(request: Request, session: Session = Depends(viewer)) -> Session:
        same_origin(request)
        token = request.headers.get("x-csrf-token") or ""
        if not hmac.compare_digest(token.encode(), session.csrf_token.encode()):
            raise HTTPException(403, "missing or wrong CSRF token (X-CSRF-Token): reload the page")
        return session

    def admin_change(session: Session = Depends(change)) -> Session:
        if session.role != "admin":
            raise HTTPException(403, "this needs the admin role; you are logged in read-only")
        return session

    @app.exception_handler(RequestValidationError)
    async def clear_validation_error(request: Request, exc: RequestValidationError):
        errors = _clear_errors(list(exc.errors()), getattr(exc, "body", None))
        return JSONResponse(status_code=422, content={
            "detail": "; ".join(f"{e['field']}: {e['message']}" for e in errors), "errors": errors})

    # -- pages ------------------------------------------------------------------------------
    def page(request: Request, name: str, session: Session | None):
        language = lang_of(request)
        boot = {
            "page": name,
            "lang": language,
            "languages": list(LANGUAGES),
            "texts": texts(language),
            "store": agent.identity.store,
            "device": agent.identity.device,
            "timezone": tz(),
            "user": session.username if session else None,
            "role": session.role if session else None,
            "csrf": session.csrf_token if session else None,
            "pos": pos_configured(),
        }
        return templates.TemplateResponse(request, f"{name}.html", {
            "t": boot["texts"], "lang": language, "page": name, "pages": PAGES, "boot": json.dumps(boot).replace("<", "\\u003c"),
            "store": agent.identity.store, "session": session,
        }, headers={"Cache-Control": "no-store"})

    def html_page(name: str):
        def handler(request: Request):
            session = current_session(request)
            if session is None:
                return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
            return page(request, name, session)

        handler.__name__ = f"page_{name}"
        return handler

    for name in PAGES:
        app.get("/" if name == "today" else f"/{name}", response_class=HTMLResponse,
                include_in_schema=False)(html_page(name))

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request, next: str = "/"):
        if current_session(request) is not None:
            return RedirectResponse(_local(next), status_code=303)
        return page(request, "login", None)

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def plotly_js():
        return FileResponse(PLOTLY_JS, media_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/vendor/swagger/{name}", include_in_schema=False)
    def swagger_asset(name: Literal["swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"]):
        return FileResponse(SWAGGER_DIR / name, headers={"Cache-Control": "public, max-age=86400"})

    # -- API: session ---------------------------------------------------------------------------
    @app.post("/api/login", response_model=Me, tags=["session"],
              responses={401: {"description": "wrong user name or password"},
                         429: {"description": "too many failed logins; see Retry-After"}})
    def login(body: LoginRequest, request: Request, response: Response):
        """Open a session: sets an HttpOnly, SameSite=Strict cookie. Failed logins are
        limited per client address and per user name (``dashboard.login_attempts`` per
        ``dashboard.login_window_seconds``)."""
        same_origin(request)
        client = request.client.host if request.client else "?"
        wait = limiter.retry_after(client, body.username)
        if wait > 0:
            raise HTTPException(429, f"too many failed logins; try again in {int(wait) + 1} s",
                                headers={"Retry-After": str(int(wait) + 1)})
        if not accounts.all():
            raise HTTPException(401, "no dashboard account is set up yet: run `edge-agent dashboard "
                                     "set-password --role admin` on the store box")
        account = accounts.authenticate(body.username, body.password)
        if account is None:
            limiter.failed(client, body.username)
            raise HTTPException(401, "wrong user name or password")
        limiter.succeeded(client)
        token, session = sessions.open(account)
        response.set_cookie(COOKIE, token, max_age=int(session.expires_at - time.time()), httponly=True,
                            samesite="strict", secure=request.url.scheme == "https", path="/")
        return Me(user=session.username, role=session.role, csrf_token=session.csrf_token,
                  expires_at=session.expires_at, lang=lang_of(request))

    @app.post("/api/logout", status_code=204, tags=["session"])
    def logout(request: Request, response: Response, session: Session = Depends(change)):
        """End this session (needs the CSRF token like every change)."""
        sessions.close(request.cookies.get(COOKIE))
        response.delete_cookie(COOKIE, path="/")

    @app.get("/api/me", response_model=Me, tags=["session"])
    def me(request: Request, session: Session = Depends(viewer)):
        """Who is logged in, the role, and the CSRF token for changes."""
        return Me(user=session.username, role=session.role, csrf_token=session.csrf_token,
                  expires_at=session.expires_at, lang=lang_of(request))

    # -- API: data --------------------------------------------------------------------------------
    summary_cache: dict = {"at": 0.0, "data": None}
    summary_lock = threading.Lock()

    def build_summary() -> dict:
        now = time.time()
        health = agent.health()
        return {
            "store": agent.identity.store,
            "device": agent.identity.device,
            "timezone": tz(),
            "today": queries.today_summary(db(), now, tz(), pos_configured(), not_entrances()),
            "minutes": queries.recent_minutes(db(), now),
            "uplink": health["uplink"],
            "cameras": health["cameras"],
        }

    def cached_summary(max_age: float = 1.0) -> dict:
        with summary_lock:
            if summary_cache["data"] is None or time.time() - summary_cache["at"] > max_age:
                summary_cache["data"] = build_summary()
                summary_cache["at"] = time.time()
            return summary_cache["data"]

    @app.get("/api/summary", tags=["today"])
    def summary(session: Session = Depends(viewer)):
        """Today in the store's time zone: visitors in/out, occupancy, hours, the busiest
        hour, conversion (POS receipts ÷ visitors in) and the same weekday last week
        (up to the same time of day); the last 30 minutes; uplink and camera health."""
        return build_summary()

    @app.get("/api/stream", tags=["today"], response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "server-sent events: `summary` (the /api/summary body) "
                                             "whenever it changes, a comment every 15 s otherwise"}})
    async def stream(request: Request, session: Session = Depends(viewer)):
        """Live updates for the Today page (EventSource)."""
        token = request.cookies.get(COOKIE)

        async def events():
            yield "retry: 3000\n\n"
            last_body, last_sent, last_check = None, 0.0, time.monotonic()
            while not app.state.stopping.is_set():
                if await request.is_disconnected():
                    break
                now = time.monotonic()
                if now - last_check > 30:
                    last_check = now
                    if await run_in_threadpool(sessions.get, token) is None:
                        yield "event: logout\ndata: {}\n\n"
                        break
                body = json.dumps(await run_in_threadpool(cached_summary), separators=(",", ":"))
                if body != last_body:
                    yield f"event: summary\ndata: {body}\n\n"
                    last_body, last_sent = body, now
                elif now - last_sent > 15:
                    yield ": keep-alive\n\n"
                    last_sent = now
                await asyncio.sleep(1.0)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/api/trends", tags=["trends"])
    def trends(
        session: Session = Depends(viewer),
        start: Annotated[date | None, Query(description="first local day, YYYY-MM-DD")] = None,
        end: Annotated[date | None, Query(description="last local day (included), YYYY-MM-DD; default today")] = None,
        granularity: Literal["hour", "day"] = "day",
    ):
        """Visitors in/out per door (camera and line) and entries per zone, by local hour
        (at most 31 days) or day (at most 366 days). Default: the last 7 days / today."""
        limit = MAX_HOURLY_DAYS if granularity == "hour" else MAX_DAILY_DAYS
        first, last = day_range(start, end, 1 if granularity == "hour" else 7, limit)
        return queries.trends(db(), first, last, tz(), granularity, zone_info(), not_entrances())

    @app.get("/api/zones", tags=["zones"])
    def zones(
        session: Session = Depends(viewer),
        start: Annotated[date | None, Query(description="first local day, YYYY-MM-DD; default today")] = None,
        end: Annotated[date | None, Query(description="last local day (included); default today")] = None,
    ):
        """Shelf ranking by interactions and interaction rate, dwell per zone (median,
        p90, histogram, passing / browsing / engaged) and the hot products list."""
        first, last = day_range(start, end, 1, MAX_DAILY_DAYS)
        begin, _ = queries.day_bounds(first, tz())
        _, finish = queries.day_bounds(last, tz())
        passing, engaged, interaction = zone_thresholds()
        result = queries.zone_stats(db(), begin, finish, time.time(), passing, engaged, zone_info(), interaction)
        names = {key: info.get("name") for key, info in zone_info().items()}
        for entry in result["zones"] + result["shelves"]:
            entry["name"] = names.get((entry["camera"], entry["zone"]))
        return {"start": first.isoformat(), "end": last.isoformat(), **result}

    @app.get("/api/cameras/{camera_id}/heatmap", tags=["zones"])
    def heatmap(
        camera_id: str,
        session: Session = Depends(viewer),
        start: Annotated[date | None, Query(description="first local day; default today")] = None,
        end: Annotated[date | None, Query(description="last local day (included); default today")] = None,
    ):
        """Visitor entries per zone of a camera and, where the analytics keep one, the
        occupancy grid (person-frames per cell, whole hours), for drawing over the
        camera's privacy-safe reference image."""
        camera = camera_or_404(camera_id)
        first, last = day_range(start, end, 1, MAX_DAILY_DAYS)
        begin, _ = queries.day_bounds(first, tz())
        _, finish = queries.day_bounds(last, tz())
        heat = queries.zone_heat(db(), camera.id, begin, finish)
        snapshot = snapshots.latest(camera.id)
        return {
            "grid": queries.heatmap_grid(db(), camera.id, begin, finish),
            "camera": camera.id,
            "start": first.isoformat(),
            "end": last.isoformat(),
            "reference": f"/api/cameras/{camera.id}/reference.jpg" if snapshot else None,
            "width": snapshot.width if snapshot else None,
            "height": snapshot.height if snapshot else None,
            "zones": [{"id": zone.id, "name": zone.name, "kind": zone.kind, "product": zone.product,
                       "polygon": zone.polygon, "entries": heat.get(zone.id, 0)} for zone in camera.zones],
        }

    @app.get("/healthz", tags=["health"])
    def liveness():
        """No login: what a local probe (``edge-agent doctor``, a load balancer) needs to
        see the agent alive — version, uptime, each camera's state. No counts."""
        health = agent.health()
        return {
            "version": __version__,
            "uptime_s": health["uptime_s"],
            "cameras": [{key: camera.get(key) for key in ("id", "state", "fps", "last_frame_age_s", "reconnects")}
                        for camera in health["cameras"]],
            "uplink": {"connected": health["uplink"].get("connected")},
        }

    @app.get("/api/health", tags=["health"])
    def health(session: Session = Depends(viewer)):
        """Cameras (fps, last frame, reconnects), sensor nodes when the agent has them,
        storage (database size, disk, oldest data), uplink, POS feed, scheduled jobs."""
        result = agent.health()
        result["storage"] = queries.storage_health(db(), agent.config.storage.path, result["storage"])
        result["pos"] = agent.pos.health() if agent.pos is not None else None
        result.setdefault("sensors", None)
        return result

    # -- API: setup -------------------------------------------------------------------------------
    def can_save() -> tuple[bool, str | None]:
        path = agent.config_path
        if path is None:
            return False, "the agent was started without a config file"
        return True, str(path)

    @app.get("/api/setup", tags=["setup"])
    def setup(session: Session = Depends(viewer)):
        """Each camera's lines and zones, and its latest privacy-safe snapshot."""
        writable, where = can_save()
        cameras = []
        for camera in agent.config.cameras:
            snapshot = snapshots.latest(camera.id)
            cameras.append({
                "id": camera.id,
                "running": camera.id in agent.cameras,
                "lines": [line.model_dump(mode="json") for line in camera.lines],
                "zones": [zone.model_dump(mode="json") for zone in camera.zones],
                "snapshot": {"url": f"/api/cameras/{camera.id}/snapshot.jpg", "taken_at": snapshot.taken_at,
                             "width": snapshot.width, "height": snapshot.height} if snapshot else None,
            })
        return {"cameras": cameras, "config_file": where if writable else None,
                "can_save": writable and session.role == "admin", "cannot_save_reason": None if writable else where}

    def jpeg(data: bytes | None, what: str):
        if data is None:
            raise HTTPException(404, f"no {what} yet: the camera has not delivered a frame since the agent started")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/api/cameras/{camera_id}/snapshot.jpg", tags=["setup"], response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "unknown camera or none yet"}})
    def snapshot(camera_id: str, session: Session = Depends(viewer)):
        """The newest snapshot with every detected person pixelated."""
        camera = camera_or_404(camera_id)
        latest = snapshots.latest(camera.id)
        return jpeg(latest.jpeg if latest else None, "snapshot")

    @app.get("/api/cameras/{camera_id}/reference.jpg", tags=["zones"], response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "unknown camera or none yet"}})
    def reference(camera_id: str, session: Session = Depends(viewer)):
        """The camera's reference image: the median of recent pixelated snapshots (people fade out)."""
        camera = camera_or_404(camera_id)
        return jpeg(snapshots.reference(camera.id), "reference image")

    @app.put("/api/cameras/{camera_id}/layout", response_model=LayoutResult, tags=["setup"],
             responses={403: {"description": "not admin, or CSRF token missing"},
                        404: {"description": "unknown camera"},
                        409: {"description": "the config file cannot be written"},
                        422: {"description": "invalid lines or zones; each problem names the field"}})
    def put_layout(camera_id: str, body: LayoutRequest, session: Session = Depends(admin_change)):
        """Replace a camera's counting lines and zones: validated with the agent's own
        config model, written into the config file, applied by the running agent at
        once (no restart)."""
        camera = camera_or_404(camera_id)
        raw = body.model_dump(mode="json")
        try:
            updated = validate_camera(camera, raw["lines"], raw["zones"])
        except ValidationError as exc:
            errors = _clear_errors(list(exc.errors()), raw)
            return JSONResponse(status_code=422, content={
                "detail": "; ".join(f"{e['field']}: {e['message']}" for e in errors), "errors": errors})
        writable, where = can_save()
        if not writable:
            raise HTTPException(409, f"cannot save: {where}")
        try:
            new_config = save_layout(Path(agent.config_path), updated)
        except LayoutError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        result = agent.apply_config(new_config)
        saved = new_config.camera(camera.id)
        log.info("layout of camera %s saved by %s: %d lines, %d zones", camera.id, session.username,
                 len(saved.lines), len(saved.zones))
        return LayoutResult(camera=camera.id, lines=saved.lines, zones=saved.zones, config_file=str(agent.config_path),
                            applied=camera.id in result["cameras"] or camera.id not in agent.cameras,
                            restart_needed=result["restart_needed"])

    # -- API documentation (served locally, behind login) ---------------------------------------
    @app.get("/api/openapi.json", include_in_schema=False)
    def openapi_json(session: Session = Depends(viewer)):
        return app.openapi()

    @app.get("/api/docs", include_in_schema=False)
    def api_docs(request: Request):
        if current_session(request) is None:
            return RedirectResponse("/login?next=/api/docs", status_code=303)
        response = get_swagger_ui_html(openapi_url="/api/openapi.json", title="edge-agent dashboard API",
                                       swagger_js_url="/vendor/swagger/swagger-ui-bundle.js",
                                       swagger_css_url="/vendor/swagger/swagger-ui.css",
                                       swagger_favicon_url="/vendor/swagger/favicon.png")
        # Swagger UI starts from an inline script.
        response.headers["Content-Security-Policy"] = CSP.replace("script-src 'self'",
                                                                  "script-src 'self' 'unsafe-inline'")
        return response

    # /metrics (Prometheus) answers without a login, like any exporter: counters only, no
    # personal data. `metrics.port` moves it off the dashboard port.
    from ..ops.metrics import mount_metrics

    mount_metrics(app, agent)
    return app


def _local(target: str) -> str:
    """Only same-site paths after login (no open redirect)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
