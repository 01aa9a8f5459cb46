"""One shell per data dir: a second start activates the first window instead."""

from __future__ import annotations

import hashlib
from pathlib import Path

from PySide6.QtCore import QLockFile, QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket


def server_name(data_root: Path) -> str:
    digest = hashlib.sha256(str(data_root.resolve()).encode()).hexdigest()[:16]
    return f"desktop-shell-{digest}"


class SingleInstance(QObject):
    """Holds a lock file and a local server; `activated` fires when another start asks us to show."""

    activated = Signal()

    def __init__(self, data_root: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = server_name(data_root)
        data_root.mkdir(parents=True, exist_ok=True)
        self.lock = QLockFile(str(data_root / "shell.lock"))
        self.lock.setStaleLockTime(0)  # stale only when the owner pid is gone
        self.server: QLocalServer | None = None

    def acquire(self) -> bool:
        """True if this is the primary instance; else the primary was asked to activate."""
        if self.lock.tryLock(100):
            QLocalServer.removeServer(self.name)
            self.server = QLocalServer(self)
            self.server.newConnection.connect(self._on_connection)
            self.server.listen(self.name)
            return True
        socket = QLocalSocket()
        socket.connectToServer(self.name)
        if socket.waitForConnected(2000):
            socket.write(b"activate\n")
            socket.flush()
            socket.waitForBytesWritten(2000)
            socket.disconnectFromServer()
        return False

    def _on_connection(self) -> None:
        assert self.server is not None
        while self.server.hasPendingConnections():
            connection = self.server.nextPendingConnection()
            # The second instance writes at once after connecting; a short blocking read keeps
            # the socket's lifetime simple (it stays a child of the server, closed right here).
            ready = connection.bytesAvailable() > 0 or connection.waitForReadyRead(1000)
            if ready and b"activate" in bytes(connection.readAll().data()):
                self.activated.emit()
            connection.close()

    def release(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        self.lock.unlock()
