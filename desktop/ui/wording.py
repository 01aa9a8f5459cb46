"""The words the window uses for the core's typed results: translatable, and no decisions.

Every user-visible string goes through `QCoreApplication.translate` (or a QObject's `tr`), so
the app can be translated; numbers, sizes and times are formatted by the user's locale.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QCoreApplication, QDateTime, QLocale

from desktop.core.results import Problem, ShellUpdates, UpdateState
from desktop.ui.controller import AppView, UpdateView
from desktop.ui.transfer import Transfer

CONTEXT = "Wording"


def tr(text: str, context: str = CONTEXT) -> str:
    return QCoreApplication.translate(context, text)


def problem_text(problem: Problem) -> str:
    """One plain sentence saying what went wrong (no errno, no exception names)."""
    t = QCoreApplication.translate
    texts = {
        Problem.OFFLINE: t(CONTEXT, "You're offline. The app will check for updates when you're back online."),
        Problem.UNREACHABLE: t(CONTEXT, "The update server can't be reached right now."),
        Problem.BAD_ANSWER: t(CONTEXT, "The update server sent an answer the app can't use."),
        Problem.DOWNLOAD_INTERRUPTED: t(CONTEXT, "The download was interrupted."),
        Problem.DOWNLOAD_DAMAGED: t(CONTEXT, "The download arrived damaged (something on the network changed it)."),
        Problem.DISK_FULL: t(CONTEXT, "There isn't enough free disk space for the update."),
        Problem.BUSY: t(CONTEXT, "Another copy of the app is installing an update."),
        Problem.NOT_TRUSTED: t(CONTEXT, "The update server's signatures could not be verified, so updates are "
                                        "paused to keep you safe."),
        Problem.BROKEN_RELEASE: t(CONTEXT, "This update is broken and won't be installed. A newer one will be "
                                           "tried when it comes out."),
        Problem.INCOMPATIBLE: t(CONTEXT, "This update needs a newer version of the app."),
        Problem.DATA_DIR: t(CONTEXT, "The app can't write to its data folder."),
        Problem.NOT_CONFIGURED: t(CONTEXT, "No update server is set up for this app."),
        Problem.CANCELLED: t(CONTEXT, "Cancelled."),
        Problem.OTHER: t(CONTEXT, "Something went wrong."),
    }
    return texts[problem]


def problem_retries(problem: Problem) -> bool:
    """Whether the sentence should go on with "the app will try again" (a transient problem)."""
    return problem in (Problem.UNREACHABLE, Problem.BAD_ANSWER, Problem.DOWNLOAD_INTERRUPTED,
                       Problem.DOWNLOAD_DAMAGED, Problem.BUSY, Problem.NOT_TRUSTED, Problem.DISK_FULL)


def source_text(source: str) -> str:
    if source == "bundled":
        return tr("built in")
    if source == "staged":
        return tr("installed update")
    return source


def size_text(size: float) -> str:
    return QLocale().formattedDataSize(int(size), 1, QLocale.DataSizeFormat.DataSizeSIFormat)


def speed_text(bytes_per_s: float) -> str:
    return tr("{size}/s").format(size=size_text(bytes_per_s))


def eta_text(seconds: float) -> str:
    """"about 3 minutes left", "12 seconds left"."""
    if seconds < 60:
        return tr("{n} s left").format(n=max(1, round(seconds)))
    if seconds < 3600:
        return tr("about {n} min left").format(n=round(seconds / 60))
    return tr("about {n} h left").format(n=round(seconds / 3600, 1))


def when_text(epoch: float, now: float | None = None) -> str:
    """A past or future moment as people say it: "14:05", "yesterday 14:05", "3 Mar 14:05"."""
    now = time.time() if now is None else now
    moment = QDateTime.fromSecsSinceEpoch(int(epoch))
    today = QDateTime.fromSecsSinceEpoch(int(now)).date()
    locale = QLocale()
    clock = locale.toString(moment.time(), QLocale.FormatType.ShortFormat)
    if moment.date() == today:
        return clock
    if moment.date().daysTo(today) == 1:
        return tr("yesterday {time}").format(time=clock)
    if moment.date().daysTo(today) == -1:
        return tr("tomorrow {time}").format(time=clock)
    return tr("{date} {time}").format(date=locale.toString(moment.date(), QLocale.FormatType.ShortFormat),
                                       time=clock)


def days_text(seconds: float) -> str:
    days = max(1, int(seconds // 86400))
    return tr("1 day") if days == 1 else tr("{n} days").format(n=days)


def transfer_text(transfer: Transfer | None) -> str:
    """"1.2 MB of 3.4 MB · 300 kB/s · 7 s left"."""
    if transfer is None:
        return tr("starting…")
    parts = [tr("{done} of {total}").format(done=size_text(transfer.done), total=size_text(transfer.total))
             if transfer.total else size_text(transfer.done)]
    if transfer.speed:
        parts.append(speed_text(transfer.speed))
    if transfer.eta is not None:
        parts.append(eta_text(transfer.eta))
    return " · ".join(parts)


def update_text(view: UpdateView, *, checked: bool = True) -> str:
    """The one line that says where updates stand (with when it last checked, unless `checked` is off)."""
    state, release = view.state, view.release
    when = tr("checked {when}").format(when=when_text(view.last_checked)) if view.last_checked and checked else ""
    if state is UpdateState.CHECKING:
        return tr("Checking for updates…")
    if state is UpdateState.DOWNLOADING:
        return tr("Downloading update — {progress}").format(progress=transfer_text(view.transfer))
    if state is UpdateState.INSTALLING:
        return tr("Installing the update…")
    if state is UpdateState.STAGED and release is not None:
        return tr("Version {version} is ready — restart to update").format(version=release.version)
    if state is UpdateState.AVAILABLE and release is not None:
        if view.cancelled:
            return tr("Download of {version} cancelled; it resumes from where it stopped").format(
                version=release.version)
        return tr("Version {version} is available").format(version=release.version)
    if state is UpdateState.UP_TO_DATE:
        if view.confirmed:
            return tr("You're up to date")
        return tr("Up to date · {checked}").format(checked=when) if when else tr("Up to date")
    if state in (UpdateState.OFFLINE, UpdateState.FAILED) and view.problem is not None:
        text = problem_text(view.problem)
        if problem_retries(view.problem) and view.retry_at is not None:
            text += " " + tr("The app will try again at {when}.").format(when=when_text(view.retry_at))
        return text
    if state is UpdateState.DISABLED:
        if view.managed:
            return tr("Updates are turned off by your administrator")
        return problem_text(view.problem) if view.problem is not None else tr("Updates are turned off")
    if view.cancelled:
        return tr("Download cancelled; it resumes from where it stopped")
    if when:
        return tr("Updates: {checked}").format(checked=when)
    return tr("Updates: not checked yet") if checked else tr("Not checked yet")


def app_updates_text(app: AppView) -> str:
    """Where the app's own updates stand: what waits for a restart, or why it does not update itself."""
    info = app.info
    if info is None:
        return ""
    if info.pending is not None:
        if app.restart_exit_code is not None:
            return tr("Version {version} of the app is ready — restart the app to update it.").format(
                version=info.pending)
        return tr("Version {version} of the app is ready; it is used the next time the app starts.").format(
            version=info.pending)
    if info.updates is ShellUpdates.AVAILABLE:
        if app.problem is not None:
            return tr("The app couldn't update itself: {problem}").format(problem=problem_text(app.problem))
        return tr("The app keeps itself up to date.")
    if info.updates is ShellUpdates.MANAGED:
        # The policy's own words when it has some (a system package: "updated by your package manager").
        if info.reason and info.reason != app.policy.text:
            return info.reason
        return tr("The app's own updates are turned off by your administrator.")
    return tr("The app doesn't update itself here: {reason}.").format(reason=info.reason.rstrip("."))
