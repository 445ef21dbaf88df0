"""MkDocs hooks: the site carries the repository's README as a page of its own, so the home page links to
it instead of repeating its commands. Its links into docs/ become the site's own; links to other files
of the repository become their paths in code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

README = Path(__file__).resolve().parent.parent / "README.md"
PAGE = "readme.md"
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def _site_link(match: re.Match[str]) -> str:
    text, target = match.groups()
    if target.startswith("docs/"):
        return f"[{text}]({target.removeprefix('docs/')})"
    if re.match(r"[a-z]+:|#", target):
        return match.group(0)
    return f"{text} (`{target}`)"


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, PAGE, content=_LINK.sub(_site_link, README.read_text())))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    return markdown.replace("](../README.md", f"]({PAGE}")
