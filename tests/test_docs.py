"""The documentation: the MkDocs site builds strictly, the settings reference is complete,
and the README stays a short front page (the rest lives in docs/)."""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from textgen import Settings

ROOT = Path(__file__).resolve().parents[1]
README_MAX_BYTES = 12 * 1024


def settings_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_settings_hook",
                                                  ROOT / "docs" / "hooks" / "settings.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`mkdocs build --strict`: a broken link or anchor, or a page left out of the nav, fails."""
    out = tmp_path_factory.mktemp("site")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                          str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert run.returncode == 0, run.stdout + run.stderr
    return out


def test_the_site_builds_strictly_with_every_page(site: Path) -> None:
    pages = {p.relative_to(ROOT / "docs").with_suffix("") for p in (ROOT / "docs").rglob("*.md")}
    for page in pages:
        built = page.parent if page.name in ("index", "README") else page
        assert (site / built / "index.html").is_file(), f"docs/{page}.md was not built"


def test_every_setting_has_a_description() -> None:
    missing = [name for name, field in Settings.model_fields.items()
               if not (field.description or "").strip()]
    assert not missing, f"Settings fields without a description: {missing}"


def test_the_settings_reference_lists_every_setting_with_its_flag_default_and_meaning(
        site: Path) -> None:
    table = settings_hook().settings_table()
    page = (site / "settings" / "index.html").read_text()
    shown = " ".join(html.unescape(re.sub(r"<[^>]+>", "", page)).split())  # the page's text
    for name, field in Settings.model_fields.items():
        row = next((r for r in table.splitlines() if r.startswith(f"| `{name}` |")), None)
        assert row is not None, f"the settings reference lacks {name}"
        assert f"`--{name.lower().replace('_', '-')}`" in row
        assert field.description in row.replace("\\|", "|")
        # ... and the built page shows it (the hook ran during the build)
        assert f"<code>{name}</code>" in page
        assert " ".join(field.description.replace("`", "").split()) in shown, name
    assert "settings-table" not in page


def test_the_settings_reference_shows_defaults_as_the_environment_takes_them() -> None:
    table = settings_hook().settings_table()
    rows = {r.split(" | ")[0].strip("| `"): r for r in table.splitlines()[2:]}
    assert "| `8000` |" in rows["API_PORT"] and "`--port`" in rows["API_PORT"]
    assert "| unset |" in rows["API_TOKEN"]
    assert "| `~/.cache/textgen/models` |" in rows["MODEL_CACHE_DIR"]  # not the builder's home
    assert "| `{}` |" in rows["RATE_LIMITS"] and "| `true` |" in rows["CACHE_SAMPLED"]


def test_the_readme_is_a_short_front_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= README_MAX_BYTES, f"README.md is {len(readme.encode())} bytes"
    # The two set-up commands, and links into docs/ that lead somewhere.
    assert re.search(r"^make run\b", readme, re.M) and re.search(r"^make test\b", readme, re.M)
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert links, "the README links into docs/"
    for link in links:
        assert (ROOT / link).is_file(), f"README links to {link}, which does not exist"
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme):
        assert (ROOT / image).is_file(), f"README shows {image}, which does not exist"
