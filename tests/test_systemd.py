"""The shipped deployment files agree with each other and with the README's install steps.

The unit files are parsed the way systemd reads them (systemd.syntax(7): sections, ``Key=Value``,
comment lines, backslash continuations, repeated keys, an empty value resetting a list), the
supervisord conf with supervisord's own parser, and the install steps are read out of the README's
code blocks; then the facts that make a deployment work together are compared: one user for every
unit (the one the sysusers file creates), one state directory, the store the README puts in the
config inside that directory, ``ExecStart=``/``command=`` pointing at the binary the README
installs, with the config the README installs. ``systemd-analyze verify`` and ``systemd-sysusers``
check the files themselves where they are installed.
"""

from __future__ import annotations

import importlib
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).parent.parent
UNITS = REPO / "systemd"
UNIT_NAMES = ("chronod.service", "chronod-worker@.service")
SUPERVISOR_CONF = UNITS / "supervisor-chronod.conf"
SYSUSERS = UNITS / "chronod.sysusers"
DEFAULT_DRAIN = 30  # seconds: [chronod] drain_timeout's default
# supervisord's own config parser (supervisor ships no type information).
UnhosedConfigParser: Any = importlib.import_module("supervisor.options").UnhosedConfigParser

Unit = dict[str, dict[str, list[str]]]


# -- reading the files -----------------------------------------------------------------------------


def parse_unit(text: str) -> Unit:
    """A unit file as systemd reads it: section → key → values (in order)."""
    sections: Unit = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line[:1] in ("#", ";") or (not line and not pending):
            continue  # comments, even inside a continued line, and blank lines
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {raw!r}"
        assert current is not None, f"outside a section: {raw!r}"
        values = current.setdefault(key.strip(), [])
        if value.strip():
            values.append(value.strip())
        else:
            values.clear()  # `Key=` resets a list setting
    assert not pending, "the file ends inside a continued line"
    return sections


def exec_argv(value: str) -> list[str]:
    """An ``Exec*=`` command line, without its prefixes (``-``, ``@``, ``:``, ``+``, ``!``)."""
    return shlex.split(value.lstrip("-@:+!"))


def one(unit: Unit, section: str, key: str) -> str:
    values = unit.get(section, {}).get(key, [])
    assert len(values) == 1, f"[{section}] {key}= set {len(values)} times: {values}"
    return values[0]


def option(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


@dataclass(frozen=True)
class Install:
    """What one README install block does, as the tests need it."""

    commands: list[list[str]]  # each line, shell-split, comments removed

    @classmethod
    def of(cls, heading: str) -> Install:
        readme = (REPO / "README.md").read_text()
        section = readme.split(f"\n### {heading}\n", 1)[1].split("\n### ", 1)[0]
        block = re.search(r"```sh\n(.*?)```", section, re.S)
        assert block is not None, f"no sh block under {heading}"
        commands = []
        for line in block.group(1).splitlines():
            for part in line.split(" && "):
                words = shlex.split(part, comments=True)
                if words:
                    commands.append(words[1:] if words[0] == "sudo" else words)
        return cls(commands)

    def find(self, *prefix: str) -> list[str]:
        """The first command starting with ``prefix``."""
        for words in self.commands:
            if words[: len(prefix)] == list(prefix):
                return words
        raise AssertionError(f"no `{' '.join(prefix)}` in the install steps: {self.commands}")

    def installed(self, source: str) -> str:
        """Where an ``install ... SOURCE DEST`` line puts ``source``."""
        for words in self.commands:
            if words[0] == "install" and source in words:
                return words[-1]
        raise AssertionError(f"{source} is not installed by the steps")

    @property
    def chronod(self) -> str:
        venv = self.find("python3", "-m", "venv")[3]
        return f"{venv}/bin/chronod"

    @property
    def store(self) -> str:
        sed = self.find("sed", "-i")
        match = re.search(r'store = "([^"]+)"', sed[2])
        assert match is not None, sed
        assert sed[3] == self.installed("schedules.toml"), "the store goes into another file"
        return match.group(1)


@pytest.fixture(scope="module")
def units() -> dict[str, Unit]:
    return {name: parse_unit((UNITS / name).read_text()) for name in UNIT_NAMES}


@pytest.fixture(scope="module")
def systemd_steps() -> Install:
    return Install.of("Running under systemd")


@pytest.fixture(scope="module")
def supervisor_steps() -> Install:
    return Install.of("Running under supervisord")


def sysusers_entry() -> tuple[str, str]:
    """(user name, home directory) of the sysusers file's one ``u`` line."""
    (line,) = [
        shlex.split(raw)
        for raw in SYSUSERS.read_text().splitlines()
        if raw.strip() and not raw.lstrip().startswith("#")
    ]
    kind, name, _id, _gecos, home = line
    assert kind == "u"
    return name, home


# -- the parser itself -----------------------------------------------------------------------------


def test_unit_parser_follows_systemd_syntax() -> None:
    unit = parse_unit(
        "# comment\n[Service]\nUser = a\n; other comment\nExecStart=-/bin/x \\\n"
        "  # a comment inside a continuation\n  --flag 'two words'\nEnvironment=A=1\n"
        "Environment=B=2\nEnvironment=\nEnvironment=C=3\n"
    )
    assert unit == {
        "Service": {
            "User": ["a"],
            "ExecStart": ["-/bin/x  --flag 'two words'"],
            "Environment": ["C=3"],
        }
    }
    assert exec_argv(unit["Service"]["ExecStart"][0]) == ["/bin/x", "--flag", "two words"]


# -- the units, with each other and with the README ------------------------------------------------


def test_units_share_one_user_created_by_the_sysusers_file(units: dict[str, Unit]) -> None:
    name, _home = sysusers_entry()
    for unit_name, unit in units.items():
        assert one(unit, "Service", "User") == name, unit_name
        assert one(unit, "Service", "Group") == name, unit_name
        # A dynamic user would be one per unit (and systemd chowns the shared directory to
        # whichever started last): the user is static.
        assert unit["Service"].get("DynamicUser", ["no"]) == ["no"], unit_name


def test_units_share_the_state_directory_the_store_is_in(
    units: dict[str, Unit], systemd_steps: Install
) -> None:
    directories = {one(unit, "Service", "StateDirectory") for unit in units.values()}
    assert directories == {"chronod"}
    assert {one(unit, "Service", "StateDirectoryMode") for unit in units.values()} == {"0700"}
    _name, home = sysusers_entry()
    assert home == "/var/lib/chronod"
    # ProtectSystem=strict leaves only the state directory writable: the store must be in it.
    store = systemd_steps.store
    assert store.startswith("sqlite:///")
    assert Path(store[len("sqlite://") :]).parent == Path("/var/lib/chronod")


def test_exec_lines_run_the_binary_the_readme_installs(
    units: dict[str, Unit], systemd_steps: Install
) -> None:
    chronod = systemd_steps.chronod
    venv = str(Path(chronod).parent.parent)
    assert systemd_steps.find(f"{venv}/bin/pip", "install")
    config = systemd_steps.installed("schedules.toml")
    for unit_name, unit in units.items():
        service = unit["Service"]
        for key in ("ExecStartPre", "ExecStart"):
            for line in service[key]:
                argv = exec_argv(line)
                assert argv[0] == chronod, (unit_name, key, argv)
                # On the command line, not in Environment=: a shell passes the same --config.
                assert option(argv, "--config") == config, (unit_name, key, argv)
        assert not [
            e for e in service.get("Environment", []) if e.startswith(("CHRONOD_", "STATE_"))
        ], unit_name
    argv = exec_argv(one(units["chronod.service"], "Service", "ExecStart"))
    assert argv[-1] == "run"
    argv = exec_argv(one(units["chronod-worker@.service"], "Service", "ExecStart"))
    assert argv[-3:] == ["worker", "--queue", "%i"]
    installed = systemd_steps.find("install", "-m644")
    assert installed[-1] == "/etc/systemd/system/"
    assert sorted(Path(p).name for p in installed[2:-1]) == sorted(UNIT_NAMES)


def test_readme_installs_the_user_and_steers_as_it(
    units: dict[str, Unit], systemd_steps: Install
) -> None:
    sysusers = systemd_steps.installed("systemd/chronod.sysusers")
    assert re.fullmatch(r"/(etc|usr/lib)/sysusers\.d/[\w.-]+\.conf", sysusers), sysusers
    assert systemd_steps.find("systemd-sysusers")
    name, _home = sysusers_entry()
    status = systemd_steps.find("-u", name)
    assert status[2] == systemd_steps.chronod
    assert option(status, "--config") == systemd_steps.installed("schedules.toml")
    assert status[-1] == "status"
    readme = (REPO / "README.md").read_text()
    # The pipx alternative lands on the same path as the venv.
    match = re.search(r"PIPX_BIN_DIR=(\S+) pipx install", readme)
    assert match is not None
    assert f"{match.group(1)}/chronod" == systemd_steps.chronod
    # PEP 668 refuses a system-wide pip install on current Debian and Ubuntu.
    assert not [w for w in systemd_steps.commands if w[0] in ("pip", "pip3")]


def test_units_are_hardened(units: dict[str, Unit]) -> None:
    for unit_name, unit in units.items():
        service = unit["Service"]
        assert one(unit, "Service", "Type") == "notify"
        assert one(unit, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
        assert one(unit, "Service", "ProtectSystem") == "strict"
        assert one(unit, "Service", "NoNewPrivileges") == "yes"
        assert one(unit, "Service", "Restart") == "on-failure"
        assert one(unit, "Service", "RestartPreventExitStatus") == "2"  # config errors
        assert "WatchdogSec" in service, unit_name
        stop = one(unit, "Service", "TimeoutStopSec")
        assert int(stop.removesuffix("s")) > DEFAULT_DRAIN, unit_name


# -- the supervisord example -----------------------------------------------------------------------


def test_supervisor_conf_matches_the_units_and_the_readme(
    units: dict[str, Unit], systemd_steps: Install, supervisor_steps: Install
) -> None:
    parser = UnhosedConfigParser()
    parser.read_string(SUPERVISOR_CONF.read_text())
    programs = [s for s in parser.sections() if s.startswith("program:")]
    assert programs == ["program:chronod", "program:chronod-worker-reports"]
    user = one(units["chronod.service"], "Service", "User")
    assert supervisor_steps.chronod == systemd_steps.chronod
    config = supervisor_steps.installed("schedules.toml")
    assert config == systemd_steps.installed("schedules.toml")
    assert supervisor_steps.store == systemd_steps.store
    for program in programs:
        argv = shlex.split(parser.get(program, "command"))
        assert argv[0] == supervisor_steps.chronod, program
        assert option(argv, "--config") == config, program
        assert parser.get(program, "user") == user, program
        assert parser.get(program, "directory") == "/var/lib/chronod", program
        # The store is in the config; an environment a shell lacks must not choose it.
        assert not parser.has_option(program, "environment"), program
        assert parser.getint(program, "stopwaitsecs") > DEFAULT_DRAIN, program
        assert parser.get(program, "stopsignal") == "TERM", program
    assert shlex.split(parser.get("program:chronod", "command"))[-1] == "run"
    added = supervisor_steps.find("useradd")
    assert added[-1] == user
    assert option(added, "--home-dir") == "/var/lib/chronod"
    made = supervisor_steps.find("install", "-d", "-o", user)
    assert made[-1] == "/var/lib/chronod"
    assert supervisor_steps.installed("systemd/supervisor-chronod.conf").startswith(
        "/etc/supervisor/conf.d/"
    )
    status = supervisor_steps.find("-u", user)
    assert status[2:] == [supervisor_steps.chronod, "--config", config, "status"]


# -- the files themselves, by systemd's own tools --------------------------------------------------


def _verify(unit: Path, chronod: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # verify checks that ExecStart's binary exists: point the unit at this checkout's chronod.
    here = Path(sys.executable).parent / "chronod"
    text = unit.read_text().replace(chronod, str(here))
    assert str(here) in text
    target = tmp_path / unit.name.replace("@.service", "@reports.service")
    target.write_text(text)
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(target)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("name", UNIT_NAMES)
def test_unit_verifies(name: str, systemd_steps: Install, tmp_path: Path) -> None:
    result = _verify(UNITS / name, systemd_steps.chronod, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "chronod" not in result.stderr, result.stderr  # no warnings about our unit either


@pytest.mark.skipif(
    shutil.which("systemd-sysusers") is None, reason="systemd-sysusers not installed"
)
def test_sysusers_file_creates_the_user(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    done = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(SYSUSERS)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    name, home = sysusers_entry()
    (entry,) = [
        line.split(":")
        for line in (tmp_path / "etc" / "passwd").read_text().splitlines()
        if line.startswith(f"{name}:")
    ]
    assert entry[5] == home
    assert entry[6].endswith("nologin")
