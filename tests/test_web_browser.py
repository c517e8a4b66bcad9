"""The web page in a real browser: Debian's chromium, driven headless through chromedriver.

A real ``chronod run`` (scheduler + one embedded worker) and a real ``chronod web`` run as
subprocesses on a private SQLite store, with a few jobs: an every-2s command job, a half-hourly cron
job, a yearly job (so nothing but a manual trigger runs it) and a job paused before the daemon
starts. The test checks what a user sees: the timeline draws one mark per upcoming fire in the
window the page shows, a row whose job fires beyond the window says when it fires next, the job
that runs next is marked, times are 24-hour with seconds on every row of a column or on none, a
trigger clicked on the page (after entering the token) makes a run appear in the job's history
with its worker as the CLI shows it, the paused job reads as paused, a second, read-only server
shows no stray action marks, the timeline's text stays readable on a 320-pixel phone, and the
browser logged no error (a CSP violation would be one). A screenshot is saved to
``test-artifacts/web.png``.

chromium and chromedriver are installed by ``make test`` (target ``browser-deps``) when missing and
running as root; otherwise this test skips with the reason, or fails when
``CHRONOD_REQUIRE_BROWSER=1`` (CI sets it).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.error import URLError
from urllib.request import urlopen

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver import Chrome
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from chronod.config import load_config
from chronod.instants import parse_utc
from chronod.preview import upcoming
from tests.redis_server import free_port

pytestmark = [pytest.mark.process, pytest.mark.browser]

REPO = Path(__file__).resolve().parent.parent
ARTIFACT = REPO / "test-artifacts" / "web.png"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1366,900",
)
TOKEN = "browser-test-token-5d2c"
SCRUBBED_ENV = ("CHRONOD_CONFIG", "CHRONOD_STORE", "CHRONOD_WEB_TOKEN", "NOTIFY_SOCKET")
STARTUP = 20.0  # seconds for a subprocess or a page to come up
RUN_DEADLINE = 45.0  # seconds for a triggered run to be claimed, executed and shown

CONFIG = """\
[chronod]
workers = 1

[notify.log]
command = ["true"]

[defaults]
timezone = "America/New_York"

[jobs.tick]
every = "2s"
command = "echo tick $CHRONOD_SLOT"
notify = ["log"]
notify_on = ["succeeded"]

[jobs.half-hourly]
cron = "*/30 * * * *"
command = "echo half-hourly"

[jobs.yearly]
cron = "0 0 1 1 *"
description = "runs once a year, or when triggered"
command = "echo yearly run $CHRONOD_RUN_ID"

[jobs.on-hold]
cron = "15 * * * *"
timezone = "Europe/Berlin"
command = "echo on hold"
"""

T = TypeVar("T")


def require_browser() -> None:
    """Skip (or fail, with CHRONOD_REQUIRE_BROWSER=1) loudly when chromium is not installed."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if not missing:
        return
    reason = (
        f"{' and '.join(missing)} not installed: the real-browser test cannot run "
        "(run 'make test' as root, or 'apt-get install chromium chromium-driver')"
    )
    if os.environ.get("CHRONOD_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + " and CHRONOD_REQUIRE_BROWSER=1", pytrace=False)
    pytest.skip(reason)


def wait_for(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``condition`` until it is truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


@dataclass(frozen=True)
class Cluster:
    base: str  # http://127.0.0.1:PORT
    readonly: str  # the same, served without a token
    config_file: Path
    store: str
    logs: Path

    def api(self, path: str) -> Any:
        with urlopen(self.base + path, timeout=10) as response:
            return json.loads(response.read())

    def try_api(self, path: str) -> Any:
        try:
            return self.api(path)
        except (URLError, OSError, ValueError):
            return None

    def log_tails(self) -> str:
        parts = []
        for log in sorted(self.logs.glob("*.log")):
            parts.append(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env["PYTHONPATH"] = str(REPO)
    return {**env, **extra}


def spawn(stack: ExitStack, logs: Path, name: str, args: list[str], **env: str) -> None:
    """Start ``python -m chronod ARGS`` in its own session; the stack kills its group at exit."""
    log = (logs / f"{name}.log").open("wb")
    stack.callback(log.close)
    process = subprocess.Popen(
        [sys.executable, "-m", "chronod", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=child_env(**env),
        cwd=logs,
        start_new_session=True,
    )
    stack.callback(kill_group, process)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    require_browser()
    logs = tmp_path / "logs"
    logs.mkdir()
    config_file = tmp_path / "schedules.toml"
    config_file.write_text(CONFIG)
    store = f"sqlite:///{tmp_path / 'state.db'}"
    common = ["--config", str(config_file), "--store", store]
    # Paused through the CLI before any daemon runs (--force: no scheduler has loaded it yet):
    # the page must show the store's flag.
    paused = subprocess.run(
        [sys.executable, "-m", "chronod", *common, "pause", "--job", "on-hold", "--force"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert paused.returncode == 0, paused.stderr
    port, readonly_port = free_port(), free_port()
    with ExitStack() as stack:
        spawn(stack, logs, "run", [*common, "run", "--workers", "1"])
        spawn(
            stack,
            logs,
            "web",
            [*common, "web", "--bind", f"127.0.0.1:{port}"],
            CHRONOD_WEB_TOKEN=TOKEN,
        )
        spawn(stack, logs, "web-ro", [*common, "web", "--bind", f"127.0.0.1:{readonly_port}"])
        started = Cluster(
            f"http://127.0.0.1:{port}",
            f"http://127.0.0.1:{readonly_port}",
            config_file,
            store,
            logs,
        )
        try:
            wait_for(
                lambda: (started.try_api("/api/v1/status") or {}).get("leader"),
                STARTUP,
                "a leader, seen through the web API",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{started.log_tails()}") from None
        yield started
        print(started.log_tails())  # shown by pytest when the test failed


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chrome]:
    require_browser()
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(
        executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log")
    )
    driver = Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Chrome, timeout: float = STARTUP) -> WebDriverWait[Chrome]:
    return WebDriverWait(
        driver, timeout, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
    )


def snapshot(driver: Chrome, script: str) -> Any:
    """Run ``script`` in the page: one synchronous read, so a re-render cannot split it."""
    return driver.execute_script(script)


TIMELINE_ROW = """
const svg = document.getElementById("timeline-svg");
const row = svg && svg.querySelector('g.row[data-job="' + arguments[0] + '"]');
if (!row) return null;
return {
  start: svg.dataset.start, end: svg.dataset.end, at: svg.dataset.at,
  marks: row.querySelectorAll("line.fire").length,
  dense: row.querySelectorAll("rect.dense").length,
  runs: row.querySelectorAll("g.run").length,
  paused: row.classList.contains("paused-row"),
};
"""


def timeline_row(driver: Chrome, job: str) -> dict[str, Any] | None:
    result: dict[str, Any] | None = driver.execute_script(TIMELINE_ROW, job)
    return result


def wait_row(
    driver: Chrome, job: str, what: str, ready: Callable[[dict[str, Any]], bool] = bool
) -> dict[str, Any]:
    """``job``'s timeline row once drawn and ``ready``."""

    def look(d: Chrome) -> dict[str, Any] | None:
        row = timeline_row(d, job)
        return row if row is not None and ready(row) else None

    found: dict[str, Any] | None = wait(driver).until(look, what)
    assert found is not None
    return found


def channel_row(driver: Chrome) -> str:
    rows = driver.find_elements(By.CSS_SELECTOR, 'tr[data-channel="log"]')
    return str(rows[0].text) if rows else ""


def test_page_in_a_real_browser(cluster: Cluster, browser: Chrome) -> None:
    browser.get(cluster.base + "/")
    try:
        check_overview(browser, cluster)
    finally:
        save_screenshot(browser)  # the artifact shows the page as the test saw it, pass or fail
    assert_no_browser_errors(browser)
    check_trigger_from_the_job_page(browser, cluster)
    # The one error logged on purpose: the wrong token, refused by /api/v1/auth.
    assert_no_browser_errors(browser, expected=("/api/v1/auth - Failed to load resource",))
    check_read_only(browser, cluster)
    check_phone(browser, cluster)
    assert_no_browser_errors(browser)


def check_overview(browser: Chrome, cluster: Cluster) -> None:
    config = load_config(cluster.config_file)
    # The timeline: one mark per fire of the half-hourly job in the window the page shows.
    row = wait_row(browser, "half-hourly", "the timeline")
    at, end = parse_utc(row["at"]), parse_utc(row["end"])
    expected = [u for u in upcoming(config.jobs["half-hourly"], at, 500) if u.at <= end]
    assert 40 <= len(expected) <= 49  # 24 h of half hours, give or take the ends
    assert row["marks"] == len(expected), row
    assert row["dense"] == 0

    # The paused job reads as paused, in the table and on the timeline.
    state = wait(browser).until(
        lambda d: d.find_element(By.CSS_SELECTOR, 'tr[data-job="on-hold"] td.state').text,
        "the jobs table",
    )
    assert state == "paused"
    on_hold = timeline_row(browser, "on-hold")
    assert on_hold is not None
    assert on_hold["paused"] is True
    leader = browser.find_element(By.ID, "leader").text
    assert leader == cluster.api("/api/v1/status")["leader"]["node"]

    # Notifications: the channel's last delivery (tick's successes go to it).
    channel = wait(browser).until(
        lambda d: "ok never" not in (text := channel_row(d)) and text,
        "the notification channel's last delivery",
    )
    assert re.fullmatch(r"log\s+ok \S+( \S+)? ago\s+no error", channel), channel

    # The every-2s job has more fires than pixels: drawn as one band, with its runs on the axis.
    tick = wait_row(browser, "tick", "tick's runs on the timeline", lambda r: r["runs"] > 0)
    assert tick["dense"] == 1
    assert tick["marks"] == 0

    # The yearly job fires beyond the window: its row says when, not nothing.
    yearly = cluster.api("/api/v1/jobs/yearly")
    beyond = wait(browser).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, 'g.row[data-job="yearly"] text.beyond-text'),
        "the yearly job's next fire on its timeline row",
    )[0]
    assert beyond.get_attribute("data-beyond") == yearly["next_fire"]
    local = yearly["next_fire_local"]  # "2027-01-01T00:00:00-05:00"
    assert beyond.text == f"fires next Fri {local[:10]} {local[11:16]} {local[19:]} →"

    # The job that runs next is marked, in the table and on the timeline: one snapshot, because
    # the every-2s job keeps changing which one it is.
    marked = snapshot(browser, NEXT_UP)
    assert marked["table"] == marked["soonest"], marked
    assert marked["timeline"] == marked["soonest"], marked
    assert marked["badges"] == len(marked["soonest"]), marked

    # 24-hour times; a column shows seconds on all of its rows or on none.
    live = browser.find_element(By.ID, "live").text
    assert re.fullmatch(r"live · \d\d:\d\d:\d\d", live), live
    times = snapshot(browser, NEXT_FIRE_TIMES)
    assert len(times) == len(config.jobs)
    assert len({len(t) for t in times}) == 1, times
    assert all(re.fullmatch(r"\w{3} \d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)?", t) for t in times), times


NEXT_UP = """
const rows = [...document.querySelectorAll("#jobs tbody tr[data-job]")];
const due = rows.filter((r) => r.dataset.next && r.dataset.paused !== "true");
const first = Math.min(...due.map((r) => Date.parse(r.dataset.next)));
const names = (list) => list.map((r) => r.dataset.job).sort();
return {
  soonest: names(due.filter((r) => Date.parse(r.dataset.next) === first)),
  table: names(rows.filter((r) => r.classList.contains("next-up"))),
  badges: document.querySelectorAll("#jobs .badge.next").length,
  timeline: names([...document.querySelectorAll("#timeline-svg g.row.next-up")]),
};
"""
NEXT_FIRE_TIMES = """
return [...document.querySelectorAll('#jobs tbody tr[data-job] td.when')]
  .map((td) => td.firstChild.textContent);
"""


def check_trigger_from_the_job_page(browser: Chrome, cluster: Cluster) -> None:
    """The token is asked for once (a wrong one is refused on the spot), then the run shows up."""
    browser.get(cluster.base + "/jobs/yearly")
    wait(browser).until(
        lambda d: "no runs recorded yet" in d.find_element(By.ID, "history").text,
        "the empty history",
    )
    browser.find_element(By.CSS_SELECTOR, 'button[data-action="trigger"]').click()
    dialog = browser.find_element(By.ID, "token-dialog")
    wait(browser).until(lambda _: dialog.is_displayed(), "the token dialog")
    token_input = browser.find_element(By.ID, "token-input")
    token_input.send_keys("not-the-token")
    browser.find_element(By.ID, "token-ok").click()
    error = browser.find_element(By.ID, "token-error")
    wait(browser).until(lambda _: error.is_displayed(), "the wrong-token message")
    assert "wrong token" in error.text
    assert cluster.api("/api/v1/jobs/yearly/history")["live"] == []  # nothing was triggered
    token_input.clear()
    token_input.send_keys(TOKEN)
    browser.find_element(By.ID, "token-ok").click()
    wait(browser).until(lambda _: not dialog.is_displayed(), "the dialog to close")
    run = wait(browser, RUN_DEADLINE).until(
        lambda d: d.find_elements(
            By.CSS_SELECTOR, '#history tr.run[data-manual="true"][data-outcome="succeeded"]'
        ),
        "the triggered run in the page's history",
    )[0]
    run_id = run.get_attribute("data-run-id")
    assert run_id is not None
    assert run_id.startswith("yearly@")
    assert run_id.endswith("~manual")
    output = snapshot(browser, 'return document.querySelector("#history pre.output").textContent')
    assert output.strip() == f"yearly run {run_id}"
    (stored,) = cluster.api("/api/v1/jobs/yearly/history")["runs"]
    assert stored["run_id"] == run_id
    # The worker as `chronod history` shows it: host and pid, not the host alone.
    worker = run.find_element(By.CSS_SELECTOR, "td.worker").text
    assert worker == stored["worker"]
    assert re.fullmatch(r".+:\d+", worker), worker
    assert browser.find_element(By.ID, "lock").text == "Lock actions"  # kept for the tab


def check_read_only(browser: Chrome, cluster: Cluster) -> None:
    """Without a token there are no actions, and nothing marks where they would be."""
    browser.get(cluster.readonly + "/jobs/yearly")
    wait(browser).until(lambda d: d.find_element(By.ID, "readonly").is_displayed(), "read-only")
    wait(browser).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#job-upcoming li[data-utc]"), ""
    )
    assert browser.find_element(By.ID, "job-actions").text == ""
    assert browser.find_elements(By.CSS_SELECTOR, "#job-actions *") == []
    browser.get(cluster.readonly + "/")
    wait_row(browser, "yearly", "the read-only timeline")
    cells = browser.find_elements(By.CSS_SELECTOR, "#jobs td.act-col")
    assert cells
    assert all(not cell.is_displayed() and cell.text == "" for cell in cells)


PHONE_TEXT = """
const svg = document.getElementById("timeline-svg");
const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
const sizes = [...svg.querySelectorAll("text")].map(
  (t) => parseFloat(getComputedStyle(t).fontSize) * scale);
return {
  width: innerWidth, scale, smallest: Math.min(...sizes),
  overflow: document.documentElement.scrollWidth - innerWidth,
};
"""


def check_phone(browser: Chrome, cluster: Cluster) -> None:
    """On a 320-pixel phone the timeline is drawn at the screen's width and its text is real
    pixels of a readable size (it used to be scaled down to about 8)."""
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 320, "height": 700, "deviceScaleFactor": 2, "mobile": True},
    )
    try:
        browser.get(cluster.readonly + "/")
        wait_row(browser, "half-hourly", "the timeline on a phone")
        phone = snapshot(browser, PHONE_TEXT)
        assert phone["width"] == 320, phone
        assert phone["scale"] == 1, phone
        assert phone["smallest"] >= 11, phone
        assert phone["overflow"] <= 0, phone
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def save_screenshot(driver: Chrome) -> None:
    """The whole overview page, as a test artifact (and for a human to look at)."""
    page = int(driver.execute_script("return document.documentElement.scrollHeight"))
    chrome = driver.get_window_size()["height"] - int(driver.execute_script("return innerHeight"))
    driver.set_window_size(1366, page + chrome)
    wait(driver).until(
        lambda d: d.execute_script("return innerHeight >= document.documentElement.scrollHeight"),
        "the window to fit the page",
    )
    ARTIFACT.parent.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACT))
    driver.set_window_size(1366, 900)


def assert_no_browser_errors(driver: Chrome, expected: tuple[str, ...] = ()) -> None:
    """A blocked inline script or style, a failed request or a script error is logged SEVERE;
    ``expected`` are substrings of the ones the test provoked on purpose."""
    get_log: Callable[[str], list[dict[str, Any]]] = driver.get_log  # (untyped in selenium)
    entries = get_log("browser")
    severe = [
        e
        for e in entries
        if e.get("level") == "SEVERE" and not any(x in str(e.get("message")) for x in expected)
    ]
    assert severe == [], severe
