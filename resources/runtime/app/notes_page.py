"""HTML for the Notes page: self-contained (inline CSS, no scripts, no external assets)."""

from __future__ import annotations

import html
import os
import time
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from notes_native import TextStats
from notes_store import MAX_TEXT_CHARS, Note


@dataclass(frozen=True)
class AppInfo:
    name: str
    version: str
    shell_version: str
    data_dir: Path


STYLE = """
:root { color-scheme: light dark; --bg: #f5f6f8; --fg: #1d2330; --muted: #667085; --card: #fff;
  --line: #e3e6eb; --accent: #3457d5; --accent-fg: #fff; --danger: #c4321c; }
@media (prefers-color-scheme: dark) { :root { --bg: #14171c; --fg: #e6e8ec; --muted: #98a2b3;
  --card: #1d2128; --line: #2c323c; --accent: #7b96ff; --accent-fg: #0d1020; --danger: #ff7a66; } }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header, main, footer { max-width: 46rem; margin: 0 auto; padding: 0 1.25rem; }
header { padding-top: 2rem; display: flex; flex-wrap: wrap; align-items: baseline;
  justify-content: space-between; gap: .5rem; }
h1 { margin: 0; font-size: 1.6rem; letter-spacing: -.01em; }
h2 { font-size: 1rem; color: var(--muted); font-weight: 600; margin: 1.75rem 0 .75rem; }
.badges { display: flex; flex-wrap: wrap; gap: .4rem; margin: 0; padding: 0; list-style: none; }
.badge { font-size: .78rem; padding: .15rem .55rem; border-radius: 999px; border: 1px solid var(--line);
  background: var(--card); color: var(--muted); }
.badge b { color: var(--fg); font-weight: 600; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 1rem; }
.compose { margin-top: 1.25rem; }
label { display: block; font-weight: 600; margin-bottom: .4rem; }
textarea { width: 100%; min-height: 6rem; resize: vertical; padding: .6rem .7rem; font: inherit;
  color: inherit; background: var(--bg); border: 1px solid var(--line); border-radius: 8px; }
textarea:focus { outline: 2px solid var(--accent); outline-offset: 1px; }
.row { display: flex; align-items: center; justify-content: space-between; gap: 1rem; margin-top: .6rem; }
.hint, .stats { color: var(--muted); font-size: .85rem; }
button { font: inherit; font-weight: 600; border-radius: 8px; border: 1px solid transparent;
  padding: .4rem .9rem; cursor: pointer; background: var(--accent); color: var(--accent-fg); }
button.danger { background: transparent; color: var(--danger); border-color: var(--line); }
button:hover { filter: brightness(1.08); }
.notes { list-style: none; margin: 0; padding: 0; display: grid; gap: .75rem; }
.note .text { margin: 0; white-space: pre-wrap; overflow-wrap: anywhere; }
.note form { margin: 0; }
.empty { color: var(--muted); text-align: center; padding: 2rem 1rem; }
.error { border-color: var(--danger); color: var(--danger); margin-top: 1rem; }
footer { color: var(--muted); font-size: .8rem; padding-top: 2rem; padding-bottom: 2rem; }
code { overflow-wrap: anywhere; }
"""


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n'
        "<head>\n"
        '<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n"
        f"<style>{STYLE}</style>\n"
        "</head>\n"
        f"<body>\n{body}</body>\n"
        "</html>\n"
    )


def render_home(info: AppInfo, stats: TextStats, notes: list[Note], *,
                error: str | None = None, draft: str = "") -> str:
    """The whole page: versions, the compose form and the notes, newest first."""
    esc = html.escape
    notes = list(reversed(notes))
    counted = [(note, stats.count_words(note.text), stats.count_lines(note.text)) for note in notes]
    total_words = sum(words for _, words, _ in counted)

    parts = [
        "<header>\n<h1>Notes</h1>\n<ul class=\"badges\">\n",
        f'<li class="badge" id="runtime-version">runtime <b>{esc(info.version)}</b></li>\n',
        f'<li class="badge" id="shell-version">shell <b>{esc(info.shell_version)}</b></li>\n',
        f'<li class="badge" id="native-version">textstats <b>{esc(stats.version)}</b></li>\n',
        "</ul>\n</header>\n<main>\n",
    ]
    if error:
        parts.append(f'<p class="card error" role="alert">{esc(error)}</p>\n')
    parts.append(
        '<form class="card compose" method="post" action="/notes">\n'
        '<label for="text">New note</label>\n'
        f'<textarea id="text" name="text" maxlength="{MAX_TEXT_CHARS}" required '
        f'placeholder="Write something…">{esc(draft)}</textarea>\n'
        '<div class="row"><span class="hint">Word and line counts come from the bundled native '
        'library.</span><button type="submit">Add note</button></div>\n'
        "</form>\n"
        '<section aria-labelledby="notes-heading">\n'
        f'<h2 id="notes-heading">{_plural(len(notes), "note")} · {_plural(total_words, "word")}</h2>\n'
    )
    if not notes:
        parts.append('<p class="empty">No notes yet. Write the first one above.</p>\n')
    else:
        parts.append('<ul class="notes">\n')
        for note, words, lines in counted:
            iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(note.created))
            shown = time.strftime("%Y-%m-%d %H:%M", time.localtime(note.created))
            parts.append(
                f'<li class="card note" id="note-{esc(note.id)}">\n'
                f'<p class="text">{esc(note.text)}</p>\n'
                '<div class="row">'
                f'<span class="stats"><span class="words">{_plural(words, "word")}</span> · '
                f'{_plural(lines, "line")} · <time datetime="{iso}">{shown}</time></span>'
                f'<form method="post" action="/notes/{esc(note.id)}/delete">'
                '<button class="danger" type="submit">Delete</button></form>'
                "</div>\n</li>\n"
            )
        parts.append("</ul>\n")
    parts.append(
        "</section>\n</main>\n"
        f"<footer>Notes are stored in <code>{esc(str(info.data_dir))}</code> · "
        f"{esc(info.name)} pid {os.getpid()}</footer>\n"
    )
    return _page(f"Notes · {info.version}", "".join(parts))


def render_error(status: HTTPStatus, message: str) -> str:
    body = (
        f'<main>\n<h1>{status.value} {html.escape(status.phrase)}</h1>\n'
        f'<p class="card error">{html.escape(message)}</p>\n<p><a href="/">Back to notes</a></p>\n</main>\n'
    )
    return _page(f"{status.value} {status.phrase}", body)


def render_locked(info: AppInfo) -> str:
    """What a browser sees without the launch token: how to open the notes instead."""
    body = (
        "<main>\n<h1>This page is locked</h1>\n"
        '<p class="card error">It only opens for the app that started it.</p>\n'
        f"<p>Open {html.escape(info.name)} from the desktop app, or use its <b>Open in browser</b> "
        "command, which signs this browser in for as long as the app runs.</p>\n</main>\n"
    )
    # No "Notes" in the title: whoever checks that the notes page loaded must not be fooled.
    return _page("Locked · open it from the app", body)
