"""The development lock file and the dependency-drift venvs (``make lock|lock-check|drift``).

``requirements/dev.lock`` pins every package of the development and CI environment (runtime
dependencies, the ``dev`` extra and the build backend) with hashes, for every Python chronod
supports (``uv pip compile --universal``). Its header carries a digest of the inputs it was compiled
from, so ``check`` notices an edit of ``pyproject.toml``'s dependencies that was not followed by
``make lock``, and verifies that every pin lies inside the ranges ``pyproject.toml`` declares.

``drift newest|lowest VENV`` builds a venv from the ranges alone, at the newest releases they admit
or at their floors (``--resolution lowest-direct``), and prints the runtime versions it got; the
fast test suite then runs in it. Usage: ``python -m tests.lockfile write|check|drift ...``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
BUILD_IN = ROOT / "requirements" / "build.in"
PYTHON_FLOOR = "3.10"  # requires-python's floor: the lock must also hold there
DIGEST_PREFIX = "# inputs-digest: "
RUNTIME = ("croniter", "astral", "pytz", "redis", "click", "prometheus-client", "tomli")


def declared() -> list[Requirement]:
    """Every requirement the lock must satisfy: runtime, the dev extra and the build backend."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    for raw in BUILD_IN.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return [Requirement(line) for line in lines]


def inputs_digest() -> str:
    normalized = sorted(str(req) for req in declared())
    return hashlib.sha256(json.dumps(normalized).encode()).hexdigest()


def pins(lock_text: str) -> dict[str, list[tuple[str, str]]]:
    """name -> [(version, environment marker)] as pinned in the lock (a name may fork by Python)."""
    found: dict[str, list[tuple[str, str]]] = {}
    pin = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)\s*(?:;\s*([^\\\n]*))?", re.M)
    for match in pin.finditer(lock_text):
        name, version, marker = match.groups()
        found.setdefault(canonicalize_name(name), []).append((version, (marker or "").strip()))
    return found


def problems(lock: Path) -> list[str]:
    """Why ``lock`` does not match ``pyproject.toml`` (empty when it does)."""
    if not lock.exists():
        return [f"{lock} is missing: run 'make lock'"]
    text = lock.read_text(encoding="utf-8")
    found: list[str] = []
    if f"{DIGEST_PREFIX}{inputs_digest()}" not in text:
        found.append(
            "pyproject.toml's dependencies (or requirements/build.in) changed since the lock was "
            "written"
        )
    pinned = pins(text)
    for req in declared():
        versions = pinned.get(canonicalize_name(req.name))
        if not versions:
            if req.marker is None or req.marker.evaluate({"python_version": PYTHON_FLOOR}):
                found.append(f"{req.name} is declared but not pinned in the lock")
            continue
        for version, _marker in versions:
            if req.specifier and not req.specifier.contains(version, prereleases=True):
                found.append(f"{req.name}=={version} in the lock is outside {req.specifier}")
    return found


def uv(*args: str) -> None:
    uv_bin = Path(sys.executable).with_name("uv")
    subprocess.run([str(uv_bin), *args], cwd=ROOT, check=True)


def write(lock: Path) -> None:
    uv(
        "pip", "compile", "pyproject.toml", str(BUILD_IN.relative_to(ROOT)),
        "--extra", "dev", "--universal", "--python-version", PYTHON_FLOOR,
        "--generate-hashes", "--upgrade", "--no-header", "--quiet",
        "-o", str(lock),
    )  # fmt: skip
    body = lock.read_text(encoding="utf-8")
    header = (
        "# The development and CI environment, exactly. Written by `make lock` (uv pip compile\n"
        "# --universal --generate-hashes) from pyproject.toml's dev extra and\n"
        "# requirements/build.in; `make lock-check` fails when those change without a new lock.\n"
        "# Do not edit by hand.\n"
        f"{DIGEST_PREFIX}{inputs_digest()}\n"
    )
    lock.write_text(header + body, encoding="utf-8")
    print(f"wrote {lock}")


def drift(kind: str, venv: Path) -> None:
    """A venv at the newest (or lowest) releases the ranges admit; prints what it got."""
    if kind not in ("newest", "lowest"):
        raise SystemExit(f"drift: expected newest or lowest, got {kind!r}")
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    resolution = "highest" if kind == "newest" else "lowest-direct"
    uv(
        "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
        "--resolution", resolution, "--refresh", "--reinstall",
        "-e", ".[dev]",
    )  # fmt: skip
    report = subprocess.run(
        [str(venv / "bin" / "python"), "-c", _VERSIONS, *RUNTIME],
        check=True,
        capture_output=True,
        text=True,
    )
    print(f"drift-{kind}: {report.stdout.strip()}", flush=True)


_VERSIONS = """
import sys
from importlib.metadata import PackageNotFoundError, version
out = []
for name in sys.argv[1:]:
    try:
        out.append(f"{name}=={version(name)}")
    except PackageNotFoundError:
        pass
print(" ".join(out))
"""


def main(argv: list[str]) -> int:
    match argv:
        case ["write", lock]:
            write(Path(lock))
        case ["check", lock]:
            found = problems(Path(lock))
            for problem in found:
                print(f"{lock}: {problem}; run 'make lock' and commit it", file=sys.stderr)
            return 1 if found else 0
        case ["drift", kind, venv]:
            os.environ.pop("VIRTUAL_ENV", None)
            drift(kind, Path(venv))
        case _:
            print("usage: python -m tests.lockfile write|check LOCK | drift newest|lowest VENV")
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
