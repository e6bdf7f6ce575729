"""The deployment's requirements.txt keeps up with the package's own dependencies."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower()


def test_requirements_txt_lists_every_runtime_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = {_name(d) for d in project["dependencies"]}
    listed = {
        _name(line)
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert needed <= listed, f"add to requirements.txt: {sorted(needed - listed)}"


def test_the_distribution_name_is_ours_and_every_install_line_uses_the_clone() -> None:
    """`cadre` and `cadre-ai` on PyPI are other projects: the distribution is `cadre-actors`
    (not published), so docs and messages install from the clone (`pip install -e
    '.[extra]'`), never `pip install cadre...`."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "cadre-actors"
    assert project["scripts"] == {"cadre": "cadre.cli:main"}
    texts = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "cadre").rglob("*.py")]
    wrong = re.compile(r"pip install [\"']?cadre(\[|\b(?!-actors))")
    found = [
        f"{p.relative_to(ROOT)}: {m.group(0)}" for p in texts for m in wrong.finditer(p.read_text())
    ]
    assert found == []
