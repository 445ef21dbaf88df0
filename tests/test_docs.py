"""The manual has no broken links: in README.md and every page under docs/, each relative link or
image target exists, each #anchor names a heading of its page, every page is in mkdocs.yml's nav
and every nav entry exists, and `mkdocs build --strict` passes. No network: http(s) links are not
followed. Links in code (fenced blocks and inline code) are not links and are skipped.

Anchors are heading ids as MkDocs makes them (Python-Markdown's toc `slugify`: lower case, ASCII,
punctuation other than `-` and `_` dropped, runs of spaces and hyphens to one `-`; a repeated
heading gets `_1`, `_2`, ...). GitHub's ids for README.md agree for headings that are unique on
their page and hold no runs of spaces or hyphens."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import unicodedata
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]

try:
    from markdown.extensions.toc import slugify as markdown_slugify
except ImportError:  # mkdocs not installed: the same rule, written out
    markdown_slugify = None

FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)((?:(?!\n[ \t]*\n).)+?)(?<!`)\1(?!`)", re.DOTALL)
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]\n]|\[[^\[\]\n]*\])*\]\(\s*(<[^>\n]*>|[^\s()]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)"
)
REFERENCE_LINK = re.compile(r"!?\[(?:[^\[\]\n]|\[[^\[\]\n]*\])+\]\[([^\[\]\n]*)\]")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[([^\[\]\n]+)\]:[ \t]*(<[^>\n]*>|\S+)", re.MULTILINE)
HTML_TARGET = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)=\"([^\"]*)\"", re.IGNORECASE)
ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def slugify(text: str) -> str:
    if markdown_slugify is not None:
        return markdown_slugify(text, "-")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def blank(match: re.Match) -> str:
    """The matched text as spaces, keeping its newlines, so that line numbers stay right."""
    return re.sub(r"[^\n]", " ", match.group(0))


def without_fences(text: str) -> str:
    """The text with every fenced code block blanked out (line numbers kept)."""
    lines, fence = text.split("\n"), None
    for i, line in enumerate(lines):
        opening = FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)
        elif fence is not None:
            closing = opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence)
            if closing and not line.strip().strip(fence[0]):
                fence = None
        else:
            continue
        lines[i] = ""
    return "\n".join(lines)


def prose(text: str) -> str:
    """What can hold links: the text without code blocks and inline code."""
    return CODE_SPAN.sub(blank, without_fences(text))


def heading_texts(text: str) -> list[str]:
    """ATX (`## Title`) and setext (`Title` over `===` or `---`) headings, as rendered text."""
    found, previous = [], ""
    for line in without_fences(text).split("\n"):
        atx = ATX_HEADING.match(line)
        if atx:
            found.append(atx.group(2) or "")
        elif (
            re.fullmatch(r" {0,3}(=+|-+)[ \t]*", line)
            and previous.strip()
            and not re.match(r"^ {0,3}([-*+]|\d+[.)]|>)", previous)
            and "|" not in previous
            and not ATX_HEADING.match(previous)
        ):
            found.append(previous.strip())
        previous = line
    rendered = []
    for heading in found:
        heading = re.sub(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\([^)]*\)", r"\1", heading)  # a link: its text
        rendered.append(re.sub(r"<[^>]+>", "", heading))
    return rendered


@cache
def anchors(page: Path) -> frozenset[str]:
    """The ids MkDocs gives the page's headings."""
    ids: set[str] = set()
    for heading in heading_texts(page.read_text(encoding="utf-8")):
        slug = slugify(heading)
        while slug in ids or not slug:
            numbered = re.fullmatch(r"(.*)_(\d+)", slug)
            slug = f"{numbered.group(1)}_{int(numbered.group(2)) + 1}" if numbered else f"{slug}_1"
        ids.add(slug)
    return frozenset(ids)


def targets(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link, image, reference definition and HTML href/src in prose."""
    text = prose(text)
    definitions = {label.lower() for label, _ in REFERENCE_DEFINITION.findall(text)}
    found = []
    for pattern in (INLINE_LINK, REFERENCE_DEFINITION, HTML_TARGET):
        for match in pattern.finditer(text):
            found.append((text.count("\n", 0, match.start()) + 1, match.groups()[-1].strip("<>")))
    for match in REFERENCE_LINK.finditer(text):
        label = match.group(1) or re.sub(r"^!?\[|\]\[\]$", "", match.group(0))
        if label.lower() not in definitions:
            found.append((text.count("\n", 0, match.start()) + 1, f"[{label}] (no such reference)"))
    return sorted(found)


def check(page: Path, target: str) -> str | None:
    """Why the target is broken, or None."""
    if target.endswith("(no such reference)"):
        return "a reference link without a definition"
    if SCHEME.match(target):
        return None  # http(s), mailto: not followed
    path, _, anchor = target.partition("#")
    path = unquote(path.split("?", 1)[0])
    if path.startswith("/"):
        return "an absolute path: link relative to the page"
    file = (page.parent / path).resolve() if path else page
    if not file.exists():
        return f"{path} does not exist"
    if anchor:
        if file.suffix != ".md":
            return "an anchor into a file that is not markdown"
        if unquote(anchor) not in anchors(file):
            known = ", ".join(sorted(anchors(file)))
            return f"no heading with the id {anchor!r} in {file.name} (its ids: {known})"
    return None


def broken_links(page: Path) -> list[str]:
    return [
        f"{page.name}:{line}: ({target}) {reason}"
        for line, target in targets(page.read_text(encoding="utf-8"))
        if (reason := check(page, target))
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_links_and_anchors_resolve(page):
    assert not broken_links(page)


class _IgnoreTags(yaml.SafeLoader):
    """mkdocs.yml may hold tags such as !ENV; the nav has none."""


_IgnoreTags.add_multi_constructor("", lambda loader, suffix, node: None)


def nav_files(nav: list) -> list[str]:
    files = []
    for item in nav:
        entries = item.values() if isinstance(item, dict) else [item]
        for entry in entries:
            if isinstance(entry, list):
                files.extend(nav_files(entry))
            elif isinstance(entry, str) and not SCHEME.match(entry):
                files.append(entry)
    return files


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_IgnoreTags)
    docs_dir = ROOT / config.get("docs_dir", "docs")
    listed = nav_files(config["nav"])
    pages = sorted(str(page.relative_to(docs_dir)) for page in docs_dir.rglob("*.md"))
    assert pages and docs_dir == DOCS
    missing = [entry for entry in listed if not (docs_dir / entry).is_file()]
    unlisted = sorted(set(pages) - set(listed))
    assert (missing, unlisted) == ([], []), "(nav entries without a file, pages not in the nav)"
    assert len(listed) == len(set(listed)), "a page is in the nav twice"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed")
def test_mkdocs_build_strict(tmp_path):
    mkdocs = [sys.executable, "-m", "mkdocs", "build", "--strict"]
    build = subprocess.run(
        [*mkdocs, "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr


def test_the_checker_finds_broken_links_and_skips_code(tmp_path):
    (tmp_path / "other.md").write_text(
        "# Other page\n\n## Part two: `code`, *and* more\n\n## Part two: `code`, *and* more\n"
    )
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n"
        "[fine](other.md#part-two-code-and-more) and [its twin](other.md#part-two-code-and-more_1)\n"
        "[missing file](nowhere.md) and [missing anchor](other.md#part-three) and [here](#title)\n"
        "![missing image](img/none.png) `[in code](code.md)` [web](https://example.com/x#y)\n"
        "[missing here](#nothing)\n\n"
        "```bash\n[in a fence](fence.md)\n```\n\n"
        "  ~~~\n  [in an indented fence](fence2.md)\n  ~~~\n\n"
        "[ref link][nodef]\n"
    )
    problems = broken_links(page)
    assert [problem.split(" ", 1)[0] for problem in problems] == [
        "page.md:4:",
        "page.md:4:",
        "page.md:5:",
        "page.md:6:",
        "page.md:16:",
    ]
    assert "nowhere.md does not exist" in problems[0]
    assert "'part-three'" in problems[1] and "'nothing'" in problems[3] and "img/none.png" in problems[2]
