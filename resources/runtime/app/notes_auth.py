"""The per-launch secret: every request must prove it (header from the shell, cookie from a browser).

The shell starts the runtime with a fresh random DESKTOP_RUNTIME_TOKEN and sends it back on every
request of its web view as the `X-Desktop-Token` header. A plain browser ("Open in browser") gets
it once through `GET /login?token=...`, which answers with an HttpOnly, SameSite=Strict cookie
and a redirect home. Without the token another local user (or any other program on the machine)
can reach the loopback port but not the notes.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import MutableMapping

TOKEN_ENV = "DESKTOP_RUNTIME_TOKEN"
TOKEN_HEADER = "X-Desktop-Token"
LOGIN_PATH = "/login"
# Cookie octets only (RFC 6265), so the same value works as a header and as a cookie.
_TOKEN_RE = re.compile(r"[!#-+\--:<-\[\]-~]{16,1024}")


class TokenError(ValueError):
    """DESKTOP_RUNTIME_TOKEN is set but unusable."""


class LaunchToken:
    """The secret of this launch; compares in constant time, never shows itself in repr."""

    def __init__(self, value: str) -> None:
        if not _TOKEN_RE.fullmatch(value):
            raise TokenError(f"{TOKEN_ENV} must be 16 to 1024 printable characters without spaces, "
                             "quotes, commas, semicolons or backslashes")
        self._value = value.encode("ascii")

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str]) -> tuple[LaunchToken, bool]:
        """The shell's token (taken out of the environment), or a new one; True when generated."""
        given = environ.pop(TOKEN_ENV, "")
        if given:
            return cls(given), False
        return cls(secrets.token_urlsafe(32)), True

    @property
    def value(self) -> str:
        return self._value.decode("ascii")

    def matches(self, candidate: str | None) -> bool:
        if candidate is None:
            return False
        return hmac.compare_digest(candidate.strip().encode("utf-8", "replace"), self._value)

    def __repr__(self) -> str:
        return "LaunchToken(<hidden>)"


def cookie_name(port: int) -> str:
    # Cookies ignore ports: a name per port keeps two runtimes on 127.0.0.1 from overwriting
    # each other's cookie in the same browser.
    return f"desktop-token-{port}"


def cookie_values(header: str | None, name: str) -> list[str]:
    """Every value the Cookie header carries for `name` (a browser may send duplicates)."""
    if not header:
        return []
    values = []
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key.strip() == name:
            values.append(value.strip().strip('"'))
    return values


def set_cookie_header(name: str, token: LaunchToken) -> str:
    return f"{name}={token.value}; Path=/; HttpOnly; SameSite=Strict"
