"""Named fault points: deterministic crash injection for the crash-safety tests.

`DESKTOP_FAULT=<point>` makes the process kill itself with SIGKILL the first time it reaches
`<point>` (`DESKTOP_FAULT=<point>:N` at the N-th time). Nothing else reads it; when it is unset
a fault point costs one comparison. The points, in the order a stage or a launch meets them:

    delta-downloaded        a delta is complete and verified, nothing rebuilt yet
    after-download          the archive is complete and verified, nothing extracted yet (after a
                            delta: the version is rebuilt and checked)
    mid-extract             extraction (or a rebuild from a delta) has written part of the version
    partial-complete        the partial is complete (native deps in, verified), not durable yet
    after-rename            versions/<v> exists, the pointer still names the old version
    after-pointer           current.json is replaced, its directory not yet fsync'd
    bad-mark-write          inside the bad-list write: temp file written, not yet renamed
    pointer-back            the bad mark is durable, the pointer not yet moved back
    attempt-write           inside the start-attempt write
    lease-write             inside the write of this shell's lease
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "delta-downloaded", "after-download", "mid-extract", "partial-complete", "after-rename", "after-pointer",
    "bad-mark-write", "pointer-back", "attempt-write", "lease-write",
)

_spec = os.environ.get("DESKTOP_FAULT", "")
_point, _, _nth = _spec.partition(":")
_remaining = int(_nth) if _nth.isdigit() and int(_nth) > 0 else 1


def reached(point: str) -> None:
    """Die here (SIGKILL, no cleanup at all) if this is the armed fault point."""
    global _remaining
    if point != _point:
        return
    _remaining -= 1
    if _remaining > 0:
        return
    os.kill(os.getpid(), signal.SIGKILL)
