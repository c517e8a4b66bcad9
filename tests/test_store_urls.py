"""Store URLs (issue 12 items 3 and 4): what chronod accepts, what it refuses in one line, and a
table of every way a Redis URL can carry a password asserted absent from every output surface.

The secret holds each character that ends a part of a URL when it is not percent-encoded ('#',
'?', '/', '&', '@', ':'), so a redaction that trusts a URL parser shows a piece of it. Every
alphanumeric run of it is a fragment that must appear nowhere either.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote
from urllib.request import urlopen

import pytest

from chronod.cli import main
from chronod.errors import StoreConfigError
from chronod.store import (
    RedisTarget,
    StoreSettings,
    check_store_url,
    open_store,
    parse_redis_url,
    redact_url,
)
from chronod.web.server import start_web
from tests.procs import Processes
from tests.redis_server import RedisServer, free_port

SECRET = "Zq9Kx#Vw7Jp?Hn4Ty/Rb2Lm&Gc5Fd@Ws8Qe:Pa3Uv"
FRAGMENTS = tuple(part for part in re.split(r"[^A-Za-z0-9]", SECRET) if part)
ENCODED = quote(SECRET, safe="")
OTHER = "Mk7Yt2Rw9Qz"  # a second secret (Sentinel's own password)


def assert_hidden(text: str, where: str) -> None:
    for fragment in (SECRET, ENCODED, OTHER, *FRAGMENTS):
        assert fragment not in text, f"{where} shows {fragment!r}:\n{text}"


# -- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            f"redis://:{ENCODED}@h:6380/2",
            RedisTarget(scheme="redis", kind="standalone", hosts=(("h", 6380),), db=2),
        ),
        (
            f"redis://h/0?password={ENCODED}&username=app",
            RedisTarget(scheme="redis", kind="standalone", hosts=(("h", 6379),), username="app"),
        ),
        (
            "rediss://h:6390/1?ssl_cert_reqs=none",
            RedisTarget(
                scheme="rediss",
                kind="standalone",
                hosts=(("h", 6390),),
                db=1,
                tls=True,
                tls_options=(("ssl_cert_reqs", "none"),),
            ),
        ),
        (
            "unix:///run/redis.sock?db=3",
            RedisTarget(scheme="unix", kind="unix", path="/run/redis.sock", db=3),
        ),
        (
            "redis+sentinel://s1,s2:26380/mymaster/4",
            RedisTarget(
                scheme="redis+sentinel",
                kind="sentinel",
                hosts=(("s1", 26379), ("s2", 26380)),
                service="mymaster",
                db=4,
            ),
        ),
        (
            "redis+cluster://n1:7000,n2:7001",
            RedisTarget(scheme="redis+cluster", kind="cluster", hosts=(("n1", 7000), ("n2", 7001))),
        ),
        (
            "rediss+cluster://[::1]:7000/0",
            RedisTarget(scheme="rediss+cluster", kind="cluster", hosts=(("::1", 7000),), tls=True),
        ),
    ],
)
def test_redis_urls_parse(url: str, expected: RedisTarget) -> None:
    parsed = parse_redis_url(url)
    assert parsed.scheme == expected.scheme
    assert parsed.kind == expected.kind
    assert parsed.hosts == expected.hosts
    assert (parsed.path, parsed.service, parsed.db, parsed.tls) == (
        expected.path,
        expected.service,
        expected.db,
        expected.tls,
    )
    assert parsed.tls_options == expected.tls_options
    if ENCODED in url:
        assert parsed.password == SECRET
        assert SECRET not in repr(parsed)


def test_default_acknowledgements_follow_the_kind_of_deployment() -> None:
    assert parse_redis_url("redis://h/0").default_acks == 0
    assert parse_redis_url("unix:///s.sock").default_acks == 0
    assert parse_redis_url("redis+sentinel://s/m/0").default_acks == 1
    assert parse_redis_url("redis+cluster://n:7000").default_acks == 1


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://h:6379/0?cluster=true", "unknown query parameter 'cluster'.*redis\\+cluster://"),
        ("redis://h:6379/0?socket_timeout=5", "unknown query parameter 'socket_timeout'"),
        ("redis+cluster://n:7000/3", "only database 0"),
        ("redis://a:1,b:2/0", "several hosts"),
        ("redis://h:port/0", "port must be a number"),
        ("redis+sentinel://s:26379", "service_name"),
        ("redis://h/0?db=1&db=2", "given twice"),
        ("redis://h/0?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
        ("memcached://h", "unknown scheme"),
    ],
)
def test_bad_urls_are_refused_in_one_line(url: str, says: str) -> None:
    with pytest.raises(StoreConfigError) as caught:
        check_store_url(url)
    message = str(caught.value)
    assert "\n" not in message
    assert re.search(says, message), message


def test_check_and_start_refuse_an_unknown_parameter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``?cluster=true`` once passed ``check`` and killed the daemon's lease thread: now both
    refuse it, in one line, with exit code 2."""
    config = tmp_path / "schedules.toml"
    config.write_text(
        '[chronod]\nstore = "redis://127.0.0.1:6399/0?cluster=true"\n'
        '[defaults]\ntimezone = "UTC"\n[jobs.a]\nevery = "1m"\ncommand = "true"\n'
    )
    for argv in (["check"], ["run", "--workers", "0"]):
        with pytest.raises(SystemExit) as exited:
            main(["--config", str(config), *argv])
        assert exited.value.code == 2, argv
        err = capsys.readouterr().err
        assert "unknown query parameter 'cluster'" in err, err
        assert "Traceback" not in err
    good = tmp_path / "good.toml"
    good.write_text('[defaults]\ntimezone = "UTC"\n[jobs.a]\nevery = "1m"\ncommand = "true"\n')
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(good), "--store", "redis://h/0?cluster=1", "check"])
    assert exited.value.code == 2
    assert "unknown query parameter 'cluster'" in capsys.readouterr().err


# -- redaction: every URL form, every surface ---------------------------------------------------

# Forms a server accepts (the password is right once decoded) ...
WORKING = (
    "redis://:{enc}@127.0.0.1:{port}/0",
    "redis://default:{enc}@127.0.0.1:{port}/0",
    "redis://127.0.0.1:{port}/0?password={enc}",
    "redis://127.0.0.1:{port}/0?db=0&username=default&password={enc}",
)
# ... and forms chronod refuses or cannot use (unencoded characters, misplaced pieces).
BROKEN = (
    "redis://:{raw}@127.0.0.1:{port}/0",
    "redis://127.0.0.1:{port}/0?password={raw}",
    "redis://default:{raw_nohash}@127.0.0.1:{port}/0",
    "redis://127.0.0.1:{port}/0?password={raw_nohash}",
    "redis://{enc}@127.0.0.1:{port}/0",
    "redis+sentinel://:{enc}@127.0.0.1:1,127.0.0.1:2/svc/0?sentinel_password=" + OTHER,
    "redis+cluster://:{enc}@127.0.0.1:1,127.0.0.1:2",
    "redis+cluster://:{raw_nohash}@127.0.0.1:1/0",
    "redis://127.0.0.1:{port}/0?password={enc}&token=" + OTHER,
)


def fill(form: str, port: int) -> str:
    return form.format(enc=ENCODED, raw=SECRET, raw_nohash=SECRET.replace("#", ""), port=port)


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[RedisServer]:
    """A private server that requires SECRET."""
    server = RedisServer(tmp_path / "guarded")
    server.start()
    server.client().config_set("requirepass", SECRET)
    yield server
    server.kill()


def config_for(directory: Path, url: str) -> Path:
    path = directory / "schedules.toml"
    path.write_text(
        f"[chronod]\nstore = {json.dumps(url)}\n"
        '[defaults]\ntimezone = "UTC"\n[jobs.a]\nevery = "1h"\ncommand = "true"\n'
    )
    return path


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        main(argv)
    except SystemExit as exited:
        code = int(exited.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.redis
def test_no_surface_shows_a_store_password(
    guarded: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for form in WORKING:
        url = fill(form, guarded.port)
        config = config_for(tmp_path, url)
        store = open_store(StoreSettings(url=url, config_dir=tmp_path))
        try:
            assert_hidden(store.describe(), f"describe() of {form}")
            store.leader()  # the password is right: the store answers
        finally:
            store.close()
        for argv in (["check"], ["status"], ["status", "--json"]):
            code, output = run_main(["--config", str(config), *argv], capsys)
            assert code == 0, (form, argv, output)
            assert_hidden(output, f"chronod {' '.join(argv)} with {form}")
        handle = start_web(config, None, "127.0.0.1:0", token="")
        try:
            with urlopen(handle.url + "api/v1/status", timeout=10) as reply:
                body = reply.read().decode()
            assert '"store"' in body
            assert_hidden(body, f"/api/v1/status with {form}")
        finally:
            handle.stop()
    for form in BROKEN:
        url = fill(form, guarded.port)
        assert_hidden(redact_url(url), f"redact_url of {form}")
        config = config_for(tmp_path, url)
        for argv in (["check"], ["status", "--json"]):
            code, output = run_main(["--config", str(config), *argv], capsys)
            assert code != 0 or argv == ["check"], (form, argv, output)
            assert_hidden(output, f"chronod {' '.join(argv)} with {form}")
        code, output = run_main(["--store", url, "--config", str(config), "check"], capsys)
        assert_hidden(output, f"chronod --store ... check with {form}")


@pytest.mark.redis
def test_the_503_body_shows_no_password(tmp_path: Path) -> None:
    url = f"redis://:{ENCODED}@127.0.0.1:{free_port()}/0?db=0"
    handle = start_web(config_for(tmp_path, url), None, "127.0.0.1:0", token="")
    try:
        from urllib.error import HTTPError

        with pytest.raises(HTTPError) as caught:
            urlopen(handle.url + "api/v1/status", timeout=10)
        assert caught.value.code == 503
        assert_hidden(caught.value.read().decode(), "the 503 body")
    finally:
        handle.stop()


@pytest.mark.process
@pytest.mark.redis
def test_the_daemon_start_line_shows_no_password(
    guarded: RedisServer, procs: Processes, tmp_path: Path
) -> None:
    url = fill(WORKING[3], guarded.port)
    daemon = procs.run(config_for(tmp_path, url), url)
    line = daemon.wait_for_log(r"^chronod starting", timeout=30)
    assert "***" in str(line.fields.get("store"))
    daemon.wait_for_log(r"^leading: jobs loaded", timeout=30)
    daemon.term()
    daemon.wait_exit(30)
    assert_hidden(daemon.log_path.read_text(), "the daemon's log")
