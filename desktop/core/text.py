"""Text that crosses a trust boundary: runtime output, URLs with credentials, error messages."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# C0 and C1 controls and DEL, but not tab; ESC starts ANSI sequences, CR forges lines.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
# Up to the *last* "@" before the path: a password may itself contain "@".
_URL_WITH_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)([^/\s?#]*)@")


def sanitize_line(text: str) -> str:
    """One line of untrusted text made safe to store and show: control characters escaped.

    `\\r`, `\\n` and ANSI escapes from a runtime would otherwise forge or hide lines in a
    log viewer or a terminal.
    """
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def redact_url(url: str) -> str:
    """`url` without the user:password part (kept as `***@`)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def strip_credentials(url: str) -> str:
    """`url` without its user:password part at all."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    if parts.username is None and parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def redact(text: str) -> str:
    """Any `scheme://user:secret@` in `text` becomes `scheme://***@`."""
    return _URL_WITH_USERINFO.sub(lambda m: f"{m.group(1)}***@", text)


def one_line(text: str, limit: int = 300) -> str:
    """`text` as one line, credentials redacted, control characters escaped, clipped."""
    flat = " ".join(str(text).split())
    flat = sanitize_line(redact(flat))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class RedactingFilter:
    """A logging filter that removes URL credentials from every record it passes."""

    def filter(self, record: object) -> bool:
        import logging

        if isinstance(record, logging.LogRecord):
            message = record.getMessage()
            cleaned = redact(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


def mb(n: int) -> str:
    """A byte count as people read it: "12.3 MB"."""
    return f"{n / 1048576:.1f} MB"
