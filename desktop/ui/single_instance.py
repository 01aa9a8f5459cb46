"""One shell per data dir: a second start asks the first to show its window, then exits.

The lock lives in the data dir's `instance/` directory. The activation socket lives in
`$XDG_RUNTIME_DIR/desktop-shell/` when that directory is this user's and private, else beside
the lock. Either way it sits in a directory only this user can enter (a real directory, owned
by us, mode 0700), and the primary checks its `listen()`: a socket planted by another user can
neither receive the activation nor go unnoticed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path

from PySide6.QtCore import QLockFile, QObject, QTimer, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

log = logging.getLogger(__name__)

INSTANCE_DIR = "instance"
MESSAGE = b"activate\n"
CLIENT_TIMEOUT_MS = 2000


def private_dir(path: Path, *, create: bool) -> bool:
    """Whether `path` is a real directory owned by this user that nobody else can enter."""
    try:
        if create:
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                pass
        info = os.lstat(path)
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and info.st_mode & 0o077 and create:
            os.chmod(path, 0o700)  # ours but loose (an old version, a umask): tighten it
            info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077


def instance_dir(data_root: Path) -> Path:
    path = data_root / INSTANCE_DIR
    private_dir(path, create=True)
    return path


def socket_path(data_root: Path) -> Path:
    """Where the primary of `data_root` listens for activation."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime) and private_dir(Path(runtime), create=False):
        shared = Path(runtime) / "desktop-shell"
        if private_dir(shared, create=True):
            digest = hashlib.sha256(str(data_root.resolve()).encode()).hexdigest()[:16]
            return shared / f"{digest}.sock"
    return instance_dir(data_root) / "activate.sock"


class SingleInstance(QObject):
    """Holds the data dir's instance lock and the activation socket; `activated` fires when a
    second start asks this one to show its window."""

    activated = Signal()

    def __init__(self, data_root: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        data_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data_root = data_root
        self.lock = QLockFile(str(instance_dir(data_root) / "lock"))
        self.lock.setStaleLockTime(0)  # stale only when the owner pid is gone
        self.path = socket_path(data_root)
        self.server: QLocalServer | None = None
        self.held = False

    @property
    def listening(self) -> bool:
        return self.server is not None and self.server.isListening()

    def acquire(self) -> bool:
        """True if this is the primary instance; else the primary was asked to show its window."""
        if self.lock.tryLock(100):
            self.held = True
            self._listen()
            return True
        self._activate_primary()
        return False

    def _listen(self) -> None:
        if not private_dir(self.path.parent, create=False):
            log.warning("not listening for a second start: %s is not a private directory", self.path.parent)
            return
        server = QLocalServer(self)
        server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        # We hold the lock, so a socket left here is a dead primary's (the directory is ours alone).
        QLocalServer.removeServer(str(self.path))
        if not server.listen(str(self.path)):
            log.warning("cannot listen for a second start at %s (%s): it will not bring this window forward",
                        self.path, server.errorString())
            server.deleteLater()
            return
        server.newConnection.connect(self._on_connection)
        self.server = server

    def _activate_primary(self) -> None:
        if not private_dir(self.path.parent, create=False):
            return  # never hand anything to a socket in a directory someone else controls
        socket = QLocalSocket()
        socket.connectToServer(str(self.path))
        if socket.waitForConnected(2000):
            socket.write(MESSAGE)
            socket.flush()
            socket.waitForBytesWritten(2000)
            socket.disconnectFromServer()

    def _on_connection(self) -> None:
        assert self.server is not None
        while self.server.hasPendingConnections():
            connection = self.server.nextPendingConnection()
            # Read when the bytes arrive, never wait for them: a client that connects and says
            # nothing must not stall the window. It is dropped after a short while instead.
            connection.readyRead.connect(lambda c=connection: self._read(c))
            connection.disconnected.connect(connection.deleteLater)
            QTimer.singleShot(CLIENT_TIMEOUT_MS, connection, connection.abort)
            self._read(connection)

    def _read(self, connection: QLocalSocket) -> None:
        if connection.bytesAvailable() < len(MESSAGE):
            return
        if bytes(connection.read(len(MESSAGE)).data()) == MESSAGE:
            self.activated.emit()
        connection.disconnectFromServer()

    def release(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.held:
            self.lock.unlock()
            self.held = False
