"""``python -m spikestab``: the same command line as the ``spikestab`` script."""

import sys

from .cli import main

sys.exit(main())
