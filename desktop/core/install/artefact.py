"""A shell release as the generic stager sees it: a complete frozen build staged into shells/<v>/."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from packaging.version import InvalidVersion, Version

from desktop import buildinfo
from desktop.core.delta import FileManifest, scan_manifest
from desktop.core.errors import DesktopError, ManifestError, StateError
from desktop.core.install.root import InstallRoot
from desktop.core.limits import ExtractLimits, NetConfig
from desktop.core.records import build_record, check_against, read_record, write_record

log = logging.getLogger(__name__)

BUILD_INFO_REL = f"{buildinfo.INTERNAL_DIR}/{buildinfo.FILE_NAME}"


def verify_build(directory: Path, *, expected: Version | None, platform: str) -> buildinfo.BuildInfo:
    """Check a frozen build directory can be started as shell `expected` on `platform`.

    Raises ManifestError (an invalid release: pinned, not fetched again) saying why not.
    """
    try:
        info = buildinfo.read(directory)
    except buildinfo.BuildInfoError as exc:
        raise ManifestError(f"not a shell build: {exc}") from None
    try:
        version = Version(info.version)
    except InvalidVersion:
        raise ManifestError(f"the shell build's version {info.version!r} is not a valid version") from None
    if expected is not None and version != expected:
        raise ManifestError(f"the shell build says version {version}, expected {expected}")
    if info.platform != platform:
        raise ManifestError(f"the shell build is for {info.platform}, this machine is {platform}")
    exe = directory / info.executable
    try:
        st = exe.lstat()
    except OSError:
        raise ManifestError(f"the shell build has no executable {info.executable!r}") from None
    if not stat.S_ISREG(st.st_mode) or not st.st_mode & stat.S_IXUSR:
        raise ManifestError(f"the shell build's {info.executable!r} is not an executable file")
    return info


class ShellArtefact:
    """Shell versions in an install root: how a staged build is finished and checked."""

    def __init__(self, install: InstallRoot, *, limits: ExtractLimits | None = None, reserve: int | None = None,
                 platform: str | None = None) -> None:
        self.install = install
        self.store = install.store
        self.limits = limits or ExtractLimits()
        self.reserve = NetConfig().min_free_bytes if reserve is None else reserve
        self.platform = platform or buildinfo.platform_tag()

    def problem(self, version: Version) -> str | None:
        """Why shells/<version> cannot be started, or None: the build checks, then the staging record
        (every file's size; the executable and build info by hash). A build install.sh put in place
        has no record yet: it gets one now."""
        directory = self.install.shell_dir(version)
        if not os.path.isdir(directory) or os.path.islink(directory):
            return f"{directory} is not a directory"
        try:
            info = verify_build(directory, expected=version, platform=self.platform)
        except ManifestError as exc:
            return str(exc)
        record_file = self.store.record_file(version)
        record = read_record(record_file)
        if record is None or record.version != version:
            log.info("shell %s has no staging record; recording it now", version)
            try:
                write_record(record_file, build_record(version, directory, info.executable, (BUILD_INFO_REL,)))
            except (OSError, StateError) as exc:
                log.warning("cannot record shell %s: %s", version, exc)
            return None
        return check_against(directory, record)

    def finish(self, partial: Path, version: Version) -> tuple[str, tuple[str, ...]]:
        info = verify_build(partial, expected=version, platform=self.platform)
        return info.executable, (BUILD_INFO_REL,)

    def in_use(self, version: Version) -> bool:
        from desktop.core.install.selfupdate import running_shells

        return version in running_shells(self.install)

    def delta_base(self, version: Version) -> tuple[Path, FileManifest] | None:
        """A healthy shell in shells/ and its file manifest: recorded when it was staged, or (the
        shell install.sh put there) scanned now; the caller compares it with the delta's base."""
        from desktop.core.records import read_files_manifest

        directory = self.install.shell_dir(version)
        if not directory.is_dir() or self.problem(version) is not None:
            return None
        manifest = read_files_manifest(self.store.files_manifest(version))
        if manifest is None:
            try:
                manifest = scan_manifest(directory)
            except (DesktopError, OSError) as exc:
                log.info("shell %s is no delta base: %s", version, exc)
                return None
        return directory, manifest
