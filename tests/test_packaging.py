"""Packaging and documentation facts a user relies on: one version, a matching licence, every
imported package declared, the README's commands are CI's, and the text speaks of the library."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
README = (ROOT / "README.md").read_text()

# import name -> distribution name, where they differ
DISTRIBUTIONS = {"torch_geometric": "torch-geometric", "opt_einsum": "opt-einsum", "torch_scatter": "torch-scatter"}


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower()


def test_version_is_written_once():
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "everygraph.__version__"}
    tree = ast.parse((ROOT / "everygraph" / "__init__.py").read_text())
    versions = [n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "__version__"]
    assert len(versions) == 1 and re.fullmatch(r"\d+\.\d+\.\d+", ast.literal_eval(versions[0].value))


def test_license_file_matches_metadata():
    assert PYPROJECT["project"]["license"] == {"text": "MIT"}
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "License :: OSI Approved :: MIT License" in PYPROJECT["project"]["classifiers"]


def test_every_imported_package_is_declared():
    project = PYPROJECT["project"]
    core = {_requirement_name(r) for r in project["dependencies"]}
    optional = {_requirement_name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    imported: dict[str, str] = {}
    for path in sorted((ROOT / "everygraph").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "everygraph" and top not in sys.stdlib_module_names:
                    imported.setdefault(top, str(path.relative_to(ROOT)))
    undeclared = {
        top: where for top, where in imported.items()
        if DISTRIBUTIONS.get(top, top).lower() not in core | optional
    }
    assert not undeclared, f"imported but not in pyproject's dependencies or extras: {undeclared}"
    assert {"torch", "torch-geometric", "opt-einsum", "networkx", "numpy"} <= core


def test_readme_is_a_landing_page_whose_commands_ci_runs():
    assert len(README) < 8000
    quickstart = README.split("## Quickstart", 1)[1]
    commands = re.search(r"```bash\n(.*?)```", quickstart, re.S).group(1).strip().splitlines()
    assert commands[0].startswith("pip install -e . && everygraph ")
    assert commands[1] == 'pip install -e ".[test]" && pytest'
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci.splitlines()
    assert ci.index("pip install torch==2.13.0") < ci.index(commands[1])


def _prose_lines(path: Path):
    """``(number, line)`` of a file, without fenced code blocks of Markdown files (verbatim
    program output may print the machine's state)."""
    fenced = False
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if path.suffix == ".md" and line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            yield i, line


def test_text_speaks_of_the_library_only():
    forbidden = re.compile(r"\bthe issue\b|\bissue \d|\bthe note\b|\bnote's\b|load average (of |about |at |~)?\d",
                           re.IGNORECASE)
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for folder in ("everygraph", "examples", "benchmarks"):
        files += sorted((ROOT / folder).rglob("*.py"))
    hits = [
        f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
        for path in files for i, line in _prose_lines(path)
        if forbidden.search(line)
    ]
    assert not hits, "\n".join(hits)
