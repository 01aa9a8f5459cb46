"""Release notes as safe rich text: a small Markdown subset, every character of the notes escaped.

Notes come from the registry, so they are untrusted. Only tags this module writes itself reach
the text browser (headings, lists, paragraphs, bold, italics, code); links become plain text
with their address shown; nothing is ever loaded (no images, no remote or local resources)
and a text browser runs no scripts.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import QCoreApplication, Qt, QUrl
from PySide6.QtWidgets import QTextBrowser, QWidget

from desktop.core.results import ReleaseInfo

MAX_NOTES_CHARS = 20_000
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_BULLET = re.compile(r"^\s*[-*+]\s+(.*)$")
_NUMBERED = re.compile(r"^\s*\d{1,3}[.)]\s+(.*)$")
_LINK = re.compile(r"!?\[([^\]]*)\]\(([^)\s]*)\)")
_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*|__(.+?)__")
_ITALIC = re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])|(?<![\w_])_(?!\s)(.+?)(?<!\s)_(?![\w_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _inline(text: str) -> str:
    """Escape `text`, then turn the few Markdown spans into tags written here."""
    def link(match: re.Match[str]) -> str:
        label, target = match.group(1).strip(), match.group(2).strip()
        if not target or label == target:
            return label or target
        return f"{label} ({target})" if label else target

    text = _LINK.sub(link, text)
    escaped = html.escape(text, quote=True)
    escaped = _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", escaped)
    escaped = _BOLD.sub(lambda m: f"<b>{m.group(1) or m.group(2)}</b>", escaped)
    return _ITALIC.sub(lambda m: f"<i>{m.group(1) or m.group(2)}</i>", escaped)


def notes_html(notes: str) -> str:
    """One release's notes as HTML built only from escaped text and known tags."""
    text = _CONTROL.sub("", notes[:MAX_NOTES_CHARS]).replace("\r\n", "\n").replace("\r", "\n")
    out: list[str] = []
    paragraph: list[str] = []
    listing: str | None = None

    def flush_paragraph() -> None:
        if paragraph:
            out.append("<p>" + "<br>".join(_inline(line) for line in paragraph) + "</p>")
            paragraph.clear()

    def close_list() -> None:
        nonlocal listing
        if listing:
            out.append(f"</{listing}>")
            listing = None

    for raw in text.split("\n"):
        line = raw.rstrip()
        heading, bullet, numbered = _HEADING.match(line), _BULLET.match(line), _NUMBERED.match(line)
        if not line.strip():
            flush_paragraph()
            close_list()
        elif heading:
            flush_paragraph()
            close_list()
            out.append(f"<h4>{_inline(heading.group(2))}</h4>")
        elif bullet or numbered:
            flush_paragraph()
            kind = "ul" if bullet else "ol"
            if listing != kind:
                close_list()
                out.append(f"<{kind}>")
                listing = kind
            item = (bullet or numbered).group(1)  # type: ignore[union-attr]
            out.append(f"<li>{_inline(item)}</li>")
        else:
            close_list()
            paragraph.append(line.strip())
    flush_paragraph()
    close_list()
    return "\n".join(out)


def releases_html(releases: Sequence[ReleaseInfo]) -> str:
    """The notes of several releases, newest first, each under its version."""
    if not releases:
        return "<p>" + html.escape(QCoreApplication.translate("Notes", "No release notes.")) + "</p>"
    parts = []
    for release in releases:
        title = QCoreApplication.translate("Notes", "Version {version}").format(version=release.version)
        body = notes_html(release.notes) if release.notes.strip() else (
            "<p>" + html.escape(QCoreApplication.translate("Notes", "No release notes.")) + "</p>")
        parts.append(f"<h3>{html.escape(title)}</h3>\n{body}")
    return "\n".join(parts)


class NotesBrowser(QTextBrowser):
    """A read-only text browser that loads nothing and follows no link."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setOpenLinks(False)
        self.setOpenExternalLinks(False)
        self.setSearchPaths([])
        # Mouse selection only: a keyboard caret would blink in read-only notes; the keys scroll.
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

    def loadResource(self, kind: int, name: QUrl | str) -> Any:
        return None  # no images, style sheets or anything else, local or remote

    def show_releases(self, releases: Sequence[ReleaseInfo]) -> None:
        self.setHtml(releases_html(releases))
