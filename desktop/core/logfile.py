"""The shell's own log (updater, supervisor) in the data dir, rotated; nothing if it is read-only."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from desktop.core.errors import StateError
from desktop.core.paths import DataDir
from desktop.core.state import ensure_dir
from desktop.core.text import RedactingFilter

_installed: dict[Path, logging.Handler] = {}


def log_to_file(data: DataDir) -> Path | None:
    """Send the `desktop` loggers' INFO and above to logs/desktop.log (1 MB, 3 kept); idempotent.

    Returns None when the log cannot be written (a read-only data dir): the shell still runs,
    and warnings still reach stderr.
    """
    path = data.logs_dir / "desktop.log"
    if path in _installed:
        return path
    try:
        ensure_dir(path.parent)
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=1 << 20, backupCount=3, encoding="utf-8")
    except (OSError, StateError):
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("desktop")
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    _installed[path] = handler
    return path
