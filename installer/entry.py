"""The frozen app's entry script (PyInstaller runs this as __main__).

`desktop --run-runtime ENTRY [ARGS...]` (what `{python}` expands to in the frozen app) and
`desktop --guard ...` (the process guardian, desktop/core/guardian.py) are dispatched before
the CLI, argparse or Qt are imported, so a runtime starts fast; everything else goes to
`desktop.cli.main`, exactly like the `desktop` console script.
"""

from __future__ import annotations

import sys

from desktop.core import runmode

if __name__ == "__main__":
    # A runtime's multiprocessing helpers (spawn workers, resource tracker, forkserver) re-invoke
    # the frozen app; PyInstaller's run-time hook has already imported multiprocessing.
    import multiprocessing

    multiprocessing.freeze_support()
    if runmode.requested(sys.argv[1:]):
        sys.exit(runmode.dispatch(sys.argv[1:]))

    from desktop.cli import main

    sys.exit(main())
