"""Notes kept as one JSON file, written atomically (temp file + fsync + rename)."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

FILE_NAME = "notes.json"
FORMAT = 1
MAX_TEXT_CHARS = 20_000
MAX_NOTES = 10_000


class NoteError(ValueError):
    """A note the store refuses (empty, too long, too many)."""


@dataclass(frozen=True)
class Note:
    id: str
    text: str
    created: float

    @classmethod
    def from_json(cls, obj: object) -> Note | None:
        if not isinstance(obj, dict):
            return None
        note_id, text, created = obj.get("id"), obj.get("text"), obj.get("created")
        if not isinstance(note_id, str) or not is_valid_id(note_id) or not isinstance(text, str):
            return None
        if not isinstance(created, int | float):
            created = 0.0
        return cls(id=note_id, text=text, created=float(created))


def is_valid_id(note_id: str) -> bool:
    return 1 <= len(note_id) <= 32 and all(c in "0123456789abcdef" for c in note_id)


def clean_text(text: str) -> str:
    """Normalize newlines, drop lone surrogates and NULs, trim surrounding blank space."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").strip()


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so a crash leaves either the old or the new file, never half."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
    if os.name == "posix":
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class NoteStore:
    """Thread-safe notes, oldest first, persisted to `<data dir>/notes.json` on every change."""

    def __init__(self, data_dir: Path, log: Callable[[str], None]) -> None:
        self.data_dir = data_dir
        self.path = data_dir / FILE_NAME
        self._log = log
        self._lock = threading.Lock()
        self._notes: list[Note] = self._load()

    def _load(self) -> list[Note]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            obj = json.loads(raw)
            items = obj["notes"] if isinstance(obj, dict) else None
            if not isinstance(items, list):
                raise ValueError("no 'notes' list")
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            aside = self.path.with_name(f"{FILE_NAME}.corrupt-{int(time.time())}")
            os.replace(self.path, aside)
            self._log(f"notes file is unreadable ({exc}); moved it aside to {aside}")
            return []
        notes = [note for note in map(Note.from_json, items) if note is not None]
        if len(notes) != len(items):
            self._log(f"skipped {len(items) - len(notes)} malformed note(s) in {self.path}")
        return notes

    def _save(self) -> None:
        payload = {"format": FORMAT, "notes": [asdict(note) for note in self._notes]}
        atomic_write(self.path, (json.dumps(payload, indent=2) + "\n").encode("utf-8"))

    def all(self) -> list[Note]:
        with self._lock:
            return list(self._notes)

    def get(self, note_id: str) -> Note | None:
        with self._lock:
            return next((note for note in self._notes if note.id == note_id), None)

    def add(self, text: str) -> Note:
        text = clean_text(text)
        if not text:
            raise NoteError("a note needs some text")
        if len(text) > MAX_TEXT_CHARS:
            raise NoteError(f"a note holds at most {MAX_TEXT_CHARS} characters")
        note = Note(id=uuid.uuid4().hex[:12], text=text, created=time.time())
        with self._lock:
            if len(self._notes) >= MAX_NOTES:
                raise NoteError(f"at most {MAX_NOTES} notes")
            self._notes.append(note)
            try:
                self._save()
            except BaseException:
                self._notes.pop()
                raise
        return note

    def delete(self, note_id: str) -> bool:
        with self._lock:
            kept = [note for note in self._notes if note.id != note_id]
            if len(kept) == len(self._notes):
                return False
            previous, self._notes = self._notes, kept
            try:
                self._save()
            except BaseException:
                self._notes = previous
                raise
            return True
