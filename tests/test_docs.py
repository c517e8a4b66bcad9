"""The documentation the code relies on stays true: design citations resolve, the module map is
complete, and nothing points outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DESIGN_DOC = ROOT / "docs" / "design.md"
# The contract the project started from lives outside the repository; nothing may point there.
OUTSIDE = re.compile(r"\b" + "DESIGN" + r"(\.md| §)|/work/" + "shared")


def sources() -> list[Path]:
    return [
        path
        for folder in ("chronod", "tests", "bench")
        for path in sorted((ROOT / folder).rglob("*"))
        if path.suffix in (".py", ".lua") and "__pycache__" not in path.parts
    ]


def test_every_design_citation_names_a_section_that_exists() -> None:
    sections = set(re.findall(r"^## (§\d+)", DESIGN_DOC.read_text(), re.M))
    assert sections == {f"§{n}" for n in range(1, 9)}
    cited: dict[str, set[str]] = {}
    for path in sources():
        for first, last in re.findall(r"docs/design\.md (§\d+)(?:-(§\d+))?", path.read_text()):
            for section in (first, last):
                if section:
                    cited.setdefault(section, set()).add(str(path.relative_to(ROOT)))
    assert cited, "no module cites docs/design.md"
    assert set(cited) <= sections, {s: cited[s] for s in set(cited) - sections}


def test_nothing_cites_a_design_document_outside_the_repository() -> None:
    for path in [*sources(), ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert not OUTSIDE.search(path.read_text()), path


def test_the_readme_module_map_lists_every_module() -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("Every module, by layer")
    block = readme[start : readme.index("```\n", readme.index("```", start) + 3)]
    words = set(re.findall(r"[\w.]+\.py|[\w]+/", block))
    missing = []
    for path in sorted((ROOT / "chronod").rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        folder = path.parent.name + "/"
        if path.name == "__init__.py" and folder in words:
            continue
        if path.name not in words or (path.parent != ROOT / "chronod" and folder not in words):
            missing.append(str(path.relative_to(ROOT)))
    assert missing == []
