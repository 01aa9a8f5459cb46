"""`python -m desktop`."""

import sys

from desktop.entrypoint import main

sys.exit(main())
