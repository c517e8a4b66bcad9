"""The shipped unit files pass `systemd-analyze verify` (run where systemd-analyze exists)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).parent.parent / "systemd"


def _verify(unit: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # verify checks that ExecStart's binary exists: point the unit at this checkout's chronod.
    chronod = Path(sys.executable).parent / "chronod"
    text = unit.read_text().replace("/usr/local/bin/chronod", str(chronod))
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
@pytest.mark.parametrize("name", ["chronod.service", "chronod-worker@.service"])
def test_unit_verifies(name: str, tmp_path: Path) -> None:
    result = _verify(UNITS / name, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "chronod" not in result.stderr, result.stderr  # no warnings about our unit either


def test_units_are_hardened() -> None:
    for name in ("chronod.service", "chronod-worker@.service"):
        text = (UNITS / name).read_text()
        for setting in (
            "Type=notify", "WatchdogSec=", "ExecReload=/bin/kill -HUP $MAINPID", "DynamicUser=yes",
            "StateDirectory=chronod", "ProtectSystem=strict", "NoNewPrivileges=yes",
            "Restart=on-failure",
        ):  # fmt: skip
            assert setting in text, f"{name} lacks {setting}"
