"""The `desktop` console script: import the CLI, and treat Ctrl-C during that import like any other."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from desktop.cli import main as cli_main
    except KeyboardInterrupt:
        print("desktop: interrupted", file=sys.stderr)
        return 1
    return cli_main()
