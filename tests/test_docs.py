"""The documentation holds together: the README is a short guide, each reference page of
``docs/`` opens with what it covers, and every relative link (and ``#anchor``) resolves.

Links are read from the Markdown outside fenced code blocks and inline code spans; ``http(s)``
and ``mailto`` links are not followed (no network). An anchor must be the GitHub slug of a
heading of the target Markdown file (or of the same file, for ``#anchor`` alone).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = (
    "configuration",
    "data",
    "metrics",
    "sweeps",
    "evaluation",
    "scraping",
    "performance",
    "development",
)
README_MAX_LINES = 300

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = ("http://", "https://", "mailto:")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines of ``text`` outside fenced code blocks (fence lines become empty)."""
    out: list[str] = []
    fence: str | None = None
    for line in text.splitlines():
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            out.append("")
        elif fence is not None:
            if line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
                fence = None
            out.append("")
        else:
            out.append(line)
    return out


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its rendered text in lower case, punctuation other
    than ``-`` and ``_`` removed, spaces turned into ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's ``-1``, ``-2`` for repeats."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every inline link, image and reference definition."""
    out: list[tuple[int, str]] = []
    for number, line in enumerate(prose_lines(path.read_text(encoding="utf-8")), start=1):
        definition = REFERENCE_DEFINITION.match(line)
        if definition:
            out.append((number, definition.group(1)))
            continue
        prose = INLINE_CODE.sub(lambda m: "x" * len(m.group(0)), line)
        out += [(number, m.group(1)) for m in INLINE_LINK.finditer(prose)]
    return out


def broken_link(source: Path, target: str) -> str | None:
    """Why ``target`` (a link in ``source``) does not resolve, or None."""
    if target.startswith(EXTERNAL) or not target:
        return None
    file_part, _, anchor = target.partition("#")
    file_part = unquote(file_part.split("?")[0])
    dest = source if not file_part else (source.parent / file_part).resolve()
    if not dest.exists():
        return f"no such file: {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}"
    markdown = dest.is_file() and dest.suffix.lower() == ".md"
    if anchor and markdown and unquote(anchor).lower() not in anchors(dest):
        return f"no heading #{anchor} in {dest.relative_to(ROOT)}"
    return None


def test_github_slugs():
    assert github_slug("Imbalanced MNIST (`data=mnist`)") == "imbalanced-mnist-datamnist"
    assert github_slug("Image folders (`data=image_folder`)") == "image-folders-dataimage_folder"
    assert github_slug("Threshold tuning (two-class tasks)") == "threshold-tuning-two-class-tasks"
    assert github_slug("Confidence intervals: streaming Poisson bootstrap") == (
        "confidence-intervals-streaming-poisson-bootstrap"
    )
    assert github_slug("See [the docs](docs/x.md)") == "see-the-docs"


def test_link_reader_skips_code_and_reads_references(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\nSee [a](a.md#x), ![img](img.png) and `[not](code.md)`.\n\n"
        "```\n[not](fenced.md)\n# not a heading\n```\n\n[ref]: b.md\n## Real heading\n",
        encoding="utf-8",
    )
    assert [t for _, t in links(page)] == ["a.md#x", "img.png", "b.md"]
    assert anchors(page) == {"title", "real-heading"}


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    broken = [
        f"{path.relative_to(ROOT)}:{number}: ({target}) {why}"
        for number, target in links(path)
        if (why := broken_link(path, target))
    ]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move reference text "
        "into a page of docs/"
    )


@pytest.mark.parametrize("name", PAGES)
def test_docs_page_opens_with_a_paragraph(name):
    page = DOCS / f"{name}.md"
    assert page.is_file(), f"docs/{name}.md is missing"
    blocks = [
        b.strip() for b in re.split(r"\n\s*\n", page.read_text(encoding="utf-8")) if b.strip()
    ]
    assert len(blocks) >= 2 and HEADING.match(blocks[0].splitlines()[0]), (
        f"docs/{name}.md must start with a '# Title' heading followed by a paragraph"
    )
    first = blocks[1]
    not_prose = (HEADING, FENCE, re.compile(r"^\s*([-*+>|]|\d+[.)])\s"), re.compile(r"^\s*[|<]"))
    assert not any(p.match(first) for p in not_prose), (
        f"docs/{name}.md must open with a paragraph saying what it covers, not: {first[:60]!r}"
    )
    assert len(first.split()) >= 12, f"docs/{name}.md: the opening paragraph is too short"
