"""MkDocs hook: the settings reference, rendered from `textgen.Settings` at every build.

docs/settings.md holds a marker that this hook replaces with one table row per field (its
environment variable, its `textgen serve` flags, its default and its description), so the page
cannot drift from the code. tests/test_docs.py builds the site with `mkdocs build --strict`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MARKER = "<!-- settings-table -->"


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, Path):
        home, text = str(Path.home()), str(value)
        # MODEL_CACHE_DIR is under the home of whoever runs the lab, not of the docs' builder.
        if text.startswith(home + "/"):
            text = "~" + text[len(home):]
    else:
        text = str(value)  # {} and [] for the JSON settings, as the environment takes them
    return f"`{_cell(text)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def settings_table() -> str:
    """The markdown table of every Settings field, in the order the class declares them."""
    from api.cli import flags
    from textgen import Settings

    rows = ["| variable | flags | default | meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        flag_cell = ", ".join(f"`{flag}`" for flag in flags(name))
        default = _default(field.get_default(call_default_factory=True))
        rows.append(f"| `{name}` | {flag_cell} | {default} | {_cell(field.description or '')} |")
    return "\n".join(rows) + "\n"


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, settings_table())
    return markdown
