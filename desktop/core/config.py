"""One typed configuration: resources/config.json < settings.json < environment < flags."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from desktop import __version__
from desktop.core.errors import DataDirError, UsageError
from desktop.core.install.admin import AdminPolicy, load_policy
from desktop.core.limits import ExtractLimits, NetConfig
from desktop.core.paths import DataDir, default_data_dir, open_data_dir, resources_dir
from desktop.core.state import atomic_write_json, load_fields, read_json_object

log = logging.getLogger(__name__)

REGISTRY_KINDS = ("feed", "npm")
CHANNELS = ("stable", "beta", "alpha")
MIN_CHECK_INTERVAL_S = 60.0
DEFAULT_STARTUP_TIMEOUT_S = 30.0


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
        fields = load_fields(path)
        channel = fields.text("channel", max_len=64)
        interval = fields.number("check_interval_s", base.check_interval_s)
        return cls(
            channel=channel if channel else base.channel,
            auto_update=fields.flag("auto_update", base.auto_update),
            check_interval_s=interval if interval >= MIN_CHECK_INTERVAL_S else base.check_interval_s,
            close_to_tray=fields.flag("close_to_tray", base.close_to_tray),
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
    trusted_root: Path | None = None
    settings: Settings = field(default_factory=Settings)
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_S
    keep_versions: int = 1
    limits: ExtractLimits = field(default_factory=ExtractLimits)
    net: NetConfig = field(default_factory=NetConfig)
    shell_version: str = __version__
    policy: AdminPolicy = field(default_factory=AdminPolicy)  # the admin's, read-only for the user

    @property
    def native_root(self) -> Path:
        return self.resources / "native"

    @property
    def bundled_runtime(self) -> Path:
        return self.resources / "runtime"

    @property
    def shipped_root(self) -> Path | None:
        """The root the feed client bootstraps from (None: the pinned key's first root)."""
        return self.trusted_root

    def with_overrides(self, **changes: Any) -> AppConfig:
        return replace(self, **changes)


def check_timeout(value: float, what: str = "--startup-timeout") -> float:
    """A timeout must be a finite number of seconds greater than 0 (else a usage error)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise UsageError(f"{what} must be a finite number of seconds greater than 0, not {value!r}")
    return float(value)


def _env_number(name: str, *, integer: bool, positive: bool = True) -> float | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a {'whole ' if integer else ''}number") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise UsageError(f"{name}={raw!r} must be a finite number {'> 0' if positive else '>= 0'}")
    return value


def _limits_from_env() -> ExtractLimits:
    limits = ExtractLimits()
    total = _env_number("DESKTOP_MAX_UNPACKED_BYTES", integer=True)
    if total is not None:
        limits = replace(limits, max_total_bytes=int(total))
    return limits


def _net_from_env() -> NetConfig:
    net = NetConfig()
    for env, attr, integer, positive in (
        ("DESKTOP_MIN_FREE_BYTES", "min_free_bytes", True, False),
        ("DESKTOP_NET_READ_TIMEOUT", "read_timeout", False, True),
        ("DESKTOP_NET_DEADLINE", "document_deadline", False, True),
        ("DESKTOP_NET_MIN_RATE", "min_rate", False, False),
        ("DESKTOP_NET_RATE_GRACE", "rate_grace", False, True),
    ):
        value = _env_number(env, integer=integer, positive=positive)
        if value is not None:
            number: int | float = int(value) if integer else float(value)
            net = replace(net, **{attr: number})  # type: ignore[arg-type]
    return net


def load_config(
    *,
    data_dir: str | Path | None = None,
    registry: str | None = None,
    registry_kind: str | None = None,
    channel: str | None = None,
    public_key: str | None = None,
    trusted_root: str | Path | None = None,
    startup_timeout: float | None = None,
    tolerate_unwritable: bool = False,
) -> AppConfig:
    """Merge the shipped defaults, the user's settings, the environment and explicit flags.

    With `tolerate_unwritable`, a data dir that cannot be created is used as is (launch still
    starts the bundled runtime); a data dir that is unsafe is always refused.
    """
    resources = resources_dir()
    shipped = read_json_object(resources / "config.json") or {}
    where = data_dir if data_dir else default_data_dir()
    try:
        data = open_data_dir(where)
    except DataDirError:
        if not tolerate_unwritable:
            raise
        data = open_data_dir(where, create=False) if _is_missing(where) else _reraise(where)
    default_channel = shipped.get("channel") if isinstance(shipped.get("channel"), str) else "stable"
    settings = Settings.load(data.settings_file, Settings(channel=str(default_channel)))
    kind = registry_kind or os.environ.get("DESKTOP_REGISTRY_KIND") or _str(shipped.get("registry_kind"))
    kind = kind or "feed"
    if kind not in REGISTRY_KINDS:
        raise UsageError(f"unknown registry kind {kind!r} (choose from {', '.join(REGISTRY_KINDS)})")
    url = registry or os.environ.get("DESKTOP_REGISTRY") or _str(shipped.get("registry"))
    if startup_timeout is None:
        env_timeout = _env_number("DESKTOP_STARTUP_TIMEOUT", integer=False)
        startup_timeout = env_timeout if env_timeout is not None else DEFAULT_STARTUP_TIMEOUT_S
    # Trust: --trusted-root, else an explicitly given key (a feed's first root), else the root
    # shipped in resources/, else the shipped key.
    explicit_key = public_key or os.environ.get("DESKTOP_PUBLIC_KEY") or None
    root_file: str | Path | None = trusted_root or os.environ.get("DESKTOP_TRUSTED_ROOT") or None
    if root_file is None and explicit_key is None and (resources / "root.json").is_file():
        root_file = resources / "root.json"
    admin = load_policy()
    if admin.feed is not None:
        # The admin's feed and its trust replace whatever the user configured.
        if url and url != admin.feed.url and (registry or os.environ.get("DESKTOP_REGISTRY")):
            log.warning("the admin policy sets the registry; ignoring %s", "--registry" if registry else
                        "DESKTOP_REGISTRY")
        url, kind = admin.feed.url, admin.feed.kind
        explicit_key, root_file = admin.feed.public_key, admin.feed.trusted_root
    if admin.channel and channel and channel != admin.channel:
        log.warning("the admin policy pins the channel %s; ignoring --channel %s", admin.channel, channel)
    return AppConfig(
        data=data,
        resources=resources,
        registry_url=url or None,
        registry_kind=kind,
        channel=admin.channel or channel or _default_channel(kind, data, settings),
        public_key=explicit_key or (None if admin.feed else _str(shipped.get("public_key"))),
        trusted_root=Path(root_file).expanduser().absolute() if root_file else None,
        settings=settings,
        startup_timeout=check_timeout(startup_timeout),
        limits=_limits_from_env(),
        net=_net_from_env(),
        policy=admin,
    )


def _is_missing(where: str | Path) -> bool:
    return not os.path.lexists(os.path.abspath(os.path.expanduser(os.fspath(where))))


def _reraise(where: str | Path) -> DataDir:
    return open_data_dir(where)


def _default_channel(kind: str, data: DataDir, settings: Settings) -> str:
    """The user's chosen channel; otherwise npm's `latest` dist-tag or the feed's default."""
    chosen = load_fields(data.settings_file).text("channel", max_len=64)
    if chosen:
        return chosen
    return "latest" if kind == "npm" else settings.channel


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
