"""What the web server answers, independent of the HTTP plumbing in :mod:`chronod.web.server`.

:class:`WebApp` maps a parsed :class:`Request` to a :class:`Response`. Every answer is built
from the same :mod:`chronod.ops` snapshots and actions as ``chronod status``, ``history``,
``trigger``, ``pause`` and ``resume``, on a store opened for that one request (so no connection,
least of all a SQLite one, is shared between the server's threads). The endpoints are documented
in :mod:`chronod.web.server`.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import unquote

from chronod import __version__, ops
from chronod.config import Config, JobConfig
from chronod.errors import JobNotLoaded, StoreError, StoreMissing, StoreUnavailable
from chronod.instants import check_range, format_utc, parse_utc
from chronod.logs import event
from chronod.preview import as_json, upcoming
from chronod.runtime import ConfigWatcher
from chronod.store.base import Store
from chronod.store.sqlite import SQLiteStore
from chronod.tz import get_zone
from chronod.web import timeline

log = logging.getLogger("chronod.web")

TOKEN_ENV = "CHRONOD_WEB_TOKEN"
MAX_BODY = 16 * 1024  # action bodies are "{}"; anything near this size is not from the page
HISTORY_DEFAULT = 50
HISTORY_MAX = 1000
UPCOMING_ON_JOB_PAGE = 5
MAX_HOURS = 7 * 24  # the timeline zooms out to a week
STATIC_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_JOB = r"(?P<job>[^/]+)"


class ApiError(Exception):
    """An answer other than 200, with the one-line reason shown to the user as ``{"error"}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, kw_only=True)
class Request:
    method: str
    path: str  # without the query string, still percent-encoded
    query: Mapping[str, str]  # last value of each parameter
    headers: Mapping[str, str]  # lower-case names
    body: bytes = b""
    client: str = ""  # the peer's address, for the log of actions


@dataclass(frozen=True, kw_only=True)
class Response:
    status: int
    body: bytes
    content_type: str
    cache: str = "no-store"  # API answers are live state: never reuse one


def json_response(status: int, data: Any) -> Response:
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(status=status, body=body, content_type="application/json; charset=utf-8")


def error_response(status: int, message: str) -> Response:
    return json_response(status, {"error": message, "status": status})


class ConfigSource:
    """The config file, reloaded when it changes; an invalid edit keeps the last good config.

    The page must keep working while someone edits ``schedules.toml`` (the daemon does the same on
    SIGHUP). The reason an edit is invalid is deliberately not kept: issue texts quote the offending
    values, and those may be secrets (an ``env`` table, a store URL); ``chronod check`` shows them
    to whoever may read the file. (The watching itself is :class:`chronod.runtime.ConfigWatcher`.)
    """

    def __init__(self, path: Path) -> None:
        # The first load must succeed: raises ConfigError. ``[chronod]`` settings (the store, the
        # token) apply at once here: every request reads them, so a change is not "for later".
        self._watcher = ConfigWatcher.load(path, log, explain=False, restart_note=False)

    def current(self) -> tuple[Config, bool]:
        """The config to use, and whether the file on disk is newer but invalid."""
        return self._watcher.current()


StoreOpener = Callable[[Config], Store]


class WebApp:
    """Routes requests to handlers; one instance serves every thread."""

    def __init__(
        self,
        *,
        config: ConfigSource,
        open_store: StoreOpener,
        env_token: str | None = None,
    ) -> None:
        self._config = config
        self._open_store = open_store
        self._env_token = env_token or None
        self._sqlite_lock = threading.Lock()
        self._get: list[tuple[re.Pattern[str], Callable[..., Response]]] = [
            (re.compile(r"/"), self._overview_page),
            (re.compile(rf"/jobs/{_JOB}"), self._job_page),
            (re.compile(r"/static/(?P<name>[a-z]+\.(?:js|css))"), self._static),
            (re.compile(r"/api/v1/status"), self._status),
            (re.compile(r"/api/v1/jobs"), self._jobs),
            (re.compile(rf"/api/v1/jobs/{_JOB}"), self._job),
            (re.compile(rf"/api/v1/jobs/{_JOB}/history"), self._history),
            (re.compile(r"/api/v1/timeline"), self._timeline),
        ]
        self._post: list[tuple[re.Pattern[str], Callable[..., Response]]] = [
            (re.compile(r"/api/v1/auth"), self._auth),
            (re.compile(rf"/api/v1/jobs/{_JOB}/(?P<action>trigger|pause|resume)"), self._action),
        ]

    # -- dispatch ----------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """The response to ``request``; never raises."""
        try:
            return self._route(request)
        except ApiError as exc:
            return error_response(exc.status, exc.message)
        except StoreMissing as exc:
            # The page never creates a store (docs/operations.md): a daemon does, and until one
            # has, only status, jobs and job pages have something to say (the configured jobs).
            return error_response(409, f"{exc}: no chronod process uses this store yet")
        except StoreUnavailable as exc:
            return error_response(503, f"store unavailable: {exc}")
        except StoreError as exc:
            return error_response(500, f"store error: {exc}")
        except Exception:
            # The text of an unexpected exception may hold anything (a URL, a value): log it here,
            # where the operator reads logs, and answer with nothing but the fact.
            log.exception("web request failed: %s %s", request.method, request.path)
            return error_response(500, "internal error (see the chronod web log)")

    def _route(self, request: Request) -> Response:
        routes = {"GET": self._get, "POST": self._post}
        for pattern, handler in routes.get(request.method, []):
            match = pattern.fullmatch(request.path)
            if match:
                params = {k: unquote(v) for k, v in match.groupdict().items()}
                return handler(request, **params)
        allowed = [
            method
            for method, table in routes.items()
            if any(pattern.fullmatch(request.path) for pattern, _ in table)
        ]
        if allowed:
            raise ApiError(405, f"{request.method} is not allowed here; use {' or '.join(allowed)}")
        raise ApiError(404, f"no such page or endpoint: {request.path}")

    @property
    def actions_enabled(self) -> bool:
        return self._token(self._config.current()[0]) is not None

    def _token(self, config: Config) -> str | None:
        # The environment wins, like CHRONOD_STORE over [chronod] store; empty means "not set".
        return self._env_token or config.daemon.web_token or None

    @contextmanager
    def _store(self, config: Config) -> Iterator[Store]:
        """A store for one request, closed after it.

        SQLite stores are used one request at a time. POSIX locks belong to a process, not to a
        connection: two connections to one file in one process can cancel each other's locks
        (closing any descriptor of the file drops them all), and a process whose locks are gone
        can lose writes to another process that believes it is the database's last user. A
        loopback admin page gains nothing from parallel SQLite reads; Redis needs no such care.
        """
        store = self._open_store(config)
        guard = self._sqlite_lock if isinstance(store, SQLiteStore) else nullcontext()
        with guard:
            try:
                yield store
            finally:
                store.close()

    # -- pages -------------------------------------------------------------------------------------

    def _overview_page(self, request: Request) -> Response:
        return self._page(view="overview", job="", title="chronod")

    def _job_page(self, request: Request, job: str) -> Response:
        config, _ = self._config.current()
        if job not in config.jobs:
            with self._store(config) as store:
                try:
                    retired = job in store.job_states()
                except StoreMissing:
                    retired = False
                if not retired:
                    return self._page(view="job", job=job, title=f"{job} · chronod", status=404)
        return self._page(view="job", job=job, title=f"{job} · chronod")

    def _page(self, *, view: str, job: str, title: str, status: int = 200) -> Response:
        config, _ = self._config.current()
        known = config.jobs.get(job)
        schedule = "" if known is None else f"{known.schedule.describe()}, {known.timezone}"
        text = Template(_static_text("index.html")).substitute(
            title=escape(title),
            view=escape(view),
            job=escape(job),
            schedule=escape(schedule),
            actions="on" if self._token(config) is not None else "off",
            version=escape(__version__),
            overview_hidden="" if view == "overview" else "hidden",
            job_hidden="" if view == "job" else "hidden",
        )
        return Response(
            status=status,
            body=text.encode(),
            content_type="text/html; charset=utf-8",
            cache="no-cache",
        )

    def _static(self, request: Request, name: str) -> Response:
        if name not in STATIC_TYPES:
            raise ApiError(404, f"no such file: {name}")
        return Response(
            status=200,
            body=_static_text(name).encode(),
            content_type=STATIC_TYPES[name],
            cache="no-cache",  # revalidate: a page and its script must come from one version
        )

    # -- reading -----------------------------------------------------------------------------------

    @staticmethod
    def _cluster_status(store: Store, config: Config) -> ops.ClusterStatus:
        """As ``chronod status``: a store that does not exist shows the configured jobs and says
        that no daemon uses it."""
        now = store.now()
        try:
            return ops.cluster_status(store, config, now)
        except StoreMissing:
            return ops.missing_store_status(store, config, now)

    def _status(self, request: Request) -> Response:
        config, stale = self._config.current()
        with self._store(config) as store:
            status = self._cluster_status(store, config)
        return json_response(
            200,
            {
                **ops.status_json(status),
                "actions_enabled": self._token(config) is not None,
                "config_stale": stale,
                "version": __version__,
            },
        )

    def _jobs(self, request: Request) -> Response:
        config, _ = self._config.current()
        with self._store(config) as store:
            status = self._cluster_status(store, config)
            jobs = [self._job_summary(store, config, job) for job in status.jobs]
        return json_response(200, {"now": format_utc(status.now), "jobs": jobs})

    def _job(self, request: Request, job: str) -> Response:
        config, _ = self._config.current()
        with self._store(config) as store:
            status = self._cluster_status(store, config)
            found = next((j for j in status.jobs if j.name == job), None)
            if found is None:
                raise _no_job(job, config)
            summary = self._job_summary(store, config, found)
        summary["upcoming"] = _upcoming(found, status.now)
        return json_response(200, summary)

    def _job_summary(self, store: Store, config: Config, job: ops.JobStatus) -> dict[str, Any]:
        try:
            history = store.history(job.name, config.daemon.history)
            live = [run.run_id for run in store.live_runs(job.name)]
        except StoreMissing:
            history, live = [], []
        last = history[0] if history else None
        last_run = None
        if last is not None:
            last_run = {k: v for k, v in ops.run_json(last).items() if k != "output"}
        return {
            **ops.job_json(job),
            "description": "" if job.config is None else job.config.description,
            "stats": ops.stats_json(ops.run_stats(history, live)),
            "last_run": last_run,
        }

    def _history(self, request: Request, job: str) -> Response:
        limit = _int_param(request, "limit", HISTORY_DEFAULT, 1, HISTORY_MAX)
        config, _ = self._config.current()
        with self._store(config) as store:
            if job not in config.jobs and job not in store.job_states():
                raise _no_job(job, config)
            history = ops.job_history(store, job, limit, config)
            now = store.now()
        known = config.jobs.get(job)
        zone = get_zone("UTC") if known is None else known.schedule.zone
        return json_response(
            200,
            {
                "job": job,
                "now": format_utc(now),
                "timezone": zone.name,
                "live": [ops.run_json_local(run, zone) for run in history.live],
                "runs": [ops.run_json_local(run, zone) for run in history.runs],
            },
        )

    def _timeline(self, request: Request) -> Response:
        hours = _float_param(request, "hours", 24.0, 1.0, MAX_HOURS)
        past = _float_param(request, "past", hours / 4, 0.0, MAX_HOURS)
        zone = request.query.get("zone", "job")
        if zone not in ("job", "utc"):
            raise ApiError(400, "zone: expected 'job' or 'utc'")
        at = _instant_param(request, "at")
        config, _ = self._config.current()
        with self._store(config) as store:
            now = store.now()
            line = timeline.timeline(
                store,
                config,
                now=now,
                at=at or now,
                before=timedelta(hours=past),
                after=timedelta(hours=hours),
            )
        return json_response(200, timeline.timeline_json(line, "job" if zone == "job" else "utc"))

    # -- actions -----------------------------------------------------------------------------------

    def _auth(self, request: Request) -> Response:
        """Lets the page tell a mistyped token at once, instead of at the first action."""
        config, _ = self._config.current()
        self._authorize(request, config)
        _json_body(request)
        return json_response(200, {"ok": True})

    def _action(self, request: Request, job: str, action: str) -> Response:
        config, _ = self._config.current()
        self._authorize(request, config)
        _json_body(request)
        found = config.jobs.get(job)
        if found is None:
            raise _no_job(job, config)
        event(log, logging.INFO, f"web: {action}", job=job, client=request.client)
        with self._store(config) as store:
            return _perform(store, found, action)

    def _authorize(self, request: Request, config: Config) -> None:
        """Checked on every action request: nothing about a client is remembered between them."""
        token = self._token(config)
        if token is None:
            raise ApiError(
                403,
                "actions are disabled: set [chronod] web_token or CHRONOD_WEB_TOKEN to enable "
                "them (the page is read-only until then)",
            )
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # compare_digest takes the same time wherever the first difference is, so the answer's
        # timing says nothing about how much of a guess was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            raise ApiError(403, "missing or wrong token (send 'Authorization: Bearer TOKEN')")


def _perform(store: Store, job: JobConfig, action: str) -> Response:
    try:
        if action == "trigger":
            run = ops.trigger(store, job)
            return json_response(202, {"action": action, "run": ops.run_json(run)})
        change = ops.pause(store, job.name) if action == "pause" else ops.resume(store, job.name)
    except JobNotLoaded as exc:
        # The same refusal as the CLI's: acting on a store no scheduler reads changes nothing.
        raise ApiError(409, str(exc)) from None
    return json_response(200, {"action": action, **ops.pause_json(change)})


def _json_body(request: Request) -> Any:
    """The request's JSON body: a form post or any other content type is refused (415)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiError(415, "send a JSON body ('Content-Type: application/json', e.g. {})")
    try:
        return json.loads(request.body or b"null")
    except ValueError:
        raise ApiError(400, "the body is not valid JSON") from None


def _no_job(job: str, config: Config) -> ApiError:
    known = ", ".join(sorted(config.jobs)) or "none"
    return ApiError(404, f"no job named {job!r} (jobs: {known})")


def _upcoming(job: ops.JobStatus, now: datetime) -> list[dict[str, Any]]:
    if job.config is None:
        return []
    watermark = None if job.state is None else job.state.watermark
    floor = now if watermark is None else max(watermark, now)
    return as_json(upcoming(job.config, floor, UPCOMING_ON_JOB_PAGE))


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"{name}: expected a whole number, got {text!r}") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name}: expected {low} to {high}, got {value}")
    return value


def _float_param(request: Request, name: str, default: float, low: float, high: float) -> float:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ApiError(400, f"{name}: expected a number of hours, got {text!r}") from None
    if not low <= value <= high:  # also refuses nan
        raise ApiError(400, f"{name}: expected {low:g} to {high:g} hours, got {text}")
    return value


def _instant_param(request: Request, name: str) -> datetime | None:
    text = request.query.get(name)
    if text is None:
        return None
    try:
        instant = parse_utc(text)
    except ValueError:
        raise ApiError(
            400, f"{name}: expected an ISO 8601 instant with an offset, got {text!r}"
        ) from None
    try:
        return check_range(instant)
    except ValueError as exc:
        raise ApiError(400, f"{name}: {exc}, got {text!r}") from None


def _static_text(name: str) -> str:
    return resources.files("chronod.web").joinpath("static", name).read_text(encoding="utf-8")


def env_token() -> str | None:
    return os.environ.get(TOKEN_ENV) or None
