"""The shell's own log (updater, supervisor) in the data dir, rotated."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from desktop.core.paths import DataDir

_installed: dict[Path, logging.Handler] = {}


def log_to_file(data: DataDir) -> Path:
    """Send the `desktop` loggers' INFO and above to logs/desktop.log (1 MB, 3 kept); idempotent."""
    path = data.logs_dir / "desktop.log"
    if path in _installed:
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=1 << 20, backupCount=3, encoding="utf-8")
    except OSError:
        return path
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("desktop")
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    _installed[path] = handler
    return path
