"""last-check.json: when the registry was last asked and what it said (import-cheap, for `status`)."""

from __future__ import annotations

import logging
import time

from desktop.core.config import AppConfig
from desktop.core.errors import DesktopError
from desktop.core.results import LastCheck
from desktop.core.state import atomic_write_json, load_fields
from desktop.core.text import one_line, redact_url

log = logging.getLogger(__name__)


def record_check(config: AppConfig, result: str, *, available: str | None = None,
                 error: str | None = None) -> None:
    try:
        atomic_write_json(config.data.check_file, {
            "time": time.time(), "result": result, "available": available,
            "error": one_line(error) if error else None,
            "registry": redact_url(config.registry_url) if config.registry_url else None,
            "channel": config.channel})
    except DesktopError as exc:
        log.warning("cannot record the check: %s", exc)


def last_check(config: AppConfig) -> LastCheck | None:
    fields = load_fields(config.data.check_file)
    if not fields.obj:
        return None
    return LastCheck(fields.number("time"), fields.text("result", "unknown") or "unknown",
                     fields.text("available"), fields.text("error"))
