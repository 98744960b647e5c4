"""The docs render as written: every internal link and anchor resolves, no heading is
swallowed by a code fence (rendered with markdown-it-py, a CommonMark parser)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "SECURITY.md",
               *(ROOT / "docs").glob("*.md")])
_MD = MarkdownIt("commonmark").enable("table")
_FENCE = re.compile(r"^ {0,3}(```+|~~~+)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")


def _slug(text: str) -> str:
    """GitHub's anchor for a heading's text: lower case, punctuation dropped (letters, marks,
    digits, '_', '-' and spaces stay), each space a '-'."""
    kept = "".join(ch for ch in text.lower()
                   if ch in " -_" or unicodedata.category(ch)[0] in "LMN")
    return kept.replace(" ", "-")


def _inline_text(token: Token) -> str:
    """The plain text GitHub slugs: text and code spans, without markup."""
    return "".join(child.content for child in token.children or []
                   if child.type in ("text", "code_inline", "html_inline"))


def _render(path: Path) -> list[Token]:
    return _MD.parse(path.read_text(encoding="utf-8"))


def _headings(tokens: list[Token]) -> list[str]:
    return [_inline_text(tokens[i + 1]) for i, token in enumerate(tokens)
            if token.type == "heading_open"]


def _anchors(path: Path) -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for text in _headings(_render(path)):
        slug = _slug(text)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _links(tokens: list[Token]) -> list[str]:
    return [str(child.attrs["href"]) for token in tokens if token.type == "inline"
            for child in token.children or [] if child.type == "link_open"]


def _source_headings(path: Path) -> list[str]:
    """The headings a reader of the source sees: ATX lines outside ``` / ~~~ fences, where a
    line starting with a fence opens or closes one whatever follows it."""
    headings: list[str] = []
    fence: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        marker = _FENCE.match(line)
        if marker:
            fence = marker.group(1)[0] if fence is None else None
            continue
        heading = _HEADING.match(line)
        if fence is None and heading:
            headings.append(heading.group(2))
    return headings


def test_the_slug_follows_githubs_rules() -> None:
    """Punctuation goes, spaces become dashes, code spans keep their text."""
    assert _slug("Enforced isolation (broker mode)") == "enforced-isolation-broker-mode"
    assert _slug("`pipekey run`: a child's env") == "pipekey-run-a-childs-env"
    assert _slug("run_id & env") == "run_id--env"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_heading_is_swallowed_by_a_code_fence(doc: Path) -> None:
    """A CommonMark renderer shows every heading the source has: an unclosed fence (say a
    closing fence with text after it) turns the sections after it into one code block."""
    rendered = [_MD.parseInline(text)[0].children for text in _source_headings(doc)]
    expected = ["".join(c.content for c in children or []
                        if c.type in ("text", "code_inline", "html_inline"))
                for children in rendered]
    assert _headings(_render(doc)) == expected


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_internal_link_and_anchor_resolves(doc: Path) -> None:
    """A relative link names a file or folder that exists; an anchor names a heading of the
    page it points at (GitHub's slugs)."""
    broken = []
    for href in _links(_render(doc)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", href, flags=re.I):
            continue  # https:, mailto:: not ours to check here
        target, _, anchor = href.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        if not path.exists():
            broken.append(f"{href}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{href}: no heading with that anchor")
    assert broken == []
