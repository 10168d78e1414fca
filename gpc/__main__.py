"""`python -m gpc ...` is `gpc ...`."""

import sys

from gpc.app.cli import main

sys.exit(main())
