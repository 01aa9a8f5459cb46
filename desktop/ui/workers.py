"""Running blocking core calls off the GUI thread, reporting back through signals only."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

log = logging.getLogger(__name__)


class WorkerSignals(QObject):
    """Emitted from the worker thread; delivered queued to receivers in the GUI thread."""

    finished = Signal(object)
    failed = Signal(object)
    progress = Signal(str, int, int)  # phase, done, total (-1: unknown)


class Worker(QRunnable):
    """Runs `job(signals)` in a pool thread. The job never touches widgets."""

    def __init__(self, job: Callable[[WorkerSignals], Any]) -> None:
        super().__init__()
        self.job = job
        self.signals = WorkerSignals()
        self.setAutoDelete(False)

    def run(self) -> None:
        try:
            result = self.job(self.signals)
        except Exception as exc:
            log.info("background job failed: %s", exc)
            self.signals.failed.emit(exc)
        else:
            self.signals.finished.emit(result)


class Jobs:
    """A small pool that keeps its workers alive until they finish."""

    def __init__(self) -> None:
        self.pool = QThreadPool()
        self.pool.setMaxThreadCount(4)
        self._running: set[Worker] = set()

    def submit(self, job: Callable[[WorkerSignals], Any], *,
               finished: Callable[[Any], None] | None = None,
               failed: Callable[[Any], None] | None = None,
               progress: Callable[[str, int, int], None] | None = None) -> Worker:
        worker = Worker(job)
        if finished:
            worker.signals.finished.connect(finished)
        if failed:
            worker.signals.failed.connect(failed)
        if progress:
            worker.signals.progress.connect(progress)
        worker.signals.finished.connect(lambda _: self._running.discard(worker))
        worker.signals.failed.connect(lambda _: self._running.discard(worker))
        self._running.add(worker)
        self.pool.start(worker)
        return worker

    def wait(self, msecs: int) -> bool:
        return bool(self.pool.waitForDone(msecs))
