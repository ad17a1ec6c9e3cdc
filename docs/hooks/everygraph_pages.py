"""mkdocs hook: tutorial pages from ``examples/*.py`` and a nav that finds pages added later.

* Each ``examples/<name>.py`` becomes ``tutorials/<name>.md``: its docstring as text, the
  command that runs it, and the whole script, so the site shows the code that the tests run.
* Markdown pages under ``docs/`` that the nav in ``mkdocs.yml`` does not list are appended to
  the nav section named ``In depth`` (sorted by file name), so a new page needs no edit of
  ``mkdocs.yml`` and a removed page breaks nothing.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
EXTRA_SECTION = "In depth"


def _escape_brackets(text: str) -> str:
    """``[--quick]`` (usage syntax) outside code spans would read as a Markdown link."""
    parts = re.split(r"(`+[^`]*`+)", text)
    return "".join(p if p.startswith("`") else p.replace("[", "\\[") for p in parts)


def _tutorial(path: Path) -> tuple[str, str]:
    """``(title, markdown)`` of one example script."""
    source = path.read_text()
    doc = ast.get_docstring(ast.parse(source)) or path.stem
    title, _, rest = doc.partition("\n")
    lines = [
        f"# {title.strip()}",
        "",
        _escape_brackets(rest.strip()),
        "",
        "Run it from the repository root:",
        "",
        "```bash",
        f"python examples/{path.name}",
        "```",
        "",
        f"## The script: `examples/{path.name}`",
        "",
        "```python",
        source.rstrip(),
        "```",
        "",
    ]
    return title.strip(), "\n".join(lines)


def _nav_title(title: str) -> str:
    """A tutorial's title up to its colon, for the navigation."""
    return title.split(":")[0].replace("``", "").replace("`", "").rstrip(".")


def _nav_pages(nav) -> set[str]:
    found: set[str] = set()
    if isinstance(nav, str):
        found.add(nav)
    elif isinstance(nav, list):
        for item in nav:
            found |= _nav_pages(item)
    elif isinstance(nav, dict):
        for value in nav.values():
            found |= _nav_pages(value)
    return found


def _first_heading(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.stem.replace("-", " ").capitalize()


def on_config(config):
    nav = config.get("nav")
    if not nav:
        return config
    docs_dir = Path(config["docs_dir"])
    listed = _nav_pages(nav)
    tutorials = [{_nav_title(_tutorial(p)[0]): f"tutorials/{p.stem}.md"} for p in sorted(EXAMPLES.glob("*.py"))]
    extra = [
        {_first_heading(p): p.relative_to(docs_dir).as_posix()}
        for p in sorted(docs_dir.rglob("*.md"))
        if p.relative_to(docs_dir).as_posix() not in listed
    ]
    for section in nav:
        if isinstance(section, dict) and "Tutorials" in section:
            section["Tutorials"] = tutorials
    if extra:  # before the last section (the changelog)
        nav.insert(len(nav) - 1, {EXTRA_SECTION: extra})
    return config


def on_files(files, config):
    for path in sorted(EXAMPLES.glob("*.py")):
        _, markdown = _tutorial(path)
        files.append(File.generated(config, f"tutorials/{path.stem}.md", content=markdown))
    return files
