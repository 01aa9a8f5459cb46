"""Read a staged feed with the real tuf.ngclient before it goes live.

The staged directory holds only what changes; a client sees it layered over the live feed
(versioned and hash-prefixed files never change, so the overlay is exactly the next state).
Files are read from disk through a fetcher; nothing goes over the network.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import unquote

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import TargetFile
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

from desktop.core.publisher.errors import FeedCheckError

BASE = "https://feed.invalid/"
_CHUNK = 1 << 20


class _LayeredFetcher(FetcherInterface):
    """Serves `BASE/<rel>` from the first layer holding `rel`; 404 otherwise, as a web server would."""

    def __init__(self, layers: Sequence[Path], hidden: Collection[str]) -> None:
        self.layers = layers
        self.hidden = set(hidden)

    def _fetch(self, url: str) -> Iterator[bytes]:
        rel = unquote(url[len(BASE):]) if url.startswith(BASE) else ""
        parts = rel.split("/")
        if not rel or rel in self.hidden or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise tuf_errors.DownloadHTTPError(f"{url}: not found", 404)
        for layer in self.layers:
            try:
                handle = open(layer.joinpath(*parts), "rb")  # noqa: SIM115 - closed by the generator
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue
            return self._stream(handle)
        raise tuf_errors.DownloadHTTPError(f"{url}: not found", 404)

    @staticmethod
    def _stream(handle: IO[bytes]) -> Iterator[bytes]:
        with handle:
            yield from iter(lambda: handle.read(_CHUNK), b"")


@dataclass(frozen=True)
class ClientCache:
    """What a client that last read the live feed keeps: its metadata as it was."""

    timestamp: bytes
    snapshot: bytes
    targets: bytes


@dataclass(frozen=True)
class Client:
    """One kind of client to check the staged feed as."""

    description: str
    bootstrap: bytes
    cache: ClientCache | None = None


def check_as(client: Client, layers: Sequence[Path], *, feed: Path, work: Path,
             expect: Mapping[str, TargetFile], download: Collection[str] = (), hidden: Collection[str] = ()) -> None:
    """Refresh like `client` over `layers` and find every expected target as signed; `FeedCheckError` if not."""
    with tempfile.TemporaryDirectory(dir=work, prefix="client-") as tmp:
        home = Path(tmp)
        if client.cache is not None:
            (home / "timestamp.json").write_bytes(client.cache.timestamp)
            (home / "snapshot.json").write_bytes(client.cache.snapshot)
            (home / "targets.json").write_bytes(client.cache.targets)
        try:
            updater = Updater(str(home), BASE + "metadata/", target_dir=str(home / "download"),
                              target_base_url=BASE + "targets/", fetcher=_LayeredFetcher(layers, hidden),
                              bootstrap=client.bootstrap)
            updater.refresh()
            for path, want in sorted(expect.items()):
                info = updater.get_targetinfo(path)
                if info is None:
                    raise FeedCheckError(f"{client.description} would not find {path} in the new state of {feed}; "
                                         "the live feed is unchanged")
                if (info.length, info.hashes, info.custom) != (want.length, want.hashes, want.custom):
                    raise FeedCheckError(f"{client.description} would read different facts for {path} from the new "
                                         f"state of {feed}; the live feed is unchanged")
                if path in download:
                    out = home / "download.bin"
                    updater.download_target(info, filepath=str(out))
                    with contextlib.suppress(FileNotFoundError):
                        out.unlink()
        except FeedCheckError:
            raise
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError, OSError, ValueError, KeyError, TypeError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else ""
            raise FeedCheckError(f"{client.description} would refuse the new state of {feed} "
                                 f"({type(exc).__name__}: {detail}); the live feed is unchanged") from exc
