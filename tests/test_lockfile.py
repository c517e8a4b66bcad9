"""The lock file matches pyproject.toml (as `make lock-check` checks it)."""

from __future__ import annotations

from pathlib import Path

from tests.lockfile import DIGEST_PREFIX, ROOT, inputs_digest, problems

LOCK = ROOT / "requirements" / "dev.lock"


def test_the_committed_lock_matches_pyproject() -> None:
    assert problems(LOCK) == []


def test_an_edit_without_a_new_lock_is_named(tmp_path: Path) -> None:
    stale = tmp_path / "dev.lock"
    stale.write_text(LOCK.read_text().replace(inputs_digest(), "0" * 64))
    assert problems(stale) == [
        "pyproject.toml's dependencies (or requirements/build.in) changed since the lock was "
        "written"
    ]


def test_a_pin_outside_its_range_is_named(tmp_path: Path) -> None:
    text = LOCK.read_text()
    assert "\ncroniter==7." in text
    bad = tmp_path / "dev.lock"
    bad.write_text(text.replace("\ncroniter==7.", "\ncroniter==6."))
    found = problems(bad)
    assert len(found) == 1
    assert found[0].startswith("croniter==6.")
    assert found[0].endswith("is outside <8,>=7")


def test_a_dependency_missing_from_the_lock_is_named(tmp_path: Path) -> None:
    lines = LOCK.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith("click==")]
    assert len(kept) < len(lines)
    gone = tmp_path / "dev.lock"
    gone.write_text("".join(kept))
    assert "click is declared but not pinned in the lock" in problems(gone)
    assert DIGEST_PREFIX in gone.read_text()
