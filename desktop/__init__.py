"""Desktop shell: runs an embedded runtime and keeps it up to date."""

__version__ = "1.0.0"

import sys as _sys

if getattr(_sys, "frozen", False):
    # A frozen build's version is what its build-info.json says (one build, several versions).
    from desktop.buildinfo import frozen_version as _frozen_version

    __version__ = _frozen_version(__version__)
