"""One typed configuration: resources/config.json < settings.json < environment < flags."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from desktop import __version__
from desktop.core.errors import UsageError
from desktop.core.limits import ExtractLimits, NetConfig
from desktop.core.paths import DataDir, default_data_dir, resources_dir
from desktop.core.state import atomic_write_json, read_json_object

log = logging.getLogger(__name__)

REGISTRY_KINDS = ("feed", "npm")


@dataclass(frozen=True)
class Settings:
    """What the user can change (persisted in settings.json in the data dir)."""

    channel: str = "stable"
    auto_update: bool = True
    check_interval_s: float = 6 * 3600.0
    close_to_tray: bool = False

    @classmethod
    def load(cls, path: Path, defaults: Settings | None = None) -> Settings:
        base = defaults or cls()
        obj = read_json_object(path) or {}
        channel = obj.get("channel")
        interval = obj.get("check_interval_s")
        return cls(
            channel=channel if isinstance(channel, str) and channel else base.channel,
            auto_update=obj["auto_update"] if isinstance(obj.get("auto_update"), bool) else base.auto_update,
            check_interval_s=float(interval) if isinstance(interval, int | float) and interval >= 60
            else base.check_interval_s,
            close_to_tray=obj["close_to_tray"] if isinstance(obj.get("close_to_tray"), bool)
            else base.close_to_tray,
        )

    def save(self, path: Path) -> None:
        atomic_write_json(path, {
            "channel": self.channel,
            "auto_update": self.auto_update,
            "check_interval_s": self.check_interval_s,
            "close_to_tray": self.close_to_tray,
        })


@dataclass(frozen=True)
class AppConfig:
    """Everything the core needs to know, passed down explicitly."""

    data: DataDir
    resources: Path
    registry_url: str | None
    registry_kind: str
    channel: str
    public_key: str | None = None
    settings: Settings = field(default_factory=Settings)
    startup_timeout: float = 30.0
    keep_versions: int = 1
    limits: ExtractLimits = field(default_factory=ExtractLimits)
    net: NetConfig = field(default_factory=NetConfig)
    shell_version: str = __version__
    manual_check: bool = False

    @property
    def native_root(self) -> Path:
        return self.resources / "native"

    @property
    def bundled_runtime(self) -> Path:
        return self.resources / "runtime"

    def with_overrides(self, **changes: Any) -> AppConfig:
        return replace(self, **changes)


def load_config(
    *,
    data_dir: str | Path | None = None,
    registry: str | None = None,
    registry_kind: str | None = None,
    channel: str | None = None,
    public_key: str | None = None,
    startup_timeout: float | None = None,
) -> AppConfig:
    """Merge the shipped defaults, the user's settings, the environment and explicit flags."""
    resources = resources_dir()
    shipped = read_json_object(resources / "config.json") or {}
    data = DataDir(Path(data_dir).expanduser() if data_dir else default_data_dir())
    default_channel = shipped.get("channel") if isinstance(shipped.get("channel"), str) else "stable"
    settings = Settings.load(data.settings_file, Settings(channel=str(default_channel)))
    kind = registry_kind or os.environ.get("DESKTOP_REGISTRY_KIND") or _str(shipped.get("registry_kind"))
    kind = kind or "feed"
    if kind not in REGISTRY_KINDS:
        raise UsageError(f"unknown registry kind {kind!r} (choose from {', '.join(REGISTRY_KINDS)})")
    url = registry or os.environ.get("DESKTOP_REGISTRY") or _str(shipped.get("registry"))
    limits = ExtractLimits()
    env_total = os.environ.get("DESKTOP_MAX_UNPACKED_BYTES")
    if env_total and env_total.isdigit():
        limits = replace(limits, max_total_bytes=int(env_total))
    net = NetConfig()
    env_free = os.environ.get("DESKTOP_MIN_FREE_BYTES")
    if env_free and env_free.isdigit():
        net = replace(net, min_free_bytes=int(env_free))
    return AppConfig(
        data=data,
        resources=resources,
        registry_url=url or None,
        registry_kind=kind,
        channel=channel or _default_channel(kind, data, settings),
        public_key=public_key or os.environ.get("DESKTOP_PUBLIC_KEY") or _str(shipped.get("public_key")),
        settings=settings,
        startup_timeout=startup_timeout if startup_timeout is not None else 30.0,
        limits=limits,
        net=net,
    )


def _default_channel(kind: str, data: DataDir, settings: Settings) -> str:
    """The user's chosen channel; otherwise npm's `latest` dist-tag or the feed's default."""
    chosen = (read_json_object(data.settings_file) or {}).get("channel")
    if isinstance(chosen, str) and chosen:
        return chosen
    return "latest" if kind == "npm" else settings.channel


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
