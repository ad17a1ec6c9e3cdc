"""griffe extension: read the reStructuredText bits of our Google-style docstrings as Markdown.

The docstrings follow PyG's habit (``Args:`` sections, maths as ``.. math::`` blocks and
``:math:`` roles, cross references as ``:func:`` / ``:class:`` roles). mkdocstrings renders
docstrings as Markdown, so before rendering: maths blocks become ``$$ ... $$`` and inline
maths ``$ ... $`` (typeset by pymdownx.arithmatex + MathJax), cross-reference roles become
code spans, ``Example:`` sections are read as doctest ``Examples:``, and RST links
(text and address in backticks, ending in an underscore) become Markdown links.
"""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj|py:\w+):`(~?)([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]*)`")
_LINK = re.compile(r"`([^`<]+?)\s*<(https?://[^>]+)>`_{1,2}")


def _role(match: re.Match) -> str:
    short, target = match.group(1), match.group(2).strip()
    if target.startswith("~"):
        short, target = "~", target[1:]
    if "<" in target:  # :func:`text <target>`
        target = target.split("<")[0].strip()
    return f"`{target.split('.')[-1] if short else target}`"


def _math_blocks(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = re.match(r"^(\s*)\.\. math::\s*(.*)$", lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent, first = match.group(1), match.group(2)
        body = [first] if first else []
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)):
            body.append(lines[i].strip())
            i += 1
        while body and not body[-1]:
            body.pop()
        while body and not body[0]:
            body.pop(0)
        content = "\n".join(body)
        if "&" in content or "\\\\" in content:
            content = "\\begin{aligned}\n" + content + "\n\\end{aligned}"
        out += ["", indent + "$$", *(indent + line for line in content.split("\n")), indent + "$$", ""]
    return "\n".join(out)


def rst_to_markdown(text: str) -> str:
    """The Markdown reading of one docstring (see the module docstring)."""
    # "Example:" is an admonition for griffe, "Examples:" a doctest section (code, not text)
    text = re.sub(r"(?m)^(\s*)Example:\s*$", r"\1Examples:", text)
    text = _math_blocks(text)
    text = _MATH_ROLE.sub(lambda m: f"${m.group(1).strip()}$", text)
    text = _ROLE.sub(_role, text)
    return _LINK.sub(r"[\1](\2)", text)


class RstToMarkdown(griffe.Extension):
    """Rewrite each docstring once, when griffe loads the object."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
